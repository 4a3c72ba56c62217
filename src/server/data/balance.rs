//! The instances of an application: which one takes a new connection, and which are up.
//!
//! New connections go to the instance with the fewest open connections per unit of weight
//! (least connections, weighted), ties broken in turn so that an idle application still
//! spreads its connections, as Scalingo spreads them over its `tcp` containers. An
//! instance of weight 0 takes no new connection (the Gateway API's TCPRoute convention) but
//! keeps the ones it has. A connection, once made, stays on its instance.
//!
//! Health is learnt from traffic and checked actively: a failed or timed-out connect marks
//! the instance down and the connection tries the next one; a down instance gets a TCP
//! connect every [`CHECK_EVERY`] and is up again as soon as one succeeds. When every
//! instance is down, they are still tried, in case the checks lag behind a recovery.
//!
//! One [`Health`] scheduler per node checks every down instance of every application: an
//! instance enters its list when it is marked down and leaves it when it is up again, so a
//! node of 9,000 healthy applications has no timer at all, and one with k instances down
//! wakes once per [`CHECK_EVERY`] for the k of them (a task per application would wake
//! 4,500 times a second to find nothing to check).
//!
//! The instance list can change at any time ([`Pool::set`]): instances that stay keep their
//! state and their connections; new ones start up.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::{ArcSwap, ArcSwapOption};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::wire::{Instance, InstanceState};

/// How often a down instance is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a check waits for the instance to accept.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a host name's addresses are used before they are looked up again.
///
/// The system resolver (`getaddrinfo`, so `/etc/hosts` and nsswitch apply) does not give
/// record TTLs; 30 s follows a DNS change within half a minute. A lookup that is due runs
/// in the background while connections keep using the addresses it will replace.
pub const DNS_CACHE: Duration = Duration::from_secs(30);

/// One instance and what the gateway knows of it.
#[derive(Debug)]
pub struct Member {
    /// `HOST:PORT`.
    pub address: String,
    /// The address itself when it is an IP address: nothing to look up.
    ip: Option<SocketAddr>,
    /// A host name's addresses, and when they were looked up.
    resolved: ArcSwapOption<Resolved>,
    /// Set while a background lookup runs.
    refreshing: AtomicBool,
    weight: u32,
    up: AtomicBool,
    active: AtomicU64,
    /// Where it goes to be checked when it is marked down.
    health: Arc<Health>,
}

#[derive(Debug)]
struct Resolved {
    addrs: Arc<[SocketAddr]>,
    at: Instant,
}

impl Member {
    fn new(instance: &Instance, health: &Arc<Health>) -> Member {
        Member {
            address: instance.address.clone(),
            ip: instance.address.parse().ok(),
            resolved: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            weight: instance.weight.unwrap_or(1),
            up: AtomicBool::new(true),
            active: AtomicU64::new(0),
            health: health.clone(),
        }
    }

