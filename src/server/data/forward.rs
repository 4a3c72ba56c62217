//! The forwarding loop: accept on a public port, connect to an instance, copy both ways.
//!
//! Each redirection has one accept loop on each forwarding thread ([`super::workers`]); each
//! accepted connection gets its own task on that thread, which connects to one of the
//! application's instances (chosen by [`super::balance`], moving on to the next instance
//! when one refuses or does not answer in time) and then copies bytes both ways
//! until both directions have ended. The copy passes a half-close on: when one side shuts
//! its write half, the other side's write half is shut and the opposite direction keeps
//! flowing, so a request/response protocol that signals the end of its request with FIN
//! still gets its answer (bore and frp once lost these answers).
//!
//! The bytes themselves are moved by [`super::copy`]. Nothing here takes a lock or
//! allocates per byte: the instance list is read once per connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use once_cell::race::OnceBox;
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::admission::Admission;
use super::balance::{self, Pool};
use super::conn_log::{ConnLog, End};
use super::copy::{self, Timeouts};
use super::exclusive;
use super::limited::Held;
use super::metrics::{RedirMetrics, Slot};
use super::ports::Listeners;
use super::proxy_header;
use super::workers::Workers;
use crate::server::spec::{Access, TcpLimits};

/// How long to wait before accepting again after the process ran out of descriptors.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a redirection whose port could not be bound tries again.
const REBIND_EVERY: Duration = Duration::from_secs(5);

/// What every port of the node shares: one pointer in each port rather than five.
pub struct Node {
    /// Told when a bind that had failed succeeds, so the node's published state follows
    /// without polling.
    pub bound_changed: Arc<tokio::sync::Notify>,
    /// Tracks the connection tasks, so the server can wait for them at exit: one tracker
    /// per forwarding thread, so that counting a connection touches nothing another
    /// thread writes.
    pub connections: Arc<[TaskTracker]>,
    /// Set when the ports' sockets were handed to a new process (an upgrade): accept loops
    /// then stop without taking the connections queued on them, which the new process
    /// accepts from the same sockets.
    pub handed_over: Arc<AtomicBool>,
    /// The forwarding threads, one accept loop on each.
    pub workers: Arc<Workers>,
    /// Parent of every port's token that closes its open connections (cancelled when the
    /// drain ends).
    pub kill: CancellationToken,
    /// The descriptors of each bound port's listening sockets while they listen, by the
    /// port's address in memory, for a hand-over: here rather than in every [`Port`], since
    /// a steered port has none (issue 32's memory per redirection).
    pub listening: Mutex<HashMap<usize, Vec<std::os::fd::RawFd>>>,
}

/// One redirection's public side: what its accept loops, its connections and the live
/// ports' owner read, in one allocation.
///
/// A node may hold 100,000 of these, most of them idle: what only a busy port needs (its
/// token that closes its connections, its per-thread [`Local`]s) is made at its first
/// connection, one pointer each until then, and its limits and policy are shared with every
/// port that has the same. 96 bytes (glibc gives it 128 with its counts), and 88 for its
/// metrics (112): `bench/heap.sh`.
pub struct Port {
    /// What every port of the node shares.
    pub node: Arc<Node>,
    /// Where to bind when no listener is handed over ([`Self::addr`]): its address and port
    /// apart, 20 bytes where a `SocketAddr` takes 32 (issue 32's memory per redirection).
    ip: IpAddr,
    port: u16,
    /// The application's instances.
    pub targets: Arc<Pool>,
    /// Cancelled to stop accepting: the redirection is removed or the server stops. A
    /// steered port's is the node's (its accept loops are the node's).
    pub stop_accepting: CancellationToken,
    /// Cancelled to close the open connections: made at the first connection (or at the
    /// removal), a child of the node's `kill`.
    close_connections: OnceBox<CancellationToken>,
    /// Whether the port is bound (or steered) right now.
    pub bound: AtomicBool,
    /// How long connections may take and last, and how many: swapped in place when the
    /// redirection's or the namespace's settings change, for new connections only.
    pub limits: ArcSwap<TcpLimits>,
    /// Who may connect, the PROXY header, and the connection log: swapped in place when
    /// the redirection's or its namespace's settings change, for new connections only.
    pub policy: ArcSwap<Policy>,
    /// The redirection's metrics.
    pub metrics: Arc<RedirMetrics>,
    /// Who and how many may connect.
    admission: Admission,
    /// In steered mode, what each forwarding thread's connections to the port share, made
    /// at the first connection on that thread (bound mode: each accept loop has its own).
    /// A pointer until then, not a slice's two words (issue 32's memory per redirection).
    locals: OnceBox<Box<[OnceLock<Arc<Local>>]>>,
}

