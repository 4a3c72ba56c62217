//! The gateway: what the API's calls mean, applied to the store and to the live ports.
//!
//! The API layer only translates HTTP; every rule lives here: which organisation sees
//! what, one redirection per application and namespace, how a port is allocated and
//! claimed, and how the live listeners follow the store. The store is written first and
//! the listeners follow, so that a failed write changes nothing that is running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::access::Access;
use super::auth::Caller;
use super::balance::{self, Pool};
use super::config::{Namespace, DEFAULT_LIMITS};
use super::error::Error;
use super::forward::{self, Limits};
use super::metrics::{Metrics, RedirMetrics};
use super::ports::{self, Listeners};
use super::store::{Claim, RedirRow, Store};
use super::workers::Workers;
use crate::wire::{
    self, Application, NewApplication, NewTcpRedir, Organisation, RedirState, RedirTraffic, TcpRedir,
};

/// How many times `add` picks another port when the store says a port was claimed meanwhile.
const CLAIM_TRIES: usize = 8;

/// A redirection that is running: its accept task and how to stop it.
struct Live {
    stop_accepting: CancellationToken,
    close_connections: CancellationToken,
    task: JoinHandle<()>,
    bound: Arc<AtomicBool>,
    metrics: Arc<RedirMetrics>,
}

/// The server's state: the store, the namespaces and the live ports.
pub struct Gateway {
    store: Arc<Store>,
    namespaces: Vec<Namespace>,
    /// The most redirections one organisation may hold.
    org_quota: Option<u32>,
    live: Mutex<HashMap<(String, u16), Live>>,
    /// The instance pools of the applications that have a redirection running.
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Serialises allocations, so that two `add` calls never race for the same port here.
    claims: tokio::sync::Mutex<()>,
    /// Parent of every port's `stop_accepting`.
    shutdown: CancellationToken,
    /// Parent of every port's `close_connections`.
    kill: CancellationToken,
    connections: TaskTracker,
    metrics: Metrics,
    /// The forwarding threads the ports' accept loops run on.
    workers: Arc<Workers>,
}

impl Gateway {
    /// A gateway over `store` serving `namespaces`; nothing listens until [`Gateway::restore`].
    pub fn new(
        store: Arc<Store>,
        namespaces: Vec<Namespace>,
        org_quota: Option<u32>,
        workers: Workers,
    ) -> Gateway {
        Gateway {
            store,
            namespaces,
            org_quota,
            live: Mutex::default(),
            pools: Mutex::default(),
            claims: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            connections: TaskTracker::new(),
            metrics: Metrics::new(),
            workers: Arc::new(workers),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Runs a store call off the async workers: a durable commit waits for the disk.
    async fn db<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| Error::internal(e.into()))?
            .map_err(Error::internal)
    }

