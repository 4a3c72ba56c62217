//! Webhook delivery (issue 35): the worker the server starts, which posts each
//! organisation's events to its webhooks, in order, at least once, signed.
//!
//! Nothing is queued in memory: each webhook's task reads the events after the webhook's
//! `delivered` id from the store's trail, a page at a time, and writes the new position
//! back after each event, so a restart (even `kill -9`) resumes where the store says: an
//! event whose delivery was under way is sent again (at least once), none is lost. A
//! failed attempt is retried with a doubling backoff ([`FIRST_RETRY`] to [`MAX_RETRY`]) for
//! the configured time ([`DeliverySettings::give_up_after`]), then listed as failed and
//! passed; the webhook's next events wait for it meanwhile (in order per endpoint).
//!
//! Only the node that holds the store's `webhooks` role delivers (SQLite's single node
//! always; in a fleet, one node at a time, [`crate::server::state::store::webhook`]). Each
//! webhook has a task of its own and every post has a timeout, so a slow or dead receiver
//! delays only its own webhook's deliveries, never the API (which only writes the trail)
//! nor the data plane (other threads altogether).
//!
//! A delivery is `POST URL` with the event's JSON as body and three headers, as GitHub and
//! Stripe sign theirs: `X-Tcp-Redirs-Event` (the event's id), `X-Tcp-Redirs-Timestamp`
//! (Unix seconds) and `X-Tcp-Redirs-Signature: sha256=HEX`, the HMAC-SHA256 with the
//! webhook's secret of `TIMESTAMP.BODY`. A receiver recomputes it, compares in constant
//! time, and refuses a timestamp too far from its clock (a replay).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::server::state::store::audit::{self, EventQuery};
use crate::server::state::store::webhook::{WebhookRecord, MAX_FAILED};
use crate::server::state::store::{Conflict, StoreError};
use crate::server::state::sync::Synced;
use crate::wire::{AuditEvent, DeliveryState, FailedDelivery, PendingDelivery};

/// The role whose holder delivers.
const ROLE: &str = "webhooks";
/// How long a node holds the role without renewing it.
const ROLE_TERM: Duration = Duration::from_secs(15);
/// How often the role is renewed and the list of webhooks read again.
const ROLE_EVERY: Duration = Duration::from_secs(2);
/// The first pause after a failed attempt; each next one doubles.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// Events read from the trail at a time, per webhook.
const PAGE: usize = 100;
/// The longest a webhook with nothing to deliver waits before looking again, when no change
/// of this node's table wakes it.
const IDLE: Duration = Duration::from_secs(2);

/// How deliveries are made (the config file's `[webhooks]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// How long one post may take.
    pub timeout: Duration,
    /// How long an event is retried before it is listed as failed.
    pub give_up_after: Duration,
}

impl Default for DeliverySettings {
    /// 10 s per post; a day of retries.
    fn default() -> DeliverySettings {
        DeliverySettings { timeout: Duration::from_secs(10), give_up_after: Duration::from_secs(86_400) }
    }
}

/// Starts the worker on this node, until the node stops following the store.
pub fn start(synced: Arc<Synced>, node: String, settings: DeliverySettings) {
    let http = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tcp-redirs-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            return warn!(%error, "cannot make the webhooks' HTTP client: no webhook will be delivered")
        }
    };
    let worker = Arc::new(Worker { synced, node, settings, http });
    tokio::spawn(worker.run());
}

struct Worker {
    synced: Arc<Synced>,
    node: String,
    settings: DeliverySettings,
    http: reqwest::Client,
}

