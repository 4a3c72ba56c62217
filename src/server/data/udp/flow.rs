//! A UDP port's flow table: datagrams from clients to their flow's socket, answers back,
//! and the expiry of idle flows.
//!
//! A bound port's task owns the table and reads the public socket (steered: the thread's
//! map of tables, read by the thread's reader, see `steered`); each flow has one more
//! task on the same thread, which reads the flow's socket and sends what the instance
//! answers to the client from the public socket. The two share the flow's last-activity
//! time and reply counters as atomics written by one thread. Expiry is a sweep, armed
//! only while flows are open, at the earliest time a flow can have gone idle (and no more
//! often than every sixteenth of the idle timeout): an idle port has no timer. A bound
//! port's task keeps its own; a steered port's is planned with its thread's sweeper.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::io::{self, Batch, Run, Sock, BATCH};
use super::{proxy, ProxyMode, UdpPort};
use crate::server::data::admission::{Admission, Refusal};
use crate::server::data::balance;
use crate::server::data::conn_log::End;
use crate::server::data::forward::Policy;
use crate::server::data::limited::Held;
use crate::server::data::metrics::{Dropped, RedirMetrics, Slot, UdpCounts};
use crate::server::spec::UdpLimits;

/// Batches read from the public socket per wake-up before the thread's other tasks (the
/// flows' replies) get a turn.
const BATCHES_PER_WAKE: usize = 8;
/// How often at most a port warns that it sheds flows.
const SHED_WARN_EVERY: Duration = Duration::from_secs(10);
/// The shortest wait between two expiry sweeps.
const MIN_SWEEP: Duration = Duration::from_millis(20);

/// What a flow's two tasks share.
struct Shared {
    /// When something last moved either way, in milliseconds since the port's start.
    last: AtomicU64,
    /// Datagrams and bytes from the instance to the client.
    datagrams_out: AtomicU64,
    bytes_out: AtomicU64,
}

/// One client's flow.
struct Flow {
    socket: Arc<Sock>,
    instance: SocketAddr,
    shared: Arc<Shared>,
    /// The reply task, which also holds the flow's client socket when steered.
    replies: JoinHandle<()>,
    /// Counts the flow on its instance, for the balancer.
    member: balance::Open,
    started: Instant,
    /// The PROXY header, until it is sent for good (`First`) or for every datagram.
    header: Option<Box<[u8]>>,
    datagrams_in: u64,
    bytes_in: u64,
    /// The client's datagrams allowed by the redirection's `maxDatagramsPerSecond`.
    bucket: Bucket,
    /// The flow's place in its client address's count, when a limit per client is set.
    held: Option<Box<Held>>,
}

/// A token bucket of datagrams, counted in thousandths so that it refills every
/// millisecond: `rate` a second, up to one second's worth (the burst), full at the start.
#[derive(Debug, Default)]
struct Bucket {
    milli: u64,
    at_ms: u64,
    started: bool,
}

impl Bucket {
    /// How many of `n` datagrams arriving at `now_ms` may pass (they are taken).
    fn take(&mut self, now_ms: u64, rate: u32, n: u64) -> u64 {
        let full = u64::from(rate) * 1000;
        if !self.started {
            (self.milli, self.started) = (full, true);
        } else {
            self.milli = (self.milli + now_ms.saturating_sub(self.at_ms) * u64::from(rate)).min(full);
        }
        self.at_ms = now_ms;
        let k = (self.milli / 1000).min(n);
        self.milli -= k * 1000;
        k
    }
}