impl Port {
    /// Where to bind when no listener is handed over (a range's first port).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// The namespace, for logs (its metrics' label: not a copy of its own).
    pub fn namespace(&self) -> &str {
        self.metrics.namespace()
    }

    /// A port not accepting yet.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Arc<Node>,
        addr: SocketAddr,
        targets: Arc<Pool>,
        stop_accepting: CancellationToken,
        limits: Arc<TcpLimits>,
        policy: Arc<Policy>,
        metrics: Arc<RedirMetrics>,
    ) -> Port {
        Port {
            node,
            ip: addr.ip(),
            port: addr.port(),
            targets,
            stop_accepting,
            close_connections: OnceBox::new(),
            bound: AtomicBool::new(false),
            limits: ArcSwap::new(limits),
            policy: ArcSwap::new(policy),
            metrics,
            admission: Admission::default(),
            locals: OnceBox::new(),
        }
    }

    /// The token that closes the port's open connections.
    fn close_connections(&self) -> &CancellationToken {
        self.close_connections.get_or_init(|| Box::new(self.node.kill.child_token()))
    }

    /// The descriptors of its listening sockets while they listen (bound mode), for a
    /// hand-over.
    pub fn listening(&self) -> Vec<std::os::fd::RawFd> {
        let listening = self.node.listening.lock().unwrap_or_else(|p| p.into_inner());
        listening.get(&(self as *const Port as usize)).cloned().unwrap_or_default()
    }

    /// Adds `fds` to its listening sockets' descriptors ([`Self::listening`]).
    fn listen(&self, fds: impl IntoIterator<Item = std::os::fd::RawFd>) {
        let mut listening = self.node.listening.lock().unwrap_or_else(|p| p.into_inner());
        listening.entry(self as *const Port as usize).or_default().extend(fds);
    }

    /// Forgets its listening sockets' descriptors: they no longer listen.
    fn unlisten(&self) {
        let mut listening = self.node.listening.lock().unwrap_or_else(|p| p.into_inner());
        listening.remove(&(self as *const Port as usize));
    }

    /// Resets the port's open connections (a removal), and any it accepts from now on.
    pub fn close(&self) {
        self.close_connections().cancel();
    }

    /// What the port's connections accepted on steered forwarding thread `thread` share.
    pub(super) fn local(&self, thread: usize) -> &Arc<Local> {
        let locals = self.locals.get_or_init(|| {
            Box::new((0..self.node.connections.len().max(thread + 1)).map(|_| OnceLock::new()).collect())
        });
        locals[thread].get_or_init(|| Local::new(self, thread))
    }
}

/// What decides a new connection's fate beyond the limits: who may connect (and whether
/// it gets a PROXY header), and whether it is logged when it ends.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Raised at each change, so that a thread sees whether its copy is current. 0 is the
    /// policy of every port that sets none (no access list, PROXY header nor log), all
    /// alike: a thread shares one copy of it among its ports ([`thread_copy`]).
    pub generation: u64,
    /// Who may connect, and whether to send the PROXY header.
    pub access: Access,
    /// Where its connections are logged when they end; `None`: not logged.
    pub log: Option<ConnLog>,
}

