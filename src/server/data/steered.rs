//! Steered mode: every public TCP port of the node on one listening socket per address
//! family, every UDP port on one socket per forwarding thread and family, the kernel
//! steering each connection or datagram there ([`super::steer`]).
//!
//! In bound mode ([`super::forward::run`]) a port is a listening socket that every
//! forwarding thread polls. Here a port is an entry in two tables: the kernel's steering
//! table (BPF `sk_lookup`: which socket takes a SYN to this address and port) and this
//! process's port table (which redirection a connection accepted on that socket belongs
//! to, found by the address the client dialled, `getsockname`). Adding a port writes both,
//! removing it deletes both; no socket, descriptor or task per thread is made per port.
//!
//! **The listeners.** One TCP listener for IPv4 (bound to `127.0.0.1`, port 0) and one for
//! IPv6 (`[::1]`, port 0, v6 only): the program hands them connections for any address,
//! whatever they are bound to. Every forwarding thread polls both with an exclusive
//! registration (`EPOLLEXCLUSIVE`), so a new connection wakes one sleeping thread, which
//! accepts it, finds its port and serves it on that thread. Issue 32's tries measured one
//! shared listener ahead of one `SO_REUSEPORT` listener per thread (19,400 against 15,300
//! connections/s with two in flight): the idle thread takes the connection, not the one a
//! hash chose.
//!
//! **The port table** is, per local address a namespace binds (`0.0.0.0`, `127.0.0.2`, …),
//! 65,536 slots of 8 bytes (512 KiB), each an atomically swapped pointer to the port's
//! entry: an accept reads it without a lock, and a change writes one slot. A connection
//! to an address is looked up at that address, then at the wildcard of its family, then
//! (for IPv4) at `::`, as the kernel's program does (a port bound to `::` is steered for
//! both families, as a dual-stack socket listens on both).
//!
//! **UDP ports** are steered too ([`Steered::start_udp`]): each forwarding thread has a UDP
//! socket per family in the socket map (slots 2 and 3 for thread 0, 4 and 5 for thread 1,
//! …: [`udp_slot`]), and a port's keys name the socket of the thread that owns the port, so
//! that one thread still owns a port's flow table with no lock per datagram. How that
//! thread finds the port of a datagram, and how a flow answers from the dialled port, is
//! [`super::udp`]'s `steered` module. Reserving a UDP port checks, as for TCP, that no
//! steered or reserved UDP port overlaps it and that no other program holds it (a bind
//! without `SO_REUSEADDR`, closed at once). An upgrade hands the UDP sockets over with the
//! listeners ([`Steered::descriptors`], [`Steered::adopt`]).
//!
//! **Order of a removal.** The kernel's key goes first (new connections to the port are
//! refused at once), then the table's entry (a connection already queued on the listener
//! for this port finds no entry and is reset), then the port's open connections are reset
//! by its own token, as in bound mode.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::copy;
use super::forward::{self, Polled, Port, Source};
use super::steer::{Key, Proto, Steering, Target};
use super::udp;
use super::workers::Workers;

/// The accept queue of a steered listener: every port's connections wait in it.
const BACKLOG: i32 = 4096;
/// The socket map's slot of the IPv4 listener, and of the IPv6 one.
const SLOT_V4: u32 = 0;
const SLOT_V6: u32 = 1;
/// The slot of forwarding thread `t`'s steered UDP socket: `UDP_SLOTS + 2t` for IPv4, one
/// more for IPv6.
const UDP_SLOTS: u32 = 2;

/// The socket map's slot of thread `thread`'s steered UDP socket of a family.
fn udp_slot(thread: usize, v6: bool) -> u32 {
    UDP_SLOTS + 2 * thread as u32 + u32::from(v6)
}

/// The steered ports of one local address, by port.
struct Ports(Box<[ArcSwapOption<Port>]>);

