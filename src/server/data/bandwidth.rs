//! A redirection's bandwidth limit (`bandwidthLimit`): at most so many bytes per second in
//! each direction, shared by all its connections on every forwarding thread, with a burst
//! of one second.
//!
//! Each direction is a token bucket kept as one atomic, the GCRA way: the time at which
//! the bucket would be full again (`full_at`, in nanoseconds since the limit's start).
//! Taking `n` bytes moves it `n / rate` seconds later; the bucket holds `burst - (full_at -
//! now)` worth of bytes, the burst being one second. A take is one compare-and-swap, no
//! lock, so that connections on several threads share the limit without meeting on a
//! mutex. A pump ([`super::copy`]) asks for a grant before each read or splice, moves at
//! most what it was granted, and gives back what it did not use; when the bucket is empty
//! it is told how long to wait, sleeps, and counts one throttle
//! (`tcp_redirs_bandwidth_throttled`).
//!
//! Choices:
//! - **The bucket starts empty.** A burst is earned by a second of silence: a new limit
//!   (or a new redirection) moves its first bytes at the rate, so that N bytes take about
//!   N / rate seconds from the start, as an operator who sets a limit expects; a
//!   redirection idle for a second may then move a second's worth at once.
//! - **Smallest grant.** A nearly empty bucket does not hand out a few bytes at a time: a
//!   pump waits until [`Bandwidth::chunk`] bytes (1/64 of the rate, from 512 bytes to
//!   16 KiB) are there, so a throttled connection makes one system call per 15 ms or so,
//!   not one per byte.
//! - **A change of the limit in place** (`tcp-redirs update`) sets the new rate on the
//!   same buckets: every connection sharing them, open ones included, moves at the new
//!   rate at once; the limit is the redirection's as a whole. Unset, new connections are
//!   unlimited and connections opened under the limit keep it until they end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One second, the burst, in nanoseconds.
const BURST_NS: u64 = 1_000_000_000;

/// The two directions of a redirection's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the application.
    In = 0,
    /// From the application to the client.
    Out = 1,
}

/// A redirection's bandwidth limit, each direction a bucket; shared by its connections.
#[derive(Debug)]
pub struct Bandwidth {
    /// Bytes per second.
    rate: AtomicU64,
    epoch: Instant,
    /// Per direction, when the bucket would be full again (ns since `epoch`).
    full_at: [AtomicU64; 2],
    /// Per direction, how many times a pump had to wait.
    throttled: [AtomicU64; 2],
}

/// What a pump may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Move at most this many bytes (at least one), then give back what was not moved.
    Bytes(usize),
    /// Wait this long, then ask again.
    Wait(Duration),
}

impl Bandwidth {
    /// A limit of `rate` bytes per second each way, its buckets empty.
    pub fn new(rate: u64) -> Bandwidth {
        let rate = rate.max(1);
        Bandwidth {
            rate: AtomicU64::new(rate),
            epoch: Instant::now(),
            // Empty: full one burst from now.
            full_at: [AtomicU64::new(BURST_NS), AtomicU64::new(BURST_NS)],
            throttled: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The rate in force, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Sets a new rate, for every connection sharing the buckets.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate.max(1), Ordering::Relaxed);
    }

    /// How many times pumps waited for the bucket of `direction`.
    pub fn throttled(&self, direction: Direction) -> u64 {
        self.throttled[direction as usize].load(Ordering::Relaxed)
    }

    /// The smallest grant worth a system call: 1/64 of a second's bytes, from 512 bytes to
    /// 16 KiB.
    fn chunk(rate: u64) -> u64 {
        (rate / 64).clamp(512, 16 * 1024)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Asks for up to `want` bytes in `direction`.
    pub fn grant(&self, direction: Direction, want: usize) -> Grant {
        let rate = self.rate();
        let bucket = &self.full_at[direction as usize];
        let want = want.max(1) as u64;
        let smallest = want.min(Self::chunk(rate));
        let now = self.now_ns();
        let mut full_at = bucket.load(Ordering::Relaxed);
        loop {
            let base = full_at.max(now);
            // What the bucket holds: the part of the burst not yet owed.
            let room_ns = (now + BURST_NS).saturating_sub(base);
            let room = (u128::from(room_ns) * u128::from(rate) / 1_000_000_000) as u64;
            if room < smallest {
                let short_ns =
                    (u128::from(smallest - room) * 1_000_000_000).div_ceil(u128::from(rate)) as u64;
                self.throttled[direction as usize].fetch_add(1, Ordering::Relaxed);
                return Grant::Wait(Duration::from_nanos(short_ns.max(1_000_000)));
            }
            let granted = room.min(want);
            let cost = (u128::from(granted) * 1_000_000_000).div_ceil(u128::from(rate)) as u64;
            match bucket.compare_exchange_weak(full_at, base + cost, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Grant::Bytes(granted as usize),
                Err(current) => full_at = current,
            }
        }
    }

    /// Gives back `unused` bytes of a grant that were not moved.
    pub fn give_back(&self, direction: Direction, unused: usize) {
        if unused == 0 {
            return;
        }
        let rate = self.rate();
        let cost = (u128::from(unused as u64) * 1_000_000_000 / u128::from(rate)) as u64;
        let _ = self.full_at[direction as usize]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |at| Some(at.saturating_sub(cost)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(g: Grant) -> usize {
        match g {
            Grant::Bytes(n) => n,
            Grant::Wait(w) => panic!("told to wait {w:?}"),
        }
    }

    #[test]
    fn an_empty_bucket_says_how_long_to_wait() {
        let b = Bandwidth::new(1_000_000);
        match b.grant(Direction::In, 65536) {
            Grant::Wait(w) => assert!(w <= Duration::from_millis(20), "{w:?}"),
            Grant::Bytes(n) => assert!(n <= 20_000, "a new limit starts empty, gave {n}"),
        }
        std::thread::sleep(Duration::from_millis(100));
        let n = bytes(b.grant(Direction::In, 1 << 20));
        assert!((80_000..=200_000).contains(&n), "about 100 ms worth: {n}");
        assert!(matches!(b.grant(Direction::In, 1 << 20), Grant::Wait(_)));
        assert!(b.throttled(Direction::In) >= 1, "a wait counts as a throttle");
        assert_eq!(b.throttled(Direction::Out), 0, "each direction its own");
    }

    #[test]
    fn what_is_given_back_can_be_taken_again() {
        let b = Bandwidth::new(1_000_000);
        std::thread::sleep(Duration::from_millis(50));
        let n = bytes(b.grant(Direction::Out, 1 << 20));
        b.give_back(Direction::Out, n);
        let again = bytes(b.grant(Direction::Out, 1 << 20));
        assert!(again + 2000 >= n, "{again} after giving back {n}");
    }

    #[test]
    fn the_burst_is_one_second() {
        let b = Bandwidth::new(10_000);
        std::thread::sleep(Duration::from_millis(1300));
        let n = bytes(b.grant(Direction::In, 1 << 20));
        assert!((10_000..=10_100).contains(&n), "one second's worth, not more: {n}");
    }
}