/// Runs a redirection's public port until cancelled, binding it first if `listeners` is `None`.
///
/// Each listener is served by an accept loop on its own forwarding thread; this task only
/// binds, hands out and waits. Returning means every listener was dropped, which is what
/// closes the port at once on removal.
pub async fn run(port: Arc<Port>, mut listeners: Option<Listeners>) {
    let listeners = loop {
        if let Some(l) = listeners.take() {
            break l;
        }
        match super::ports::bind(port.addr()) {
            Ok(l) => break l,
            Err(err) if super::ports::out_of_descriptors(&err) => {
                warn!(namespace = %port.namespace(), addr = %port.addr(), error = %err, limit = super::ports::descriptor_limit(),
                    "cannot bind the redirection's port: this node has reached its open-file limit; raise it (systemd: LimitNOFILE=) or serve the namespace from another node; retrying every {}s", REBIND_EVERY.as_secs());
                if Box::pin(stopped_within(&port.stop_accepting, REBIND_EVERY)).await {
                    return;
                }
            }
            Err(err) => {
                warn!(namespace = %port.namespace(), addr = %port.addr(), error = %err,
                    "cannot bind the redirection's port (is another program using it?); retrying every {}s", REBIND_EVERY.as_secs());
                if Box::pin(stopped_within(&port.stop_accepting, REBIND_EVERY)).await {
                    return;
                }
            }
        }
    };
    if !port.bound.swap(true, Ordering::Relaxed) {
        port.node.bound_changed.notify_one();
    }
    port.listen(listeners.iter().map(std::os::fd::AsRawFd::as_raw_fd));
    debug!(namespace = %port.namespace(), addr = %port.addr(), listeners = listeners.len(), "accepting");
    let threads = port.node.workers.handles();
    let loops: Vec<_> = if listeners.len() >= threads.len() {
        // One listener per thread (a group handed over by a version that bound one per
        // thread with SO_REUSEPORT): each thread accepts on its own.
        listeners
            .into_iter()
            .zip(threads.iter().enumerate().cycle())
            .map(|(listener, (i, thread))| {
                thread.spawn(accept_loop(port.clone(), Source::Own(listener), i, 0))
            })
            .collect()
    } else {
        // The usual case: one listener, polled by every thread.
        listeners
            .into_iter()
            .map(Arc::new)
            .flat_map(|listener| {
                threads
                    .iter()
                    .enumerate()
                    .map(|(i, thread)| {
                        thread.spawn(accept_loop(port.clone(), Source::Shared(listener.clone()), i, 0))
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for accepting in loops {
        let _ = accepting.await;
    }
    port.unlisten();
    // Stopped by the reconciler or the server: the port leaves the node's state with its
    // entry, which is no change of a bind to tell.
    port.bound.store(false, Ordering::Relaxed);
}

/// Waits `wait`, or less when `stop` is cancelled first (answers whether it was).
///
/// Awaited boxed, on the rare paths (a failed bind, an accept out of descriptors): a timer
/// inline would size every port's task, and every accept loop's, for the worst case.
pub(super) async fn stopped_within(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// A listener as an accept loop receives it.
pub(super) enum Source {
    /// Accepted on by this loop alone.
    Own(std::net::TcpListener),
    /// Polled by every forwarding thread's loop.
    Shared(Arc<std::net::TcpListener>),
}

impl AsRawFd for Source {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Source::Own(l) => l.as_raw_fd(),
            Source::Shared(l) => l.as_raw_fd(),
        }
    }
}

/// A listener registered with this thread's poller.
pub(super) struct Polled {
    fd: AsyncFd<Source>,
    /// Failed accepts so far (the queue was empty when this thread was woken), up to
    /// [`exclusive::LOSSES`], when a shared listener moves to an exclusive registration.
    /// (An atomic only to keep the loop's future `Send`: one thread alone touches it.)
    losses: AtomicU32,
}

impl Polled {
    pub(super) fn new(source: Source) -> io::Result<Polled> {
        // Only a shared listener has other threads to lose races to.
        let losses = if matches!(source, Source::Shared(_)) { 0 } else { exclusive::LOSSES };
        // SAFETY: the source owns its listening socket (or shares its ownership through
        // the Arc) and keeps it open for as long as the AsyncFd lives; its descriptor never
        // changes. A shared listener is the same socket in every thread's epoll set: the
        // descriptor is not duplicated, and each thread registers and removes it in its own.
        let fd = unsafe { AsyncFd::register_with_interest(source, Interest::READABLE) };
        Ok(Polled { fd: fd.map_err(|e| e.into_parts().1)?, losses: AtomicU32::new(losses) })
    }

    pub(super) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            // With a shared listener, every thread is woken by a new connection: the first
            // to accept takes it, the others find the queue empty and wait again, until the
            // listener has lost enough races to be registered exclusive.
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|source| accept_now(source.get_ref())) {
                Ok(accepted) => return accepted.and_then(|(s, peer)| Ok((TcpStream::from_std(s)?, peer))),
                Err(_would_block) => self.lost(),
            }
        }
    }

    /// Counts a failed accept; the [`exclusive::LOSSES`]th moves the listener.
    fn lost(&self) {
        let losses = self.losses.load(Ordering::Relaxed);
        if losses >= exclusive::LOSSES {
            return;
        }
        self.losses.store(losses + 1, Ordering::Relaxed);
        if losses + 1 == exclusive::LOSSES {
            match exclusive::make_exclusive(self.fd.get_ref()) {
                Ok(done) => debug!(fd = self.fd.as_raw_fd(), exclusive = done, "a busy shared listener"),
                Err(err) => {
                    warn!(error = %err, "cannot register a busy listener exclusive; every thread stays woken per connection")
                }
            }
        }
    }

    /// Registers the listener exclusive at once (a listener every thread polls from the
    /// start, whose connections are spread over many ports: no busy port to wait for).
    pub(super) fn make_exclusive(&self) {
        self.losses.store(exclusive::LOSSES - 1, Ordering::Relaxed);
        self.lost();
    }

    /// The connection queued on the listener now, without waiting.
    pub(super) fn accept_queued(&self) -> Option<(TcpStream, SocketAddr)> {
        let (client, peer) = accept_now(self.fd.get_ref()).ok()?;
        Some((TcpStream::from_std(client).ok()?, peer))
    }
}

/// Takes a connection from a non-blocking listener: `accept4` with the socket made
/// non-blocking and close-on-exec in the same call (no `fcntl` afterwards).
fn accept_now(listener: &impl AsRawFd) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let fd = listener.as_raw_fd();
    // SAFETY: accept4 writes at most `len` bytes of address into the storage try_init gives,
    // and returns a new descriptor that this function alone owns.
    let (client, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let client = libc::accept4(fd, storage.cast(), len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
            if client < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(std::net::TcpStream::from_raw_fd(client))
            }
        })?
    };
    let peer =
        addr.as_socket().ok_or_else(|| io::Error::other("accepted a connection that is not TCP/IP"))?;
    Ok((client, peer))
}