impl Ports {
    fn new() -> Ports {
        Ports((0..=u16::MAX).map(|_| ArcSwapOption::empty()).collect())
    }
}

/// The node's steering: the kernel's program and tables, the listeners, the port table.
pub struct Steered {
    steering: Steering,
    /// The IPv4 listener, and the IPv6 one where the machine has IPv6.
    v4: Arc<TcpListener>,
    v6: Option<Arc<TcpListener>>,
    /// The port tables by local address: the list is copied only when an address is new.
    tables: ArcSwap<Vec<(IpAddr, Arc<Ports>)>>,
    /// Serialises the copies of that list.
    adding: Mutex<()>,
    /// Ports reserved for a claim and not started yet ([`Reserved`]), so that two
    /// namespaces on one address never take the same port.
    reserved: Mutex<HashSet<(Proto, SocketAddr)>>,
    /// The UDP sockets, one per forwarding thread and family ([`udp::SteeredSockets`]).
    udp: Arc<udp::SteeredSockets>,
    /// The UDP ports steered now (their tables are the threads' own), by port then
    /// address: a reservation looks at its port's few entries, not at every port.
    udp_ports: Mutex<BTreeSet<(u16, IpAddr)>>,
}

/// A steered port reserved for a claim: counted taken until dropped (the port started,
/// or the claim failed).
pub struct Reserved {
    steered: Arc<Steered>,
    proto: Proto,
    addr: SocketAddr,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.steered.reserved.lock().unwrap_or_else(|p| p.into_inner()).remove(&(self.proto, self.addr));
    }
}

