//! Limits per client address: `maxConnectionsPerClient` (connections, or UDP flows, open at
//! once from one address) and `maxConnectionsPerSecondPerClient` (new ones per second from
//! one address, a token bucket with a burst of one second).
//!
//! A port that sets either keeps a table of the addresses it has seen ([`PerClient`]),
//! made at the first connection that needs it: a port without them holds one null pointer
//! ([`super::admission::Admission`]). An IPv4 client is its address; an IPv6 client is its
//! /64, as the API's credential brake counts it, since one host commonly holds a whole /64.
//!
//! **Bounded memory.** The table never holds more than [`CAPACITY`] addresses, whatever
//! the clients do: it is [`SHARDS`] shards of at most [`SHARD_CAPACITY`] entries each, an
//! address's shard chosen by a keyed hash (SipHash with a random key: a client cannot aim
//! its addresses at one shard). A new address in a full shard evicts the entry of that
//! shard **seen least recently among those with no connection open**: an address with
//! open connections is never forgotten, since its count is what the cap enforces, and an
//! evicted address only loses its rate bucket (it comes back with a full one). When every
//! entry of the shard has connections open, the new address is refused
//! ([`Refused::TableFull`], reason `client_table_full`), as nginx's `limit_conn` refuses
//! when its zone is full: admitting it untracked would let one address past its cap. An
//! entry is 32 bytes (and a control byte) in a bucket of the shard's hash table, whose
//! 2,048 buckets it never outgrows ([`SHARD_CAPACITY`]): at most 16 x 66 KiB, about 1 MiB
//! per redirection that sets a limit per client.
//!
//! **Threads.** The forwarding threads share the table; a shard is behind a mutex held
//! for one hash lookup (and, in a full shard, one scan of it) per admitted connection and
//! one decrement when it ends, never per byte. With 16 shards, two threads rarely meet.

use std::collections::hash_map::{Entry as Slot, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How many shards a table has (a power of two).
pub const SHARDS: usize = 16;
/// The most addresses one shard holds. Evictions leave tombstones in the shard's hash
/// table (hashbrown), which it clears by rehashing in place when it holds at most half
/// its room, else by doubling: with at most 895 entries, a table of 2,048 buckets (room
/// for 1,792) always rehashes in place, so a shard never grows past 2,048 buckets of 33
/// bytes, whatever the churn (`a_flood_of_addresses_stays_within_the_capacity`).
pub const SHARD_CAPACITY: usize = 895;
/// The most addresses a table holds: 14,320 (the metrics' help and the docs say it).
#[cfg_attr(not(test), allow(dead_code))]
pub const CAPACITY: usize = SHARDS * SHARD_CAPACITY;

/// A client as the limits count it: an IPv4 address, or an IPv6 /64 (both as 128 bits).
pub type Key = u128;

/// The key of a client address: IPv4 (and IPv4-mapped IPv6) as itself, IPv6 as its /64.
pub fn key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !((1u128 << 64) - 1),
        },
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It has `maxConnectionsPerClient` open.
    Open,
    /// It came over `maxConnectionsPerSecondPerClient`.
    Rate,
    /// The table is full of addresses with connections open.
    TableFull,
}

/// What the table knows of one address: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When it was last seen (and the bucket last refilled), in ms since the table's start.
    seen_ms: u64,
    /// The rate bucket, in thousandths of a connection, refilled every millisecond (at
    /// most [`crate::wire::MAX_QUOTA`] x 1000, which fits).
    milli: u32,
    /// Connections (or flows) open now.
    open: u32,
}

/// A port's table of client addresses, shared by its forwarding threads.
#[derive(Debug)]
pub struct PerClient {
    shards: [Mutex<HashMap<Key, Entry>>; SHARDS],
    hasher: RandomState,
    epoch: Instant,
    /// Addresses held, for the metrics (summed over the shards as they change).
    len: AtomicUsize,
}

impl Default for PerClient {
    fn default() -> Self {
        PerClient {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            len: AtomicUsize::new(0),
        }
    }
}