/// What the connections of one accept loop share: made once per loop, so that a new
/// connection takes one reference on an `Arc` that only this thread touches, rather than
/// one on each of the port's (whose counts every thread would write).
pub(super) struct Local {
    /// This thread's own copy of the port's policy, copied again when its generation moves.
    policy: ArcSwap<Policy>,
    targets: Arc<Pool>,
    metrics: Arc<RedirMetrics>,
    /// A child of the port's token: waiting on it takes this thread's lock, not the port's.
    close: CancellationToken,
    /// This thread's tracker of connection tasks.
    tracker: TaskTracker,
}

impl Local {
    /// What the port's connections accepted on forwarding thread `thread` share.
    pub(super) fn new(port: &Port, thread: usize) -> Arc<Local> {
        let connections = &port.node.connections;
        Arc::new(Local {
            policy: ArcSwap::new(thread_copy(&port.policy.load())),
            targets: port.targets.clone(),
            metrics: port.metrics.clone(),
            close: port.close_connections().child_token(),
            tracker: connections[thread % connections.len()].clone(),
        })
    }
}

/// Accepts on one listener, on forwarding thread `thread`, until cancelled; the listener
/// is the port's `offset`th (a range's, issue 34; 0 for a single port).
async fn accept_loop(port: Arc<Port>, listener: Source, thread: usize, offset: u16) {
    // Registered here, with this thread's runtime, so that its connections live on it.
    let listener = match Polled::new(listener) {
        Ok(l) => l,
        Err(err) => return warn!(addr = %port.addr(), error = %err, "cannot poll a listener of the port"),
    };
    let local = Local::new(&port, thread);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = port.stop_accepting.cancelled() => {
                if !port.node.handed_over.load(Ordering::Relaxed) {
                    take_queued(&port, &local, &listener, offset);
                }
                return;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => admit(&port, &local, client, peer, offset),
            // Out of descriptors or memory: the listener is fine, wait for connections to
            // end instead of dying (frp's listeners died here until its PR #2467).
            Err(err) if is_resource_exhaustion(&err) => {
                warn!(addr = %port.addr(), error = %err, "cannot accept: out of resources; backing off");
                if Box::pin(stopped_within(&port.stop_accepting, ACCEPT_BACKOFF)).await {
                    return;
                }
            }
            // Errors that belong to one connection (it was reset before we took it).
            Err(err) => debug!(addr = %port.addr(), error = %err, "accept failed"),
        }
    }
}

