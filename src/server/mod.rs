//! The control server: `tcp-redirs serve`.
//!
//! **Rooms.** Four rooms, whose arrows point down only, and a building that puts them
//! together:
//!
//! - `control/`: the API and its rules (who sees what, one redirection per application
//!   and namespace, how a port is chosen and claimed);
//! - `state/`: the store (SQLite or etcd, the truth), this node's copy of it (the table,
//!   moved forward by the store's changes as diffs), and the live ports that follow the
//!   table's diffs;
//! - `data/`: accepting, admitting, balancing and copying connections and datagrams;
//! - `spec/`: what a redirection's settings mean (defaults, resolution, bounds, the access
//!   list), pure: no I/O, no runtime.
//!
//! A room uses only the rooms below it (control -> state -> data -> spec), and none uses
//! the building: this file, the config file (`config.rs`) and upgrades (`upgrade.rs`). No
//! module is in a circle with a sibling. `tests/layers.rs` reads the sources and holds both
//! rules.
//!
//! **The walk of an `add`**, each room entered once, downwards, then the state following
//! the store:
//!
//! 1. `control/api.rs` turns the HTTP request into a call of `Gateway::add`;
//! 2. `control/gateway/add.rs` checks the request against this node's table, the
//!    settings through the spec (`spec::check`), and plans it: an `add` is a batch of one;
//! 3. `state/live.rs` reserves the port (`Reservations`): on a node that serves the
//!    namespace it is bound there and then through `data/ports.rs` (or `data/udp`), so no
//!    other program takes it between the check and the claim;
//! 4. `state/store` claims it, in one atomic write that re-checks what the table said;
//! 5. the store's change comes back through `state/sync.rs` into `state/table.rs`, which
//!    says what changed (a diff); `state/live.rs` starts that port with the socket reserved
//!    in step 3, its limits resolved by the spec (`spec::resolve`), and the data plane
//!    (`data/forward.rs`, `data/udp`) accepts on it;
//! 6. `add` answers once this node's table (and so its ports) reached the write's revision,
//!    and the other live nodes of the namespace said so too (or 3 s passed).
//!
//! Every other node of a fleet walks step 5 alone, from its own watch of the store.
//!
//! **Start-up order** matters and is chosen so that "listening" means ready: the data
//! directory is locked (two servers on one store would hand out the same ports), the store
//! is opened, the control API's address is bound, every stored redirection is listening
//! again, the client profile is written, and only then is the API's address logged and
//! requests served. On SIGINT or SIGTERM the server stops accepting, gives open
//! connections the drain timeout to finish, and exits 0. [`Server::start`] does the first
//! part and [`Server::serve`] the second.

mod config;
mod control;
mod data;
mod spec;
mod state;
mod upgrade;

pub use state::heap::limit_malloc_arenas;

pub use data::steered::Mode as PortModeSetting;
pub use data::{conn_log, log_writer};

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

pub use config::Config;
use control::gateway::Gateway;
use control::{api, auth, http};
use data::workers;
use state::store::audit::{self, Origin};
pub use state::store::StoreAccess;
use state::store::{self, Conflict, Store, StoreError};
use state::{live, sync, table};

use crate::profile::{self, Profile};

/// The name of the credential `serve` creates for the operator.
const ADMIN: &str = "admin";

/// What `tcp-redirs serve` was told.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control API's address.
    pub listen: SocketAddr,
    /// Where the store lives; `None` for the user's data directory.
    pub data_dir: Option<PathBuf>,
    /// The address public listeners bind when the config does not say.
    pub public_bind: IpAddr,
    /// The optional config file.
    pub config: Option<PathBuf>,
    /// The admin token to use instead of the generated one.
    pub admin_token: Option<String>,
    /// The admin secret (OAuth form) to use instead of the generated one.
    pub admin_secret: Option<String>,
    /// How long open connections may run on after a stop signal.
    pub drain: Duration,
    /// Serve the API over TLS with this PEM certificate chain and private key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How many forwarding threads to run; `None` for one per core.
    pub threads: Option<std::num::NonZeroUsize>,
    /// The shared store (`etcd://…`); `None` for SQLite in the data directory.
    pub store: Option<String>,
    /// TLS files and user for the shared store (the config file fills what is unset).
    pub store_access: StoreAccess,
    /// This node's name; `None` for the host name.
    pub node: Option<String>,
    /// The namespaces this node serves; `None` for all.
    pub namespaces: Option<Vec<String>>,
    /// How long the node's liveness outlives its last word to the store.
    pub node_ttl: Duration,
    /// Log one line per connection on every port.
    pub access_log: bool,
    /// How public TCP ports listen: steered, bound, or steered where possible.
    pub port_mode: PortModeSetting,
}

