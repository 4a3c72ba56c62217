//! The instances of an application: which one takes a new connection, and which are up.
//!
//! New connections go to the instance with the fewest open connections per unit of weight
//! (least connections, weighted), ties broken in turn so that an idle application still
//! spreads its connections, as Scalingo spreads them over its `tcp` containers. An
//! instance of weight 0 takes no new connection (the Gateway API's TCPRoute convention) but
//! keeps the ones it has. A connection, once made, stays on its instance.
//!
//! Health is checked actively and learnt from traffic (issue 33). One [`Health`] scheduler
//! per node checks every instance address of every application, each as its application's
//! settings say ([`HealthCheck`]: the kind, the interval, the timeout, `rise` and `fall`),
//! the node's ([`CheckSettings`], the config file's `[health_checks]`) filling in what the
//! application leaves out ([`CheckSettings::plan`]). What is checked is a *target*: an
//! address with one application's settings. It answers for every application that lists
//! that address with those settings (a backend shared by 5,000 applications gets one check
//! per interval, not 5,000), and the checks are spread evenly over the interval (each
//! target gets its phase from a low-discrepancy sequence, so any number of them is spread
//! without a herd). The scheduler is one task with one timer, the next check due; a check
//! is a short-lived connect with a `timeout`, and for the `expect` kind a payload sent and
//! the answer's first bytes compared (HAProxy's `tcp-check`). A target's first check decides
//! its state at once (an instance nobody listens on is down within one interval of being
//! added); then it takes `fall` failed checks in a row to go down and `rise` successful ones
//! to come up. Traffic still marks an instance down at once when a connect fails (the
//! connection tries the next one), and the checks bring it back. When every instance is
//! down, they are still tried, in case the checks lag behind a recovery.
//!
//! A change of an application's settings moves its instances to the targets of the new
//! settings (the old ones are forgotten with their last member), and the scheduler takes
//! them at its next turn: no restart, and still one scheduler. A change of the node's
//! settings (a reload) schedules every target again with its new plan.
//!
//! Targets of the kind `none` (the node's default with `enabled = false`) are not checked
//! until traffic marks them down; then every [`CHECK_EVERY`], until one success brings them
//! back: a node of 9,000 healthy applications then has no timer at all.
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

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::health::decode_hex;
use crate::wire::{CheckKind, HealthCheck, Instance, InstanceState};

/// How often a down instance is checked when its active checks are off.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a check waits for the instance to accept when its active checks are off.
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

impl CheckSettings {
    /// How a target of an application with `check` is checked: its settings, else these;
    /// or why they do not hold together (the API refuses those, [`Self::plan_lenient`]
    /// runs them anyway).
    pub fn plan(&self, check: &HealthCheck) -> Result<Plan, String> {
        let plan = self.plan_lenient(check);
        let ms = |d: Duration| d.as_millis();
        let whose = |own: Option<u32>| if own.is_some() { "" } else { " (the node's)" };
        // The plan's timeout is cut to the interval: the one asked for is compared.
        let timeout = check.timeout_ms.map_or(self.timeout, |ms| Duration::from_millis(u64::from(ms)));
        if timeout > plan.interval {
            return Err(format!(
                "the timeout, {} ms{}, is longer than the interval, {} ms{}: a check must end before the next begins; set timeoutMs at most intervalMs",
                ms(timeout),
                whose(check.timeout_ms),
                ms(plan.interval),
                whose(check.interval_ms)
            ));
        }
        let kind = check.kind_or(self.default_kind());
        match (kind, &check.send, &check.expect) {
            (CheckKind::Expect, _, None) => {
                Err("kind `expect` needs `expect`, the bytes the answer starts with (in hexadecimal)".into())
            }
            (CheckKind::Expect, _, Some(_)) => {
                for payload in [&check.send, &check.expect].into_iter().flatten() {
                    decode_hex(payload)?;
                }
                Ok(plan)
            }
            (kind, None, None) => {
                debug_assert_eq!(plan.kind, kind);
                Ok(plan)
            }
            (kind, _, _) => Err(format!(
                "`send` and `expect` are for the kind `expect`, and this check's kind is `{}`: drop them, or set kind `expect`",
                kind.name()
            )),
        }
    }

