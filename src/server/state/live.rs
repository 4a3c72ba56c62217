//! The live ports: the listeners this node runs, made to match the table.
//!
//! A stored change reaches the bound ports one way, on the node that made the change as
//! on every other: the table applies it and says what it changed (a [`Diff`]), and
//! [`LivePorts::apply`] redoes those keys only. For each, it compares what the table holds
//! (in the namespaces this node serves) with the port running, stops it when no longer
//! wanted (its open connections are reset), starts it when missing, gives new limits to
//! new connections, and gives each application's instance pool its stored instances. So a
//! change costs what it touches, whatever the size of the table, as Envoy's delta xDS and
//! APISIX's incremental routes do.
//!
//! [`LivePorts::reconcile`] does the same for every key of the table and every running
//! port: at start, after a snapshot reload, and periodically as a safety net against drift
//! (a bug in the diff path, a port whose task ended). What it has to repair outside a
//! reload is counted in a metric and logged, so that drift is seen, not hidden.
//!
//! A port that a write reserved before its claim was committed ([`Reservations`]) is
//! started here with the socket bound then, so it is never bound twice.
//!
//! A UDP redirection is a port like a TCP one here: the same keys (its protocol is part of
//! them), the same diff path, the same pools; only what runs it differs, the UDP data plane
//! ([`crate::server::data::udp`]) instead of the accept loops.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::fd::{OwnedFd, RawFd};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::rows::Rows;
use super::store::{NamespaceDef, RedirKey, RedirRow};
use super::table::{Diff, Table};
use crate::server::data::balance::{CheckSettings, Endpoint, Health, Pool};
use crate::server::data::conn_log::ConnLog;
use crate::server::data::forward::{self, Policy};
use crate::server::data::metrics::{Labels, Metrics, RedirMetrics};
use crate::server::data::ports::{self, Listeners};
use crate::server::data::steer::Proto;
use crate::server::data::steered::{self, Steered};
use crate::server::data::udp::{self, NodeFlows};
use crate::server::data::workers::Workers;
use crate::server::spec::{self, Access, Limits, TcpLimits};
use crate::wire::{HealthCheck, Instance, Protocol, RedirSettings, RedirTraffic};

/// The public ports' sockets this process hands over at an upgrade, duplicated for the new one.
#[derive(Debug, Default)]
pub struct PortSockets {
    /// Each TCP port's listening sockets.
    pub tcp: Vec<(SocketAddr, Vec<OwnedFd>)>,
    /// Each UDP port's socket.
    pub udp: Vec<(SocketAddr, OwnedFd)>,
    /// In steered mode, the steering's four descriptors and the steered listeners.
    pub steering: Option<([OwnedFd; 4], Vec<OwnedFd>)>,
}

/// Which namespaces this node serves, and where their public ports bind.
#[derive(Debug, Clone)]
pub struct Served {
    /// Only these namespaces; `None` for every namespace the store defines.
    pub only: Option<HashSet<String>>,
    /// Where a namespace's ports bind unless `binds` says otherwise.
    pub public_bind: IpAddr,
    /// Each namespace's own bind address, from this node's config.
    pub binds: HashMap<String, IpAddr>,
    /// Log every port's connections (`serve --access-log`), whatever their namespace says.
    pub access_log: bool,
}

impl Served {
    /// Whether this node serves the namespace.
    pub fn serves(&self, namespace: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(namespace))
    }

    /// The address the namespace's ports bind on this node.
    pub fn bind(&self, namespace: &str) -> IpAddr {
        self.binds.get(namespace).copied().unwrap_or(self.public_bind)
    }
}

/// The limits in force on a redirection: the spec's resolution of its own settings over
/// its namespace's (none when its namespace is not defined).
pub fn limits(def: Option<&NamespaceDef>, row: &RedirRow) -> Limits {
    spec::resolve(def.map(|d| &d.limits).unwrap_or(&RedirSettings::default()), &row.settings, row.protocol)
}

/// The settings in force on a redirection, as the API shows them.
pub fn settings_in_force(def: Option<&NamespaceDef>, row: &RedirRow) -> RedirSettings {
    limits(def, row).in_force(&row.settings)
}

/// A port bound for a claim before the claim is committed.
enum Held {
    /// A TCP port's listening socket.
    Tcp(Listeners),
    /// A UDP port's socket.
    Udp(std::net::UdpSocket),
    /// A steered port's reservation (no socket: a key written when the port starts), kept
    /// for its `Drop`, which ends it once the port is in the steering table.
    #[allow(dead_code)]
    Steered(steered::Reserved),
    /// A range's ports (issue 34), each as above, in port order: TCP only.
    Range(Vec<Held>),
}

/// Why a port could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreserved {
    /// The port asked for is held by another program on this machine.
    Taken,
    /// This port of the range asked for is held by another program on this machine.
    RangeTaken(u16),
    /// No port of the range is free.
    NoFreePort,
    /// This node has no descriptor left for a new port (its open-file limit, given).
    OutOfDescriptors(u64),
}

/// The ports a write reserved for its claims, until the store answers.
///
/// On a node that serves the namespace, a reserved port is bound on the spot (no check-
/// then-bind race with other programs) and parked here; the table's diff later starts the
/// port with that very socket, so it is never bound twice. A claim that fails closes its
/// socket ([`Self::release`]), and so does dropping the guard (a request dropped midway:
/// its client went away). A node that does not serve the namespace only picks the port;
/// the nodes that serve it bind it when the claim reaches them.
pub struct Reservations {
    live: Arc<LivePorts>,
    keys: HashSet<RedirKey>,
}

impl Reservations {
    /// No port reserved yet.
    pub fn new(live: Arc<LivePorts>) -> Reservations {
        Reservations { live, keys: HashSet::new() }
    }