/// A port being served: its sockets, its flows, its counters.
pub(super) struct Table {
    port: Arc<UdpPort>,
    /// The port's socket (bound mode); `None` when steered, where each flow answers from
    /// a socket of its own bound to the dialled port.
    public: Option<Arc<Sock>>,
    local_port: u16,
    local_ip: IpAddr,
    flows: HashMap<SocketAddr, Flow>,
    admission: Admission,
    metrics: Arc<RedirMetrics>,
    epoch: Instant,
    /// The policy generation the open flows were checked against.
    generation: u64,
    last_shed_warn: Option<Instant>,
    /// The reply tasks of ended flows not yet known finished: a stopping port waits for
    /// them, so that every flow's sockets are closed before its removal answers.
    ending: Vec<JoinHandle<()>>,
    /// When its next expiry sweep is planned, in steered mode (its thread's sweeper sweeps
    /// it); bound mode's port task keeps its own timer.
    pub(super) sweep_at: Option<Instant>,
}

/// Serves a UDP port on this forwarding thread until the port is stopped; every flow's
/// socket is closed when this returns.
pub(super) async fn serve(port: Arc<UdpPort>, socket: std::net::UdpSocket) {
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(err) => return warn!(addr = %port.addr, error = %err, "cannot read the UDP port's address"),
    };
    let public = match Sock::new(socket) {
        Ok(s) => Arc::new(s),
        Err(err) => return warn!(addr = %port.addr, error = %err, "cannot poll the UDP port's socket"),
    };
    let mut table = Table::new(port.clone(), Some(public.clone()), local);
    let sweep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sweep);
    let mut armed = false;
    loop {
        tokio::select! {
            biased;
            () = port.stop.cancelled() => break,
            () = port.limits_changed.notified() => {
                if !table.flows.is_empty() {
                    sweep.as_mut().reset(table.next_sweep().into());
                    armed = true;
                }
            }
            () = &mut sweep, if armed => {
                armed = false;
                if let Some(next) = table.expire() {
                    sweep.as_mut().reset(next.into());
                    armed = true;
                }
            }
            ready = public.fd.readable() => {
                let mut ready = match ready {
                    Ok(ready) => ready,
                    Err(err) => {
                        warn!(addr = %port.addr, error = %err, "cannot poll the UDP port's socket");
                        break;
                    }
                };
                for _ in 0..BATCHES_PER_WAKE {
                    match Batch::with(|batch| table.receive(batch)) {
                        Ok(n) if n == BATCH => continue,
                        // Fewer than a batch: the queue was empty when read. A datagram
                        // that came since raised a new edge, so the readiness can go.
                        Ok(_) => ready.clear_ready(),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                        Err(err) => debug!(addr = %port.addr, error = %err, "UDP read failed"),
                    }
                    break;
                }
                drop(ready);
                if !armed && !table.flows.is_empty() {
                    sweep.as_mut().reset(table.next_sweep().into());
                    armed = true;
                }
            }
        }
    }
    table.close_all(End::Removed).await;
}

impl Table {
    /// The table of `port`, served at `local`: from `public` (bound mode), or steered.
    pub(super) fn new(port: Arc<UdpPort>, public: Option<Arc<Sock>>, local: SocketAddr) -> Table {
        let metrics = port.metrics.clone();
        metrics.udp.get_or_init(Box::default);
        Table {
            generation: port.policy.load().generation,
            port,
            public,
            local_port: local.port(),
            local_ip: local.ip(),
            flows: HashMap::new(),
            admission: Admission::default(),
            metrics,
            epoch: Instant::now(),
            last_shed_warn: None,
            ending: Vec::new(),
            sweep_at: None,
        }
    }

    /// Whether this is the table of `port`.
    pub(super) fn serves(&self, port: &Arc<UdpPort>) -> bool {
        Arc::ptr_eq(&self.port, port)
    }