impl Steered {
    /// Loads the program into this process's network namespace and makes the listeners
    /// and the UDP sockets of `threads` forwarding threads; an error says what the kernel
    /// or the privileges lack.
    pub fn load(threads: usize) -> io::Result<Steered> {
        check_threads(threads)?;
        let steering = Steering::load()?;
        let v4 = listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        steering.insert_socket(SLOT_V4, v4.as_fd())?;
        let v6 = match listener(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))) {
            Ok(l) => {
                steering.insert_socket(SLOT_V6, l.as_fd())?;
                Some(Arc::new(l))
            }
            Err(err) => {
                warn!(error = %err, "no IPv6 on this machine: steered ports take IPv4 clients only");
                None
            }
        };
        let udp = udp::SteeredSockets::new(threads, Vec::new(), v6.is_some())?;
        Steered::with(steering, Arc::new(v4), v6, udp)
    }

    /// Puts the UDP sockets in their slots and makes the tables.
    fn with(
        steering: Steering,
        v4: Arc<TcpListener>,
        v6: Option<Arc<TcpListener>>,
        udp: udp::SteeredSockets,
    ) -> io::Result<Steered> {
        for (thread, v6, socket) in udp.all() {
            steering.insert_socket(udp_slot(thread, v6), socket.as_fd())?;
        }
        Ok(Steered {
            steering,
            v4,
            v6,
            tables: ArcSwap::from_pointee(Vec::new()),
            adding: Mutex::new(()),
            reserved: Mutex::default(),
            udp: Arc::new(udp),
            udp_ports: Mutex::default(),
        })
    }

    /// Takes over the steering and steered sockets an old process handed over (an
    /// upgrade), for `threads` forwarding threads: its program is replaced by this
    /// binary's, atomically, and the tables keep every port. The UDP sockets go to the
    /// threads in the order handed (an old process that had none: new ones).
    pub fn adopt(fds: [OwnedFd; 4], sockets: Vec<OwnedFd>, threads: usize) -> io::Result<Steered> {
        check_threads(threads)?;
        let steering = Steering::from_fds(super::steer::Fds::from_array(fds))?;
        let (mut v4, mut v6, mut udp) = (None, None, Vec::new());
        for fd in sockets {
            if socket2::SockRef::from(&fd).r#type()? == Type::DGRAM {
                udp.push(fd);
                continue;
            }
            let l = TcpListener::from(fd);
            l.set_nonblocking(true)?;
            match l.local_addr()? {
                SocketAddr::V4(_) => v4 = Some(Arc::new(l)),
                SocketAddr::V6(_) => v6 = Some(Arc::new(l)),
            }
        }
        let v4 =
            v4.ok_or_else(|| io::Error::other("the old process handed over no IPv4 steered listener"))?;
        let udp = udp::SteeredSockets::new(threads, udp, v6.is_some())?;
        info!(
            mode = "steered",
            "every public TCP and UDP port steered by the kernel, taken over from the old process"
        );
        Steered::with(steering, v4, v6, udp)
    }

    /// Starts an accept loop on every forwarding thread for each listener, and the reading
    /// of each thread's UDP sockets; they stop at `shutdown`, leaving the queued
    /// connections (and datagrams) to a new process once `handed_over`.
    pub fn start_accepting(
        self: &Arc<Self>,
        workers: &Workers,
        shutdown: CancellationToken,
        handed_over: Arc<AtomicBool>,
    ) {
        let listeners = std::iter::once(&self.v4).chain(self.v6.as_ref());
        for listener in listeners {
            for (thread, handle) in workers.handles().iter().enumerate() {
                let accepting = accept_loop(
                    self.clone(),
                    listener.clone(),
                    thread,
                    shutdown.clone(),
                    handed_over.clone(),
                );
                handle.spawn(accepting);
            }
        }
        self.udp.start_reading(workers.handles(), &shutdown);
    }

    /// Serves UDP `port` from now on: its table is made on the thread that owns it, then its
    /// keys steer its datagrams to that thread's socket. No task per port: the thread's
    /// reader and sweeper serve it ([`udp::SteeredSockets`]).
    pub fn start_udp(&self, port: &Arc<udp::UdpPort>) {
        let addr = port.addr;
        port.metrics.udp.get_or_init(Box::default);
        self.udp_ports.lock().unwrap_or_else(|p| p.into_inner()).insert((addr.port(), addr.ip()));
        // Its table is asked for before its keys are written.
        self.udp.start(port.clone());
        let steering =
            self.keys(Proto::Udp, addr).into_iter().try_for_each(|(key, to)| self.steering.steer(key, to));
        match steering {
            Ok(()) => {
                if !port.bound.swap(true, Ordering::Relaxed) {
                    port.bound_changed.notify_one();
                }
            }
            Err(err) => {
                warn!(%addr, error = %err, "cannot steer the UDP redirection's port: its datagrams are refused")
            }
        }
    }

    /// Stops UDP `port`: its keys are written away (new clients are refused at once; not
    /// when the sockets were `handed_over` to a new process, which steers the same keys),
    /// then its flows end on its thread. Returns once their sockets are closed.
    pub async fn stop_udp(&self, port: &Arc<udp::UdpPort>, handed_over: bool) {
        let addr = port.addr;
        if !handed_over {
            for (key, _) in self.keys(Proto::Udp, addr) {
                if let Err(err) = self.steering.unsteer(key) {
                    warn!(%addr, error = %err, "cannot unsteer a removed UDP port");
                }
            }
        }
        self.udp_ports.lock().unwrap_or_else(|p| p.into_inner()).remove(&(addr.port(), addr.ip()));
        self.udp.stop(port, &self.udp_handle(port)).await;
    }

    /// Plans UDP `port`'s expiry sweep again: its idle timeout changed.
    pub fn replan_udp(&self, port: &Arc<udp::UdpPort>) {
        self.udp.replan(port, &self.udp_handle(port));
    }

    /// The runtime of the forwarding thread that owns UDP `port`.
    fn udp_handle(&self, port: &udp::UdpPort) -> tokio::runtime::Handle {
        let handles = port.workers.handles();
        handles[self.udp.thread_of(port.addr.port()) % handles.len()].clone()
    }

    /// Serves `port` from now on: its entry in the port table, then its keys in the
    /// kernel's; [`Self::stop`] takes both out again. No task and no socket per port.
    /// A range of `n` ports from `port.addr` (issue 34; 1 for a single port) is an entry of
    /// the port table per port, each pointing to the one `port`, and a key of the kernel's
    /// per port; [`Self::dispatch`] tells a connection which port of the range it was made to.
    pub fn start_range(&self, port: Arc<Port>, n: u16) {
        let first = port.addr();
        let table = self.table(first.ip());
        let addrs = (0..n.max(1)).map(|i| SocketAddr::new(first.ip(), first.port() + i));
        for addr in addrs.clone() {
            table.0[usize::from(addr.port())].store(Some(port.clone()));
        }
        let addr = first;
        let steering = addrs
            .flat_map(|addr| self.keys(Proto::Tcp, addr))
            .try_for_each(|(key, to)| self.steering.steer(key, to));
        match steering {
            Ok(()) => port.bound.store(true, Ordering::Relaxed),
            Err(err) => {
                warn!(%addr, error = %err, "cannot steer the redirection's port: it refuses connections")
            }
        }
    }

    /// Stops `port`: its keys leave the kernel's table (new connections are refused at
    /// once), then its entry leaves the port table (a connection still queued for it is
    /// reset). Its open connections are the caller's to reset ([`Port::close`]). Nothing
    /// is kept per port to do so (issue 32's memory per redirection): its address finds it.
    pub fn stop(&self, port: &Port) {
        let Some(table) =
            self.tables.load().iter().find(|(a, _)| *a == port.addr().ip()).map(|(_, t)| t.clone())
        else {
            return;
        };
        // A range (issue 34) holds the entries after its first that are this very port: its
        // extent is read from the table rather than kept (a single port's is one). Not in
        // the table (another port of the address took its place): its keys are that port's
        // now, and stay.
        let first = usize::from(port.addr().port());
        let same = |i: usize| {
            table.0.get(i).is_some_and(|e| e.load().as_ref().is_some_and(|p| std::ptr::eq(&**p, port)))
        };
        for n in (first..table.0.len()).take_while(|&i| same(i)) {
            let addr = SocketAddr::new(port.addr().ip(), n as u16);
            // Handed over: the new process steers the same keys with the same tables.
            if !port.node.handed_over.load(Ordering::Relaxed) {
                for (key, _) in self.keys(Proto::Tcp, addr) {
                    if let Err(err) = self.steering.unsteer(key) {
                        warn!(%addr, error = %err, "cannot unsteer a removed port");
                    }
                }
            }
            table.0[n].store(None);
        }
        port.bound.store(false, Ordering::Relaxed);
    }

    /// The kernel's keys of a `proto` port bound to `addr` (both families for `::`), with
    /// the socket each goes to: a listener, or the UDP socket of the port's thread.
    fn keys(&self, proto: Proto, addr: SocketAddr) -> Vec<(Key, Target)> {
        let thread = self.udp.thread_of(addr.port());
        let mut keys = vec![(addr.ip(), addr.port())];
        if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            keys.push((IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()));
        }
        keys.into_iter()
            .filter_map(|(ip, port)| {
                let v4 = match ip {
                    IpAddr::V4(_) => true,
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
                };
                let slot = match (proto, v4) {
                    (Proto::Tcp, true) => SLOT_V4,
                    (Proto::Tcp, false) => self.v6.as_ref().map(|_| SLOT_V6)?,
                    (Proto::Udp, true) => udp_slot(thread, false),
                    (Proto::Udp, false) => self.udp.has_v6().then(|| udp_slot(thread, true))?,
                };
                Some((Key::new(proto, ip, port), Target::slot(slot)))
            })
            .collect()
    }

    /// The port table of a local address, made on its first port.
    fn table(&self, ip: IpAddr) -> Arc<Ports> {
        if let Some((_, t)) = self.tables.load().iter().find(|(a, _)| *a == ip) {
            return t.clone();
        }
        let _one_at_a_time = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let tables = self.tables.load_full();
        if let Some((_, t)) = tables.iter().find(|(a, _)| *a == ip) {
            return t.clone();
        }
        let table = Arc::new(Ports::new());
        let mut copy = (*tables).clone();
        copy.push((ip, table.clone()));
        self.tables.store(Arc::new(copy));
        table
    }

    /// Reserves `proto` port `addr` for a claim, unless a steered or reserved port of that
    /// protocol overlaps it (the same port at the same address, or where either address is
    /// a wildcard that covers the other), or another program holds it on the machine.
    pub fn reserve(self: &Arc<Self>, proto: Proto, addr: SocketAddr) -> io::Result<Reserved> {
        let overlaps = |a: IpAddr, b: IpAddr| {
            a == b
                || a.is_unspecified() && (a.is_ipv6() || b.is_ipv4())
                || b.is_unspecified() && (b.is_ipv6() || a.is_ipv4())
        };
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let steered = match proto {
            Proto::Tcp => self.tables.load().iter().any(|(ip, table)| {
                overlaps(*ip, addr.ip()) && table.0[usize::from(addr.port())].load().is_some()
            }),
            Proto::Udp => {
                // Every address of the port, from the lowest IPv4 to the highest IPv6.
                let lowest = (addr.port(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                let highest = (addr.port(), IpAddr::V6(Ipv6Addr::from(u128::MAX)));
                self.udp_ports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .range(lowest..=highest)
                    .any(|(_, ip)| overlaps(*ip, addr.ip()))
            }
        };
        let held = reserved
            .iter()
            .any(|(p, r)| *p == proto && r.port() == addr.port() && overlaps(r.ip(), addr.ip()));
        if steered || held {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        free(proto, addr)?;
        reserved.insert((proto, addr));
        Ok(Reserved { steered: self.clone(), proto, addr })
    }

    /// The entry of the port a connection accepted at `local` was dialled on.
    fn find(&self, local: SocketAddr) -> Option<Arc<Port>> {
        let ip = match local.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let wildcard = match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let tables = self.tables.load();
        let dual = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        [ip, wildcard, dual].iter().find_map(|candidate| {
            let (_, table) = tables.iter().find(|(a, _)| a == candidate)?;
            table.0[usize::from(local.port())].load_full()
        })
    }

    /// Starts serving a connection accepted on forwarding thread `thread`, or resets it
    /// when its port is not (or no longer) steered.
    fn dispatch(&self, thread: usize, client: TcpStream, peer: SocketAddr) {
        let port = client.local_addr().ok().and_then(|local| Some((self.find(local)?, local)));
        match port {
            // A range's connection leads to its port's offset on the instances (issue 34).
            Some((port, local)) => {
                let offset = local.port().wrapping_sub(port.addr().port());
                forward::admit(&port, port.local(thread), client, peer, offset)
            }
            None => {
                debug!(%peer, "a connection to a port no longer steered; resetting it");
                copy::reset(&client)
            }
        }
    }

    /// The descriptors of the program, its tables and the steered sockets (the listeners,
    /// then the UDP sockets thread by thread), for a hand-over.
    pub fn descriptors(&self) -> ([RawFd; 4], Vec<RawFd>) {
        let mut sockets: Vec<RawFd> =
            std::iter::once(&self.v4).chain(self.v6.as_ref()).map(|l| l.as_raw_fd()).collect();
        sockets.extend(self.udp.raw_fds());
        (self.steering.raw_fds(), sockets)
    }
}

/// Whether the socket map has a slot for every thread's UDP sockets.
fn check_threads(threads: usize) -> io::Result<()> {
    if udp_slot(threads.max(1) - 1, true) >= super::steer::DEFAULT_MAX_SLOTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "steered mode serves at most {} forwarding threads ({threads} asked): lower --threads",
                (super::steer::DEFAULT_MAX_SLOTS - UDP_SLOTS) / 2
            ),
        ));
    }
    Ok(())
}