thread_local! {
    /// This thread's copy of the policy of generation 0, shared by its ports that set none.
    static OPEN_POLICY: std::cell::OnceCell<Arc<Policy>> = const { std::cell::OnceCell::new() };
}

/// This thread's own copy of `policy`: a thread reads its copy's reference count at each
/// connection, and a count shared with another thread would move between their caches.
/// The policy of generation 0 is one copy for all the thread's ports (issue 32's memory:
/// about 140 bytes a port and thread that took a connection, before).
fn thread_copy(policy: &Policy) -> Arc<Policy> {
    if policy.generation == 0 {
        OPEN_POLICY.with(|open| open.get_or_init(|| Arc::new(policy.clone())).clone())
    } else {
        Arc::new(policy.clone())
    }
}

/// Starts forwarding a connection just accepted, or resets it if it is refused. `offset`:
/// which port of a range it was accepted on (issue 34), which it leads to on each instance
/// (0: a single port's, the instance's own).
pub(super) fn admit(port: &Port, local: &Arc<Local>, client: TcpStream, peer: SocketAddr, offset: u16) {
    let limits = **port.limits.load();
    // A read of the port's policy (no reference taken); a copy only after a change.
    let mut policy = local.policy.load_full();
    let current = port.policy.load();
    if current.generation != policy.generation {
        policy = thread_copy(&current);
        local.policy.store(policy.clone());
    }
    drop(current);
    let held = match port.admission.admit(peer, limits.quotas(), &policy.access, &local.metrics) {
        Ok(held) => held,
        Err(refusal) => {
            debug!(%peer, addr = %port.addr(), "{}", refusal.why());
            if let Some(log) = &policy.log {
                log.log(peer, None, (0, 0), Instant::now(), refusal.end());
            }
            // A reset, at once: the client learns nothing and costs nothing.
            return copy::reset(&client);
        }
    };
    let local = local.clone();
    local.tracker.clone().spawn(async move {
        // The connection's task runs on this thread for its whole life: its slot of the
        // counters is this thread's, and the connection was counted open in it.
        let slot = local.metrics.traffic.mine();
        let open = Open(slot);
        connection(client, peer, limits, slot, &local, &policy, held.as_deref(), offset).await;
        // The client's place in its address's count goes with the connection.
        drop(held);
        drop(open);
    });
}

/// Takes the connections still queued on a listener that stops accepting, then closes it.
///
/// The kernel completes handshakes before the gateway accepts them: a client in the queue
/// has already seen its connection open, and closing the listener would reset it. At a stop
/// they are served through the drain like the others (at a removal they are closed anyway).
fn take_queued(port: &Port, local: &Arc<Local>, listener: &Polled, offset: u16) {
    while let Some((client, peer)) = listener.accept_queued() {
        admit(port, local, client, peer, offset);
    }
}