    /// Reserves `fixed`, or else a port of `range` that is not `taken` (`previous` first,
    /// then at random), in `namespace` for `protocol`; answers the port.
    pub fn reserve(
        &mut self,
        namespace: &str,
        protocol: Protocol,
        range: &std::ops::RangeInclusive<u16>,
        fixed: Option<u16>,
        previous: Option<u16>,
        taken: impl Fn(u16) -> bool,
    ) -> Result<u16, Unreserved> {
        let served = self.live.served();
        if !served.serves(namespace) {
            return match fixed {
                Some(port) => Ok(port),
                None => ports::pick(range, taken, previous).ok_or(Unreserved::NoFreePort),
            };
        }
        let ip = served.bind(namespace);
        let out_of_descriptors = || Unreserved::OutOfDescriptors(ports::descriptor_limit());
        // Steered: the port is a key, written when the diff starts it; what is reserved
        // here is its address (no other namespace nor program takes it meanwhile).
        let steered = self.live.steered.as_ref();
        let proto = match protocol {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
        };
        let (port, socket) = match fixed {
            Some(port) => {
                let addr = SocketAddr::new(ip, port);
                let bound = match (protocol, steered) {
                    (_, Some(steered)) => steered.reserve(proto, addr).map(Held::Steered),
                    (Protocol::Tcp, None) => ports::bind(addr).map(Held::Tcp),
                    (Protocol::Udp, None) => udp::bind(addr).map(Held::Udp),
                };
                let socket = bound.map_err(|err| {
                    if ports::out_of_descriptors(&err) {
                        out_of_descriptors()
                    } else {
                        Unreserved::Taken
                    }
                })?;
                (port, socket)
            }
            None => match (protocol, steered) {
                (_, Some(steered)) => {
                    ports::allocate_with(ip, range, taken, previous, |addr| steered.reserve(proto, addr))
                        .map(|p| p.map(|(n, r)| (n, Held::Steered(r))))
                }
                (Protocol::Tcp, None) => {
                    ports::allocate(ip, range, taken, previous).map(|p| p.map(|(n, l)| (n, Held::Tcp(l))))
                }
                (Protocol::Udp, None) => {
                    udp::allocate(ip, range, taken, previous).map(|p| p.map(|(n, s)| (n, Held::Udp(s))))
                }
            }
            .map_err(|_| out_of_descriptors())?
            .ok_or(Unreserved::NoFreePort)?,
        };
        Ok(self.hold(RedirKey::new(namespace, protocol, port), socket))
    }

    /// [`Self::reserve`] for a range of `n` consecutive TCP ports (issue 34): every port
    /// of the block starting at `fixed`, or of a free block of `range`, none of whose ports
    /// is `taken`, bound (or, steered, reserved) together or not at all; answers the first.
    /// Bound mode binds `n` sockets: when they do not fit in the node's descriptors, those
    /// bound are closed and the answer is [`Unreserved::OutOfDescriptors`].
    pub fn reserve_range(
        &mut self,
        namespace: &str,
        range: &std::ops::RangeInclusive<u16>,
        n: u16,
        fixed: Option<u16>,
        previous: Option<u16>,
        taken: impl Fn(u16) -> bool,
    ) -> Result<u16, Unreserved> {
        let served = self.live.served();
        if !served.serves(namespace) {
            return match fixed {
                Some(port) => Ok(port),
                None => ports::pick_block(range, n, taken, previous).ok_or(Unreserved::NoFreePort),
            };
        }
        let ip = served.bind(namespace);
        let steered = self.live.steered.clone();
        let bind = |addr: SocketAddr| match &steered {
            Some(steered) => steered.reserve(Proto::Tcp, addr).map(Held::Steered),
            None => ports::bind(addr).map(Held::Tcp),
        };
        let out_of_descriptors = || Unreserved::OutOfDescriptors(ports::descriptor_limit());
        let (port, held) = match fixed {
            Some(first) => {
                let held = ports::bind_block(ip, first, n, bind).map_err(|(port, err)| {
                    if ports::out_of_descriptors(&err) {
                        out_of_descriptors()
                    } else {
                        Unreserved::RangeTaken(port)
                    }
                })?;
                (first, held)
            }
            None => ports::allocate_block(ip, range, n, taken, previous, bind)
                .map_err(|_| out_of_descriptors())?
                .ok_or(Unreserved::NoFreePort)?,
        };
        Ok(self.hold(RedirKey::new(namespace, Protocol::Tcp, port), Held::Range(held)))
    }

    /// Keeps `held` for `key` until its claim ends; answers its port.
    fn hold(&mut self, key: RedirKey, held: Held) -> u16 {
        let port = key.port;
        self.live.held.lock().unwrap().insert(key.clone(), held);
        self.keys.insert(key);
        port
    }

    /// The claim of `key` succeeded: its socket waits for the table's diff to start the port.
    pub fn claimed(&mut self, key: &RedirKey) {
        self.keys.remove(key);
    }

    /// The claim of `key` failed: its socket is closed.
    pub fn release(&mut self, key: &RedirKey) {
        if self.keys.remove(key) {
            self.live.held.lock().unwrap().remove(key);
        }
    }
}

impl Drop for Reservations {
    fn drop(&mut self) {
        let mut held = self.live.held.lock().unwrap();
        for key in self.keys.drain() {
            held.remove(&key);
        }
    }
}

/// Generations of policies: each policy made for one port has its own, so that a
/// forwarding thread's copy is seen stale after any change (0: the open policy).
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// How a running port is driven, and what its owner reads of it.
enum Running {
    /// A bound TCP port: its task ends once its accept loops stopped.
    Bound(Arc<forward::Port>, JoinHandle<()>),
    /// A steered TCP port: no task; its entries leave the steering's tables.
    Steered(Arc<forward::Port>),
    /// A bound UDP port: the record its task shares, and the task (which ends once the
    /// port's `stop`, its own child of `shutdown`, is cancelled: a UDP port's flows end with
    /// it).
    Udp(Arc<udp::UdpPort>, JoinHandle<()>),
    /// A steered UDP port: no task; its thread's reader and sweeper serve its table until
    /// it is stopped there ([`Steered::stop_udp`]).
    SteeredUdp(Arc<udp::UdpPort>),
}