impl PerClient {
    /// How many addresses the table holds now (at most [`CAPACITY`]).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn shard(&self, key: Key) -> &Mutex<HashMap<Key, Entry>> {
        let hash = self.hasher.hash_one(key) as usize;
        &self.shards[hash % SHARDS]
    }

    /// Admits a new connection from `ip` under these limits, counting it open until the
    /// guard drops; or says why not.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max_open: Option<u32>,
        per_second: Option<u32>,
    ) -> Result<ClientGuard, Refused> {
        let key = key(ip);
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if !shard.contains_key(&key) && shard.len() >= SHARD_CAPACITY {
            // Full: forget the address seen least recently among those with nothing open.
            let oldest =
                shard.iter().filter(|(_, e)| e.open == 0).min_by_key(|(_, e)| e.seen_ms).map(|(k, _)| *k);
            match oldest {
                Some(old) => {
                    shard.remove(&old);
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                None => return Err(Refused::TableFull),
            }
        }
        let entry = match shard.entry(key) {
            Slot::Occupied(o) => o.into_mut(),
            Slot::Vacant(v) => {
                self.len.fetch_add(1, Ordering::Relaxed);
                // A new address starts with a full bucket (the burst of one second).
                v.insert(Entry { open: 0, milli: per_second.map_or(0, full), seen_ms: now_ms })
            }
        };
        if let Some(rate) = per_second {
            let refill = now_ms.saturating_sub(entry.seen_ms).saturating_mul(u64::from(rate));
            entry.milli = u64::from(entry.milli).saturating_add(refill).min(u64::from(full(rate))) as u32;
        }
        entry.seen_ms = now_ms;
        if max_open.is_some_and(|max| entry.open >= max) {
            return Err(Refused::Open);
        }
        if per_second.is_some() {
            if entry.milli < 1000 {
                return Err(Refused::Rate);
            }
            entry.milli -= 1000;
        }
        entry.open += 1;
        Ok(ClientGuard { table: self.clone(), key })
    }

    /// Counts a connection of `key` closed.
    fn close(&self, key: Key) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
            // Its last connection ending counts as seen: it is evicted after the idle ones.
            entry.seen_ms = entry.seen_ms.max(now_ms);
        }
    }

    /// The most any shard's hash table holds without growing (tests).
    #[cfg(test)]
    fn largest_shard_capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().capacity()).max().unwrap_or(0)
    }

    /// How many connections `ip` has open (tests).
    #[cfg(test)]
    fn open_of(&self, ip: IpAddr) -> Option<u32> {
        let key = key(ip);
        self.shard(key).lock().unwrap().get(&key).map(|e| e.open)
    }
}

/// A full rate bucket: one second of `rate`, in thousandths (the bound on a quota keeps
/// it from saturating).
fn full(rate: u32) -> u32 {
    rate.saturating_mul(1000)
}

/// A connection counted open for its client address; counted closed when dropped.
pub struct ClientGuard {
    table: Arc<PerClient>,
    key: Key,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.table.close(self.key);
    }
}

impl std::fmt::Debug for ClientGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientGuard").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(key(mapped), key("192.0.2.1".parse().unwrap()), "a mapped IPv4 client is itself");
        assert_ne!(key("192.0.2.1".parse().unwrap()), key("192.0.2.2".parse().unwrap()));
        assert_ne!(key(IpAddr::V6(Ipv6Addr::LOCALHOST)), key("0.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_cap_counts_each_address_on_its_own() {
        let table = Arc::new(PerClient::default());
        let a = table.admit(v4(1), Some(2), None).unwrap();
        let _b = table.admit(v4(1), Some(2), None).unwrap();
        assert_eq!(table.admit(v4(1), Some(2), None).unwrap_err(), Refused::Open);
        let _other = table.admit(v4(2), Some(2), None).expect("another address still gets in");
        drop(a);
        assert_eq!(table.open_of(v4(1)), Some(1));
        let _c = table.admit(v4(1), Some(2), None).expect("a slot freed by a close");
    }

    #[test]
    fn the_rate_is_per_address_with_a_burst_of_one_second() {
        let table = Arc::new(PerClient::default());
        for _ in 0..3 {
            drop(table.admit(v4(1), None, Some(3)).unwrap());
        }
        assert_eq!(table.admit(v4(1), None, Some(3)).unwrap_err(), Refused::Rate);
        assert!(table.admit(v4(2), None, Some(3)).is_ok(), "another address has its own bucket");
    }

    /// A flood of new addresses cannot grow the table past its capacity; addresses with
    /// connections open stay (their count is the cap), the idle ones are evicted.
    #[test]
    fn a_flood_of_addresses_stays_within_the_capacity() {
        let table = Arc::new(PerClient::default());
        let held: Vec<_> = (0..100).map(|n| table.admit(v4(n), Some(1), None).unwrap()).collect();
        for n in 100..(CAPACITY as u32 * 6) {
            drop(table.admit(v4(n), Some(1), None).unwrap());
        }
        assert!(table.len() <= CAPACITY, "{} addresses held", table.len());
        assert!(
            table.largest_shard_capacity() <= 2048 * 7 / 8,
            "a shard's hash table outgrew 2,048 buckets: room for {}",
            table.largest_shard_capacity()
        );
        assert_eq!(std::mem::size_of::<(Key, Entry)>(), 32, "a bucket's entry");
        for n in 0..100 {
            assert_eq!(table.open_of(v4(n)), Some(1), "an address with a connection open is kept");
            assert_eq!(table.admit(v4(n), Some(1), None).unwrap_err(), Refused::Open);
        }
        drop(held);
    }

    /// A table whose every entry has a connection open refuses a new address.
    #[test]
    fn a_table_full_of_open_addresses_refuses_a_new_one() {
        let table = Arc::new(PerClient::default());
        let mut held = Vec::new();
        let mut n = 0;
        let refused = loop {
            match table.admit(v4(n), None, None) {
                Ok(g) => held.push(g),
                Err(e) => break e,
            }
            n += 1;
        };
        assert_eq!(refused, Refused::TableFull);
        assert!(table.len() <= CAPACITY);
        held.pop();
        // The freed entry is evicted only if its shard is the new address's: try a few.
        let admitted = (0..CAPACITY as u32).any(|m| table.admit(v4(1_000_000 + m), None, None).is_ok());
        assert!(admitted, "an address fits again once a connection ends");
    }
}