/// How long in-flight API requests get to finish at stop.
const API_GRACE: Duration = Duration::from_secs(10);

/// The generated admin credential, kept in the data directory for the operator (0600).
#[derive(Serialize, Deserialize)]
struct AdminCredential {
    token: String,
    secret: String,
}

/// Runs the server until SIGINT or SIGTERM (or until it handed its sockets to an upgrade).
pub async fn run(opts: Options) -> Result<()> {
    Server::start(opts).await?.serve().await
}

/// A server that is ready: its store open, every stored redirection's port listening, its
/// control API's socket bound, the profile written; [`Server::serve`] answers requests.
pub struct Server {
    opts: Options,
    /// The program's path, taken at start: an upgrade starts what is there then.
    exe: PathBuf,
    /// The data directory's lock, held until this process exits or hands it over.
    lock: File,
    /// The control API's listening socket.
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    live: Arc<live::LivePorts>,
    synced: Arc<sync::Synced>,
    gateway: Arc<Gateway>,
    /// What a SIGHUP needs to read the config file again.
    running: Running,
    signals: Signals,
}

impl Server {
    /// Everything before the first request, in the order the module's documentation gives:
    /// when this returns, "listening" means ready (and an upgrade's old process, or
    /// systemd, has been told so).
    pub async fn start(opts: Options) -> Result<Server> {
        // Taken now: once a new binary is installed at this path, /proc/self/exe names the
        // old one, deleted; an upgrade starts what is at the path.
        let exe = std::env::current_exe().context("cannot find this program's own path")?;
        let mut inherited = upgrade::Inherited::take()?;
        let config = match &opts.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let namespaces = config.namespaces(opts.public_bind)?;
        raise_fd_limit();
        let (data_dir, lock) = claim_data_dir(&opts, inherited.as_ref())?;
        let node = match opts.node.clone().or(config.node.clone()) {
            Some(name) => check_node_name(name)?,
            None => check_node_name(host_name())?,
        };
        let store_url = opts.store.clone().or(config.store.clone());
        let access = opts.store_access.clone().or(config.store_access());
        let store = open_store(store_url.as_deref(), &access, &data_dir).await?;
        let defs: Vec<_> = namespaces.iter().map(|n| n.def.clone()).collect();
        patiently("namespaces", || store.agree(&defs, config.max_redirections_per_org))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let new_org_id = format!("orga_{}", uuid::Uuid::new_v4());
        let default_org = patiently("default organisation", || {
            audit::acting(Origin::server(Some(node.clone())), store.ensure_org("default", &new_org_id))
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot set up the default organisation in {}: {e}", store.describe())
        })?;
        let admin = admin_credential(&data_dir, &opts)?;
        // In a fleet each node has its own admin credential (`admin@NODE`), so a node's
        // restart never changes another's.
        let admin_id = if store_url.is_some() { format!("{ADMIN}@{node}") } else { ADMIN.to_owned() };
        store.set_retention(config.events.retention()?);
        patiently("admin credential", || {
            audit::acting(
                Origin::server(Some(node.clone())),
                install_admin(store.as_ref(), &admin, &admin_id),
            )
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot record the admin credential in {}: {e}", store.describe()))?;

        let tls = match &opts.tls {
            Some((cert, key)) => Some(load_tls(cert, key).await?),
            None => None,
        };
        let listener = bind_api(&opts, inherited.as_ref(), tls.is_some())?;
        let addr = listener.local_addr()?;

        let live = start_ports(&opts, &config, &namespaces, inherited.as_mut())?;
        live.configure_health_checks(config.health_checks.settings()?);
        let synced = follow_store(&store, &live, &node, opts.node_ttl, opts.public_bind).await?;
        let gateway = Arc::new(Gateway::new(synced.clone(), node.clone(), config.max_redirections_per_org));
        // Webhook deliveries: on the node that holds the role, reading the trail.
        control::delivery::start(synced.clone(), node.clone(), config.webhooks.settings()?);
        patiently("config file's applications", || {
            audit::acting(Origin::config_file(&node), declare_apps(&gateway, &default_org.id, &config))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let restored = synced.table().redirs.len();
        let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        write_profile(&url, &admin, &data_dir);
        // Before saying ready: from then on a signal must find its handler (SIGUSR2's
        // default action would kill the process).
        let signals = Signals::new()?;
        info!(data_dir = %data_dir.display(), store = %store.describe(), node = %node, redirections = restored, pid = std::process::id(), "control API listening on {url} (web console on {url}/)");
        if let Some(handed) = inherited.as_mut() {
            handed.ready();
        }
        // Under systemd (Type=notify), this process is now the one to watch, upgrade or not.
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::MainPid(std::process::id()),
            sd_notify::NotifyState::Ready,
        ]);
        let running = Running {
            path: opts.config.clone(),
            public_bind: opts.public_bind,
            config,
            store,
            gateway: gateway.clone(),
            default_org: default_org.id,
            fleet: store_url.is_some(),
        };
        Ok(Server {
            opts,
            exe,
            lock,
            listener,
            tls: tls.map(|config| config.get_inner()),
            live,
            synced,
            gateway,
            running,
            signals,
        })
    }

    /// Answers the control API until a signal says stop (or an upgrade took the sockets),
    /// reading the config file again on SIGHUP; then lets open connections drain.
    pub async fn serve(mut self) -> Result<()> {
        let mut handed_over = false;
        loop {
            let stop_api = tokio_util::sync::CancellationToken::new();
            let app = api::router(self.gateway.clone());
            let mut server = tokio::spawn(http::serve(
                self.listener.try_clone()?,
                self.tls.clone(),
                app,
                stop_api.clone(),
                API_GRACE,
            ));
            let signal = loop {
                tokio::select! {
                    signal = self.signals.next() => match signal {
                        Signal::Reload => self.running.reload().await,
                        other => break other,
                    },
                    served = &mut server => {
                        served.context("the control API stopped")?.context("the control API failed")?;
                        bail!("the control API stopped on its own");
                    }
                }
            };
            // On a stop, the public ports close first: a client must not be accepted during
            // the API's grace period only to be cut by the drain.
            if signal == Signal::Stop {
                self.live.stop_accepting();
            }
            // New API connections wait in the socket's queue from here: for the new process
            // on an upgrade, for nobody on a stop (they are closed with it). The calls
            // already taken are answered first, so none can change the store behind the new
            // process.
            stop_api.cancel();
            server.await.context("the control API stopped")?.context("the control API failed")?;
            if signal == Signal::Stop {
                break;
            }
            info!(binary = %self.exe.display(), "upgrade: starting the binary at this path with this process's sockets");
            let sockets = self.live.sockets_for_handover().await;
            let handing = upgrade::hand_over(&self.exe, &self.listener, &self.lock, sockets);
            tokio::pin!(handing);
            // API calls wait for the new process, but not for long: one that waits for a
            // store it cannot reach (a partition) or loads a large table would otherwise
            // hold them up to its ready timeout. This one then answers them, reads only.
            let outcome = match tokio::time::timeout(HANDOVER_API_PAUSE, &mut handing).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    warn!(
                        waited_ms = HANDOVER_API_PAUSE.as_millis() as u64,
                        "upgrade: the new process is not ready yet (its log says what it waits for); meanwhile this process answers the control API: reads from its copy, changes with 503"
                    );
                    let stop_reads = tokio_util::sync::CancellationToken::new();
                    // Whatever becomes of these reads, the hand-over's outcome decides what
                    // this process does next (drain, or go on serving).
                    let reads = match self.listener.try_clone() {
                        Ok(listener) => Some(tokio::spawn(http::serve(
                            listener,
                            self.tls.clone(),
                            http::reads_only(api::router(self.gateway.clone())),
                            stop_reads.clone(),
                            API_GRACE,
                        ))),
                        Err(err) => {
                            warn!(error = %err, "upgrade: cannot answer the control API meanwhile; its calls wait for the new process");
                            None
                        }
                    };
                    let outcome = handing.await;
                    stop_reads.cancel();
                    if let Some(reads) = reads {
                        match reads.await {
                            Ok(Ok(())) => {}
                            Ok(Err(err)) => {
                                warn!(error = format!("{err:#}"), "upgrade: the read-only control API failed")
                            }
                            Err(err) => warn!(error = %err, "upgrade: the read-only control API stopped"),
                        }
                    }
                    outcome
                }
            };
            match outcome {
                Ok(pid) => {
                    self.live.mark_handed_over();
                    handed_over = true;
                    info!(
                        new_pid = pid,
                        drain_secs = self.opts.drain.as_secs(),
                        "upgrade: the new process serves every socket; this one lets its connections finish"
                    );
                    break;
                }
                Err(err) => {
                    error!(
                        error = format!("{err:#}"),
                        "upgrade failed; this process goes on serving as before"
                    )
                }
            }
        }
        // The control API's socket closes now: a call made during the drain is refused at
        // once (the CLI says the server cannot be reached, exit 5) instead of waiting in the
        // queue for the drain's end and a reset. After a hand-over the new process has it.
        drop(self.listener);
        // After a hand-over the new process is the service: this one must not say it stops.
        if !handed_over {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        }
        info!(
            drain_secs = self.opts.drain.as_secs(),
            "stopping: no new connections; letting open ones finish"
        );
        self.synced.stop();
        self.live.stop(self.opts.drain).await;
        info!("stopped");
        Ok(())
    }
}