    /// Starts listening on the port of every redirection in the store.
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let rows = self.store.all_redirs()?;
        let mut count = 0;
        for row in rows {
            let Some(ns) = self.namespace(&row.namespace) else {
                warn!(namespace = %row.namespace, port = row.port,
                    "redirection kept in the store but not served: its namespace is no longer configured");
                continue;
            };
            let addr = SocketAddr::new(ns.bind, row.port);
            let listener = match ports::bind(addr, self.workers.count()) {
                Ok(l) => Some(l),
                Err(err) => {
                    warn!(namespace = %row.namespace, %addr, error = %err, "cannot bind a stored redirection's port; will keep trying");
                    None
                }
            };
            let targets = self.targets_of(&row.app_id).await.map_err(|e| anyhow::anyhow!(e.message))?;
            self.start(&row, addr, targets, listener);
            count += 1;
        }
        Ok(count)
    }

    /// Stops accepting everywhere and gives open connections `drain` to finish.
    pub async fn stop(&self, drain: Duration) {
        self.shutdown.cancel();
        let tasks: Vec<_> = self.live.lock().unwrap().drain().map(|(_, l)| l.task).collect();
        for task in tasks {
            let _ = task.await;
        }
        self.connections.close();
        if tokio::time::timeout(drain, self.connections.wait()).await.is_err() {
            warn!(open = self.connections.len(), "drain timeout reached; closing the remaining connections");
            self.kill.cancel();
            self.connections.wait().await;
        }
    }

    fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.name == name)
    }

    /// The organisations the caller may see.
    pub async fn orgs(&self, caller: &Caller) -> Result<Vec<Organisation>, Error> {
        let orgs = self.db(|s| s.orgs()).await?;
        Ok(orgs.into_iter().filter(|o| caller.may_see(&o.id)).collect())
    }

    /// The organisation `org_id`, if the caller may see it.
    pub async fn org(&self, caller: &Caller, org_id: &str) -> Result<Organisation, Error> {
        let id = org_id.to_owned();
        match self.db(move |s| s.org(&id)).await? {
            Some(org) if caller.may_see(&org.id) => Ok(org),
            _ => Err(Error::unknown_org(org_id)),
        }
    }

    /// Creates an organisation (admin only).
    pub async fn create_org(
        &self,
        caller: &Caller,
        new: wire::NewOrganisation,
    ) -> Result<Organisation, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("create organisations"));
        }
        check_name(&new.name, "organisation")?;
        let org = Organisation { id: format!("orga_{}", uuid::Uuid::new_v4()), name: new.name };
        let row = org.clone();
        match self.db(move |s| s.create_org(&row)).await? {
            Some(()) => {
                info!(org = %org.id, name = %org.name, "organisation created");
                Ok(org)
            }
            None => Err(Error::org_name_taken(&org.name)),
        }
    }

    /// The credentials of an organisation (admin only).
    pub async fn tokens(&self, caller: &Caller, org_id: &str) -> Result<Vec<wire::TokenInfo>, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("list credentials"));
        }
        let org = self.org(caller, org_id).await?;
        self.db(move |s| s.tokens(&org.id)).await
    }

    /// Issues a credential scoped to an organisation (admin only).
    pub async fn issue_token(
        &self,
        caller: &Caller,
        org_id: &str,
        new: wire::NewToken,
    ) -> Result<wire::IssuedToken, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("issue credentials"));
        }
        let org = self.org(caller, org_id).await?;
        check_name(&new.name, "credential")?;
        let issued = wire::IssuedToken {
            info: wire::TokenInfo {
                id: format!("tok_{}", uuid::Uuid::new_v4()),
                name: new.name,
                owner_id: Some(org.id),
                created_at: Some(unix_now()),
            },
            token: super::auth::generate("trt_"),
            secret: super::auth::generate("trs_"),
        };
        let (info, token, secret) =
            (issued.info.clone(), super::auth::hash(&issued.token), super::auth::hash(&issued.secret));
        self.db(move |s| s.put_token(&info, &token, &secret)).await?;
        info!(token = %issued.info.id, org = ?issued.info.owner_id, "credential issued");
        Ok(issued)
    }

    /// Revokes a credential of an organisation (admin only); it stops working at once.
    pub async fn revoke_token(
        &self,
        caller: &Caller,
        org_id: &str,
        id: &str,
    ) -> Result<wire::TokenInfo, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("revoke credentials"));
        }
        let org = self.org(caller, org_id).await?;
        let (org_id, token_id) = (org.id.clone(), id.to_owned());
        let found = self.db(move |s| s.tokens(&org_id)).await?.into_iter().find(|t| t.id == id);
        let Some(found) = found else { return Err(Error::unknown_token(id)) };
        let org_id = org.id.clone();
        if !self.db(move |s| s.revoke_token(Some(&org_id), &token_id)).await? {
            return Err(Error::unknown_token(id));
        }
        info!(token = %id, org = %org.id, "credential revoked");
        Ok(found)
    }

    /// The namespaces the caller's organisation may use, sorted by name.
    pub async fn namespaces(&self, caller: &Caller, org_id: &str) -> Result<Vec<wire::Namespace>, Error> {
        let org = self.org(caller, org_id).await?;
        Ok(self
            .namespaces
            .iter()
            .filter(|n| n.admits(&org))
            .map(|n| wire::Namespace {
                namespace: n.name.clone(),
                description: n.description.clone(),
                public_host: Some(n.public_host.clone()),
                min_port: Some(*n.ports.start()),
                max_port: Some(*n.ports.end()),
            })
            .collect())
    }

    /// The applications of an organisation, sorted by name.
    pub async fn apps(&self, caller: &Caller, org_id: &str) -> Result<Vec<Application>, Error> {
        let org = self.org(caller, org_id).await?;
        let apps = self.db(move |s| s.apps(&org.id)).await?;
        Ok(apps.into_iter().map(|a| self.with_live_state(a)).collect())
    }

    /// The application `app_id` of the organisation `org_id`.
    pub async fn app(&self, caller: &Caller, org_id: &str, app_id: &str) -> Result<Application, Error> {
        let org = self.org(caller, org_id).await?;
        let id = app_id.to_owned();
        match self.db(move |s| s.app(&id)).await? {
            Some(app) if app.owner_id == org.id => Ok(self.with_live_state(app)),
            _ => Err(Error::unknown_app(app_id)),
        }
    }

    /// Creates an application in an organisation.
    pub async fn create_app(
        &self,
        caller: &Caller,
        org_id: &str,
        new: NewApplication,
    ) -> Result<Application, Error> {
        let org = self.org(caller, org_id).await?;
        check_app_name(&new.name)?;
        check_instances(&new.instances)?;
        let app = Application {
            id: format!("app_{}", uuid::Uuid::new_v4()),
            name: new.name,
            owner_id: org.id,
            instances: new.instances,
        };
        let row = app.clone();
        match self.db(move |s| s.create_app(&row)).await? {
            Some(()) => {
                info!(app = %app.id, name = %app.name, org = %app.owner_id, "application created");
                Ok(app)
            }
            None => Err(Error::app_name_taken(&app.name)),
        }
    }

    /// Makes sure the default organisation has this application with these instances (config file).
    pub async fn declare_app(
        &self,
        org_id: &str,
        name: &str,
        instances: Vec<wire::Instance>,
    ) -> anyhow::Result<()> {
        let existing = self.store.apps(org_id)?.into_iter().find(|a| a.name == name);
        match existing {
            Some(app) => self.store.set_instances(&app.id, &instances),
            None => {
                let new = NewApplication { name: name.to_owned(), instances };
                self.create_app(&Caller::Admin, org_id, new)
                    .await
                    .map(drop)
                    .map_err(|e| anyhow::anyhow!(e.message))
            }
        }
    }

    /// Removes an application and closes its redirections.
    pub async fn remove_app(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
    ) -> Result<Application, Error> {
        let app = self.app(caller, org_id, app_id).await?;
        let id = app.id.clone();
        let removed = self.db(move |s| s.remove_app(&id)).await?;
        for row in &removed {
            self.stop_port(row).await;
        }
        self.pools.lock().unwrap().remove(&app.id);
        info!(app = %app.id, name = %app.name, redirections = removed.len(), "application removed");
        Ok(app)
    }

    /// An application's redirections, sorted by (namespace, port).
    pub async fn redirs(&self, caller: &Caller, org_id: &str, app_id: &str) -> Result<Vec<TcpRedir>, Error> {
        let app = self.app(caller, org_id, app_id).await?;
        let rows = self.db(move |s| s.app_redirs(&app.id)).await?;
        Ok(rows.iter().map(|r| self.describe(r)).collect())
    }

    /// Allocates a port in `namespace` for the application and starts forwarding it.
    pub async fn add(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        new: &NewTcpRedir,
    ) -> Result<TcpRedir, Error> {
        let org = self.org(caller, org_id).await?;
        let app = self.app(caller, org_id, app_id).await?;
        // A namespace reserved to other organisations does not exist for this one.
        let ns = self
            .namespace(&new.namespace)
            .filter(|n| n.admits(&org))
            .ok_or_else(|| Error::unknown_namespace(&new.namespace))?
            .clone();
        ns.limits.with(&new.limits).map_err(Error::bad_request)?;
        Access::parse(&new.access).map_err(Error::bad_request)?;
        let _claims = self.claims.lock().await;
        let (ns_name, app_id) = (ns.name.clone(), app.id.clone());
        let org_id = org.id.clone();
        let (mut taken, existing, previous, held) = self
            .db(move |s| {
                let existing = s.app_redirs(&app_id)?.into_iter().find(|r| r.namespace == ns_name);
                let held = s.org_redir_count(&org_id)?;
                Ok((s.taken_ports(&ns_name)?, existing, s.last_port(&app_id, &ns_name)?, held))
            })
            .await?;
        if let Some(row) = existing {
            return Err(Error::already_redirected(row.port, &ns.name));
        }
        if let Some(quota) = self.org_quota.filter(|&q| held >= u64::from(q)) {
            return Err(Error::quota_reached(quota));
        }
        taken.extend(self.live.lock().unwrap().keys().filter(|(n, _)| *n == ns.name).map(|(_, p)| *p));
        let targets = self.targets_of(&app.id).await?;
        if let Some(port) = new.port {
            if !ns.ports.contains(&port) {
                return Err(Error::bad_request(format!(
                    "port {port} is outside namespace `{}`'s range {}-{}",
                    ns.name,
                    ns.ports.start(),
                    ns.ports.end()
                )));
            }
            if taken.contains(&port) {
                return Err(Error::port_taken(port, &ns.name));
            }
        }
        let tries = if new.port.is_some() { 1 } else { CLAIM_TRIES };
        for _ in 0..tries {
            let allocated = match new.port {
                Some(port) => ports::bind(SocketAddr::new(ns.bind, port), self.workers.count())
                    .map(|l| (port, l))
                    .map_err(|_| Error::port_taken(port, &ns.name))?,
                None => ports::allocate(ns.bind, &ns.ports, &taken, previous, self.workers.count())
                    .ok_or_else(|| Error::no_free_port(&ns.name, *ns.ports.start(), *ns.ports.end()))?,
            };
            let (port, listener) = allocated;
            let row = RedirRow {
                namespace: ns.name.clone(),
                port,
                app_id: app.id.clone(),
                limits: new.limits,
                access: new.access.clone(),
            };
            let claim_row = row.clone();
            // Dropping `listener` on any early return below closes the port again.
            match self.db(move |s| s.claim(&claim_row)).await? {
                Claim::Done(revision) => {
                    self.start(&row, SocketAddr::new(ns.bind, port), targets, Some(listener));
                    info!(app = %app.id, namespace = %ns.name, port, revision, "redirection added");
                    return Ok(self.describe(&row));
                }
                Claim::AppHasOne(existing) => return Err(Error::already_redirected(existing, &ns.name)),
                Claim::PortTaken if new.port.is_some() => return Err(Error::port_taken(port, &ns.name)),
                Claim::PortTaken => {
                    taken.insert(port);
                }
            }
        }
        Err(Error::no_free_port(&ns.name, *ns.ports.start(), *ns.ports.end()))
    }

    /// Removes a redirection; its port stops accepting before this returns.
    pub async fn remove(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        namespace: &str,
        port: u16,
    ) -> Result<TcpRedir, Error> {
        let app = self.app(caller, org_id, app_id).await?;
        if self.namespace(namespace).is_none() {
            return Err(Error::unknown_namespace(namespace));
        }
        let app_id = app.id.clone();
        let rows = self.db(move |s| s.app_redirs(&app_id)).await?;
        let row = rows
            .into_iter()
            .find(|r| r.namespace == namespace && r.port == port)
            .ok_or_else(|| Error::unknown_redir(port, namespace))?;
        let described = self.describe(&row);
        let release_row = row.clone();
        if !self.db(move |s| s.release(&release_row)).await? {
            return Err(Error::unknown_redir(port, namespace));
        }
        self.stop_port(&row).await;
        info!(app = %app.id, namespace, port, "redirection removed");
        Ok(TcpRedir { state: None, ..described })
    }

    /// The limits in force on a redirection: its own over its namespace's.
    fn limits(&self, row: &RedirRow) -> Limits {
        let base = self.namespace(&row.namespace).map_or(DEFAULT_LIMITS, |n| n.limits);
        // Stored limits were checked when added; should one be out of range, the base holds.
        base.with(&row.limits).unwrap_or(base)
    }

    /// The access rules of a redirection. They were checked when it was added; should a
    /// stored rule no longer parse, the port admits no one rather than everyone.
    fn access(&self, row: &RedirRow) -> Access {
        Access::parse(&row.access).unwrap_or_else(|e| {
            warn!(namespace = %row.namespace, port = row.port, error = %e, "invalid stored access list; refusing every client");
            Access::deny_all()
        })
    }

    fn describe(&self, row: &RedirRow) -> TcpRedir {
        let host = self.namespace(&row.namespace).map(|n| n.public_host.as_str()).unwrap_or("localhost");
        let live = self.live.lock().unwrap();
        let live = live.get(&(row.namespace.clone(), row.port));
        let bound = live.is_some_and(|l| l.bound.load(Ordering::Relaxed));
        TcpRedir {
            limits: self.limits(row).to_wire(),
            access: row.access.clone(),
            namespace: row.namespace.clone(),
            port: row.port,
            address: Some(format!("tcp://{host}:{}/", row.port)),
            state: Some(if bound { RedirState::Listening } else { RedirState::Unbound }),
            traffic: live.map(|l| RedirTraffic {
                active_connections: l.metrics.active.get().max(0) as u64,
                connections: l.metrics.accepted.get(),
                bytes_in: l.metrics.bytes_in.get(),
                bytes_out: l.metrics.bytes_out.get(),
            }),
        }
    }

    /// The shared instance list of an application, loaded on first use.
    async fn targets_of(&self, app_id: &str) -> Result<Arc<Pool>, Error> {
        if let Some(pool) = self.pools.lock().unwrap().get(app_id) {
            return Ok(pool.clone());
        }
        let id = app_id.to_owned();
        let app = self.db(move |s| s.app(&id)).await?;
        let mut pools = self.pools.lock().unwrap();
        let pool = pools.entry(app_id.to_owned()).or_insert_with(|| {
            let pool = Arc::new(Pool::new(app.map(|a| a.instances).as_deref().unwrap_or_default()));
            tokio::spawn(balance::check(Arc::downgrade(&pool), self.shutdown.child_token()));
            pool
        });
        Ok(pool.clone())
    }

    /// The application with its instances' live state, when a redirection uses them.
    fn with_live_state(&self, mut app: Application) -> Application {
        if let Some(pool) = self.pools.lock().unwrap().get(&app.id) {
            app.instances = pool.members().iter().map(|m| m.describe()).collect();
        }
        app
    }

    /// Replaces an application's instances; connections already made stay where they are.
    pub async fn set_instances(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        instances: Vec<wire::Instance>,
    ) -> Result<Application, Error> {
        check_instances(&instances)?;
        let app = self.app(caller, org_id, app_id).await?;
        let (id, list) = (app.id.clone(), instances.clone());
        self.db(move |s| s.set_instances(&id, &list)).await?;
        if let Some(pool) = self.pools.lock().unwrap().get(&app.id) {
            pool.set(&instances);
        }
        info!(app = %app.id, instances = instances.len(), "instances replaced");
        self.app(caller, org_id, app_id).await
    }

    fn start(&self, row: &RedirRow, addr: SocketAddr, targets: Arc<Pool>, listener: Option<Listeners>) {
        let stop_accepting = self.shutdown.child_token();
        let close_connections = self.kill.child_token();
        let bound = Arc::new(AtomicBool::new(listener.is_some()));
        let metrics = Arc::new(self.metrics.redirection(&row.namespace, row.port, &row.app_id));
        let port = forward::Port {
            namespace: row.namespace.clone(),
            addr,
            targets,
            stop_accepting: stop_accepting.clone(),
            close_connections: close_connections.clone(),
            bound: bound.clone(),
            connections: self.connections.clone(),
            limits: self.limits(row),
            metrics: metrics.clone(),
            access: Arc::new(self.access(row)),
            workers: self.workers.clone(),
        };
        let task = tokio::spawn(forward::run(port, listener));
        self.live.lock().unwrap().insert(
            (row.namespace.clone(), row.port),
            Live { stop_accepting, close_connections, task, bound, metrics },
        );
    }

    async fn stop_port(&self, row: &RedirRow) {
        let live = self.live.lock().unwrap().remove(&(row.namespace.clone(), row.port));
        if let Some(live) = live {
            live.stop_accepting.cancel();
            live.close_connections.cancel();
            let _ = live.task.await;
            self.metrics.forget(&row.namespace, row.port, &row.app_id);
        }
    }
}

/// The most instances an application may have.
const MAX_INSTANCES: usize = 64;

fn check_instances(instances: &[wire::Instance]) -> Result<(), Error> {
    if instances.len() > MAX_INSTANCES {
        return Err(Error::bad_request(format!("at most {MAX_INSTANCES} instances per application")));
    }
    for (i, instance) in instances.iter().enumerate() {
        wire::check_instance_address(&instance.address).map_err(Error::bad_request)?;
        if instance.weight.is_some_and(|w| w > wire::MAX_WEIGHT) {
            return Err(Error::bad_request(format!(
                "instance `{}`: weight must be from 0 (no new connections) to {}",
                instance.address,
                wire::MAX_WEIGHT
            )));
        }
        if instances[..i].iter().any(|other| other.address == instance.address) {
            return Err(Error::bad_request(format!("instance `{}` is listed twice", instance.address)));
        }
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn check_name(name: &str, what: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid {what} name `{name}`: use 1 to 128 letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn check_app_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with("app_")
        && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid application name `{name}`: use 1 to 128 letters, digits, `-`, `_` or `.`, not starting with `app_`"
        )))
    }
}