impl Running {
    /// Whether the port is bound (or steered) now.
    fn bound(&self) -> bool {
        match self {
            Running::Bound(port, _) | Running::Steered(port) => port.bound.load(Ordering::Relaxed),
            Running::Udp(udp, _) | Running::SteeredUdp(udp) => udp.bound.load(Ordering::Relaxed),
        }
    }

    /// Its access list, PROXY header and log, replaced in place on a change.
    fn policy(&self) -> &ArcSwap<Policy> {
        match self {
            Running::Bound(port, _) | Running::Steered(port) => &port.policy,
            Running::Udp(udp, _) | Running::SteeredUdp(udp) => &udp.policy,
        }
    }

    /// Its metrics.
    fn metrics(&self) -> &RedirMetrics {
        match self {
            Running::Bound(port, _) | Running::Steered(port) => &port.metrics,
            Running::Udp(udp, _) | Running::SteeredUdp(udp) => &udp.metrics,
        }
    }

    /// The descriptors of its sockets, for a hand-over (none when steered).
    fn fds(&self) -> Vec<RawFd> {
        match self {
            Running::Bound(port, _) => port.listening(),
            Running::Udp(udp, _) => udp.fds.lock().unwrap().clone(),
            Running::Steered(_) | Running::SteeredUdp(_) => Vec::new(),
        }
    }

    /// Gives the port `new` limits (for TCP, the node's copy when equal, so that ports with
    /// the same limits hold one copy); whether they differ from those it had.
    fn update_limits(&self, new: &Limits, ports: &LivePorts) -> bool {
        match (self, new) {
            (Running::Bound(port, _) | Running::Steered(port), Limits::Tcp(new))
                if **port.limits.load() != *new =>
            {
                port.limits.store(ports.tcp_limits(*new))
            }
            (Running::Udp(udp, _) | Running::SteeredUdp(udp), Limits::Udp(new))
                if **udp.limits.load() != *new =>
            {
                udp.limits.store(Arc::new(*new));
                match (self, &ports.steered) {
                    (Running::SteeredUdp(_), Some(steered)) => steered.replan_udp(udp),
                    _ => udp.limits_changed.notify_one(),
                }
            }
            _ => return false,
        }
        true
    }

    /// Stops the port and waits until it no longer accepts: at a removal (`close`), its
    /// open connections (or flows) are reset too; at the server's stop they drain.
    /// A steered port is taken out of the node's steering (`ports`).
    async fn stop(self, close: bool, ports: &LivePorts) {
        let steered = ports.steered.as_deref();
        match self {
            Running::Bound(port, task) => {
                if close {
                    port.stop_accepting.cancel();
                    port.close();
                }
                let _ = task.await;
            }
            Running::Steered(port) => {
                if let Some(steered) = steered {
                    steered.stop(&port);
                }
                if close {
                    port.close();
                }
            }
            Running::Udp(udp, task) => {
                if close {
                    udp.stop.cancel();
                }
                let _ = task.await;
            }
            Running::SteeredUdp(udp) => {
                if let Some(steered) = steered {
                    steered.stop_udp(&udp, ports.node.handed_over.load(Ordering::Relaxed)).await;
                }
            }
        }
    }
}

/// A redirection that is running on this node: the value of its row (the table's, shared,
/// not copied), which is its key in [`LivePorts`]'s map ([`Rows`]). The running port alone:
/// whether its connections are logged is its policy's to say ([`Live::logged`]), not a
/// field of its own beside it (issue 32's memory: 24 bytes a value, not 32).
struct Live {
    running: Running,
}

impl Live {
    /// Whether its connections are logged: its policy has a log.
    fn logged(&self) -> bool {
        self.running.policy().load().log.is_some()
    }
}

/// An application's instance pool and how many of this node's ports use it (the pool
/// goes with the last one). What it was last given is the pool's own ([`Pool::holds`]).
struct AppPool {
    pool: Arc<Pool>,
    ports: usize,
}

/// An application's instances and health-check settings, as stored.
type Stored = (Vec<Endpoint>, HealthCheck);

/// What one key of the table wants running: the row, its limits, whether it logs, and its
/// application's name (a label of its metrics).
type Wanted = Option<(Arc<RedirRow>, Limits, bool, String)>;

/// Values many ports hold alike, kept once: the application names their metrics are
/// labelled with, the TCP limits made last, and the policy of a port that sets none.
struct Shared {
    names: HashSet<Arc<str>>,
    /// The size of `names` at which names no port holds any more are swept out: a stopped
    /// port gives its name back at once ([`LivePorts::release`]) unless something (its
    /// metrics, a connection still closing) holds it then; the sweep catches those.
    sweep_at: usize,
    tcp_limits: Option<Arc<TcpLimits>>,
    open: Arc<Policy>,
}

/// The least size of [`Shared::names`] that is swept.
const NAMES_SWEPT_FROM: usize = 1024;

impl Shared {
    fn new() -> Shared {
        let open = Arc::new(Policy { generation: 0, access: Access::default(), log: None });
        Shared { names: HashSet::new(), sweep_at: NAMES_SWEPT_FROM, tcp_limits: None, open }
    }
}

/// The ports running on this node.
pub struct LivePorts {
    served: Served,
    /// The kernel's steering of the TCP ports, in steered mode (`None`: bound mode).
    steered: Option<Arc<Steered>>,
    live: Mutex<Rows<Live>>,
    pools: Mutex<HashMap<Arc<str>, AppPool>>,
    /// Ports bound for claims being committed ([`Reservations`]).
    held: Mutex<HashMap<RedirKey, Held>>,
    /// The UDP flows open on this node, against its cap.
    flows: Arc<NodeFlows>,
    /// Parent of every port's `stop_accepting`.
    shutdown: CancellationToken,
    /// What every TCP port shares: the forwarding threads, their connection trackers, the
    /// parent of the tokens that close connections, the hand-over flag.
    node: Arc<forward::Node>,
    metrics: Metrics,
    /// Values many ports hold alike, kept once.
    shared: Mutex<Shared>,
    /// Serialises reconciliations (and a hand-over, which must see no port come or go).
    reconciling: tokio::sync::Mutex<()>,
    /// Listening sockets handed over by the process this one replaces, by address.
    inherited: Mutex<HashMap<SocketAddr, Listeners>>,
    /// UDP sockets handed over by the process this one replaces, by address.
    inherited_udp: Mutex<HashMap<SocketAddr, std::net::UdpSocket>>,
    /// The health checks of every application's down instances.
    health: Arc<Health>,
    /// The ports that could not be bound, as [`Self::status`] last found them; `None` once
    /// a port's bound state may have changed. So the node's record costs a pass over every
    /// port only when a bind came or went, not at each change of the table.
    unbound: Mutex<Option<Vec<String>>>,
}