/// How long API calls wait for an upgrade's new process before the old one answers them
/// (reads from its copy, changes with 503): a hand-over that takes longer is one whose new
/// process waits for its store (or loads a large table), and calls must not hang meanwhile.
const HANDOVER_API_PAUSE: Duration = Duration::from_secs(2);

/// The longest wait between two tries of a start step whose store cannot be reached.
const MAX_STORE_WAIT: Duration = Duration::from_secs(5);

/// The data directory, made private and locked (or the lock an upgrade handed over): two
/// servers on one store would hand out the same ports.
fn claim_data_dir(opts: &Options, inherited: Option<&upgrade::Inherited>) -> Result<(PathBuf, File)> {
    // Everything the server writes (store, WAL, credential, profile) is for its user only.
    // SAFETY: umask only changes this process's file creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    let data_dir = match &opts.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir()?,
    };
    create_private_dir(&data_dir)?;
    let data_dir =
        data_dir.canonicalize().with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let lock = match inherited {
        Some(handed) => adopt_lock(&data_dir, handed.lock.try_clone()?)?,
        None => lock(&data_dir)?,
    };
    Ok((data_dir, lock))
}

/// The control API's listening socket: bound here, or the one an upgrade handed over.
fn bind_api(
    opts: &Options,
    inherited: Option<&upgrade::Inherited>,
    tls: bool,
) -> Result<std::net::TcpListener> {
    let listener = match inherited {
        Some(handed) => handed.api.try_clone()?,
        None => std::net::TcpListener::bind(opts.listen).with_context(|| {
            format!("cannot listen on {} for the control API: is another server running? choose another address with --listen", opts.listen)
        })?,
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && !tls {
        warn!(%addr, "the control API listens beyond loopback WITHOUT TLS: credentials cross the network in clear text; put it behind a TLS proxy or listen on 127.0.0.1");
    }
    Ok(listener)
}

/// The forwarding threads and the live ports, none running yet, holding the sockets an
/// upgrade handed over until the table claims them.
fn start_ports(
    opts: &Options,
    config: &Config,
    namespaces: &[config::Namespace],
    mut inherited: Option<&mut upgrade::Inherited>,
) -> Result<Arc<live::LivePorts>> {
    let workers = workers::Workers::start(opts.threads).context("cannot start the forwarding threads")?;
    let served = live::Served {
        only: opts
            .namespaces
            .clone()
            .or(config.serve_namespaces.clone())
            .map(|list| list.into_iter().collect()),
        public_bind: opts.public_bind,
        binds: namespaces.iter().map(|n| (n.def.name.clone(), n.bind)).collect(),
        access_log: opts.access_log,
    };
    state::heap::log_settings();
    // An upgrade keeps the mode it finds: the steering handed over, or bound ports.
    let threads = workers.handles().len();
    let steered = match inherited.as_deref_mut().map(|handed| handed.steering.take()) {
        Some(Some((fds, sockets))) => Some(
            data::steered::Steered::adopt(fds, sockets, threads)
                .context("cannot take over the old process's steering")?,
        ),
        Some(None) => data::steered::choose(data::steered::Mode::Bound, threads)?,
        None => data::steered::choose(opts.port_mode, threads).map_err(|err| {
            anyhow::anyhow!("--port-mode steered: {err}; or run with --port-mode bound (one socket per port)")
        })?,
    };
    let live = Arc::new(live::LivePorts::new(served, workers, steered));
    if let Some(handed) = inherited {
        live.inherit(std::mem::take(&mut handed.ports), std::mem::take(&mut handed.udp));
    }
    Ok(live)
}

/// Loads the table, starts following the store (which starts every stored port), and
/// publishes this node; answers once the node is listed, or after 5 s.
async fn follow_store(
    store: &Arc<dyn Store>,
    live: &Arc<live::LivePorts>,
    node: &str,
    ttl: Duration,
    public_bind: IpAddr,
) -> Result<Arc<sync::Synced>> {
    let loading = std::time::Instant::now();
    let snapshot = patiently("table", || store.snapshot())
        .await
        .map_err(|e| anyhow::anyhow!("cannot load the table from {}: {e}", store.describe()))?;
    info!(
        records = snapshot.records.len(),
        revision = snapshot.revision,
        took_ms = loading.elapsed().as_millis() as u64,
        "table loaded from the store"
    );
    let synced = sync::Synced::start(store.clone(), live.clone(), snapshot).await;
    live.drop_unclaimed();
    live.accept_steered();
    // In the background, retried for as long as it takes: a store lost now must not end
    // the node, and its liveness stops with the node's sync (a process draining after an
    // upgrade must not mark the node alive with a lease that ends with it).
    store.keep_alive(node, ttl, synced.stopped()).await;
    tokio::spawn(synced.clone().publish_node(node.to_owned(), public_bind.to_string()));
    // Ready means listed: the other nodes wait for this one from the moment it says so.
    let listed = |t: &table::Table| t.nodes.contains_key(node) && t.alive.contains(node);
    if !synced.wait_table(Duration::from_secs(5), listed).await {
        warn!(node = %node, "this node's state has not come back from the store yet; serving anyway");
    }
    Ok(synced)
}

/// Runs one step of the start against the store until it is done, waiting out a store
/// that cannot be reached (etcd restarting, electing a leader, the network away): a node
/// never gives up on its store, and says so at each try. Any other error ends the start.
async fn patiently<T, Fut>(step: &str, mut run: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(250);
    loop {
        match run().await {
            Err(StoreError::Unavailable(error)) => {
                warn!(step, %error, retry_in_ms = wait.as_millis() as u64, "the store cannot be reached; waiting for it");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_STORE_WAIT);
            }
            done => return done,
        }
    }
}