/// Whether nothing else on the machine holds `proto` port `addr` now: a bind (without
/// listen), closed at once (the port's range belongs to the gateway; this only keeps it
/// from steering a port another program holds at the moment it is allocated). A port
/// steered here holds no socket: [`Steered::reserve`] checks those itself. A UDP bind
/// goes without `SO_REUSEADDR`, so that a socket bound with it counts as holding the port.
fn free(proto: Proto, addr: SocketAddr) -> io::Result<()> {
    let kind = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), kind.cloexec(), None)?;
    if proto == Proto::Tcp {
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.bind(&addr.into())
}

/// A steered listener: non-blocking, `TCP_NODELAY` and `SO_REUSEADDR`, both inherited by
/// the accepted sockets. The latter matters: an accepted socket's local address is the port
/// the client dialled, and one the gateway closed first waits there in TIME_WAIT for a
/// minute; without the flag, that port could not be bound ([`free`]) nor given again
/// meanwhile (tests/steered.rs `a_port_in_time_wait_is_free_again_at_once`).
fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts on a steered listener, on forwarding thread `thread`, until `shutdown`.
async fn accept_loop(
    steered: Arc<Steered>,
    listener: Arc<TcpListener>,
    thread: usize,
    shutdown: CancellationToken,
    handed_over: Arc<AtomicBool>,
) {
    let polled = match Polled::new(Source::Shared(listener)) {
        Ok(p) => p,
        Err(err) => return warn!(error = %err, "cannot poll a steered listener"),
    };
    polled.make_exclusive();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                if !handed_over.load(Ordering::Relaxed) {
                    while let Some((client, peer)) = polled.accept_queued() {
                        steered.dispatch(thread, client, peer);
                    }
                }
                return;
            }
            accepted = polled.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => steered.dispatch(thread, client, peer),
            Err(err) if forward::is_resource_exhaustion(&err) => {
                warn!(error = %err, "cannot accept: out of resources; backing off");
                if Box::pin(forward::stopped_within(&shutdown, forward::ACCEPT_BACKOFF)).await {
                    return;
                }
            }
            Err(err) => debug!(error = %err, "accept failed"),
        }
    }
}

