//! Credentials: who is calling, from the `Authorization` header.
//!
//! A credential is a token and a secret, both random and issued by the server. Two header
//! forms are accepted: `Bearer TOKEN`, and the OAuth 1.0a PLAINTEXT header that the
//! official clever CLI sends (`oauth_token="TOKEN"`, `oauth_signature="CONSUMER%26SECRET"`,
//! where only the part after `%26` is ours to check: the consumer key and secret belong
//! to the client program, not to the user).
//!
//! Only SHA-256 hashes of tokens and secrets are stored. A token is looked up by its hash,
//! so no comparison runs over the token itself; a secret's hash is compared in constant
//! time. Both are long random strings, for which a fast hash is the right tool (a password
//! hash would only slow every call). Neither is ever logged.
//!
//! The middleware also sets the request's [`Origin`] for the audit trail: the credential's
//! id and name (never its secret), the client's address and this node, so that every store
//! write the request makes is recorded as theirs ([`crate::server::state::store::audit`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::Error;
use crate::server::state::store::audit::{self, Origin};
use crate::server::state::sync::Synced;
use crate::server::state::table::Table;
use crate::wire::Actor;

/// Who is calling: the server's admin, or a credential scoped to one organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Sees and changes everything.
    Admin,
    /// Sees and changes only this organisation.
    Org(String),
}

impl Caller {
    /// Whether the caller may see the organisation `org_id`.
    pub fn may_see(&self, org_id: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Org(own) => own == org_id,
        }
    }
}

/// SHA-256 of a token or secret, as stored (hex).
pub fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A new random credential part, `prefix` then 40 alphanumeric characters (238 bits).
pub fn generate(prefix: &str) -> String {
    format!("{prefix}{}", Alphanumeric.sample_string(&mut rand::rng(), 40))
}

/// What the `Authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    Bearer(String),
    OAuth { token: String, secret: String },
}

fn parse(header: &str) -> Option<Presented> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        return (!token.is_empty()).then(|| Presented::Bearer(token.to_owned()));
    }
    if !scheme.eq_ignore_ascii_case("oauth") {
        return None;
    }
    let mut token = None;
    let mut signature = None;
    for param in rest.split(',') {
        let (key, value) = param.trim().split_once('=')?;
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "oauth_token" => token = Some(decode(value)?),
            "oauth_signature" => signature = Some(value.to_owned()),
            _ => {}
        }
    }
    // PLAINTEXT signature: percent-encoded "CONSUMER_SECRET&TOKEN_SECRET", sent with the
    // `&` itself percent-encoded once more as `%26`.
    let signature = signature?;
    let secret = match signature.split_once("%26") {
        Some((_, secret)) => decode(secret)?,
        None => decode(&signature)?.split_once('&')?.1.to_owned(),
    };
    Some(Presented::OAuth { token: token?, secret })
}

fn decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|s| s.into_owned())
}

/// Checks the header against the node's copy of the credentials: who calls, and the
/// credential's id and name for the audit trail.
pub fn identify(table: &Table, header: Option<&str>) -> Result<(Caller, Actor), Error> {
    let presented = parse(header.ok_or_else(Error::no_credentials)?).ok_or_else(Error::bad_credentials)?;
    let (token, secret) = match &presented {
        Presented::Bearer(token) => (token, None),
        Presented::OAuth { token, secret } => (token, Some(secret)),
    };
    let secret = secret.map(|s| hash(s));
    // Several nodes may have been given the same admin token: any of its records will do.
    let row = table
        .tokens_by_hash(&hash(token))
        .find(|row| {
            secret.as_ref().is_none_or(|s| bool::from(s.as_bytes().ct_eq(row.secret_hash.as_bytes())))
        })
        .ok_or_else(Error::bad_credentials)?;
    let actor = Actor { id: Some(row.info.id.clone()), name: row.info.name.clone() };
    Ok((row.info.owner_id.clone().map_or(Caller::Admin, Caller::Org), actor))
}

/// Failed authentications tolerated from one address before it is slowed down.
const FREE_FAILURES: u32 = 10;
/// How long failures are remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);
/// The longest wait imposed.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most address prefixes remembered at once, so that failures cannot grow memory
/// unbounded.
const MAX_TRACKED: usize = 10_000;

/// Who a failure is counted against: an IPv4 address, or an IPv6 /64, the block one
/// subscriber usually holds (counting single IPv6 addresses would give one attacker 2^64
/// fresh counts).
fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Credentials checking against the node's copy of the table, with a [`Brake`] on guessing.
pub struct Auth {
    synced: Arc<Synced>,
    brake: Brake,
    /// This node's name, for the audit trail.
    node: String,
}

impl Auth {
    /// Checks credentials against the node's copy of the table, on the node `node`.
    pub fn new(synced: Arc<Synced>, node: String) -> Auth {
        Auth { synced, brake: Brake::default(), node }
    }
}