    /// Marks the instance down after a failed connect; checks will bring it back.
    pub fn failed(self: &Arc<Self>) {
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(instance = %self.address, "instance marked down; checking it every {}s", CHECK_EVERY.as_secs());
            self.health.watch(self);
        }
    }

    /// The addresses to connect to: the IP address itself, or the host name's addresses,
    /// looked up at most every [`DNS_CACHE`] (see there).
    pub async fn addresses(self: &Arc<Self>) -> std::io::Result<Arc<[SocketAddr]>> {
        if let Some(ip) = self.ip {
            return Ok(Arc::new([ip]));
        }
        let Some(cached) = self.resolved.load_full() else {
            return self.look_up().await;
        };
        if cached.at.elapsed() >= DNS_CACHE && !self.refreshing.swap(true, Ordering::Relaxed) {
            let member = self.clone();
            tokio::spawn(async move {
                if let Err(err) = member.look_up().await {
                    warn!(instance = %member.address, error = %err, "cannot look the instance up again; keeping its addresses");
                }
                member.refreshing.store(false, Ordering::Relaxed);
            });
        }
        Ok(cached.addrs.clone())
    }

    /// The addresses to send to without waiting, for the UDP data plane, which makes a
    /// flow inside a receive batch: the IP address, or the host name's cached addresses
    /// (looked up again in the background when due); `None` while the first lookup of a
    /// name runs, which this starts.
    pub fn addresses_now(self: &Arc<Self>) -> Option<Arc<[SocketAddr]>> {
        if let Some(ip) = self.ip {
            return Some(Arc::new([ip]));
        }
        let cached = self.resolved.load_full();
        let due = cached.as_ref().is_none_or(|c| c.at.elapsed() >= DNS_CACHE);
        if due && !self.refreshing.swap(true, Ordering::Relaxed) {
            let member = self.clone();
            tokio::spawn(async move {
                if let Err(err) = member.look_up().await {
                    warn!(instance = %member.address, error = %err, "cannot look the instance up");
                }
                member.refreshing.store(false, Ordering::Relaxed);
            });
        }
        cached.map(|c| c.addrs.clone())
    }

    async fn look_up(&self) -> std::io::Result<Arc<[SocketAddr]>> {
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host(&self.address).await?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"));
        }
        self.resolved.store(Some(Arc::new(Resolved { addrs: addrs.clone(), at: Instant::now() })));
        Ok(addrs)
    }

    /// Counts a connection on this instance for as long as the guard lives.
    pub fn enter(self: &Arc<Self>) -> Open {
        self.up.store(true, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// The instance as the API shows it.
    pub fn describe(&self) -> Instance {
        Instance {
            address: self.address.clone(),
            weight: Some(self.weight),
            state: Some(if self.up.load(Ordering::Relaxed) {
                InstanceState::Up
            } else {
                InstanceState::Down
            }),
            active_connections: Some(self.active.load(Ordering::Relaxed)),
        }
    }
}

/// A connection counted on its instance.
pub struct Open(Arc<Member>);

impl Open {
    /// The instance's `HOST:PORT`.
    pub fn address(&self) -> &str {
        &self.0.address
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The instances of one application, shared by all its redirections.
///
/// A new connection reads the list without a lock (an `ArcSwap` load) and orders it
/// without allocating: [`Candidates`] picks the best instance not yet tried, one at a time,
/// which costs a pass over the list per attempt (lists are short, and the first attempt
/// almost always succeeds).
#[derive(Debug)]
pub struct Pool {
    members: ArcSwap<Vec<Arc<Member>>>,
    health: Arc<Health>,
}

impl Pool {
    /// A pool of these instances, all presumed up, checked by `health` when down.
    pub fn new(instances: &[Instance], health: &Arc<Health>) -> Pool {
        let members = instances.iter().map(|i| Arc::new(Member::new(i, health))).collect();
        Pool { members: ArcSwap::from_pointee(members), health: health.clone() }
    }

    /// Replaces the instances; those that stay (same address and weight) keep their state.
    pub fn set(&self, instances: &[Instance]) {
        let members = self.members.load();
        let next = instances
            .iter()
            .map(|i| {
                let weight = i.weight.unwrap_or(1);
                members
                    .iter()
                    .find(|m| m.address == i.address && m.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Member::new(i, &self.health)))
            })
            .collect();
        // One writer at a time: the reconciler applies table changes in order.
        self.members.store(Arc::new(next));
    }

    /// The instances now.
    pub fn members(&self) -> Arc<Vec<Arc<Member>>> {
        self.members.load_full()
    }

    /// The instances a new connection should try, best first: those up, by fewest open
    /// connections per unit of weight, then those down; never those of weight 0.
    pub fn candidates(&self) -> Candidates {
        // Ties are broken by a turn of this thread's own: a counter shared by the threads
        // would be a write to a shared cache line per connection.
        let turn = TURN.with(|t| {
            let turn = t.get();
            t.set(turn.wrapping_add(1));
            turn
        });
        Candidates { members: self.members.load_full(), turn, tried: Tried::default() }
    }
}

thread_local! {
    /// Where this thread's tie-breaking turn is; threads start apart so that two threads'
    /// first connections to an idle application go to different instances.
    static TURN: std::cell::Cell<usize> = std::cell::Cell::new(thread_start());
}

fn thread_start() -> usize {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    THREADS.fetch_add(1, Ordering::Relaxed)
}

/// The instances a connection tries, in order: see [`Pool::candidates`].
pub struct Candidates {
    members: Arc<Vec<Arc<Member>>>,
    turn: usize,
    tried: Tried,
}

impl Iterator for Candidates {
    type Item = Arc<Member>;

    fn next(&mut self) -> Option<Arc<Member>> {
        let n = self.members.len().max(1);
        let turn = self.turn % n;
        let best = self
            .members
            .iter()
            .enumerate()
            .filter(|&(i, m)| m.weight > 0 && !self.tried.contains(i))
            .min_by_key(|&(i, m)| {
                let load = m.active.load(Ordering::Relaxed) * 1_000_000 / u64::from(m.weight);
                (!m.up.load(Ordering::Relaxed), load, (i + n - turn) % n)
            })
            .map(|(i, _)| i)?;
        self.tried.insert(best);
        Some(self.members[best].clone())
    }
}

/// The instances already tried: a bit set, on the heap only past 128 instances.
#[derive(Default)]
struct Tried {
    bits: u128,
    more: Vec<usize>,
}

impl Tried {
    fn contains(&self, i: usize) -> bool {
        if i < 128 {
            self.bits & (1 << i) != 0
        } else {
            self.more.contains(&i)
        }
    }

    fn insert(&mut self, i: usize) {
        if i < 128 {
            self.bits |= 1 << i;
        } else {
            self.more.push(i);
        }
    }
}

/// The node's health checks: the instances marked down, checked together every
/// [`CHECK_EVERY`] until each is up again or gone (its pool dropped).
#[derive(Debug, Default)]
pub struct Health {
    down: Mutex<Vec<Weak<Member>>>,
    wake: tokio::sync::Notify,
}

impl Health {
    fn watch(&self, member: &Arc<Member>) {
        let weak = Arc::downgrade(member);
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if !down.iter().any(|w| w.ptr_eq(&weak)) {
            down.push(weak);
        }
        drop(down);
        self.wake.notify_one();
    }

    /// The instances still down, forgetting those up again or gone.
    fn still_down(&self) -> Vec<Arc<Member>> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        down.retain(|w| w.upgrade().is_some_and(|m| !m.up.load(Ordering::Relaxed)));
        down.iter().filter_map(Weak::upgrade).collect()
    }

    /// Checks the down instances until `stop` is cancelled; sleeps while none is down.
    ///
    /// The down instances of a round are checked together, so that k unreachable instances
    /// take one [`CHECK_TIMEOUT`] per round, not k of them.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            while self.still_down().is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let mut checks = tokio::task::JoinSet::new();
            for member in self.still_down() {
                checks.spawn(async move {
                    if probe(&member.address).await {
                        member.up.store(true, Ordering::Relaxed);
                        info!(instance = %member.address, "instance is up again");
                    }
                });
            }
            // Dropping the set (at a stop) aborts the checks still running.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = async { while checks.join_next().await.is_some() {} } => {}
            }
        }
    }
}

async fn probe(address: &str) -> bool {
    matches!(tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(address)).await, Ok(Ok(_)))
}
