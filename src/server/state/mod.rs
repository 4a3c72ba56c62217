//! The state: what this node believes, and how it stays true to the store.
//!
//! The store ([`store`], SQLite or etcd) is the truth, shared by every node. The table
//! ([`table`]) is this node's copy of it, loaded from a snapshot and then moved forward only
//! by the store's changes, each applied as a diff ([`sync`] follows the store). The live
//! ports ([`live`]) follow those diffs: a change redoes the ports it touches and no others.
//! A full reconcile of every port against the whole table runs at start, after a reload and
//! periodically, as the safety net of the diff path. The state may use the data plane
//! (listeners, workers, pools, counters), never the control plane above it.

pub(super) mod heap;
pub(super) mod live;
pub(super) mod rows;
pub(super) mod store;
pub(super) mod sync;
pub(super) mod table;

/// Now, in Unix seconds: what the state stamps on records (a node's last word, a
/// credential's creation).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