/// Opens the store: etcd when `url` names one (waiting for it to answer), else SQLite in
/// the data directory.
async fn open_store(url: Option<&str>, access: &StoreAccess, data_dir: &Path) -> Result<Arc<dyn Store>> {
    if let Some(url) = url {
        return open_etcd(url, access).await;
    }
    if access.is_set() {
        bail!("--store-ca, --store-cert, --store-key, --store-user and --store-password-file are for etcd (--store etcd://…); this node keeps its table in SQLite");
    }
    let path = data_dir.join("tcp-redirs.db");
    let store = store::sqlite::Sqlite::open(&path)?;
    restrict(&path);
    Ok(Arc::new(store))
}

/// Puts the operator's credential in the store under `id`, replacing the last start's: a
/// token taken from the environment last time stops working when the environment changes.
async fn install_admin(store: &dyn Store, admin: &AdminCredential, id: &str) -> Result<(), StoreError> {
    match store.revoke_token(None, id).await {
        Ok(_) | Err(StoreError::Conflict(Conflict::NotFound)) => {}
        Err(e) => return Err(e),
    }
    let info =
        crate::wire::TokenInfo { id: id.to_owned(), name: ADMIN.into(), owner_id: None, created_at: None };
    let record = store::TokenRecord {
        info,
        token_hash: auth::hash(&admin.token),
        secret_hash: auth::hash(&admin.secret),
    };
    store.put_token(&record).await.map(drop)
}