impl LivePorts {
    /// No port running yet; starts the node's health checks (so it runs in a runtime).
    pub fn new(served: Served, workers: Workers, steered: Option<Steered>) -> LivePorts {
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        tokio::spawn(health.clone().run(shutdown.child_token()));
        let mut metrics = Metrics::new();
        metrics.add_collector(health.collector());
        LivePorts {
            steered: steered.map(Arc::new),
            served,
            live: Mutex::default(),
            pools: Mutex::default(),
            held: Mutex::default(),
            flows: Arc::new(NodeFlows::for_this_host()),
            shutdown,
            node: Arc::new(forward::Node {
                // Woken when a port's task binds or loses its port (not by the reconciler's
                // changes, which the store's revision already says).
                bound_changed: Arc::default(),
                connections: workers.handles().iter().map(|_| TaskTracker::new()).collect(),
                // Set once this node's sockets are handed to a new process.
                handed_over: Arc::default(),
                workers: Arc::new(workers),
                kill: CancellationToken::new(),
                listening: Mutex::default(),
            }),
            metrics,
            shared: Mutex::new(Shared::new()),
            reconciling: tokio::sync::Mutex::new(()),
            inherited: Mutex::default(),
            inherited_udp: Mutex::default(),
            health,
            unbound: Mutex::default(),
        }
    }

    /// Takes the listening sockets a previous process handed over: ports of the table start
    /// on them instead of binding, so that no connection queued on them is lost.
    pub fn inherit(
        &self,
        tcp: HashMap<SocketAddr, Listeners>,
        udp: HashMap<SocketAddr, std::net::UdpSocket>,
    ) {
        *self.inherited.lock().unwrap() = tcp;
        *self.inherited_udp.lock().unwrap() = udp;
    }

    /// Starts accepting on the steered listeners (steered mode), once the table's ports are
    /// in the port table: a connection accepted before would find no port and be reset
    /// (after an upgrade, the old process accepts until then).
    pub fn accept_steered(&self) {
        if let Some(steered) = &self.steered {
            steered.start_accepting(&self.node.workers, self.shutdown.clone(), self.node.handed_over.clone());
        }
    }

    /// Closes the inherited sockets that no redirection took (removed meanwhile).
    pub fn drop_unclaimed(&self) {
        let tcp = std::mem::take(&mut *self.inherited.lock().unwrap());
        let udp = std::mem::take(&mut *self.inherited_udp.lock().unwrap());
        for addr in tcp.keys().chain(udp.keys()) {
            info!(%addr, "closing a port handed over for a redirection that no longer exists");
        }
    }

    /// The sockets of every port, duplicated for a new process (`dup`, without
    /// close-on-exec), while no port can come or go; the caller closes them.
    pub async fn sockets_for_handover(&self) -> PortSockets {
        let _no_port_comes_or_goes = self.reconciling.lock().await;
        let live = self.live.lock().unwrap();
        let mut sockets = PortSockets::default();
        if let Some(steered) = &self.steered {
            let (fds, listeners) = steered.descriptors();
            let dup = |fd| ports::inheritable(fd).ok();
            if let (Some(fds), Some(listeners)) = (
                fds.iter().map(|&fd| dup(fd)).collect::<Option<Vec<_>>>(),
                listeners.into_iter().map(dup).collect::<Option<Vec<_>>>(),
            ) {
                sockets.steering = fds.try_into().ok().map(|fds: [OwnedFd; 4]| (fds, listeners));
            }
        }
        for (row, l) in live.iter() {
            let addr = SocketAddr::new(self.served.bind(&row.namespace), row.port);
            let mut fds: Vec<_> =
                l.running.fds().into_iter().filter_map(|fd| ports::inheritable(fd).ok()).collect();
            match row.protocol {
                // A steered port has no socket of its own: the steering goes over whole.
                Protocol::Tcp if fds.is_empty() => {}
                // A range's listeners (issue 34), each under its own port's address.
                Protocol::Tcp if row.ports > 1 => sockets.tcp.extend(fds.into_iter().filter_map(|fd| {
                    let local = socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()?;
                    Some((SocketAddr::new(addr.ip(), local.port()), vec![fd]))
                })),
                Protocol::Tcp => sockets.tcp.push((addr, fds)),
                // A UDP port not bound right now has nothing to hand over.
                Protocol::Udp => sockets.udp.extend(fds.pop().map(|fd| (addr, fd))),
            }
        }
        sockets
    }

    /// From now on, stopping leaves the connections queued on the ports to the new process.
    pub fn mark_handed_over(&self) {
        self.node.handed_over.store(true, Ordering::Relaxed);
    }

    /// Resolves when a port's task has bound or lost its port since the last call.
    pub async fn bound_changed(&self) {
        self.node.bound_changed.notified().await;
        *self.unbound.lock().unwrap() = None;
    }

    /// How this node's public TCP ports listen.
    pub fn port_mode(&self) -> crate::wire::PortMode {
        match self.steered {
            Some(_) => crate::wire::PortMode::Steered,
            None => crate::wire::PortMode::Bound,
        }
    }