pub(super) fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

// Each argument is borrowed from the connection's task (its thread's slot, the port's policy
// and limits as admitted, its address's hold) or is the accepted stream itself: a struct
// would only name them a second time.
#[allow(clippy::too_many_arguments)]
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    limits: TcpLimits,
    slot: &Slot,
    local: &Local,
    policy: &Policy,
    held: Option<&Held>,
    offset: u16,
) {
    let Local { targets, metrics, close, .. } = local;
    let Policy { access, log, .. } = policy;
    // Read the clock only for a port that logs its connections.
    let started = log.as_ref().map(|_| Instant::now());
    // One wait for the whole connection: each wait on the shared token takes its lock.
    let cancelled = close.cancelled();
    tokio::pin!(cancelled);
    let connected = tokio::select! {
        // A removal or a stop wins over a connect that is starting: the client sees a reset.
        biased;
        () = &mut cancelled => return copy::reset(&client),
        connected = connect(targets, limits.connect_timeout, slot, metrics, offset) => connected,
    };
    let Some((upstream, open)) = connected else {
        metrics.rare().no_instance.inc();
        info!(%peer, "no instance of the application accepted the connection; closing it");
        if let (Some(log), Some(started)) = (&log, started) {
            log.log(peer, None, (0, 0), started, End::NoInstance);
        }
        return;
    };
    let instance = open.address();
    // The local address only when a header is due: `getsockname` is a system call.
    let header = access.proxy().and_then(|version| Some((version, client.local_addr().ok()?)));
    if let Some(header) = header.and_then(|(version, local)| proxy_header::header(version, peer, local)) {
        if let Err(err) = copy::write_all(&upstream, &header).await {
            debug!(%peer, %instance, error = %err, "could not send the PROXY header");
            return;
        }
    }
    let counted = [&slot.bytes_in, &slot.bytes_out];
    let outcome = copy::bidirectional(
        &client,
        &upstream,
        Timeouts { idle: limits.idle_timeout, half_closed: limits.half_close_timeout },
        counted,
        held.and_then(|h| h.bandwidth.as_deref()),
        cancelled,
    )
    .await;
    debug!(%peer, %instance, up = outcome.up, down = outcome.down, cut = ?outcome.cut, "connection closed");
    if let (Some(log), Some(started)) = (&log, started) {
        log.log(peer, Some(instance), (outcome.up, outcome.down), started, End::of(&outcome));
    }
}

/// Counts a connection as open (from its admission) for as long as it lives, however it ends.
struct Open<'a>(&'a Slot);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Connects to the first instance that accepts, in the order the balancer gives, on its
/// port `+ offset` (a range's, issue 34).
async fn connect(
    targets: &Pool,
    timeout: Duration,
    slot: &Slot,
    metrics: &RedirMetrics,
    offset: u16,
) -> Option<(TcpStream, balance::Open)> {
    for member in targets.candidates() {
        let address = &member.address;
        let began = std::time::Instant::now();
        let attempt = tokio::time::timeout(timeout, open(&member, offset)).await;
        if !matches!(attempt, Ok(Ok(_))) {
            metrics.rare().connect_failures.inc();
        }
        match attempt {
            Ok(Ok(stream)) => {
                slot.connected_in(began.elapsed());
                return Some((stream, member.enter()));
            }
            // Out of descriptors here: no fault of the instance, and the others would fare
            // no better. The client's connection is closed; the instance stays up.
            Ok(Err(err)) if is_resource_exhaustion(&err) => {
                warn!(instance = %address, error = %err, "cannot open a connection to the instance: out of resources");
                return None;
            }
            Ok(Err(err)) => debug!(instance = %address, error = %err, "instance refused the connection"),
            Err(_) => debug!(instance = %address, "instance did not answer within {timeout:?}"),
        }
        member.failed();
    }
    None
}