    /// [`Self::plan`], run whatever it finds: a timeout longer than the interval is cut to
    /// it, and a payload that cannot be used makes a plain connect. (A node's own settings
    /// can make an application's stored ones disagree, after a reload or on another node.)
    pub fn plan_lenient(&self, check: &HealthCheck) -> Plan {
        let ms =
            |own: Option<u32>, node: Duration| own.map_or(node, |ms| Duration::from_millis(u64::from(ms)));
        let interval = ms(check.interval_ms, self.interval);
        let mut kind = check.kind_or(self.default_kind());
        let bytes = |hex: &Option<String>| hex.as_deref().map(decode_hex).transpose();
        let (send, expect) = match (bytes(&check.send), bytes(&check.expect)) {
            (Ok(send), Ok(Some(expect))) if kind == CheckKind::Expect => (send.unwrap_or_default(), expect),
            _ => {
                if kind == CheckKind::Expect {
                    kind = CheckKind::Connect;
                }
                (Vec::new(), Vec::new())
            }
        };
        Plan {
            kind,
            interval,
            timeout: ms(check.timeout_ms, self.timeout).min(interval),
            rise: check.rise.unwrap_or(self.rise).max(1),
            fall: check.fall.unwrap_or(self.fall).max(1),
            send,
            expect,
        }
    }

    /// The kind of check of an application that names none.
    fn default_kind(&self) -> CheckKind {
        if self.enabled {
            CheckKind::Connect
        } else {
            CheckKind::None
        }
    }
}

/// How one target is checked, all settings resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What a check does (`None`: only after traffic found the target down).
    pub kind: CheckKind,
    /// Between two checks.
    pub interval: Duration,
    /// How long a check may take, at most the interval.
    pub timeout: Duration,
    /// Successes in a row to come up.
    pub rise: u32,
    /// Failures in a row to go down.
    pub fall: u32,
    /// The bytes sent once connected (`expect` kind).
    pub send: Vec<u8>,
    /// The bytes the answer must start with (`expect` kind).
    pub expect: Vec<u8>,
}

impl Plan {
    /// A target whose active checks are off, down after a failed connection: a connect
    /// every [`CHECK_EVERY`], and one success brings it back.
    fn down_only() -> Plan {
        Plan {
            kind: CheckKind::Connect,
            interval: CHECK_EVERY,
            timeout: CHECK_TIMEOUT,
            rise: 1,
            fall: 1,
            send: Vec::new(),
            expect: Vec::new(),
        }
    }
}

/// An application's instance as the table keeps it and a pool takes it: what the API's
/// [`Instance`] says of it that is stored, in 24 bytes where that takes 72. The address is
/// the record's own copy, which the health checks' target of that address takes too when
/// this application is the first to list it (no copy of their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST:PORT`.
    pub address: Arc<str>,
    /// Its share of new connections (1 when absent); 0 takes no new connection.
    pub weight: Option<u32>,
}

impl From<&Instance> for Endpoint {
    fn from(instance: &Instance) -> Endpoint {
        Endpoint { address: Arc::from(instance.address.as_str()), weight: instance.weight }
    }
}

impl Endpoint {
    /// The instance as the API stores it.
    pub fn to_wire(&self) -> Instance {
        Instance { address: self.address.to_string(), weight: self.weight, ..Instance::default() }
    }
}