impl Worker {
    /// Holds the role, and keeps one task per webhook while it does.
    async fn run(self: Arc<Self>) {
        let stop = self.synced.stopped();
        let mut tasks: HashMap<String, CancellationToken> = HashMap::new();
        let mut leading = false;
        loop {
            let store = self.synced.store();
            let held = store.hold_role(ROLE, &self.node, ROLE_TERM).await.unwrap_or(false);
            if held != leading {
                info!(node = %self.node, "webhook deliveries {} on this node", if held { "run" } else { "stop" });
                leading = held;
            }
            let hooks = if held { store.webhooks().await.ok() } else { Some(Vec::new()) };
            if let Some(hooks) = hooks {
                tasks.retain(|id, token| {
                    let keep = hooks.iter().any(|h| &h.info.id == id);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for hook in hooks {
                    if !tasks.contains_key(&hook.info.id) {
                        let token = stop.child_token();
                        tasks.insert(hook.info.id.clone(), token.clone());
                        tokio::spawn(self.clone().deliver_all(hook, token));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(ROLE_EVERY) => {}
                _ = stop.cancelled() => break,
            }
        }
        for token in tasks.values() {
            token.cancel();
        }
    }

    /// Delivers the webhook's events in order, until `stop`.
    async fn deliver_all(self: Arc<Self>, hook: WebhookRecord, stop: CancellationToken) {
        let mut state = hook.info.delivery.clone();
        let query = |after| EventQuery {
            org_id: Some(hook.info.owner_id.clone()),
            after: Some(after),
            kinds: hook.info.kinds.clone(),
            limit: PAGE,
            ..EventQuery::default()
        };
        let mut applied = self.synced.applied();
        loop {
            let events = match self.synced.store().events(&query(state.delivered)).await {
                Ok(events) => events,
                Err(error) => {
                    warn!(webhook = %hook.info.id, %error, "cannot read the trail for a webhook; trying again");
                    Vec::new()
                }
            };
            if events.is_empty() {
                tokio::select! {
                    _ = applied.changed() => {}
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
            for event in events {
                let Some(next) = self.deliver_one(&hook, &event, state.clone(), &stop).await else { return };
                state = next;
                match self.synced.store().save_delivery(&hook.info.id, &state).await {
                    Ok(()) => {}
                    // Removed meanwhile: nothing more to deliver.
                    Err(StoreError::Conflict(Conflict::NotFound)) => return,
                    Err(error) => {
                        warn!(webhook = %hook.info.id, %error, "cannot save a webhook's position; the event may be sent again")
                    }
                }
            }
        }
    }

    /// Posts `event` until it is accepted or given up; the state after it (`None`: stopped).
    async fn deliver_one(
        &self,
        hook: &WebhookRecord,
        event: &AuditEvent,
        mut state: DeliveryState,
        stop: &CancellationToken,
    ) -> Option<DeliveryState> {
        let body = serde_json::to_vec(event).unwrap_or_default();
        // A delivery under way before a restart goes on counting from its first attempt.
        let (mut attempts, since) = match &state.pending {
            Some(p) if p.event_id == event.id => (p.attempts, p.since),
            _ => (0, audit::now_ms()),
        };
        let give_up = since + i64::try_from(self.settings.give_up_after.as_millis()).unwrap_or(i64::MAX / 2);
        loop {
            attempts += 1;
            let outcome = tokio::select! {
                outcome = self.post(hook, event.id, &body) => outcome,
                _ = stop.cancelled() => return None,
            };
            let error = match outcome {
                Ok(()) => {
                    state.delivered = event.id;
                    state.pending = None;
                    return Some(state);
                }
                Err(error) => error,
            };
            if audit::now_ms() >= give_up {
                warn!(webhook = %hook.info.id, event = event.id, attempts, %error, "webhook delivery given up");
                state.failed.push(FailedDelivery {
                    event_id: event.id,
                    at: audit::now_ms(),
                    attempts,
                    error,
                });
                let excess = state.failed.len().saturating_sub(MAX_FAILED);
                state.failed.drain(..excess);
                state.delivered = event.id;
                state.pending = None;
                return Some(state);
            }
            state.pending = Some(PendingDelivery { event_id: event.id, attempts, since, last_error: error });
            if let Err(StoreError::Conflict(Conflict::NotFound)) =
                self.synced.store().save_delivery(&hook.info.id, &state).await
            {
                return None;
            }
            let pause = FIRST_RETRY.saturating_mul(1 << attempts.min(16).saturating_sub(1)).min(MAX_RETRY);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// One signed post; why it failed.
    async fn post(&self, hook: &WebhookRecord, event_id: i64, body: &[u8]) -> Result<(), String> {
        let timestamp = audit::now_ms() / 1000;
        let response = self
            .http
            .post(&hook.info.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Tcp-Redirs-Event", event_id.to_string())
            .header("X-Tcp-Redirs-Timestamp", timestamp.to_string())
            .header("X-Tcp-Redirs-Signature", signature(&hook.secret, timestamp, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| {
                let root = std::iter::successors(std::error::Error::source(&e), |e| e.source()).last();
                match root {
                    Some(root) => format!("{e}: {root}"),
                    None => e.to_string(),
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {status}"))
        }
    }
}

/// `sha256=HEX`: the HMAC-SHA256 with `secret` of `TIMESTAMP.BODY`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    /// The signature is the HMAC-SHA256 of `TIMESTAMP.BODY`, and the HMAC the standard one.
    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{\"id\":1}");
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(super::signature("key", 1_700_000_000, b"{\"id\":1}"), want);
        // RFC 4231 test case 2, as a check that the HMAC itself is the standard one.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