/// A brake on guessing (frp's brute-force issue #1712): after [`FREE_FAILURES`] failures
/// from one address (an IPv6 /64), each further attempt must wait twice as long as the
/// previous one (up to [`MAX_WAIT`]) and is answered 429 without being checked.
#[derive(Default)]
struct Brake {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Brake {
    fn wait_for(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let &(count, last) = failures.get(&prefix(ip))?;
        let wait = penalty(count)?;
        let ready = last + wait;
        let now = Instant::now();
        (ready > now).then(|| ready - now)
    }

    fn record(&self, ip: IpAddr, failed: bool) {
        let key = prefix(ip);
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failed {
            // A success clears the count of its prefix only while it is not braked: an
            // attacker who holds one valid credential must not reset the brake with it.
            if failures.get(&key).is_some_and(|&(count, _)| count < FREE_FAILURES) {
                failures.remove(&key);
            }
            return;
        }
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&key) {
            // Full: forget what is expired, then the prefixes not braked yet. The braked
            // ones are never forgotten early: many addresses cannot wash a brake away.
            failures.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
            if failures.len() >= MAX_TRACKED {
                failures.retain(|_, (count, _)| *count >= FREE_FAILURES);
            }
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = failures.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        *entry = (entry.0.saturating_add(1), now);
    }
}

fn penalty(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    Some(Duration::from_secs(1u64 << over.min(6)).min(MAX_WAIT))
}

/// The middleware that puts the [`Caller`] into each request, or answers 401 (or 429).
pub async fn require(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Result<Response, Error> {
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(wait) = ip.and_then(|ip| auth.brake.wait_for(ip)) {
        return Err(Error::slow_down(wait));
    }
    let header = request.headers().get(AUTHORIZATION).map(|v| v.to_str().unwrap_or("").to_owned());
    let mut result = identify(&auth.synced.table(), header.as_deref());
    if result.as_ref().is_err_and(|e| e.id == Error::bad_credentials().id) {
        // Issued through another node a moment ago? Wait briefly for the watch to bring it,
        // without asking the store: a wrong credential must cost no store round trip.
        let again = auth.synced.look_again(|table| identify(table, header.as_deref()).ok()).await;
        if let Some(caller) = again {
            result = Ok(caller);
        }
    }
    if let Some(ip) = ip {
        // Only a wrong credential is a guess; a request without one is not.
        auth.brake.record(ip, result.as_ref().is_err_and(|e| e.id == Error::bad_credentials().id));
    }
    let (caller, actor) = result?;
    request.extensions_mut().insert(caller);
    let origin = Origin { actor, client: ip.map(|ip| ip.to_string()), node: Some(auth.node.clone()) };
    Ok(audit::acting(origin, next.run(request)).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clever_oauth_plaintext() {
        let header = r#"OAuth oauth_consumer_key="key", oauth_token="tok", oauth_signature_method="PLAINTEXT", oauth_signature="consumer%26s%2Fecret""#;
        assert_eq!(parse(header), Some(Presented::OAuth { token: "tok".into(), secret: "s/ecret".into() }));
    }

    #[test]
    fn failures_beyond_the_free_ones_wait_longer_and_longer() {
        assert_eq!(penalty(FREE_FAILURES - 1), None);
        assert_eq!(penalty(FREE_FAILURES), Some(Duration::from_secs(1)));
        assert_eq!(penalty(FREE_FAILURES + 2), Some(Duration::from_secs(4)));
        assert_eq!(penalty(FREE_FAILURES + 40), Some(MAX_WAIT));
    }

    #[test]
    fn the_brake_holds_against_many_addresses() {
        let auth = Brake::default();
        let braked: IpAddr = "2001:db8:1:2::7".parse().unwrap();
        for _ in 0..FREE_FAILURES + 1 {
            auth.record(braked, true);
        }
        assert!(auth.wait_for(braked).is_some());
        // Another address of the same /64 is the same subscriber.
        assert!(auth.wait_for("2001:db8:1:2:ffff::1".parse().unwrap()).is_some());
        // Failures from more /64s than the table holds do not wash the brake away.
        for i in 0..(MAX_TRACKED as u128 + 500) {
            auth.record(IpAddr::V6((0x2001_0db8_9000_0000_0000_0000_0000_0001u128 + (i << 64)).into()), true);
        }
        assert!(auth.wait_for(braked).is_some(), "the braked prefix is still braked");
        assert!(auth.failures.lock().unwrap().len() <= MAX_TRACKED);
        // Nor does a success from it.
        auth.record(braked, false);
        assert!(auth.wait_for(braked).is_some());
    }

    #[test]
    fn parses_bearer_and_rejects_others() {
        assert_eq!(parse("Bearer abc"), Some(Presented::Bearer("abc".into())));
        assert_eq!(parse("Basic abc"), None);
        assert_eq!(parse("Bearer "), None);
        assert_eq!(parse(r#"OAuth oauth_token="t""#), None);
    }
}
