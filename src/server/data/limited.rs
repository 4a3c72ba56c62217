//! A redirection's state for its limits per client address ([`super::per_client`]) and its
//! bandwidth limit ([`super::bandwidth`]), with their counters.
//!
//! It hangs off the redirection's metrics ([`super::metrics::RedirMetrics::limited`]), one pointer that
//! stays null until a connection of a port that sets one of these limits arrives: the
//! 100,000 redirections of a node that set none pay 8 bytes each and no allocation. Being
//! the redirection's, not a listener's, it is shared by every forwarding thread, by the
//! accept loops of bound and steered ports alike, and by a UDP port's per-thread tables.
//! Once made it lives as long as the redirection's metrics, so that an update that unsets
//! and sets a limit again finds the same counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;

use super::bandwidth::Bandwidth;
use super::per_client::{PerClient, Refused};

/// The state and counters of a redirection's limits per client and of its bandwidth.
#[derive(Debug, Default)]
pub struct Limited {
    /// The table of client addresses, made at the first connection that needs it.
    clients: OnceLock<Arc<PerClient>>,
    /// The bandwidth buckets, made at the first connection under a bandwidth limit.
    bandwidth: OnceLock<Arc<Bandwidth>>,
    /// Connections (UDP: datagrams that would have started a flow) refused, by
    /// [`Refused`] in its order: over the cap per client, over the rate per client, the
    /// table full.
    refused: [AtomicU64; 3],
}

/// What an admitted connection holds for these limits, for its whole life: its place in
/// its client's count, and its redirection's bandwidth. Boxed, and only when a limit is
/// set: a connection without them carries a null pointer.
#[derive(Debug, Default)]
pub struct Held {
    /// Counted open for its client address until dropped (held for its drop alone).
    #[allow(dead_code)]
    pub client: Option<super::per_client::ClientGuard>,
    /// The redirection's bandwidth buckets, shared with its other connections.
    pub bandwidth: Option<Arc<Bandwidth>>,
}

impl Limited {
    /// The redirection's state in `slot` (its metrics' [`super::metrics::RedirMetrics::limited`]),
    /// made now if it is the first connection that needs it.
    pub fn of(slot: &ArcSwapOption<Limited>) -> Arc<Limited> {
        if let Some(made) = slot.load_full() {
            return made;
        }
        let fresh = Arc::new(Limited::default());
        // Two threads may race to make it: the first one stored wins, for both.
        let previous = slot.compare_and_swap(&None::<Arc<Limited>>, Some(fresh.clone()));
        match &*previous {
            Some(won) => won.clone(),
            None => fresh,
        }
    }

    /// The redirection's state if it was made.
    pub fn made(slot: &ArcSwapOption<Limited>) -> Option<Arc<Limited>> {
        slot.load_full()
    }

    /// The table of client addresses.
    pub fn clients(&self) -> &Arc<PerClient> {
        self.clients.get_or_init(Arc::default)
    }

    /// The bandwidth buckets at `rate` bytes per second (a new rate is set on the same
    /// buckets: see [`super::bandwidth`]).
    pub fn bandwidth(&self, rate: u64) -> Arc<Bandwidth> {
        let buckets = self.bandwidth.get_or_init(|| Arc::new(Bandwidth::new(rate)));
        if buckets.rate() != rate {
            buckets.set_rate(rate);
        }
        buckets.clone()
    }

    /// Counts a refusal.
    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The refusals counted for `why`.
    pub fn refusals(&self, why: Refused) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// How many client addresses the table holds (0 before it is made).
    pub fn addresses(&self) -> usize {
        self.clients.get().map_or(0, |t| t.len())
    }

    /// The bandwidth buckets, if a connection was ever limited.
    pub fn buckets(&self) -> Option<&Arc<Bandwidth>> {
        self.bandwidth.get()
    }
}
