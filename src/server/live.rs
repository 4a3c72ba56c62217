//! The live ports: the listeners this node runs, made to match the table.
//!
//! [`LivePorts::reconcile`] is the one way a stored change reaches the bound ports, on the
//! node that made the change as on every other: it compares the redirections the table
//! holds (in the namespaces this node serves) with the ports running, stops those no longer
//! wanted (their open connections are reset), starts the missing ones, and gives each
//! application's instance pool its stored instances. A port that `add` bound before its
//! claim was committed is handed over here, so it is never bound twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::os::fd::RawFd;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::access::Access;
use super::balance::{self, Pool};
use super::config::DEFAULT_LIMITS;
use super::conn_log::ConnLog;
use super::forward::{self, Limits};
use super::metrics::{Metrics, RedirMetrics};
use super::ports::Listeners;
use super::store::{NamespaceDef, RedirRow};
use super::table::Table;
use super::workers::Workers;
use crate::wire::{Instance, RedirTraffic};

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

/// The limits in force on a redirection: its own over its namespace's over the defaults.
pub fn limits(def: Option<&NamespaceDef>, row: &RedirRow) -> Limits {
    let base = def.and_then(|d| DEFAULT_LIMITS.with(&d.limits).ok()).unwrap_or(DEFAULT_LIMITS);
    // Stored limits were checked when added; should one be out of range, the base holds.
    base.with(&row.limits).unwrap_or(base)
}

/// A redirection that is running: its accept task and how to stop it.
struct Live {
    row: RedirRow,
    /// The limits new connections get; replaced in place when the namespace's change.
    limits: Arc<ArcSwap<Limits>>,
    /// Whether its connections are logged.
    logged: bool,
    /// The port's listening sockets, for a hand-over to a new process.
    fds: Arc<Mutex<Vec<RawFd>>>,
    stop_accepting: CancellationToken,
    close_connections: CancellationToken,
    task: JoinHandle<()>,
    bound: Arc<AtomicBool>,
    metrics: Arc<RedirMetrics>,
}

/// An application's instance pool and the stored list it was last given.
struct AppPool {
    stored: Vec<Instance>,
    pool: Arc<Pool>,
}

/// The ports running on this node.
pub struct LivePorts {
    served: Served,
    live: Mutex<BTreeMap<(String, u16), Live>>,
    pools: Mutex<HashMap<String, AppPool>>,
    /// Ports bound by `add` whose claim is being committed.
    held: Mutex<HashMap<(String, u16), Listeners>>,
    /// Parent of every port's `stop_accepting`.
    shutdown: CancellationToken,
    /// Parent of every port's `close_connections`.
    kill: CancellationToken,
    /// The connection tasks, one tracker per forwarding thread.
    connections: Arc<[TaskTracker]>,
    metrics: Metrics,
    workers: Arc<Workers>,
    /// Serialises reconciliations (and a hand-over, which must see no port come or go).
    reconciling: tokio::sync::Mutex<()>,
    /// Listening sockets handed over by the process this one replaces, by address.
    inherited: Mutex<HashMap<SocketAddr, Listeners>>,
    /// Set once this node's sockets are handed to a new process.
    handed_over: Arc<AtomicBool>,
}

impl LivePorts {
    /// No port running yet.
    pub fn new(served: Served, workers: Workers) -> LivePorts {
        LivePorts {
            served,
            live: Mutex::default(),
            pools: Mutex::default(),
            held: Mutex::default(),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            connections: workers.handles().iter().map(|_| TaskTracker::new()).collect(),
            metrics: Metrics::new(),
            workers: Arc::new(workers),
            reconciling: tokio::sync::Mutex::new(()),
            inherited: Mutex::default(),
            handed_over: Arc::default(),
        }
    }

    /// Takes the listening sockets a previous process handed over: ports of the table start
    /// on them instead of binding, so that no connection queued on them is lost.
    pub fn inherit(&self, sockets: HashMap<SocketAddr, Listeners>) {
        *self.inherited.lock().unwrap() = sockets;
    }

    /// Closes the inherited sockets that no redirection took (removed meanwhile).
    pub fn drop_unclaimed(&self) {
        let left = std::mem::take(&mut *self.inherited.lock().unwrap());
        for addr in left.keys() {
            info!(%addr, "closing a port handed over for a redirection that no longer exists");
        }
    }

