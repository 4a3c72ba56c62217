//! Admission: whether a connection just accepted on a public port may go on.
//!
//! Four rules, in this order: the access list ([`Access`]), the limits per client address
//! (`maxConnectionsPerClient`, `maxConnectionsPerSecondPerClient`: [`super::per_client`]),
//! the redirection's `maxConnections` (connections open at once), and its
//! `maxConnectionsPerSecond` (a token bucket with a burst of one second). The client's
//! limits come before the redirection's, so that a client refused for its own excess
//! spends none of the redirection's budget. A refused connection is reset at once by the
//! accept loop and counted under its reason; an admitted one is counted open in the
//! accepting thread's slot of the redirection's counters ([`super::metrics::Traffic`]).
//!
//! Only the limits a port sets cost anything shared between threads: `maxConnections`
//! sums the threads' open counts, the rate's bucket is one per port behind a lock, and the
//! table of client addresses a sharded lock ([`super::limited`]). An admitted connection
//! of a port with a limit per client or a bandwidth limit holds what it needs in a
//! [`Held`], boxed; any other holds `None`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use once_cell::race::OnceBox;

use super::conn_log::End;
use super::limited::{Held, Limited};
use super::metrics::RedirMetrics;
use super::per_client::Refused;
use crate::server::spec::{Access, Quotas};

/// A port's admission state: the new-connection budget, shared by its accept loops.
#[derive(Default)]
pub struct Admission {
    /// Made at the first connection of a port that sets a rate, so that the many ports that
    /// set none carry one pointer (a `OnceBox`) rather than the bucket and its lock (issue
    /// 32's memory per redirection).
    rate: OnceBox<Mutex<Option<RateLimit>>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The access list refused the client.
    Denied,
    /// The redirection had `maxConnections` open.
    MaxConnections,
    /// The client came over `maxConnectionsPerSecond`.
    RateLimited,
    /// The client's address had `maxConnectionsPerClient` open, came over
    /// `maxConnectionsPerSecondPerClient`, or the table of addresses was full.
    PerClient(Refused),
}

impl Refusal {
    /// The reason, for the debug log.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Denied => "refused by the access list",
            Refusal::MaxConnections => "refused: the redirection is at its maxConnections",
            Refusal::RateLimited => "refused: over maxConnectionsPerSecond",
            Refusal::PerClient(Refused::Open) => "refused: the client's address is at maxConnectionsPerClient",
            Refusal::PerClient(Refused::Rate) => "refused: the client's address is over maxConnectionsPerSecondPerClient",
            Refusal::PerClient(Refused::TableFull) => {
                "refused: the redirection's table of client addresses is full of addresses with connections open"
            }
        }
    }

    /// How the connection log names it.
    pub fn end(self) -> End {
        match self {
            Refusal::Denied => End::Denied,
            Refusal::MaxConnections => End::MaxConnections,
            Refusal::RateLimited => End::RateLimited,
            Refusal::PerClient(Refused::Open) => End::MaxConnectionsPerClient,
            Refusal::PerClient(Refused::Rate) => End::RateLimitedPerClient,
            Refusal::PerClient(Refused::TableFull) => End::ClientTableFull,
        }
    }
}

impl Admission {
    /// Why a connection from `peer` is refused, if it is (counted under its reason); if
    /// not, it is counted accepted and open on this thread, and the caller must close it
    /// in the same slot when it ends, and keep what it holds for the limits per client and
    /// the bandwidth (`Some` only when a port sets one) until then.
    pub fn admit(
        &self,
        peer: SocketAddr,
        quotas: Quotas,
        access: &Access,
        metrics: &RedirMetrics,
    ) -> Result<Option<Box<Held>>, Refusal> {
        if !access.admits(peer.ip()) {
            metrics.rare().denied.inc();
            return Err(Refusal::Denied);
        }
        let held = if quotas.per_client() || quotas.bandwidth_limit.is_some() {
            let limited = Limited::of(&metrics.limited);
            let client = if quotas.per_client() {
                let admitted = limited.clients().admit(
                    peer.ip(),
                    quotas.max_connections_per_client,
                    quotas.max_connections_per_second_per_client,
                );
                match admitted {
                    Ok(guard) => Some(guard),
                    Err(why) => {
                        limited.refused(why);
                        return Err(Refusal::PerClient(why));
                    }
                }
            } else {
                None
            };
            let bandwidth = quotas.bandwidth_limit.map(|rate| limited.bandwidth(rate));
            Some(Box::new(Held { client, bandwidth }))
        } else {
            None
        };
        // From here a refusal drops `held`, which counts the client's connection closed.
        let slot = metrics.traffic.mine();
        // Counted open before the limit is checked: of two threads admitting at once, at
        // least one sees the other's connection (see `Traffic::active_now`).
        slot.open();
        if quotas.max_connections.is_some_and(|max| metrics.traffic.active_now() > i64::from(max)) {
            slot.close();
            metrics.rare().over_capacity.inc();
            return Err(Refusal::MaxConnections);
        }
        if let Some(rate) = quotas.max_connections_per_second {
            let rate_cell = self.rate.get_or_init(|| Box::new(Mutex::new(None)));
            let mut bucket = rate_cell.lock().unwrap_or_else(|e| e.into_inner());
            let bucket = match bucket.as_mut() {
                Some(b) if b.per_second == rate => b,
                // First use, or the rate changed with a config reload.
                _ => bucket.insert(RateLimit::new(rate)),
            };
            if !bucket.admit() {
                slot.close();
                metrics.rare().rate_limited.inc();
                return Err(Refusal::RateLimited);
            }
        }
        slot.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(held)
    }
}

/// A token bucket over new connections: `rate` per second, with a burst of one second.
struct RateLimit {
    per_second: u32,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        let rate = f64::from(per_second);
        RateLimit { per_second, rate, tokens: rate, last: Instant::now() }
    }

    fn admit(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
