//! The instances of an application: which one takes a new connection, and which are up.
//!
//! New connections go to the instance with the fewest open connections per unit of weight
//! (least connections, weighted), ties broken in turn so that an idle application still
//! spreads its connections, as Scalingo spreads them over its `tcp` containers. An
//! instance of weight 0 takes no new connection (the Gateway API's TCPRoute convention) but
//! keeps the ones it has. A connection, once made, stays on its instance.
//!
//! Health is checked actively and learnt from traffic (issue 33). One [`Health`] scheduler
//! per node checks every instance address of every application with a TCP connect, every
//! `interval` ([`CheckSettings`], the config file's `[health_checks]`): an address answers
//! for every application that lists it (a backend shared by 5,000 applications gets one
//! check per interval, not 5,000), and the checks are spread evenly over the interval (each
//! address gets its phase from a low-discrepancy sequence, so any number of them is
//! spread without a herd). The scheduler is one task with one timer, the next check due;
//! a check is a short-lived connect with a `timeout`. An address's first check decides its
//! state at once (an instance nobody listens on is down within one interval of being
//! added); then it takes `fall` failed checks in a row to go down and `rise` successful
//! ones to come up. Traffic still marks an instance down at once when a connect fails (the
//! connection tries the next one), and the checks bring it back. When every instance is
//! down, they are still tried, in case the checks lag behind a recovery.
//!
//! With the checks off (`enabled = false`), only instances marked down by traffic are
//! checked, every [`CHECK_EVERY`], and one success brings them back: a node of 9,000
//! healthy applications then has no timer at all.
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

/// How often a down instance is checked when the active checks are off.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a check waits for the instance to accept when the active checks are off.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's active health checks (the config file's `[health_checks]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSettings {
    /// Whether every instance is checked (else only those marked down by traffic).
    pub enabled: bool,
    /// How often each instance address is checked.
    pub interval: Duration,
    /// How long a check waits for the connect.
    pub timeout: Duration,
    /// Successful checks in a row that bring a down instance up.
    pub rise: u32,
    /// Failed checks in a row that take an up instance down.
    pub fall: u32,
}