/// How the node serves its TCP ports, as chosen at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Steered where the kernel and privileges allow, bound elsewhere.
    Auto,
    /// Every port on a few sockets (BPF `sk_lookup`); fails to start where it cannot.
    Steered,
    /// One listening socket per port.
    Bound,
}

impl Mode {
    /// Reads `auto`, `steered` or `bound`.
    pub fn parse(text: &str) -> Result<Mode, String> {
        match text {
            "auto" => Ok(Mode::Auto),
            "steered" => Ok(Mode::Steered),
            "bound" => Ok(Mode::Bound),
            _ => Err(format!("`{text}` is not a port mode: use auto, steered or bound")),
        }
    }
}

/// The steering `mode` asks for: `None` for bound mode, with a log line that says which
/// mode runs and, when not steered, why and what to grant.
pub fn choose(mode: Mode, threads: usize) -> io::Result<Option<Steered>> {
    match mode {
        Mode::Bound => {
            info!(mode = "bound", "one listening socket per public port (--port-mode bound)");
            Ok(None)
        }
        Mode::Steered | Mode::Auto => match Steered::load(threads) {
            Ok(steered) => {
                info!(mode = "steered", "every public TCP and UDP port steered by the kernel (BPF sk_lookup): TCP to one listener per address family, UDP to one socket per forwarding thread and family");
                Ok(Some(steered))
            }
            Err(err) if mode == Mode::Auto => {
                info!(mode = "bound", reason = %err, "one listening socket per public port: ports cannot be steered here");
                Ok(None)
            }
            Err(err) => Err(err),
        },
    }
}