/// Reads the control API's certificate chain and key.
async fn load_tls(cert: &Path, key: &Path) -> Result<axum_server::tls_rustls::RustlsConfig> {
    // One process-wide provider; a second install (tests) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await.with_context(|| {
        format!(
            "cannot load the TLS certificate {} and key {}: give PEM files",
            cert.display(),
            key.display()
        )
    })
}

/// Creates or updates the config file's applications in the default organisation; a
/// store that cannot be reached is [`StoreError::Unavailable`], so that the start waits.
async fn declare_apps(gateway: &Gateway, org_id: &str, config: &Config) -> Result<(), StoreError> {
    for app in &config.applications {
        let instances = app
            .instances
            .iter()
            .map(|a| crate::wire::Instance { address: a.clone(), ..Default::default() })
            .collect();
        gateway.declare_app(org_id, &app.name, instances).await.map_err(|e| match e.id {
            5030 => StoreError::Unavailable(e.message),
            _ => StoreError::Other(anyhow::anyhow!(e.message)),
        })?;
    }
    Ok(())
}

/// What a running server needs to read its config file again.
struct Running {
    /// The config file, if any (`serve --config`).
    path: Option<PathBuf>,
    public_bind: IpAddr,
    config: Config,
    store: Arc<dyn Store>,
    gateway: Arc<Gateway>,
    default_org: String,
    fleet: bool,
}