    /// The listening sockets of every port, duplicated for a new process (`dup`, without
    /// close-on-exec), while no port can come or go; the caller closes them.
    pub async fn sockets_for_handover(&self) -> Vec<(SocketAddr, Vec<std::os::fd::OwnedFd>)> {
        let _no_port_comes_or_goes = self.reconciling.lock().await;
        let live = self.live.lock().unwrap();
        live.values()
            .map(|l| {
                let addr = SocketAddr::new(self.served.bind(&l.row.namespace), l.row.port);
                let fds = l
                    .fds
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|&fd| super::upgrade::inheritable(fd).ok())
                    .collect();
                (addr, fds)
            })
            .collect()
    }

    /// From now on, stopping leaves the connections queued on the ports to the new process.
    pub fn mark_handed_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
    }

    /// Which namespaces this node serves.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// Keeps the listeners `add` bound until the reconciler starts the port with them.
    pub fn hold(&self, namespace: &str, port: u16, listeners: Listeners) {
        self.held.lock().unwrap().insert((namespace.to_owned(), port), listeners);
    }

    /// Closes listeners held for a claim that did not succeed.
    pub fn unhold(&self, namespace: &str, port: u16) {
        self.held.lock().unwrap().remove(&(namespace.to_owned(), port));
    }

    /// The ports of a namespace that run or are held here.
    pub fn ports_in(&self, namespace: &str) -> HashSet<u16> {
        let live = self.live.lock().unwrap();
        let held = self.held.lock().unwrap();
        live.keys().chain(held.keys()).filter(|(n, _)| n == namespace).map(|(_, p)| *p).collect()
    }

    /// Makes the running ports match the table.
    pub async fn reconcile(&self, table: &std::sync::RwLock<Table>) {
        let _one_at_a_time = self.reconciling.lock().await;
        if self.shutdown.is_cancelled() {
            return;
        }
        // What should run, read under the table's lock and acted on after it.
        let (wanted, apps) = {
            let table = table.read().unwrap_or_else(|p| p.into_inner());
            let wanted: BTreeMap<(String, u16), (RedirRow, Limits, bool)> = table
                .redirs
                .iter()
                .filter(|((ns, _), _)| self.served.serves(ns))
                .filter_map(|(key, row)| {
                    let def = table.namespaces.get(&row.namespace);
                    if def.is_none() {
                        warn!(namespace = %row.namespace, port = row.port,
                            "redirection kept in the store but not served: its namespace is not defined");
                        return None;
                    }
                    let log = self.served.access_log || def.is_some_and(|d| d.access_log);
                    Some((key.clone(), (row.clone(), limits(def, row), log)))
                })
                .collect();
            let apps: HashMap<String, Vec<Instance>> = wanted
                .values()
                .filter_map(|(row, _, _)| {
                    table.apps.get(&row.app_id).map(|a| (a.id.clone(), a.instances.clone()))
                })
                .collect();
            (wanted, apps)
        };
        let stale: Vec<Live> = {
            let mut live = self.live.lock().unwrap();
            let gone: Vec<_> = live
                .iter()
                .filter(|(key, l)| {
                    wanted.get(*key).is_none_or(|(row, _, log)| *row != l.row || *log != l.logged)
                })
                .map(|(key, _)| key.clone())
                .collect();
            gone.into_iter().filter_map(|key| live.remove(&key)).collect()
        };
        for live in stale {
            self.stop_one(live).await;
        }
        self.sync_pools(&apps);
        for (key, (row, limits, log)) in wanted {
            if let Some(running) = self.live.lock().unwrap().get(&key) {
                // Open connections keep the limits they started with; new ones get these.
                if **running.limits.load() != limits {
                    running.limits.store(Arc::new(limits));
                    info!(namespace = %row.namespace, port = row.port, "new limits for new connections");
                }
                continue;
            }
            let Some(pool) = self.pools.lock().unwrap().get(&row.app_id).map(|p| p.pool.clone()) else {
                warn!(app = %row.app_id, port = row.port, "redirection of an unknown application: not served");
                continue;
            };
            let held = self.held.lock().unwrap().remove(&key);
            self.start(row, limits, log, pool, held);
        }
    }

    /// Gives each application that has a port here its stored instances; forgets the others.
    fn sync_pools(&self, apps: &HashMap<String, Vec<Instance>>) {
        let mut pools = self.pools.lock().unwrap();
        pools.retain(|id, _| apps.contains_key(id));
        for (id, instances) in apps {
            match pools.get_mut(id) {
                Some(p) if p.stored == *instances => {}
                Some(p) => {
                    p.pool.set(instances);
                    p.stored = instances.clone();
                }
                None => {
                    let pool = Arc::new(Pool::new(instances));
                    tokio::spawn(balance::check(Arc::downgrade(&pool), self.shutdown.child_token()));
                    pools.insert(id.clone(), AppPool { stored: instances.clone(), pool });
                }
            }
        }
    }

    fn start(
        &self,
        row: RedirRow,
        limits: Limits,
        logged: bool,
        targets: Arc<Pool>,
        listeners: Option<Listeners>,
    ) {
        let addr = SocketAddr::new(self.served.bind(&row.namespace), row.port);
        // Bound here rather than in the port's task, so that the state this node publishes
        // right after reconciling says whether the port listens.
        let inherited = self.inherited.lock().unwrap().remove(&addr);
        // On failure the port's task tries again at once, says why, and keeps trying.
        let listeners = listeners.or(inherited).or_else(|| super::ports::bind(addr).ok());
        let stop_accepting = self.shutdown.child_token();
        let close_connections = self.kill.child_token();
        let bound = Arc::new(AtomicBool::new(listeners.is_some()));
        let fds = Arc::new(Mutex::new(Vec::new()));
        let limits = Arc::new(ArcSwap::from_pointee(limits));
        let metrics = Arc::new(self.metrics.redirection(&row.namespace, row.port, &row.app_id));
        let access = Access::parse(&row.access).unwrap_or_else(|e| {
            // Checked when added; should a stored rule no longer parse, the port admits
            // no one rather than everyone.
            warn!(namespace = %row.namespace, port = row.port, error = %e, "invalid stored access list; refusing every client");
            Access::deny_all()
        });
        let port = forward::Port {
            namespace: row.namespace.clone(),
            addr,
            targets,
            stop_accepting: stop_accepting.clone(),
            close_connections: close_connections.clone(),
            bound: bound.clone(),
            connections: self.connections.clone(),
            limits: limits.clone(),
            handed_over: self.handed_over.clone(),
            fds: fds.clone(),
            conn_log: logged.then(|| {
                Arc::new(ConnLog {
                    namespace: row.namespace.clone(),
                    port: row.port,
                    app: row.app_id.clone(),
                })
            }),
            metrics: metrics.clone(),
            access: Arc::new(access),
            workers: self.workers.clone(),
        };
        let task = tokio::spawn(forward::run(port, listeners));
        info!(namespace = %row.namespace, port = row.port, app = %row.app_id, "port live");
        let key = (row.namespace.clone(), row.port);
        let live = Live { row, limits, logged, fds, stop_accepting, close_connections, task, bound, metrics };
        self.live.lock().unwrap().insert(key, live);
    }

    async fn stop_one(&self, live: Live) {
        live.stop_accepting.cancel();
        live.close_connections.cancel();
        let _ = live.task.await;
        self.metrics.forget(&live.row.namespace, live.row.port, &live.row.app_id);
        info!(namespace = %live.row.namespace, port = live.row.port, "port closed");
    }

    /// Whether the port is bound here (`None`: not running here), and its traffic.
    pub fn state(&self, namespace: &str, port: u16) -> Option<(bool, RedirTraffic)> {
        let live = self.live.lock().unwrap();
        let l = live.get(&(namespace.to_owned(), port))?;
        let t = l.metrics.traffic.totals();
        let traffic = RedirTraffic {
            active_connections: t.active as u64,
            connections: t.accepted,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
        };
        Some((l.bound.load(Ordering::Relaxed), traffic))
    }

    /// The application's instances with their live state, when a port here uses them.
    pub fn instances(&self, app_id: &str) -> Option<Vec<Instance>> {
        let pools = self.pools.lock().unwrap();
        Some(pools.get(app_id)?.pool.members().iter().map(|m| m.describe()).collect())
    }

    /// How many ports listen here, and those that could not be bound (`namespace/port`).
    pub fn status(&self) -> (u64, Vec<String>) {
        let live = self.live.lock().unwrap();
        let unbound: Vec<String> = live
            .values()
            .filter(|l| !l.bound.load(Ordering::Relaxed))
            .map(|l| format!("{}/{}", l.row.namespace, l.row.port))
            .collect();
        ((live.len() - unbound.len()) as u64, unbound)
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Stops accepting on every public port (the queued connections are still taken and
    /// served); [`Self::stop`] then drains.
    pub fn stop_accepting(&self) {
        self.shutdown.cancel();
    }

    /// Stops accepting everywhere and gives open connections `drain` to finish.
    pub async fn stop(&self, drain: Duration) {
        self.shutdown.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.live.lock().unwrap()).into_values().map(|l| l.task).collect();
        for task in tasks {
            let _ = task.await;
        }
        for tracker in self.connections.iter() {
            tracker.close();
        }
        let all_closed = async {
            for tracker in self.connections.iter() {
                tracker.wait().await;
            }
        };
        if tokio::time::timeout(drain, all_closed).await.is_err() {
            let open: usize = self.connections.iter().map(TaskTracker::len).sum();
            warn!(open, "drain timeout reached; closing the remaining connections");
            self.kill.cancel();
            for tracker in self.connections.iter() {
                tracker.wait().await;
            }
        }
    }
}