    /// Which namespaces this node serves.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// Whether a port runs or is held here (a range's every port does).
    pub fn uses(&self, key: &RedirKey) -> bool {
        let running = {
            let live = self.live.lock().unwrap();
            live.at_or_below(key).is_some_and(|(row, _)| row.covers(key.port))
        };
        running || {
            let held = self.held.lock().unwrap();
            held.contains_key(key)
                || held.iter().any(|(k, h)| match h {
                    Held::Range(parts) => {
                        k.namespace == key.namespace
                            && k.protocol == key.protocol
                            && (k.port..k.port.saturating_add(parts.len() as u16)).contains(&key.port)
                    }
                    _ => false,
                })
        }
    }

    /// Makes the running ports follow a change of the table: only the keys it touched.
    pub async fn apply(&self, table: &std::sync::RwLock<Table>, diff: &Diff) {
        let _one_at_a_time = self.reconciling.lock().await;
        if self.shutdown.is_cancelled() {
            return;
        }
        let (wanted, instances) = {
            let table = table.read().unwrap_or_else(|p| p.into_inner());
            let mut keys = diff.redirs.clone();
            for ns in diff.namespaces.iter().filter(|ns| self.served.serves(ns)) {
                keys.extend(table.namespace_redirs(ns).map(RedirRow::key));
                let live = self.live.lock().unwrap();
                keys.extend(live.namespace(ns).map(|(row, _)| row.key()));
            }
            for app in &diff.apps {
                keys.extend(table.app_rows(app).map(RedirRow::key));
            }
            let wanted: Vec<_> = keys.into_iter().map(|key| (self.wanted(&table, &key), key)).collect();
            let mut apps: std::collections::BTreeSet<&str> = diff.apps.iter().map(String::as_str).collect();
            apps.extend(
                wanted.iter().filter_map(|(w, _)| w.as_ref()).map(|(row, _, _, _)| row.app_id.as_ref()),
            );
            let instances = Self::instances_of(&table, apps);
            (wanted, instances)
        };
        let changed = self.converge(wanted, &instances, false).await;
        super::heap::changed(changed);
    }

    /// Makes every running port match the whole table; answers how many keys and pools it
    /// had to change. `repair`: this is the periodic safety net, not a start or a reload,
    /// so whatever it changes is drift, counted and logged.
    pub async fn reconcile(&self, table: &std::sync::RwLock<Table>, repair: bool) -> usize {
        let _one_at_a_time = self.reconciling.lock().await;
        if self.shutdown.is_cancelled() {
            return 0;
        }
        let (wanted, instances) = {
            let table = table.read().unwrap_or_else(|p| p.into_inner());
            let mut keys: std::collections::BTreeSet<RedirKey> =
                table.redirs.keys().filter(|k| self.served.serves(&k.namespace)).collect();
            keys.extend(self.live.lock().unwrap().keys());
            let wanted: Vec<_> = keys.into_iter().map(|key| (self.wanted(&table, &key), key)).collect();
            let mut apps: std::collections::BTreeSet<&str> = wanted
                .iter()
                .filter_map(|(w, _)| w.as_ref())
                .map(|(row, _, _, _)| row.app_id.as_ref())
                .collect();
            let pooled: Vec<Arc<str>> = self.pools.lock().unwrap().keys().cloned().collect();
            apps.extend(pooled.iter().map(|id| &**id));
            let instances = Self::instances_of(&table, apps);
            (wanted, instances)
        };
        let repaired = self.converge(wanted, &instances, repair).await;
        super::heap::changed(repaired);
        if repair && repaired > 0 {
            self.metrics.repaired(repaired as u64);
            warn!(repaired, "the full reconcile found ports that did not match the table, and fixed them");
        }
        repaired
    }

    /// What the table wants running at `key` on this node.
    fn wanted(&self, table: &Table, key: &RedirKey) -> Wanted {
        if !self.served.serves(&key.namespace) {
            return None;
        }
        let row = table.redirs.row(key)?;
        let Some(def) = table.namespaces.get(&*row.namespace) else {
            warn!(namespace = %row.namespace, port = row.port,
                "redirection kept in the store but not served: its namespace is not defined");
            return None;
        };
        let log = self.served.access_log || def.access_log;
        let name = table.apps.get(&*row.app_id).map(|a| a.name.to_string()).unwrap_or_default();
        Some((row.clone(), limits(Some(def), row), log, name))
    }

    /// The stored instances of these applications (`None`: the table has no such one).
    fn instances_of<'a>(
        table: &Table,
        apps: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Option<Stored>> {
        apps.into_iter()
            .map(|id| {
                (
                    id.to_owned(),
                    table.apps.get(id).map(|a| (a.instances.to_vec(), HealthCheck::clone(&a.health_check))),
                )
            })
            .collect()
    }

    /// Brings each key to what the table wants and each named pool to its instances;
    /// answers how many keys and pools it changed (`quiet`: a repair logs as a warning).
    async fn converge(
        &self,
        wanted: Vec<(Wanted, RedirKey)>,
        instances: &HashMap<String, Option<Stored>>,
        repair: bool,
    ) -> usize {
        let mut changed = 0;
        // Instances first: a port started below takes the pool as it now is.
        {
            let mut pools = self.pools.lock().unwrap();
            for (id, stored) in instances {
                if let (Some(p), Some(stored)) = (pools.get_mut(id.as_str()), stored) {
                    if !p.pool.holds(&stored.0, &stored.1) {
                        p.pool.set(&stored.0, &stored.1);
                        changed += 1;
                    }
                }
            }
        }
        for (want, key) in wanted {
            let stale = {
                let mut live = self.live.lock().unwrap();
                match (live.get(&key).map(|(old, _)| old.clone()), &want) {
                    (None, None) => continue,
                    // The same application on the same ports: everything else changes in
                    // place, for new connections; open ones keep what they started with. (A
                    // range of another size at the same first port, issue 34, is another
                    // port: stopped, then started.)
                    (Some(old), Some((row, limits, log, _)))
                        if old.app_id == row.app_id && old.ports == row.ports =>
                    {
                        let Some(l) = live.get_mut(&key) else { continue };
                        if l.running.update_limits(limits, self) {
                            info!(namespace = %row.namespace, port = row.port, protocol = %row.protocol,
                                "new limits for new connections");
                            changed += 1;
                        }
                        if !old.same_settings(row) || l.logged() != *log {
                            l.running.policy().store(self.policy(row, *log));
                            info!(namespace = %row.namespace, port = row.port, logged = *log,
                                "new access list, PROXY protocol or logging for new connections");
                            changed += 1;
                        }
                        // The table's new row takes the old one's place (it is the key), so
                        // that the old one is not kept for this port alone.
                        if !Arc::ptr_eq(&old, row) {
                            if let Some((_, l)) = live.remove(&key) {
                                live.insert(row.clone(), l);
                            }
                        }
                        continue;
                    }
                    (Some(_), _) => live.remove(&key),
                    (None, Some(_)) => None,
                }
            };
            changed += 1;
            if repair {
                warn!(namespace = %key.namespace, port = key.port, protocol = %key.protocol,
                    wanted = want.is_some(), running = stale.is_some(),
                    "repairing a port that did not match the table");
            }
            if let Some((row, live)) = stale {
                self.stop_one(&row, live).await;
            }
            let Some((row, limits, log, name)) = want else { continue };
            let Some(pool) = self.pool_for(&row.app_id, instances) else {
                warn!(app = %row.app_id, port = row.port, "redirection of an unknown application: not served");
                continue;
            };
            if row.protocol == Protocol::Tcp {
                pool.used_by_tcp();
            }
            let held = self.held.lock().unwrap().remove(&key);
            self.start(row, &name, limits, log, pool, held);
        }
        changed
    }