impl Running {
    /// SIGHUP: reads the config file again and applies what can change while running
    /// (namespaces, their defaults and reservations, the quota, applications); an invalid
    /// file changes nothing.
    async fn reload(&mut self) {
        let Some(path) = &self.path else {
            return info!("SIGHUP: no config file to read again (serve --config FILE)");
        };
        let loaded = Config::load(path).and_then(|c| c.namespaces(self.public_bind).map(|n| (c, n)));
        let (config, namespaces) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                return error!(
                    error = format!("{err:#}"),
                    "SIGHUP: the config file is invalid; the running config stays"
                )
            }
        };
        let old = self.config.namespaces(self.public_bind).unwrap_or_default();
        let restart_only = config.store != self.config.store
            || config.store_access() != self.config.store_access()
            || config.node != self.config.node
            || config.serve_namespaces != self.config.serve_namespaces
            || namespaces.iter().any(|n| old.iter().any(|o| o.def.name == n.def.name && o.bind != n.bind));
        if restart_only {
            warn!("SIGHUP: store and its store_* settings, node, serve_namespaces and bind addresses change only with an upgrade (kill -USR2) or a restart; the rest is applied");
        }
        let mut defs: Vec<_> = namespaces.iter().map(|n| n.def.clone()).collect();
        let table = self.gateway.synced().table().clone();
        for (name, def) in &table.namespaces {
            if defs.iter().any(|d| d.name == *name) || def.retired {
                continue;
            }
            let held = table.namespace_redirs(name).count();
            if self.fleet {
                warn!(namespace = %name, redirections = held, "SIGHUP: namespace not in this node's config file; the fleet's definition stays (other nodes may declare it)");
            } else {
                warn!(namespace = %name, redirections = held, "SIGHUP: namespace no longer in the config file: its redirections keep running until they are removed; no new one can be added there");
                defs.push(store::NamespaceDef { retired: true, ..def.clone() });
            }
        }
        if let Err(err) = self.store.reconfigure(&defs, config.max_redirections_per_org).await {
            return error!(error = %err, "SIGHUP: cannot publish the new namespaces; the running config stays");
        }
        self.gateway.set_org_quota(config.max_redirections_per_org);
        if let Ok(checks) = config.health_checks.settings() {
            self.gateway.synced().live().configure_health_checks(checks);
        }
        if let Ok(retention) = config.events.retention() {
            self.store.set_retention(retention);
        }
        let origin = Origin::config_file(self.gateway.node());
        if let Err(err) = audit::acting(origin, declare_apps(&self.gateway, &self.default_org, &config)).await
        {
            error!(error = format!("{err:#}"), "SIGHUP: cannot declare the config file's applications");
        }
        info!(file = %path.display(), namespaces = namespaces.len(), "SIGHUP: config reloaded; new connections get the new settings, open ones keep theirs");
        self.config = config;
    }
}

/// The signals the server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT: stop accepting, drain, exit.
    Stop,
    /// SIGUSR2: hand the sockets to the binary now at this path, then drain and exit.
    Upgrade,
    /// SIGHUP: read the config file again.
    Reload,
}

/// The streams of the signals the server acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr2: signal(SignalKind::user_defined2())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.usr2.recv() => Signal::Upgrade,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Opens the etcd store named by `url`, waiting for it to answer; a refusal (its
/// certificate, this node's, the user, its rights) ends the start with what to check.
#[cfg(feature = "etcd")]
async fn open_etcd(url: &str, access: &StoreAccess) -> Result<Arc<dyn Store>> {
    let etcd =
        patiently("connect", || store::etcd::Etcd::connect(url, access)).await.map_err(|e| match e {
            StoreError::Other(e) => e,
            other => anyhow::anyhow!("{other}"),
        })?;
    Ok(Arc::new(etcd))
}