impl Default for CheckSettings {
    /// Every 5 s, 2 s to connect, up after 2 successes, down after 3 failures (HAProxy's
    /// `rise 2 fall 3`).
    fn default() -> CheckSettings {
        CheckSettings {
            enabled: true,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// One checked address, shared by the members of every application that lists it.
#[derive(Debug)]
struct Target {
    address: String,
    /// Its state as the checks found it (before the first check: up, as presumed).
    up: AtomicBool,
    /// Whether a check has decided its state yet.
    checked: AtomicBool,
    /// Checks in a row with the same result: positive successes, negative failures.
    streak: std::sync::atomic::AtomicI64,
    /// When it was last checked, Unix milliseconds (0: never).
    last_check_ms: AtomicU64,
    /// The members that take its state.
    members: Mutex<Vec<Weak<Member>>>,
}

impl Target {
    /// Records a check's result; the new state when it changed.
    fn record(&self, ok: bool, settings: &CheckSettings) -> Option<bool> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_check_ms.store(now.as_millis() as u64, Ordering::Relaxed);
        let streak = match (ok, self.streak.load(Ordering::Relaxed)) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        self.streak.store(streak, Ordering::Relaxed);
        let first = !self.checked.swap(true, Ordering::Relaxed);
        let up = self.up.load(Ordering::Relaxed);
        let next = if first {
            ok
        } else if up {
            streak > -i64::from(settings.fall.max(1))
        } else {
            streak >= i64::from(settings.rise.max(1))
        };
        if next == up && !first {
            // No change: the members keep what traffic last found (a connection that went
            // through proves more than a check that has not risen yet).
            return None;
        }
        self.up.store(next, Ordering::Relaxed);
        self.tell_members(next);
        (next != up || !ok).then_some(next)
    }

    /// Gives every application that lists this address its state (forgetting the members
    /// that are gone).
    fn tell_members(&self, up: bool) {
        let members: Vec<Arc<Member>> = {
            let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            members.retain(|w| w.strong_count() > 0);
            members.iter().filter_map(Weak::upgrade).collect()
        };
        for m in &members {
            m.up.store(up, Ordering::Relaxed);
        }
    }

    /// Whether some member's application has a TCP port on this node: a TCP connect tells
    /// nothing of an address that only UDP redirections lead to.
    fn wanted(&self) -> bool {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.iter().filter_map(Weak::upgrade).any(|m| m.tcp.load(Ordering::Relaxed))
    }

    /// Traffic found it down, for every application that lists it: it takes `rise` checks
    /// to come back.
    fn failed(&self) {
        self.up.store(false, Ordering::Relaxed);
        self.tell_members(false);
        self.checked.store(true, Ordering::Relaxed);
        if self.streak.load(Ordering::Relaxed) > 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
    }
}

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
    /// Its address's checks (the active checks').
    target: Arc<Target>,
    /// Whether its application has a TCP port here (its pool's flag).
    tcp: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Resolved {
    addrs: Arc<[SocketAddr]>,
    at: Instant,
}

impl Member {
    fn new(instance: &Instance, health: &Arc<Health>, tcp: &Arc<AtomicBool>) -> Arc<Member> {
        let target = health.target(&instance.address);
        let member = Arc::new(Member {
            address: instance.address.clone(),
            ip: instance.address.parse().ok(),
            resolved: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            weight: instance.weight.unwrap_or(1),
            // What its address's checks found, if they ran (another application lists it).
            up: AtomicBool::new(target.up.load(Ordering::Relaxed)),
            active: AtomicU64::new(0),
            health: health.clone(),
            target: target.clone(),
            tcp: tcp.clone(),
        });
        let mut members = target.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|w| w.strong_count() > 0);
        members.push(Arc::downgrade(&member));
        drop(members);
        member
    }

    /// Marks the instance down after a failed connect; checks will bring it back.
    pub fn failed(self: &Arc<Self>) {
        if self.up.swap(false, Ordering::Relaxed) {
            if self.health.settings().enabled {
                warn!(instance = %self.address, "instance marked down; the health checks will bring it back");
                self.target.failed();
            } else {
                warn!(instance = %self.address, "instance marked down; checking it every {}s", CHECK_EVERY.as_secs());
                self.health.watch(self);
            }
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
            last_check: match self.target.last_check_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some((ms / 1000) as i64),
            },
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
    /// Whether a TCP port uses it: only then are its instances health-checked.
    tcp: Arc<AtomicBool>,
}

impl Pool {
    /// A pool of these instances, all presumed up, checked by `health` when down.
    pub fn new(instances: &[Instance], health: &Arc<Health>) -> Pool {
        let tcp = Arc::new(AtomicBool::new(false));
        let members = instances.iter().map(|i| Member::new(i, health, &tcp)).collect();
        Pool { members: ArcSwap::from_pointee(members), health: health.clone(), tcp }
    }

    /// A TCP port uses the pool: its instances are health-checked from now on.
    pub fn used_by_tcp(&self) {
        self.tcp.store(true, Ordering::Relaxed);
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
                    .unwrap_or_else(|| Member::new(i, &self.health, &self.tcp))
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

/// The node's health checks: every instance address, checked on a schedule (the active
/// checks), or with them off only the instances marked down, checked together every
/// [`CHECK_EVERY`] until each is up again or gone (its pool dropped).
#[derive(Debug, Default)]
pub struct Health {
    down: Mutex<Vec<Weak<Member>>>,
    wake: tokio::sync::Notify,
    /// The settings in force (`None`: the defaults).
    settings: Mutex<Option<CheckSettings>>,
    /// Every address some member has, by address: the ones to check.
    targets: Mutex<std::collections::HashMap<String, Weak<Target>>>,
    /// Addresses not scheduled yet.
    incoming: Mutex<Vec<Weak<Target>>>,
    /// Checks made, and those that failed, since the start.
    checks: AtomicU64,
    failures: AtomicU64,
}

impl Health {
    /// The settings in force.
    pub fn settings(&self) -> CheckSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_default()
    }

    /// Sets the checks' settings (at start, and at a reload of the config file).
    pub fn configure(&self, settings: CheckSettings) {
        let mut current = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if current.unwrap_or_default() != settings || current.is_none() {
            *current = Some(settings);
            drop(current);
            self.wake.notify_one();
        }
    }

    /// The checked address `address`, made and scheduled for its first member.
    fn target(&self, address: &str) -> Arc<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = targets.get(address).and_then(Weak::upgrade) {
            return t;
        }
        let target = Arc::new(Target {
            address: address.to_owned(),
            up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            streak: Default::default(),
            last_check_ms: AtomicU64::new(0),
            members: Mutex::default(),
        });
        // Forget the addresses gone, now and then: as many removals as additions.
        if targets.len() >= 64 && targets.len().is_power_of_two() {
            targets.retain(|_, w| w.strong_count() > 0);
        }
        targets.insert(address.to_owned(), Arc::downgrade(&target));
        drop(targets);
        self.incoming.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(&target));
        self.wake.notify_one();
        target
    }

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

    /// Runs the checks until `stop` is cancelled: the active checks while they are on, the
    /// down instances' otherwise; a change of settings switches at once.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if self.settings().enabled {
                self.clone().run_active(&stop).await;
            } else {
                self.clone().run_down_only(&stop).await;
            }
        }
    }

    /// The active checks: one timer, the next check due; each address checked every
    /// interval at its own phase. Returns when stopped or when the checks are turned off.
    async fn run_active(self: Arc<Self>, stop: &CancellationToken) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut settings = self.settings();
        // Every address ever scheduled, by its number; the heap holds (due, number).
        let mut scheduled: std::collections::HashMap<u64, Weak<Target>> = Default::default();
        let mut due: BinaryHeap<Reverse<(tokio::time::Instant, u64)>> = BinaryHeap::new();
        let mut next_number = 0u64;
        let mut checks = tokio::task::JoinSet::new();
        // Every target known so far is new to this run.
        {
            let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            let mut incoming = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
            incoming.clear();
            incoming.extend(targets.values().cloned());
        }
        loop {
            let now = tokio::time::Instant::now();
            let current = self.settings();
            if !current.enabled {
                return;
            }
            if current != settings {
                // A new interval: every address takes its phase of the new one.
                settings = current;
                due = scheduled.keys().map(|&n| Reverse((now + phase(n, settings.interval), n))).collect();
            }
            for target in std::mem::take(&mut *self.incoming.lock().unwrap_or_else(|p| p.into_inner())) {
                next_number += 1;
                // The first check of a new address comes within one interval of now, at
                // its phase: addresses added together are spread too.
                let at = now + phase(next_number, settings.interval);
                scheduled.insert(next_number, target);
                due.push(Reverse((at, next_number)));
            }
            while let Some(&Reverse((at, n))) = due.peek() {
                if at > now {
                    break;
                }
                due.pop();
                let Some(target) = scheduled.get(&n).and_then(Weak::upgrade) else {
                    scheduled.remove(&n);
                    continue;
                };
                let health = self.clone();
                let wanted = target.wanted();
                checks.spawn(async move {
                    if !wanted {
                        return;
                    }
                    let ok = probe_within(&target.address, settings.timeout).await;
                    health.checks.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        health.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    match target.record(ok, &settings) {
                        Some(true) => info!(instance = %target.address, "instance is up (health check)"),
                        Some(false) => warn!(instance = %target.address, "instance is down (health check)"),
                        None => {}
                    }
                });
                // The next one an interval later, at the same phase (or from now, when
                // the node fell behind).
                let next = at + settings.interval;
                due.push(Reverse((if next > now { next } else { now + settings.interval }, n)));
            }
            let next_due = due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = async { tokio::time::sleep_until(next_due.unwrap_or(now)).await }, if next_due.is_some() => {}
                Some(_) = checks.join_next(), if !checks.is_empty() => {}
            }
        }
    }

    /// With the active checks off: checks the down instances until `stop` is cancelled or
    /// the checks are turned on; sleeps while none is down.
    ///
    /// The down instances of a round are checked together, so that k unreachable instances
    /// take one [`CHECK_TIMEOUT`] per round, not k of them.
    async fn run_down_only(self: Arc<Self>, stop: &CancellationToken) {
        loop {
            while self.still_down().is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
                if self.settings().enabled {
                    return;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if self.settings().enabled {
                return;
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

    /// The checks' metrics in the OpenMetrics text format: each address's state and last
    /// check, and the checks made.
    pub fn metrics_text(&self) -> String {
        let mut targets: Vec<Arc<Target>> = {
            let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            targets.values().filter_map(Weak::upgrade).collect()
        };
        targets.sort_by(|a, b| a.address.cmp(&b.address));
        let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let mut text = String::new();
        text.push_str("# HELP tcp_redirs_instance_up Whether the instance address is up (1) or down (0), as the health checks and traffic found it.\n# TYPE tcp_redirs_instance_up gauge\n");
        for t in &targets {
            let up = u8::from(t.up.load(Ordering::Relaxed));
            text.push_str(&format!("tcp_redirs_instance_up{{instance=\"{}\"}} {up}\n", escape(&t.address)));
        }
        text.push_str("# HELP tcp_redirs_instance_last_check_timestamp_seconds When the instance address was last checked (Unix time).\n# TYPE tcp_redirs_instance_last_check_timestamp_seconds gauge\n");
        for t in &targets {
            let ms = t.last_check_ms.load(Ordering::Relaxed);
            if ms > 0 {
                text.push_str(&format!(
                    "tcp_redirs_instance_last_check_timestamp_seconds{{instance=\"{}\"}} {}.{:03}\n",
                    escape(&t.address),
                    ms / 1000,
                    ms % 1000
                ));
            }
        }
        let (checks, failures) = (self.checks.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed));
        text.push_str("# HELP tcp_redirs_health_checks Health checks made, by result.\n# TYPE tcp_redirs_health_checks counter\n");
        text.push_str(&format!(
            "tcp_redirs_health_checks_total{{result=\"ok\"}} {}\n",
            checks - failures.min(checks)
        ));
        text.push_str(&format!("tcp_redirs_health_checks_total{{result=\"failed\"}} {failures}\n"));
        text
    }
}

/// The `n`th address's phase in an interval: the fractional parts of `n` times the golden
/// ratio fill the interval evenly for any number of addresses (a Weyl sequence), so the
/// checks never come in a herd.
fn phase(n: u64, interval: Duration) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    interval.mul_f64((n as f64 * GOLDEN).fract())
}

async fn probe(address: &str) -> bool {
    probe_within(address, CHECK_TIMEOUT).await
}

/// A TCP connect within `timeout`; the connection is then reset, not closed, as HAProxy
/// ends its checks: a close would leave a socket in TIME_WAIT here for a minute per check,
/// and 10,000 instances checked every 5 s would hold 120,000 of them, more than the
/// machine's ephemeral ports.
async fn probe_within(address: &str, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any number of addresses is spread over the interval: no 100 ms window holds more
    /// than twice the average (plus one).
    #[test]
    fn checks_are_spread_evenly_over_the_interval() {
        let interval = Duration::from_secs(5);
        for n in [7u64, 100, 10_000] {
            let mut windows = vec![0u64; 50];
            for i in 1..=n {
                windows[(phase(i, interval).as_millis() / 100) as usize] += 1;
            }
            let average = n as f64 / 50.0;
            let most = *windows.iter().max().unwrap() as f64;
            assert!(most <= 2.0 * average + 1.0, "{n} addresses: {most} in one window, {average} on average");
        }
    }

    /// The first check decides; then `fall` failures to go down, `rise` successes to come up.
    #[test]
    fn rise_and_fall_count_checks_in_a_row() {
        let settings = CheckSettings { rise: 2, fall: 3, ..CheckSettings::default() };
        let health = Arc::new(Health::default());
        let target = health.target("127.0.0.1:9");
        assert_eq!(target.record(false, &settings), Some(false), "the first check decides");
        assert_eq!(target.record(true, &settings), None);
        assert_eq!(target.record(true, &settings), Some(true), "up after rise 2");
        assert_eq!(target.record(false, &settings), None);
        assert_eq!(target.record(false, &settings), None);
        assert_eq!(target.record(true, &settings), None, "a success ends the failures");
        for _ in 0..2 {
            assert_eq!(target.record(false, &settings), None);
        }
        assert_eq!(target.record(false, &settings), Some(false), "down after fall 3");
        assert!(target.last_check_ms.load(Ordering::Relaxed) > 0);
    }
}