    /// The application's pool, made from its stored instances for its first port here.
    fn pool_for(&self, app_id: &Arc<str>, instances: &HashMap<String, Option<Stored>>) -> Option<Arc<Pool>> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(p) = pools.get_mut(app_id) {
            p.ports += 1;
            return Some(p.pool.clone());
        }
        let stored = instances.get(&**app_id)?.as_ref()?;
        let pool = Arc::new(Pool::with_check(&stored.0, &stored.1, &self.health));
        // Keyed by the table's copy of the id (the row's), not one of its own.
        pools.insert(app_id.clone(), AppPool { pool: pool.clone(), ports: 1 });
        Some(pool)
    }

    /// Forgets the application's pool with its last port here.
    fn release_pool(&self, app_id: &str) {
        let mut pools = self.pools.lock().unwrap();
        if let Some(p) = pools.get_mut(app_id) {
            p.ports -= 1;
            if p.ports == 0 {
                pools.remove(app_id);
            }
        }
    }

    fn start(
        &self,
        row: Arc<RedirRow>,
        app_name: &str,
        limits: Limits,
        logged: bool,
        targets: Arc<Pool>,
        held: Option<Held>,
    ) {
        let addr = SocketAddr::new(self.served.bind(&row.namespace), row.port);
        // The namespace and the id are the table's copies (one per namespace and per
        // application); the name, which the table holds in a record, is interned here.
        let labels = Labels {
            namespace: row.namespace.clone(),
            app: row.app_id.clone(),
            app_name: self.intern(app_name),
        };
        let metrics = self.metrics.named_redirection(&labels, row.protocol, row.port);
        let policy = self.policy(&row, logged);
        let running = match limits {
            Limits::Tcp(limits) => {
                // Bound (or steered) here rather than in the port's task, so that the state
                // this node publishes right after reconciling says whether the port listens.
                // A range's ports (issue 34) are bound by its own path, below.
                let (held, range) = match held {
                    Some(Held::Range(parts)) => (None, Some(parts)),
                    other => (other, None),
                };
                let listeners = match &self.steered {
                    Some(_) => None,
                    None if row.ports > 1 => None,
                    None => {
                        let inherited = self.inherited.lock().unwrap().remove(&addr);
                        let held = match held {
                            Some(Held::Tcp(listeners)) => Some(listeners),
                            _ => None,
                        };
                        // On failure the port's task tries again, says why, and keeps trying.
                        held.or(inherited).or_else(|| ports::bind(addr).ok())
                    }
                };
                // A steered port's accepting is the node's: nothing cancels the node's
                // token through it ([`Running::stop`] takes it out of the tables instead).
                let stop_accepting =
                    if self.steered.is_some() { self.shutdown.clone() } else { self.shutdown.child_token() };
                let port = Arc::new(forward::Port::new(
                    self.node.clone(),
                    addr,
                    targets,
                    stop_accepting,
                    self.tcp_limits(limits),
                    policy,
                    metrics,
                ));
                match &self.steered {
                    Some(steered) => {
                        steered.start_range(port.clone(), row.ports);
                        drop(range);
                        Running::Steered(port)
                    }
                    None if row.ports > 1 => {
                        let listeners = self.range_listeners(addr, row.ports, range);
                        port.bound.store(listeners.iter().all(Option::is_some), Ordering::Relaxed);
                        let task = tokio::spawn(forward::run_range(port.clone(), row.ports, listeners));
                        Running::Bound(port, task)
                    }
                    None => {
                        port.bound.store(listeners.is_some(), Ordering::Relaxed);
                        let task = tokio::spawn(forward::run(port.clone(), listeners));
                        Running::Bound(port, task)
                    }
                }
            }
            Limits::Udp(limits) => {
                let inherited = self.inherited_udp.lock().unwrap().remove(&addr);
                // A steered port's reservation is kept until its port is steered, below.
                let (held, _reserved) = match held {
                    Some(Held::Udp(socket)) => (Some(socket), None),
                    other => (None, other),
                };
                let socket = match &self.steered {
                    Some(_) => None,
                    None => held.or(inherited).or_else(|| udp::bind(addr).ok()),
                };
                let port = Arc::new(udp::UdpPort {
                    addr,
                    targets,
                    // Stopping a UDP port closes its flows with it: a flow has no
                    // connection to drain. A steered port's is the node's: its thread's
                    // tasks serve it, and its stop is a call ([`Steered::stop_udp`]).
                    stop: if self.steered.is_some() {
                        self.shutdown.clone()
                    } else {
                        self.shutdown.child_token()
                    },
                    bound: AtomicBool::new(socket.is_some()),
                    bound_changed: self.node.bound_changed.clone(),
                    limits: ArcSwap::from_pointee(limits),
                    limits_changed: tokio::sync::Notify::new(),
                    policy: ArcSwap::new(policy),
                    metrics,
                    node: self.flows.clone(),
                    workers: self.node.workers.clone(),
                    fds: Mutex::new(Vec::new()),
                });
                match &self.steered {
                    Some(steered) => {
                        steered.start_udp(&port);
                        Running::SteeredUdp(port)
                    }
                    None => {
                        let task = tokio::spawn(udp::run(port.clone(), socket));
                        Running::Udp(port, task)
                    }
                }
            }
        };
        if !running.bound() {
            *self.unbound.lock().unwrap() = None;
        }
        info!(namespace = %row.namespace, port = row.port, protocol = %row.protocol, app = %row.app_id, "port live");
        self.live.lock().unwrap().insert(row, Live { running });
    }

    /// The listeners of a range's `n` ports from `first` (issue 34), bound mode: those its
    /// reservation bound, else handed over by the process this one replaces, else bound now;
    /// `None` for a port that cannot be bound now (its task tries again).
    fn range_listeners(&self, first: SocketAddr, n: u16, held: Option<Vec<Held>>) -> Vec<Option<Listeners>> {
        let mut held = held.unwrap_or_default().into_iter();
        let mut inherited = self.inherited.lock().unwrap();
        (0..n)
            .map(|i| {
                let addr = SocketAddr::new(first.ip(), first.port() + i);
                let reserved = match held.next() {
                    Some(Held::Tcp(listeners)) => Some(listeners),
                    _ => None,
                };
                reserved.or_else(|| inherited.remove(&addr)).or_else(|| ports::bind(addr).ok())
            })
            .collect()
    }

    async fn stop_one(&self, row: &RedirRow, live: Live) {
        if !live.running.bound() {
            *self.unbound.lock().unwrap() = None;
        }
        // The names its metrics are labelled with (the application's name interned here:
        // [`LivePorts::intern`]).
        let labels = live.running.metrics().labels();
        live.running.stop(true, self).await;
        self.release_pool(&row.app_id);
        self.metrics.forget(&labels, row.protocol, row.port);
        info!(namespace = %row.namespace, port = row.port, protocol = %row.protocol, "port closed");
        self.release(labels);
    }

    /// The one copy of `name` that ports and their metrics share.
    fn intern(&self, name: &str) -> Arc<str> {
        let mut shared = self.shared.lock().unwrap();
        if let Some(n) = shared.names.get(name) {
            return n.clone();
        }
        if shared.names.len() >= shared.sweep_at {
            // Held by the set alone: no port names it. Twice the size left before the
            // next sweep, so that sweeping costs O(1) a name, amortised.
            shared.names.retain(|n| Arc::strong_count(n) > 1);
            shared.sweep_at = (shared.names.len() * 2).max(NAMES_SWEPT_FROM);
        }
        let n: Arc<str> = name.into();
        shared.names.insert(n.clone());
        n
    }

    /// Forgets the application name a stopped port held when no running port names it
    /// any more.
    fn release(&self, labels: Labels) {
        let mut shared = self.shared.lock().unwrap();
        let name = labels.app_name;
        // Held by the set and by `name` alone.
        if Arc::strong_count(&name) == 2 {
            shared.names.remove(&*name);
        }
    }

    /// `limits`, shared with the ports that started or changed last when they are the same
    /// (ports are mostly made in bulk with their namespace's limits).
    fn tcp_limits(&self, limits: TcpLimits) -> Arc<TcpLimits> {
        let mut shared = self.shared.lock().unwrap();
        match &shared.tcp_limits {
            Some(last) if **last == limits => last.clone(),
            _ => shared.tcp_limits.insert(Arc::new(limits)).clone(),
        }
    }

    /// A redirection's access list, PROXY protocol setting and connection log, as its
    /// port's new connections get them: one policy shared by every port that sets none.
    fn policy(&self, row: &RedirRow, logged: bool) -> Arc<Policy> {
        let settings = &row.settings;
        if settings.allow.is_empty()
            && settings.deny.is_empty()
            && settings.proxy_protocol.is_none()
            && !logged
        {
            return self.shared.lock().unwrap().open.clone();
        }
        let access = Access::parse(settings).unwrap_or_else(|e| {
            // Checked when added; should a stored rule no longer parse, the port admits
            // no one rather than everyone.
            warn!(namespace = %row.namespace, port = row.port, error = %e, "invalid stored access list; refusing every client");
            Access::deny_all()
        });
        let log = logged.then(|| ConnLog {
            namespace: row.namespace.to_string(),
            port: row.port,
            app: row.app_id.to_string(),
        });
        Arc::new(Policy { generation: GENERATION.fetch_add(1, Ordering::Relaxed), access, log })
    }

    /// Whether the port is bound here (`None`: not running here), and its traffic (a UDP
    /// port's flows count as its connections).
    pub fn state(&self, key: &RedirKey) -> Option<(bool, RedirTraffic)> {
        let live = self.live.lock().unwrap();
        let (_, l) = live.get(key)?;
        let t = l.running.metrics().traffic.totals();
        let traffic = RedirTraffic {
            active_connections: t.active as u64,
            connections: t.accepted,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
        };
        Some((l.running.bound(), traffic))
    }

    /// The application's instances with their live state, when a port here uses them.
    pub fn instances(&self, app_id: &str) -> Option<Vec<Instance>> {
        let pools = self.pools.lock().unwrap();
        Some(pools.get(app_id)?.pool.members().iter().map(|m| m.describe()).collect())
    }

    /// How many ports listen here, and those that could not be bound (`namespace/port`, or
    /// `namespace/udp/port`).
    pub fn status(&self) -> (u64, Vec<String>) {
        let live = self.live.lock().unwrap();
        let mut cached = self.unbound.lock().unwrap();
        let unbound = cached.get_or_insert_with(|| {
            live.iter().filter(|(_, l)| !l.running.bound()).map(|(row, _)| row.key().to_string()).collect()
        });
        ((live.len() - unbound.len()) as u64, unbound.clone())
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// The node's health-check settings in force (an application's fill in from them).
    pub fn health_checks(&self) -> CheckSettings {
        self.health.settings()
    }

    /// Sets the node's health checks (the config file's, at start and at each reload).
    pub fn configure_health_checks(&self, settings: CheckSettings) {
        self.health.configure(settings);
    }

    /// Stops accepting on every public port (the queued connections are still taken and
    /// served); [`Self::stop`] then drains.
    pub fn stop_accepting(&self) {
        self.shutdown.cancel();
    }

    /// Stops accepting everywhere and gives open connections `drain` to finish.
    pub async fn stop(&self, drain: Duration) {
        self.shutdown.cancel();
        let running: Vec<_> = self.live.lock().unwrap().take().map(|(_, l)| l.running).collect();
        for port in running {
            port.stop(false, self).await;
        }
        let connections = &self.node.connections;
        for tracker in connections.iter() {
            tracker.close();
        }
        let all_closed = async {
            for tracker in connections.iter() {
                tracker.wait().await;
            }
        };
        if tokio::time::timeout(drain, all_closed).await.is_err() {
            let open: usize = connections.iter().map(TaskTracker::len).sum();
            warn!(open, "drain timeout reached; closing the remaining connections");
            self.node.kill.cancel();
            for tracker in connections.iter() {
                tracker.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::sync::RwLock;

    use super::*;
    use crate::server::state::store::{Change, Event, Key, Record};
    use crate::wire::Application;

    fn served() -> Served {
        Served {
            only: None,
            public_bind: Ipv4Addr::LOCALHOST.into(),
            binds: HashMap::new(),
            access_log: false,
        }
    }

    /// A free port below the machine's ephemeral range: once the server lets it go, no
    /// port-0 bind of another test takes it, and no connect's source port is it (a connect
    /// to a closed ephemeral port of loopback can meet itself and succeed). CI saw "the
    /// stale port is closed" fail once with ports from that range.
    fn free_port() -> u16 {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let low = low.max(2_048);
        let span = u64::from(low.min(20_000) - 1_024);
        let start = u64::from(std::process::id()) * 97 + NEXT.fetch_add(101, Ordering::Relaxed);
        (0..span)
            .map(|i| low - 1 - ((start + i) % span) as u16)
            .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port below the ephemeral range")
    }

    fn put(revision: i64, record: Record) -> Event {
        Event { revision, change: Change::Put(record) }
    }

    fn redir(port: u16) -> Record {
        Record::Redir(RedirRow {
            namespace: "default".into(),
            port,
            ports: 1,
            protocol: Protocol::Tcp,
            app_id: "app_1".into(),
            settings: Default::default(),
            revision: 0,
        })
    }

    fn accepts(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    }

    /// Drift made on purpose (the table changed behind the diff path's back) is found by
    /// the full reconcile, repaired, counted in the metric; a change that went through the
    /// diff path leaves nothing to repair.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_full_reconcile_repairs_drift_and_counts_it() {
        let workers = Workers::start(std::num::NonZeroUsize::new(1)).unwrap();
        let live = LivePorts::new(served(), workers, None);
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let app = Application {
            id: "app_1".into(),
            name: "one".into(),
            owner_id: "orga_1".into(),
            instances: vec![Instance {
                address: backend.local_addr().unwrap().to_string(),
                ..Default::default()
            }],
            health_check: Default::default(),
        };
        let def = NamespaceDef {
            name: "default".into(),
            public_host: "localhost".into(),
            min_port: 1024,
            max_port: 65535,
            description: None,
            orgs: None,
            limits: Default::default(),
            access_log: false,
            retired: false,
            default_host: false,
        };
        let (a, b, c) = (free_port(), free_port(), free_port());
        let table = RwLock::new(Table::default());
        let diff = table.write().unwrap().apply(&[
            put(1, Record::Namespace(def)),
            put(2, Record::App(app)),
            put(3, redir(a)),
        ]);
        live.apply(&table, &diff).await;
        assert!(accepts(a), "the port the diff named listens");

        // Behind the diff path's back: `a` removed, `b` added.
        table.write().unwrap().apply(&[
            Event {
                revision: 4,
                change: Change::Delete(Key::Redir(RedirKey::new("default", Protocol::Tcp, a))),
            },
            put(5, redir(b)),
        ]);
        assert!(!accepts(b));
        assert_eq!(live.reconcile(&table, true).await, 2, "one port to stop, one to start");
        assert!(accepts(b), "the missing port is started");
        assert!(!accepts(a), "the stale port is closed");
        assert!(
            live.metrics_text().contains("tcp_redirs_reconcile_repairs_total 2"),
            "{}",
            live.metrics_text()
        );

        let diff = table.write().unwrap().apply(&[put(6, redir(c))]);
        live.apply(&table, &diff).await;
        assert!(accepts(c));
        assert_eq!(live.reconcile(&table, true).await, 0, "the diff path left nothing to repair");
        live.stop(Duration::from_secs(1)).await;
    }

    /// Application names no port holds any more leave the interner: swept when it grows,
    /// whatever the order ports gave them back in; a name a port holds stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interned_names_no_port_holds_are_swept() {
        let workers = Workers::start(std::num::NonZeroUsize::new(1)).unwrap();
        let live = LivePorts::new(served(), workers, None);
        let kept = live.intern("kept");
        for i in 0..NAMES_SWEPT_FROM * 3 {
            drop(live.intern(&format!("gone-{i}")));
        }
        let names = live.shared.lock().unwrap().names.len();
        assert!(names <= NAMES_SWEPT_FROM, "{names} names held, of {} interned", NAMES_SWEPT_FROM * 3 + 1);
        assert!(Arc::ptr_eq(&live.intern("kept"), &kept), "a held name is still the one copy");
        live.stop(Duration::from_secs(1)).await;
    }
}