/// Without the `etcd` feature there is no fleet store: say how to get one.
#[cfg(not(feature = "etcd"))]
async fn open_etcd(url: &str, _access: &StoreAccess) -> Result<Arc<dyn Store>> {
    bail!("--store {url}: this build has no etcd support; build it with `cargo install --path . --features etcd` (needs protoc, Debian's protobuf-compiler)")
}

/// The machine's host name, the default node name.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// A node name: it appears in store keys, so letters, digits, `-`, `_` and `.` only.
fn check_node_name(name: String) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("invalid node name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.` (--node NAME)");
    }
    Ok(name)
}

/// The user's data directory for the server: `~/.local/share/tcp-redirs` on Linux.
pub fn default_data_dir() -> Result<PathBuf> {
    directories::ProjectDirs::from("", "", "tcp-redirs")
        .map(|d| d.data_dir().to_path_buf())
        .context("cannot find the user's data directory (is HOME set?): pass --data-dir")
}

fn create_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))
}

fn restrict(path: &Path) {
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
}

/// Holds an exclusive lock on the data directory for the life of the server.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        bail!(
            "another tcp-redirs server is using the data directory {}: stop it, or pass another --data-dir",
            dir.display()
        );
    }
    Ok(file)
}

/// Takes over the data directory's lock from the process this one replaces: the file
/// must be this data directory's lock (the lock itself goes with the open file).
fn adopt_lock(dir: &Path, file: File) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    let (ours, handed) = (fs::metadata(dir.join("lock"))?, file.metadata()?);
    if (ours.dev(), ours.ino()) != (handed.dev(), handed.ino()) {
        bail!("the process that started this one handed over the lock of another data directory: give both the same --data-dir");
    }
    Ok(file)
}

/// The admin credential: from the environment when given, else the one generated on first start.
fn admin_credential(data_dir: &Path, opts: &Options) -> Result<AdminCredential> {
    let path = data_dir.join("admin.toml");
    let saved: Option<AdminCredential> = match fs::read_to_string(&path) {
        Ok(text) => Some(
            crate::toml_file::parse(&text, &path)
                .context("the admin credential file is damaged: delete it to get a new admin credential")?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let saved = match saved {
        Some(saved) => saved,
        None => {
            let fresh = AdminCredential { token: auth::generate("trt_"), secret: auth::generate("trs_") };
            let mut file = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.write_all(toml::to_string(&fresh)?.as_bytes())?;
            file.sync_all()?;
            info!(file = %path.display(), "created the admin credential");
            fresh
        }
    };
    Ok(AdminCredential {
        token: opts.admin_token.clone().unwrap_or(saved.token),
        secret: opts.admin_secret.clone().unwrap_or(saved.secret),
    })
}

/// Writes the `local` client profile so that the CLI on this machine works with no set-up:
/// when there is none yet, or when it was written by a server on this same data directory
/// (whose address may have changed). A profile the user made is never touched.
fn write_profile(url: &str, admin: &AdminCredential, data_dir: &Path) {
    let result = (|| -> Result<Option<PathBuf>> {
        let mut file = profile::ProfileFile::load()?;
        if let Some(existing) = file.profiles.get(profile::LOCAL) {
            if existing.data_dir.as_deref() != Some(data_dir) {
                return Ok(None);
            }
        }
        file.profiles.insert(
            profile::LOCAL.to_owned(),
            Profile {
                server: url.to_owned(),
                token: Some(admin.token.clone()),
                secret: Some(admin.secret.clone()),
                data_dir: Some(data_dir.to_owned()),
            },
        );
        file.current.get_or_insert_with(|| profile::LOCAL.to_owned());
        file.save().map(Some)
    })();
    match result {
        Ok(Some(path)) => {
            info!(profile = %path.display(), "wrote the client profile `local`: the CLI on this machine talks to this server")
        }
        Ok(None) => info!("left the client profile `local` alone: it belongs to another server"),
        Err(err) => warn!(
            error = format!("{err:#}"),
            "could not write the client profile; pass --server and --token to the CLI"
        ),
    }
}

/// Every connection costs two descriptors (four while it splices), and the usual soft
/// limit of 1024 would cap the gateway at a few hundred connections: take the hard limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                info!(from = soft, to = limit.rlim_max, "raised the open file limit");
            }
        }
    }
}