/// One checked address with one application's settings, shared by the members of every
/// application that lists that address with those settings.
#[derive(Debug)]
struct Target {
    address: Arc<str>,
    /// The applications' own settings (the node's fill in the rest when it is checked):
    /// the one shared record of none for most ([`shared_check`]).
    check: Arc<HealthCheck>,
    /// Its place in the sequence of phases.
    number: u64,
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
    fn record(&self, ok: bool, settings: &Plan) -> Option<bool> {
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

    /// Takes `member` among those that take its state.
    fn join(&self, member: &Arc<Member>) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the members gone now and then, as `Health::target` does its targets: a
        // pass at every join cost O(n²) when n applications list one address (a start with
        // 50,000 applications behind one backend spent 2.5 s here, 100,000 redirections 12 s).
        if members.len() >= 64 && members.len().is_power_of_two() {
            members.retain(|w| w.strong_count() > 0);
        }
        members.push(Arc::downgrade(member));
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
    /// `HOST:PORT`: its target's copy (one per address and settings, however many
    /// applications list it), not one of its own (issue 32's memory per redirection).
    pub address: Arc<str>,
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
    /// Its address's checks with its application's settings (another target when they
    /// change).
    target: ArcSwap<Target>,
    /// Whether its application has a TCP port here (its pool's flag).
    tcp: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Resolved {
    addrs: Arc<[SocketAddr]>,
    at: Instant,
}

impl Member {
    fn new(
        instance: &Endpoint,
        check: &HealthCheck,
        health: &Arc<Health>,
        tcp: &Arc<AtomicBool>,
    ) -> Arc<Member> {
        let target = health.target(&instance.address, check);
        let member = Arc::new(Member {
            address: target.address.clone(),
            ip: instance.address.parse().ok(),
            resolved: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
            weight: instance.weight.unwrap_or(1),
            // What its address's checks found, if they ran (another application lists it).
            up: AtomicBool::new(target.up.load(Ordering::Relaxed)),
            active: AtomicU64::new(0),
            health: health.clone(),
            target: ArcSwap::new(target.clone()),
            tcp: tcp.clone(),
        });
        target.join(&member);
        member
    }

    /// Moves the instance to the target of its application's new settings.
    fn retarget(self: &Arc<Self>, check: &HealthCheck) {
        let next = self.health.target(&self.address, check);
        let previous = self.target.swap(next.clone());
        if !Arc::ptr_eq(&previous, &next) {
            let me = Arc::downgrade(self);
            previous.members.lock().unwrap_or_else(|p| p.into_inner()).retain(|w| !w.ptr_eq(&me));
            next.join(self);
        }
    }

    /// Marks the instance down after a failed connect, for every application that lists
    /// its address with the same settings; checks will bring it back.
    pub fn failed(self: &Arc<Self>) {
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(instance = %self.address, "instance marked down; the health checks will bring it back");
            let target = self.target.load_full();
            target.failed();
            // Checked from now on even when its active checks are off.
            self.health.schedule(&target);
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
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host(&*self.address).await?.collect();
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
            address: self.address.to_string(),
            weight: Some(self.weight),
            state: Some(if self.up.load(Ordering::Relaxed) {
                InstanceState::Up
            } else {
                InstanceState::Down
            }),
            active_connections: Some(self.active.load(Ordering::Relaxed)),
            last_check: match self.target.load().last_check_ms.load(Ordering::Relaxed) {
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
    /// The application's health-check settings (one writer: the reconciler).
    /// Shared by the pools of every application that sets none ([`shared_check`]).
    check: Mutex<Arc<HealthCheck>>,
    health: Arc<Health>,
    /// Whether a TCP port uses it: only then are its instances health-checked.
    tcp: Arc<AtomicBool>,
}

/// `check` as the table's record of an application, its pool and its targets hold it: the
/// one shared record when it is the default (most applications set no health-check
/// settings of their own), so that each costs a pointer for it rather than its 88 bytes
/// (issue 32's memory per redirection).
pub fn shared_check(check: &HealthCheck) -> Arc<HealthCheck> {
    static DEFAULT: std::sync::LazyLock<Arc<HealthCheck>> = std::sync::LazyLock::new(Arc::default);
    if *check == HealthCheck::default() {
        DEFAULT.clone()
    } else {
        Arc::new(check.clone())
    }
}

impl Pool {
    /// A pool of these instances, all presumed up, checked by `health` with the node's
    /// settings.
    #[cfg(test)]
    pub fn new(instances: &[Instance], health: &Arc<Health>) -> Pool {
        let instances: Vec<Endpoint> = instances.iter().map(Endpoint::from).collect();
        Pool::with_check(&instances, &HealthCheck::default(), health)
    }

    /// A pool of these instances, all presumed up, checked by `health` with the
    /// application's settings `check`.
    pub fn with_check(instances: &[Endpoint], check: &HealthCheck, health: &Arc<Health>) -> Pool {
        let tcp = Arc::new(AtomicBool::new(false));
        let members = instances.iter().map(|i| Member::new(i, check, health, &tcp)).collect();
        Pool {
            members: ArcSwap::from_pointee(members),
            check: Mutex::new(shared_check(check)),
            health: health.clone(),
            tcp,
        }
    }

    /// A TCP port uses the pool: its instances are health-checked from now on.
    pub fn used_by_tcp(&self) {
        self.tcp.store(true, Ordering::Relaxed);
    }

    /// Replaces the instances and the health-check settings; the instances that stay (same
    /// address and weight) keep their state and connections, and move to the checks of the
    /// new settings when they changed.
    pub fn set(&self, instances: &[Endpoint], check: &HealthCheck) {
        let mut current = self.check.lock().unwrap_or_else(|p| p.into_inner());
        if **current != *check {
            *current = shared_check(check);
            for member in self.members.load().iter() {
                member.retarget(check);
            }
        }
        drop(current);
        let members = self.members.load();
        let next = instances
            .iter()
            .map(|i| {
                let weight = i.weight.unwrap_or(1);
                members
                    .iter()
                    .find(|m| *m.address == *i.address && m.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| Member::new(i, check, &self.health, &self.tcp))
            })
            .collect();
        // One writer at a time: the reconciler applies table changes in order.
        self.members.store(Arc::new(next));
    }

    /// Whether it holds these instances (address and weight, in order) with these
    /// settings: [`Self::set`] would change nothing. So that the caller need not keep a
    /// copy of what it gave last (a copy per application: issue 32's memory).
    pub fn holds(&self, instances: &[Endpoint], check: &HealthCheck) -> bool {
        let members = self.members.load();
        **self.check.lock().unwrap_or_else(|p| p.into_inner()) == *check
            && members.len() == instances.len()
            && members
                .iter()
                .zip(instances)
                .all(|(m, i)| *m.address == *i.address && m.weight == i.weight.unwrap_or(1))
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

/// The node's health checks: one scheduler for every target (see the module's essay).
#[derive(Debug, Default)]
pub struct Health {
    wake: tokio::sync::Notify,
    /// The node's settings in force (`None`: the defaults).
    settings: Mutex<Option<CheckSettings>>,
    /// Every target some member has, by address (one for each settings that applications
    /// listing it have: almost always one): the ones to check. Keyed by the targets' own
    /// copy of the address, not by a copy of address and settings (120 bytes a bucket,
    /// for as many addresses as the applications have: issue 32's memory).
    targets: Mutex<std::collections::HashMap<Arc<str>, Vec<Weak<Target>>>>,
    /// Targets to (re)consider for the schedule: new ones, and those traffic found down.
    incoming: Mutex<Vec<Weak<Target>>>,
    /// The number the next target takes (its phase).
    numbers: AtomicU64,
    /// Checks made, and those that failed, since the start.
    checks: AtomicU64,
    failures: AtomicU64,
}

impl Health {
    /// The node's settings in force.
    pub fn settings(&self) -> CheckSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or_default()
    }

    /// Sets the node's settings (at start, and at a reload of the config file).
    pub fn configure(&self, settings: CheckSettings) {
        let mut current = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if current.unwrap_or_default() != settings || current.is_none() {
            *current = Some(settings);
            drop(current);
            self.wake.notify_one();
        }
    }

    /// The target of `address` with the settings `check`, made and scheduled for its first
    /// member.
    fn target(&self, address: &Arc<str>, check: &HealthCheck) -> Arc<Target> {
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let same = |t: &Arc<Target>| *t.check == *check;
        let found = targets.get(&**address).and_then(|all| all.iter().filter_map(Weak::upgrade).find(same));
        if let Some(t) = found {
            return t;
        }
        let target = Arc::new(Target {
            address: address.clone(),
            check: shared_check(check),
            number: self.numbers.fetch_add(1, Ordering::Relaxed) + 1,
            up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            streak: Default::default(),
            last_check_ms: AtomicU64::new(0),
            members: Mutex::default(),
        });
        // Forget the targets gone, now and then: as many removals as additions.
        if targets.len() >= 64 && targets.len().is_power_of_two() {
            targets.retain(|_, all| {
                all.retain(|w| w.strong_count() > 0);
                !all.is_empty()
            });
        }
        let all = targets.entry(target.address.clone()).or_insert_with(|| Vec::with_capacity(1));
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&target));
        drop(targets);
        self.schedule(&target);
        target
    }

    /// Asks the scheduler to consider `target` (a target already scheduled stays as it is).
    fn schedule(&self, target: &Arc<Target>) {
        self.incoming.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(target));
        self.wake.notify_one();
    }

    /// Every target alive.
    fn all_targets(&self) -> Vec<Arc<Target>> {
        let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        targets.values().flatten().filter_map(Weak::upgrade).collect()
    }

    /// Runs the checks until `stop` is cancelled: one timer, the next check due; each
    /// target checked every interval of its own at its own phase, or (kind `none`) every
    /// [`CHECK_EVERY`] while traffic has it down.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut settings = self.settings();
        // The targets in the schedule, by number; the heap holds (due, number).
        let mut scheduled: HashMap<u64, Weak<Target>> = HashMap::new();
        let mut due: BinaryHeap<Reverse<(tokio::time::Instant, u64)>> = BinaryHeap::new();
        let mut checks = tokio::task::JoinSet::new();
        loop {
            let now = tokio::time::Instant::now();
            let current = self.settings();
            if current != settings {
                // New node settings: every target takes its place in a new schedule.
                settings = current;
                scheduled.clear();
                due.clear();
                let all = self.all_targets();
                self.incoming
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(all.iter().map(Arc::downgrade));
            }
            let incoming = std::mem::take(&mut *self.incoming.lock().unwrap_or_else(|p| p.into_inner()));
            for target in incoming.iter().filter_map(Weak::upgrade) {
                if scheduled.contains_key(&target.number) {
                    continue;
                }
                let plan = settings.plan_lenient(&target.check);
                let at = if plan.kind != CheckKind::None {
                    // The first check of a new target comes within one interval of now, at
                    // its phase: targets added together are spread too.
                    now + phase(target.number, plan.interval)
                } else if !target.up.load(Ordering::Relaxed) {
                    now + CHECK_EVERY
                } else {
                    continue;
                };
                scheduled.insert(target.number, Arc::downgrade(&target));
                due.push(Reverse((at, target.number)));
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
                let mut plan = settings.plan_lenient(&target.check);
                if plan.kind == CheckKind::None {
                    if target.up.load(Ordering::Relaxed) {
                        // Back up: no check until traffic finds it down again.
                        scheduled.remove(&n);
                        continue;
                    }
                    plan = Plan::down_only();
                }
                let every = plan.interval;
                let health = self.clone();
                if target.wanted() {
                    checks.spawn(async move {
                        let ok = probe(&target.address, &plan).await;
                        health.checks.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            health.failures.fetch_add(1, Ordering::Relaxed);
                        }
                        match target.record(ok, &plan) {
                            Some(true) => info!(instance = %target.address, "instance is up (health check)"),
                            Some(false) => {
                                warn!(instance = %target.address, "instance is down (health check)")
                            }
                            None => {}
                        }
                    });
                }
                // The next one an interval later, at the same phase (or from now, when
                // the node fell behind).
                let next = at + every;
                due.push(Reverse((if next > now { next } else { now + every }, n)));
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

    /// The checks' metrics families, for the node's registry: each address's state and
    /// last check, and the checks made.
    pub fn collector(self: &Arc<Self>) -> Box<dyn prometheus_client::collector::Collector> {
        Box::new(HealthMetrics(self.clone()))
    }
}

/// The families of [`Health`], encoded at each scrape from the targets themselves (no
/// series kept in between): `instance_up{instance}`, `instance_last_check_timestamp_seconds
/// {instance}` and `health_checks_total{result}`. An address that several targets check
/// (applications with other settings) is one series: up only when every check finds it up,
/// and its latest check.
#[derive(Debug)]
struct HealthMetrics(Arc<Health>);

impl prometheus_client::collector::Collector for HealthMetrics {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let mut addresses: std::collections::BTreeMap<String, (bool, u64)> = Default::default();
        for t in self.0.all_targets() {
            let (up, last) = addresses.entry(t.address.to_string()).or_insert((true, 0));
            *up &= t.up.load(Ordering::Relaxed);
            *last = (*last).max(t.last_check_ms.load(Ordering::Relaxed));
        }
        let mut family = encoder.encode_descriptor(
            "instance_up",
            "Whether the instance address is up (1) or down (0), as the health checks and traffic found it",
            None,
            MetricType::Gauge,
        )?;
        for (address, (up, _)) in &addresses {
            ConstGauge::new(i64::from(*up))
                .encode(family.encode_family(&[("instance", address.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "instance_last_check_timestamp_seconds",
            "When the instance address was last checked (Unix time)",
            None,
            MetricType::Gauge,
        )?;
        for (address, (_, ms)) in addresses.iter().filter(|(_, (_, ms))| *ms > 0) {
            ConstGauge::new(*ms as f64 / 1000.0)
                .encode(family.encode_family(&[("instance", address.as_str())])?)?;
        }
        let (checks, failures) =
            (self.0.checks.load(Ordering::Relaxed), self.0.failures.load(Ordering::Relaxed));
        let mut family = encoder.encode_descriptor(
            "health_checks",
            "Health checks made, by result",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("ok", checks - failures.min(checks)), ("failed", failures)] {
            ConstCounter::new(n).encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

/// The `n`th address's phase in an interval: the fractional parts of `n` times the golden
/// ratio fill the interval evenly for any number of addresses (a Weyl sequence), so the
/// checks never come in a herd.
fn phase(n: u64, interval: Duration) -> Duration {
    const GOLDEN: f64 = 0.618_033_988_749_894_9;
    interval.mul_f64((n as f64 * GOLDEN).fract())
}

/// One check of `address` as `plan` says, within its timeout: a TCP connect, then for the
/// `expect` kind the payload sent and the answer's first bytes compared (an answer that
/// differs, or ends, or does not come in time fails). The connection is then reset, not
/// closed, as HAProxy ends its checks: a close would leave a socket in TIME_WAIT here for a
/// minute per check, and 10,000 instances checked every 5 s would hold 120,000 of them,
/// more than the machine's ephemeral ports.
async fn probe(address: &str, plan: &Plan) -> bool {
    let check = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        // Set first: the stream is dropped (reset) whichever way the check ends.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        if plan.kind != CheckKind::Expect {
            return Some(());
        }
        if !plan.send.is_empty() {
            stream.write_all(&plan.send).await.ok()?;
        }
        let mut answer = [0u8; 256];
        let mut matched = 0;
        while matched < plan.expect.len() {
            let room = (plan.expect.len() - matched).min(answer.len());
            let n = stream.read(&mut answer[..room]).await.ok()?;
            if n == 0 || answer[..n] != plan.expect[matched..matched + n] {
                return None;
            }
            matched += n;
        }
        Some(())
    };
    matches!(tokio::time::timeout(plan.timeout, check).await, Ok(Some(())))
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

    /// An application's settings override the node's one by one; a timeout longer than
    /// the interval, a payload without the `expect` kind, or `send` alone are refused by
    /// `plan` and run anyway by `plan_lenient` (timeout cut, a plain connect).
    #[test]
    fn an_applications_settings_fill_in_from_the_nodes() {
        let node = CheckSettings::default();
        let own = HealthCheck {
            interval_ms: Some(1000),
            timeout_ms: Some(300),
            rise: Some(1),
            ..HealthCheck::default()
        };
        let plan = node.plan(&own).unwrap();
        assert_eq!(
            (plan.kind, plan.interval, plan.timeout, plan.rise, plan.fall),
            (CheckKind::Connect, Duration::from_secs(1), Duration::from_millis(300), 1, 3)
        );
        let short = HealthCheck { interval_ms: Some(500), ..HealthCheck::default() };
        let err = CheckSettings { timeout: Duration::from_secs(1), ..node }.plan(&short).unwrap_err();
        assert!(
            err.contains("the timeout, 1000 ms (the node's), is longer than the interval, 500 ms"),
            "{err}"
        );
        let lenient = CheckSettings { timeout: Duration::from_secs(1), ..node }.plan_lenient(&short);
        assert_eq!(lenient.timeout, Duration::from_millis(500));
        let expect =
            HealthCheck { expect: Some("2b4f4b".into()), send: Some("00".into()), ..HealthCheck::default() };
        let plan = node.plan(&expect).unwrap();
        assert_eq!((plan.kind, plan.send, plan.expect), (CheckKind::Expect, vec![0], b"+OK".to_vec()));
        let off = CheckSettings { enabled: false, ..node };
        assert_eq!(off.plan(&HealthCheck::default()).unwrap().kind, CheckKind::None);
        assert_eq!(
            off.plan(&HealthCheck { kind: Some(CheckKind::Connect), ..HealthCheck::default() }).unwrap().kind,
            CheckKind::Connect
        );
        let wrong = HealthCheck {
            kind: Some(CheckKind::Connect),
            expect: Some("00".into()),
            ..HealthCheck::default()
        };
        assert!(node.plan(&wrong).unwrap_err().contains("kind `expect`"));
        assert_eq!(node.plan_lenient(&wrong).kind, CheckKind::Connect);
        let send_only =
            HealthCheck { kind: Some(CheckKind::Expect), send: Some("00".into()), ..HealthCheck::default() };
        assert!(node.plan(&send_only).unwrap_err().contains("needs `expect`"));
    }

    /// The first check decides; then `fall` failures to go down, `rise` successes to come up.
    #[test]
    fn rise_and_fall_count_checks_in_a_row() {
        let settings = CheckSettings { rise: 2, fall: 3, ..CheckSettings::default() }
            .plan_lenient(&HealthCheck::default());
        let health = Arc::new(Health::default());
        let target = health.target(&Arc::from("127.0.0.1:9"), &HealthCheck::default());
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