    /// Whether flows are open.
    pub(super) fn has_flows(&self) -> bool {
        !self.flows.is_empty()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Reads one batch from the public socket (bound mode) and forwards it ([`Self::forward`]).
    fn receive(&mut self, batch: &mut Batch) -> std::io::Result<usize> {
        let Some(public) = &self.public else { return Ok(0) };
        let n = batch.recv(public)?;
        self.forward(batch, 0..n);
        Ok(n)
    }

    /// Forwards buffers `range` of the last read (datagrams to this port) each to its
    /// client's flow, consecutive ones of a flow joined into one send where they can be
    /// ([`Run`]).
    pub(super) fn forward(&mut self, batch: &mut Batch, range: std::ops::Range<usize>) {
        self.recheck_policy();
        let now = self.now_ms();
        let limits = **self.port.limits.load();
        let mut sent = (0, 0);
        // The datagrams that go out together next, and their client.
        let mut pending: Option<(SocketAddr, Run)> = None;
        for i in range {
            let (client, data, stride, dst) = batch.get(i);
            let len = data.len();
            if !self.flows.contains_key(&client) {
                if let Err(reason) = self.open(client, dst) {
                    // A refusal per client counts one per flow refused (as TCP counts
                    // connections); the others count every datagram.
                    if let Some(reason) = reason {
                        counts(&self.metrics).lost(reason, count(len, stride));
                    }
                    continue;
                }
            }
            let Some(flow) = self.flows.get_mut(&client) else { continue };
            flow.shared.last.store(now, Ordering::Relaxed);
            let mut take = len;
            if let Some(rate) = limits.max_datagrams_per_second {
                // Of a GRO bundle, the first ones the bucket allows pass.
                let n = count(len, stride);
                let allowed = flow.bucket.take(now, rate, n);
                if allowed < n {
                    counts(&self.metrics).lost(Dropped::rate_limited, n - allowed);
                    if allowed == 0 {
                        continue;
                    }
                    take = (allowed as usize * stride).min(len);
                }
            }
            // A PROXY header goes in front of each datagram it is sent with: no joining.
            let segments = if flow.header.is_some() { 1 } else { flow.socket.segments() };
            if let Some((to, run)) = &mut pending {
                if *to == client && run.join(i, take, stride, take == len, segments) {
                    continue;
                }
            }
            if let Some((to, run)) = pending.replace((client, Run::new(i, take, stride, take == len))) {
                self.send_run(batch, to, &run, ProxyMode::of(limits.proxy_protocol), &mut sent);
            }
        }
        if let Some((to, run)) = pending {
            self.send_run(batch, to, &run, ProxyMode::of(limits.proxy_protocol), &mut sent);
        }
        counts(&self.metrics).datagrams_in.add(sent.0);
        self.metrics.traffic.mine().bytes_in.fetch_add(sent.1, Ordering::Relaxed);
    }

    /// Sends a run of a client's datagrams on its flow's socket, adding what went to `sent`
    /// (datagrams, bytes) and to the flow's counts.
    fn send_run(
        &mut self,
        batch: &mut Batch,
        client: SocketAddr,
        run: &Run,
        mode: Option<ProxyMode>,
        sent: &mut (u64, u64),
    ) {
        let Some(flow) = self.flows.get_mut(&client) else { return };
        let (datagrams, bytes) = send_up(flow, batch.bytes(run), run.stride, mode, counts(&self.metrics));
        flow.datagrams_in += datagrams;
        flow.bytes_in += bytes;
        sent.0 += datagrams;
        sent.1 += bytes;
    }

    /// Starts the flow of a client's first datagram, or says why it is dropped (`None`:
    /// refused by a limit per client, which counts it).
    fn open(&mut self, client: SocketAddr, dst: Option<IpAddr>) -> Result<(), Option<Dropped>> {
        let policy = self.port.policy.load();
        if !policy.access.admits(client.ip()) {
            self.metrics.rare().denied.inc();
            return Err(Some(Dropped::denied));
        }
        if !self.port.node.enter(self.cost()) {
            self.shed_warning(Dropped::node_flow_cap);
            return Err(Some(Dropped::node_flow_cap));
        }
        let limits = **self.port.limits.load();
        let held = match self.admission.admit(client, limits.quotas(), &policy.access, &self.metrics) {
            Ok(held) => held,
            Err(refusal) => {
                self.port.node.leave(self.cost());
                let reason = match refusal {
                    Refusal::Denied => Dropped::denied,
                    Refusal::MaxConnections => Dropped::flow_cap,
                    Refusal::RateLimited => Dropped::rate_limited,
                    // Counted under their own reason by the limits per client (`Limited`).
                    Refusal::PerClient(_) => return Err(None),
                };
                if reason == Dropped::flow_cap {
                    self.shed_warning(reason);
                }
                return Err(Some(reason));
            }
        };
        // Counted open and accepted in this thread's slot from here: undone on failure.
        match self.connect(client, dst, &limits) {
            Ok(mut flow) => {
                flow.held = held;
                self.flows.insert(client, flow);
                Ok(())
            }
            Err(reason) => {
                self.metrics.traffic.mine().close();
                self.port.node.leave(self.cost());
                self.metrics.rare().no_instance.inc();
                Err(Some(reason))
            }
        }
    }

    /// The descriptors a flow holds: its socket to the instance, and when steered its
    /// socket to the client.
    fn cost(&self) -> usize {
        if self.public.is_some() {
            1
        } else {
            2
        }
    }

    /// Opens the flow's socket to the instance the balancer picks, and its reply task.
    fn connect(&self, client: SocketAddr, dst: Option<IpAddr>, limits: &UdpLimits) -> Result<Flow, Dropped> {
        let member = self.port.targets.candidates().next().ok_or(Dropped::no_instance)?;
        let Some(instance) = member.addresses_now().and_then(|a| a.first().copied()) else {
            debug!(instance = %member.address, "the instance's name is being looked up; dropping the datagram");
            return Err(Dropped::no_instance);
        };
        let local = SocketAddr::new(dst.unwrap_or(self.local_ip), self.local_port);
        let header = match ProxyMode::of(limits.proxy_protocol) {
            None => None,
            Some(_) => match proxy::header(client, local) {
                Some(h) => Some(h),
                None => {
                    warn!(%client, %local, "no PROXY v2 header can name a client and an address of different families; dropping the datagram");
                    return Err(Dropped::no_instance);
                }
            },
        };
        let socket = io::connect(instance).and_then(Sock::new).map_err(|err| {
            if crate::server::data::ports::out_of_descriptors(&err) {
                warn!(instance = %instance, error = %err, limit = crate::server::data::ports::descriptor_limit(),
                    "cannot open a UDP flow's socket: this node has reached its open-file limit; raise it (systemd: LimitNOFILE=) or lower the flow caps");
            } else {
                debug!(instance = %instance, error = %err, "cannot open a UDP flow's socket");
            }
            Dropped::no_instance
        })?;
        let socket = Arc::new(socket);
        // Steered: the answers leave by a socket of the flow's own, from the dialled port.
        let (down, src, steered) = match &self.public {
            Some(public) => (public.clone(), dst, None),
            None => {
                let dialled = SocketAddr::new(dst.ok_or(Dropped::no_instance)?, self.local_port);
                let down = io::answer_from(dialled, client).and_then(Sock::new).map_err(|err| {
                    warn!(%client, %dialled, error = %err, "cannot open a UDP flow's socket to its client (does another program hold the port?)");
                    Dropped::no_instance
                })?;
                (Arc::new(down), None, Some(SocketAddr::new(self.local_ip, self.local_port)))
            }
        };
        let shared = Arc::new(Shared {
            last: AtomicU64::new(self.now_ms()),
            datagrams_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        let reply = Reply {
            socket: socket.clone(),
            public: down,
            steered,
            client,
            src,
            shared: shared.clone(),
            metrics: self.port.metrics.clone(),
            epoch: self.epoch,
        };
        let replies = tokio::spawn(reply.run());
        Ok(Flow {
            socket,
            instance,
            shared,
            replies,
            member: member.enter(),
            started: Instant::now(),
            header,
            datagrams_in: 0,
            bytes_in: 0,
            bucket: Bucket::default(),
            held: None,
        })
    }

    fn shed_warning(&mut self, reason: Dropped) {
        if self.last_shed_warn.is_some_and(|at| at.elapsed() < SHED_WARN_EVERY) {
            return;
        }
        self.last_shed_warn = Some(Instant::now());
        let limits = self.port.limits.load();
        warn!(namespace = %self.port.namespace(), addr = %self.port.addr, flows = self.flows.len(),
            max_flows = limits.max_connections, node_flows = self.port.node.open(), node_max_flows = self.port.node.max,
            reason = ?reason, "UDP port at its flow cap: datagrams that would start a flow are dropped (counted in udp_datagrams_dropped)");
    }

    /// Ends the flows whose client the access list now refuses, after a policy change.
    fn recheck_policy(&mut self) {
        let policy = self.port.policy.load();
        if policy.generation == self.generation {
            return;
        }
        self.generation = policy.generation;
        let refused: Vec<SocketAddr> =
            self.flows.keys().filter(|c| !policy.access.admits(c.ip())).copied().collect();
        for client in refused {
            if let Some(flow) = self.flows.remove(&client) {
                self.end(client, flow, End::Denied, &policy);
            }
        }
    }

    /// Ends the flows idle for their timeout; answers when the next sweep is due.
    pub(super) fn expire(&mut self) -> Option<Instant> {
        let idle = self.port.limits.load().idle_timeout;
        let idle_ms = idle.as_millis() as u64;
        let now = self.now_ms();
        let policy = self.port.policy.load();
        let expired: Vec<(SocketAddr, Flow)> = self
            .flows
            .extract_if(|_, flow| now.saturating_sub(flow.shared.last.load(Ordering::Relaxed)) >= idle_ms)
            .collect();
        for (client, flow) in expired {
            self.end(client, flow, End::IdleTimeout, &policy);
        }
        (!self.flows.is_empty()).then(|| self.next_sweep())
    }

    /// When the first open flow can have gone idle, but not sooner than a sixteenth of
    /// the idle timeout from now.
    pub(super) fn next_sweep(&self) -> Instant {
        let idle = self.port.limits.load().idle_timeout;
        let oldest = self.flows.values().map(|f| f.shared.last.load(Ordering::Relaxed)).min().unwrap_or(0);
        let due = self.epoch + Duration::from_millis(oldest) + idle;
        due.max(Instant::now() + (idle / 16).max(MIN_SWEEP))
    }

    fn end(&mut self, client: SocketAddr, flow: Flow, end: End, policy: &Policy) {
        flow.replies.abort();
        self.metrics.traffic.mine().close();
        self.port.node.leave(self.cost());
        let out = (
            flow.shared.bytes_out.load(Ordering::Relaxed),
            flow.shared.datagrams_out.load(Ordering::Relaxed),
        );
        debug!(%client, instance = %flow.instance, datagrams_in = flow.datagrams_in, datagrams_out = out.1, ?end, "UDP flow ended");
        // Kept until the port stops (then awaited) or, for a port that goes on, forgotten
        // once finished: an aborted task is dropped, sockets with it, at its next poll.
        self.ending.retain(|task| !task.is_finished());
        self.ending.push(flow.replies);
        if let Some(log) = &policy.log {
            log.log_flow(
                client,
                Some(flow.member.address()),
                (flow.bytes_in, out.0),
                (flow.datagrams_in, out.1),
                flow.started,
                end,
            );
        }
    }

    /// Ends every flow and hands back their reply tasks, to await: once they are done,
    /// every socket of the port's flows is closed.
    pub(super) fn end_all(&mut self, end: End) -> Vec<JoinHandle<()>> {
        let policy = self.port.policy.load();
        for (client, flow) in std::mem::take(&mut self.flows) {
            self.end(client, flow, end, &policy);
        }
        std::mem::take(&mut self.ending)
    }

    async fn close_all(&mut self, end: End) {
        for task in self.end_all(end) {
            let _ = task.await;
        }
    }
}

thread_local! {
    /// The steered ports this thread owns, by the address their namespace binds (steered
    /// mode: see the `steered` module). Boxed: a table is about 200 bytes, and the map's
    /// spare slots then hold a pointer (issue 32's memory per redirection).
    pub(super) static STEERED: std::cell::RefCell<HashMap<SocketAddr, Box<Table>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Reads what a steered flow's client socket holds (the client's later datagrams) and
/// forwards it through the table of the port at `port`.
fn from_client(port: SocketAddr, socket: &Sock, batch: &mut Batch) -> std::io::Result<usize> {
    let n = batch.recv(socket)?;
    STEERED.with_borrow_mut(|tables| {
        if let Some(table) = tables.get_mut(&port) {
            table.forward(batch, 0..n);
        }
    });
    Ok(n)
}

/// The redirection's UDP counts.
fn counts(metrics: &RedirMetrics) -> &UdpCounts {
    metrics.udp.get_or_init(Box::default)
}

/// How many datagrams a buffer of `len` bytes at `stride` holds (an empty datagram is one).
fn count(len: usize, stride: usize) -> u64 {
    len.div_ceil(stride).max(1) as u64
}

/// The datagrams of a buffer: `stride`-byte segments, the last one shorter, or the one
/// empty datagram.
fn segments(data: &[u8], stride: usize) -> impl Iterator<Item = &[u8]> {
    let len = data.len();
    (0..count(len, stride) as usize).map(move |i| &data[(i * stride).min(len)..((i + 1) * stride).min(len)])
}

/// Sends a client's datagram(s) on the flow's socket: datagrams and bytes sent.
fn send_up(
    flow: &mut Flow,
    data: &[u8],
    stride: usize,
    mode: Option<ProxyMode>,
    counts: &UdpCounts,
) -> (u64, u64) {
    let n = count(data.len(), stride);
    let (mut datagrams, mut bytes) = (0, 0);
    let failed = |err: std::io::Error, n: u64| {
        counts.lost(
            if err.raw_os_error() == Some(libc::ECONNREFUSED) {
                Dropped::unreachable
            } else {
                Dropped::send_failed
            },
            n,
        );
    };
    if flow.header.is_none() && n > 1 && flow.socket.gso(n as usize) {
        match flow.socket.send(flow.instance, None, data, stride) {
            Ok(()) => return (n, data.len() as u64),
            // GSO refused (the sender turned it off for next time): one at a time below.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {}
            Err(err) => {
                failed(err, n);
                return (0, 0);
            }
        }
    }
    let socket = flow.socket.fd.get_ref();
    for segment in segments(data, stride) {
        let sent = match &flow.header {
            Some(header) => socket2::SockRef::from(socket)
                .send_vectored(&[std::io::IoSlice::new(header), std::io::IoSlice::new(segment)]),
            None => socket.send(segment),
        };
        match sent {
            Ok(_) => {
                datagrams += 1;
                bytes += segment.len() as u64;
                if mode == Some(ProxyMode::First) {
                    flow.header = None;
                }
            }
            Err(err) => failed(err, 1),
        }
    }
    (datagrams, bytes)
}

/// A flow's reply task: what the instance sends on the flow's socket goes to the client.
struct Reply {
    socket: Arc<Sock>,
    /// Where the answers leave: the port's socket, or the flow's client socket when steered.
    public: Arc<Sock>,
    /// Steered: the port's table, which the client's later datagrams, read from the flow's
    /// client socket, go through.
    steered: Option<SocketAddr>,
    client: SocketAddr,
    /// The address the client sent to: the answers' source.
    src: Option<IpAddr>,
    shared: Arc<Shared>,
    metrics: Arc<RedirMetrics>,
    epoch: Instant,
}

impl Reply {
    async fn run(self) {
        let counts = self.metrics.udp.get_or_init(Box::default);
        let slot = self.metrics.traffic.mine();
        loop {
            let (ready, up) = tokio::select! {
                ready = self.socket.fd.ready(io::READ) => (ready, None),
                ready = self.public.fd.ready(io::READ), if self.steered.is_some() => (ready, self.steered),
            };
            let mut ready = match ready {
                Ok(ready) => ready,
                Err(err) => {
                    return info!(client = %self.client, error = %err, "cannot poll a UDP flow's socket")
                }
            };
            if let Some(port) = up {
                // The client's datagrams, on its own socket: through the port's table.
                for _ in 0..BATCHES_PER_WAKE {
                    match Batch::with(|batch| from_client(port, &self.public, batch)) {
                        Ok(n) if n == BATCH => continue,
                        Ok(_) => ready.clear_ready(),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                        // The client's host said nobody listens there any more: its flow
                        // ends when idle, as any other.
                        Err(err) => debug!(client = %self.client, error = %err, "UDP flow read failed"),
                    }
                    break;
                }
                continue;
            }
            for _ in 0..BATCHES_PER_WAKE {
                match Batch::with(|batch| self.relay(batch, counts, slot)) {
                    Ok(n) if n == BATCH => continue,
                    Ok(_) => ready.clear_ready(),
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                    // An ICMP error the instance's host sent back, reported once: counted,
                    // and the flow goes on (the next datagram may find the instance up).
                    Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        counts.lost(Dropped::unreachable, 1)
                    }
                    Err(err) => debug!(client = %self.client, error = %err, "UDP flow read failed"),
                }
                break;
            }
        }
    }

    /// Reads one batch of the instance's datagrams and sends them to the client, joined
    /// into one send where they can be ([`Run`]).
    fn relay(&self, batch: &mut Batch, counts: &UdpCounts, slot: &Slot) -> std::io::Result<usize> {
        let n = batch.recv(&self.socket)?;
        let segments = self.public.segments();
        let mut sent = (0, 0);
        let mut pending: Option<Run> = None;
        for i in 0..n {
            let (_, data, stride, _) = batch.get(i);
            let len = data.len();
            if let Some(run) = &mut pending {
                if run.join(i, len, stride, true, segments) {
                    continue;
                }
            }
            if let Some(run) = pending.replace(Run::new(i, len, stride, true)) {
                self.send_down(batch.bytes(&run), run.stride, counts, &mut sent);
            }
        }
        if let Some(run) = pending {
            self.send_down(batch.bytes(&run), run.stride, counts, &mut sent);
        }
        self.shared.last.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.shared.datagrams_out.fetch_add(sent.0, Ordering::Relaxed);
        self.shared.bytes_out.fetch_add(sent.1, Ordering::Relaxed);
        counts.datagrams_out.add(sent.0);
        slot.bytes_out.fetch_add(sent.1, Ordering::Relaxed);
        Ok(n)
    }

    /// Sends `data`, datagrams of `stride` bytes, to the client: in one GSO send where it
    /// can, else one by one; adds what went to `sent` (datagrams, bytes).
    fn send_down(&self, data: &[u8], stride: usize, counts: &UdpCounts, sent: &mut (u64, u64)) {
        let k = count(data.len(), stride);
        if k > 1 && self.public.gso(k as usize) {
            match self.public.send(self.client, self.src, data, stride) {
                Ok(()) => {
                    sent.0 += k;
                    sent.1 += data.len() as u64;
                    return;
                }
                // GSO refused (the sender turned it off for next time): one at a time below.
                Err(err) if matches!(err.raw_os_error(), Some(libc::EIO | libc::EINVAL)) => {}
                Err(_) => return counts.lost(Dropped::send_failed, k),
            }
        }
        for segment in segments(data, stride) {
            match self.public.send(self.client, self.src, segment, segment.len().max(1)) {
                Ok(()) => {
                    sent.0 += 1;
                    sent.1 += segment.len() as u64;
                }
                Err(_) => counts.lost(Dropped::send_failed, 1),
            }
        }
    }
}