/// Opens a connection to the instance, with `TCP_NODELAY` set: to its IP address, or to
/// its host name's addresses in turn (looked up and cached by [`balance::Member`]), on
/// their port `+ offset` (a range's public port `first + offset`, issue 34).
async fn open(member: &Arc<balance::Member>, offset: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in member.addresses().await?.iter() {
        match open_addr(shifted(*addr, offset)?).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::NotFound.into()))
}

/// `addr` on its port `+ offset`; an instance port that the range would carry past 65535 is
/// refused like an instance that refuses.
fn shifted(mut addr: SocketAddr, offset: u16) -> io::Result<SocketAddr> {
    let port = addr.port().checked_add(offset).ok_or_else(|| {
        io::Error::new(io::ErrorKind::ConnectionRefused, format!("{addr} + {offset} is past port 65535"))
    })?;
    addr.set_port(port);
    Ok(addr)
}

/// Runs a range's public ports (issue 34) until cancelled: the `n` ports from `port.addr`,
/// each on the listeners `held` gives it, else bound here (a port another program holds
/// is tried again every [`REBIND_EVERY`], the others forwarding meanwhile). Every listener
/// gets an accept loop on every forwarding thread, told its offset, which a connection
/// leads to on each instance; the range is bound when all its ports are.
pub async fn run_range(port: Arc<Port>, n: u16, mut held: Vec<Option<Listeners>>) {
    held.resize_with(usize::from(n), || None);
    let threads = port.node.workers.handles();
    let mut loops = Vec::new();
    // The offsets of the ports not listening yet.
    let mut waiting: Vec<u16> = (0..n).collect();
    loop {
        let mut failed = None;
        waiting.retain(|&offset| {
            let first = port.addr();
            let addr = SocketAddr::new(first.ip(), first.port() + offset);
            let listeners =
                match held[usize::from(offset)].take().map_or_else(|| super::ports::bind(addr), Ok) {
                    Ok(listeners) => listeners,
                    Err(err) => {
                        failed.get_or_insert((addr, err));
                        return true;
                    }
                };
            port.listen(listeners.iter().map(AsRawFd::as_raw_fd));
            for listener in listeners.into_iter().map(Arc::new) {
                for (i, thread) in threads.iter().enumerate() {
                    let source = Source::Shared(listener.clone());
                    loops.push(thread.spawn(accept_loop(port.clone(), source, i, offset)));
                }
            }
            false
        });
        if waiting.is_empty() {
            if !port.bound.swap(true, Ordering::Relaxed) {
                port.node.bound_changed.notify_one();
            }
            break;
        }
        if let Some((addr, err)) = failed {
            warn!(namespace = %port.namespace(), %addr, error = %err, waiting = waiting.len(),
                "cannot bind ports of the range (another program holds them, or this node is out of descriptors); the others forward; retrying every {}s", REBIND_EVERY.as_secs());
        }
        if Box::pin(stopped_within(&port.stop_accepting, REBIND_EVERY)).await {
            break;
        }
    }
    for accepting in loops {
        let _ = accepting.await;
    }
    port.unlisten();
    port.bound.store(false, Ordering::Relaxed);
}

/// Opens a connection to `addr`.
///
/// The socket is made by hand: created non-blocking, `TCP_NODELAY` set before the
/// handshake, and the outcome of the connect read from the readiness event itself (a
/// refused connect hangs the socket up), where tokio's `connect` asks the kernel with one
/// more system call per connection.
async fn open_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    let ty = Type::STREAM.nonblocking().cloexec();
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    socket.set_tcp_nodelay(true)?;
    // Asking connect again when it said EINPROGRESS (on loopback the handshake is over by
    // then) saved no measurable time and cost a system call per connection: not done.
    let connected = match socket.connect(&addr.into()) {
        Ok(()) => true,
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => false,
        Err(err) => return Err(err),
    };
    let stream = TcpStream::from_std(socket.into())?;
    if !connected {
        let ready = stream.ready(Interest::WRITABLE).await?;
        if ready.is_write_closed() {
            return Err(stream.take_error()?.unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
        }
    }
    Ok(stream)
}
