//! Steered UDP ports: every UDP port of the node on one socket per forwarding thread and
//! address family, the kernel steering each port's datagrams to the socket of the thread
//! that owns the port ([`crate::server::data::steered`] writes the keys).
//!
//! **One thread owns a port's flow table, still.** A port is dealt to a thread by a hash of
//! its number ([`Sockets::thread_of`]), and its key in the kernel's table names that
//! thread's socket, so only that thread reads the port's new clients. The thread keeps its
//! ports' tables in a thread-local map by the port's address, found from each datagram's
//! dialled address and port (`IP_ORIGDSTADDR`, read by [`io::Batch::recv_steered`]): the
//! exact address, then the wildcard of its family, then `::`, as the kernel's program
//! looks keys up. No lock per datagram; a port's table is made on its thread, from an inbox
//! that the control plane fills before it writes the port's keys (a datagram that finds
//! no table empties the inbox first, so none that comes right after the key is lost).
//! A hash of the port number rather than "in turn": a new process of an upgrade with as
//! many threads deals every port to the same thread, so the keys it writes again are the
//! ones already there, and both processes read the same socket for the port while they
//! overlap, as both read a bound port's socket.
//!
//! **Answers from the dialled port.** A steered socket is bound to a loopback address on
//! a port of its own, and `IP_PKTINFO` can set an answer's source address but not its port.
//! So a flow opens, besides its socket to the instance, a socket bound to the address and
//! port the client dialled (the concrete address from the datagram, even when the port's
//! namespace binds `0.0.0.0`) with `SO_REUSEADDR` (every flow of the port binds there) and
//! connected to the client ([`io::answer_from`]); the answers leave by it, from the right
//! port, without `IP_TRANSPARENT`. The kernel's UDP lookup finds a connected socket before
//! it runs the steering program, so the client's later datagrams arrive on that socket,
//! which the flow's reply task polls too (`flow::from_client`): they go through the same
//! table. A datagram that arrives between the bind and the connect is not lost: a bound,
//! unconnected socket loses to the program, so it still reaches the steered socket, and
//! the table finds its flow by the client's address (tests/steered.rs
//! `steered_udp_echoes_exact_datagrams_from_the_dialled_port`, whose clients send bursts
//! from the first datagram on). The price: two descriptors per flow against one when
//! bound, both counted in the node's flow cap ([`super::NodeFlows`]).
//!
//! **No task per port.** A port is its table in the thread's map, and the thread's reader
//! serves it; its idle flows are expired by one sweeper per thread, which sleeps until the
//! soonest sweep any of the thread's tables planned (a table plans one while it has flows;
//! a change of idle timeout plans it again, on the thread). A task per port cost 768 bytes
//! per UDP redirection, and its own stop token 112 more (issue 32's memory; heaptrack,
//! `bench/heap-results-udp.md`); a stop or a change of limits is now a short task sent to
//! the thread, and a start a place in the thread's inbox (tests/steered.rs
//! `steered_udp_flows_end_when_idle_and_at_once_at_a_shorter_timeout`).
//!
//! **A removal** writes the kernel's key away first (new clients are refused with an
//! ICMP port unreachable), then ends the port's flows and waits for their reply tasks, so
//! that every client socket of the port is closed when the removal answers: a client that
//! had a flow is refused from its next datagram too. A datagram already queued on a
//! steered socket for a port removed meanwhile finds no table and is dropped (logged at
//! debug level; a removed port has no counters left to count it in).
//!
//! **An upgrade** hands the steered sockets to the new process ([`Sockets::new`] takes them
//! in [`Sockets::all`]'s order). While both run, both read them, and a flow open in the old
//! process keeps its client socket, so its client's datagrams reach the old process until
//! the old one stops the port; the next datagram then starts a flow in the new one (the
//! instance sees a new peer address), as in bound mode.
//!
//! **Measured** (`bench/udp_steered.sh`, `bench/udp-steered-results.md`): 10,000 UDP
//! redirections hold 33 descriptors against 10,023 bound; with 100 flows sending at once a
//! steered port carries about 0.8x the round trips of a bound one at 1.3x the CPU per
//! datagram, since the flows' datagrams after the first are read from each flow's own
//! socket (one `recvmmsg` per datagram where a bound port batches two). Connected sockets
//! keep the kernel's lookup cheap where it hashes them by their four addresses (Linux 6.13
//! and later); an older kernel walks the port's sockets to find the connected one, a cost
//! that grows with the port's open flows (not measured here).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::flow::{Table, STEERED as TABLES};
use super::io::{self, Batch, BATCH};
use super::UdpPort;
use crate::server::data::conn_log::End;

/// Batches read from a steered socket per wake-up before the thread's other tasks get a turn.
const BATCHES_PER_WAKE: usize = 8;

/// The steered UDP sockets of the node: one per forwarding thread and family.
pub struct Sockets {
    threads: Box<[Thread]>,
}

/// One forwarding thread's steered sockets, and the ports waiting for their table there.
struct Thread {
    v4: Arc<UdpSocket>,
    v6: Option<Arc<UdpSocket>>,
    inbox: Mutex<Vec<Arc<UdpPort>>>,
    /// Told when a sweep is planned sooner than the thread's soonest ([`SWEEPS`]).
    sooner: Notify,
}

thread_local! {
    /// The expiry sweeps planned on this forwarding thread, soonest first: when, and the
    /// key of the table to sweep. One sweeper per thread serves every port it owns, so that
    /// a port costs no task (issue 32's memory per redirection).
    static SWEEPS: RefCell<BTreeSet<(Instant, SocketAddr)>> = RefCell::default();
}

impl Sockets {
    /// The sockets of `threads` threads: those `handed` over by an old process first (in
    /// [`Sockets::all`]'s order), new ones for the rest; `v6` where the machine has IPv6.
    pub fn new(threads: usize, handed: Vec<OwnedFd>, v6: bool) -> std::io::Result<Sockets> {
        let (mut old4, mut old6) = (Vec::new(), Vec::new());
        for fd in handed {
            let socket = UdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            match socket.local_addr()? {
                SocketAddr::V4(_) => old4.push(socket),
                SocketAddr::V6(_) => old6.push(socket),
            }
        }
        let (mut old4, mut old6) = (old4.into_iter(), old6.into_iter());
        let threads = (0..threads.max(1))
            .map(|_| {
                let v4 = match old4.next() {
                    Some(s) => s,
                    None => io::steered_socket(false)?,
                };
                let v6 = match (v6, old6.next()) {
                    (false, _) => None,
                    (true, Some(s)) => Some(s),
                    (true, None) => Some(io::steered_socket(true)?),
                };
                Ok(Thread {
                    v4: Arc::new(v4),
                    v6: v6.map(Arc::new),
                    inbox: Mutex::default(),
                    sooner: Notify::new(),
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Sockets { threads })
    }

    /// Every socket: (thread, IPv6, socket), thread by thread, IPv4 first.
    pub fn all(&self) -> impl Iterator<Item = (usize, bool, &UdpSocket)> {
        self.threads.iter().enumerate().flat_map(|(t, th)| {
            std::iter::once((t, false, &*th.v4)).chain(th.v6.as_deref().map(|s| (t, true, s)))
        })
    }

    /// The raw descriptors of [`Sockets::all`], for a hand-over.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.all().map(|(_, _, s)| s.as_raw_fd()).collect()
    }

    /// Whether IPv6 ports can be steered.
    pub fn has_v6(&self) -> bool {
        self.threads[0].v6.is_some()
    }

    /// The thread that owns UDP port `port`: a hash of the number, the same in every
    /// process with as many threads (see the module's design).
    pub fn thread_of(&self, port: u16) -> usize {
        (u32::from(port).wrapping_mul(0x9E37_79B9) >> 16) as usize % self.threads.len()
    }

    /// Starts reading every steered socket on its thread, and each thread's sweeper, until
    /// `shutdown`.
    pub fn start_reading(self: &Arc<Self>, handles: &[Handle], shutdown: &CancellationToken) {
        for (thread, v6, _) in self.all() {
            let Some(handle) = handles.get(thread) else { continue };
            handle.spawn(read(self.clone(), thread, v6, shutdown.clone()));
        }
        for (thread, handle) in handles.iter().enumerate().take(self.threads.len()) {
            handle.spawn(sweep(self.clone(), thread, shutdown.clone()));
        }
    }

    /// Serves `port` on its thread (`thread_of`): its table is made there before any of its
    /// datagrams is read. Call before its keys are written.
    pub fn start(&self, port: Arc<UdpPort>) {
        let thread = self.thread_of(port.addr.port());
        self.threads[thread].inbox.lock().unwrap_or_else(|p| p.into_inner()).push(port);
    }

    /// Stops serving `port`, whose keys are written away: on its thread (`handle`), its
    /// table goes and its flows end. Returns once every flow's sockets are closed.
    pub async fn stop(self: &Arc<Self>, port: &Arc<UdpPort>, handle: &Handle) {
        let thread = self.thread_of(port.addr.port());
        let (sockets, stopped) = (self.clone(), port.clone());
        let ending = handle.spawn(async move {
            let key = key(stopped.addr);
            TABLES.with_borrow_mut(|tables| {
                let threads = &sockets.threads[thread];
                // A port whose table was not made yet leaves the inbox instead.
                threads.inbox.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| !Arc::ptr_eq(p, &stopped));
                let ending = match tables.get(&key).is_some_and(|t| t.serves(&stopped)) {
                    true => tables.remove(&key).map_or_else(Vec::new, |mut t| {
                        plan(&threads.sooner, key, &mut t, None);
                        t.end_all(End::Removed)
                    }),
                    false => Vec::new(),
                };
                // A port of the same address that waited for this one's table to go.
                sockets.drain(thread, tables);
                ending
            })
        });
        // A thread that already stopped (the server's end) ran nothing: nothing of the
        // port is left there.
        for task in ending.await.unwrap_or_default() {
            let _ = task.await;
        }
        port.bound.store(false, Ordering::Relaxed);
    }

    /// Plans `port`'s expiry sweep again, on its thread (`handle`): its idle timeout changed,
    /// and a shorter one must not wait for the sweep planned at the longer one.
    pub fn replan(self: &Arc<Self>, port: &Arc<UdpPort>, handle: &Handle) {
        let thread = self.thread_of(port.addr.port());
        let (sockets, port) = (self.clone(), port.clone());
        handle.spawn(async move {
            let key = key(port.addr);
            TABLES.with_borrow_mut(|tables| {
                if let Some(table) = tables.get_mut(&key).filter(|t| t.serves(&port)) {
                    let at = table.has_flows().then(|| table.next_sweep());
                    plan(&sockets.threads[thread].sooner, key, table, at);
                }
            });
        });
    }

    /// Makes the tables of the ports waiting for them on this thread.
    fn drain(&self, thread: usize, tables: &mut HashMap<SocketAddr, Box<Table>>) {
        let mut inbox = self.threads[thread].inbox.lock().unwrap_or_else(|p| p.into_inner());
        // A port whose address still has the table of a port being stopped waits for it.
        inbox.retain(|port| {
            let key = key(port.addr);
            if tables.contains_key(&key) {
                return true;
            }
            tables.insert(key, Box::new(Table::new(port.clone(), None, port.addr)));
            false
        });
    }
}

/// A port's address as the tables are keyed: a v4-mapped IPv6 address as IPv4.
fn key(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The key of the table a datagram dialled to `dialled` goes to, if any: the exact address,
/// the wildcard of its family, then `::` (a port bound to `::` takes both families).
fn find(tables: &HashMap<SocketAddr, Box<Table>>, dialled: SocketAddr) -> Option<SocketAddr> {
    let ip = dialled.ip().to_canonical();
    let wildcard = match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    [ip, wildcard, IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
        .into_iter()
        .map(|candidate| SocketAddr::new(candidate, dialled.port()))
        .find(|k| tables.contains_key(k))
}

/// A steered socket, shared with the steering (its slot) and the hand-over.
struct Shared(Arc<UdpSocket>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Reads a steered socket on its thread until `shutdown`: each run of datagrams dialled to
/// one port goes to that port's table.
async fn read(sockets: Arc<Sockets>, thread: usize, v6: bool, shutdown: CancellationToken) {
    let socket = match v6 {
        false => sockets.threads[thread].v4.clone(),
        true => match &sockets.threads[thread].v6 {
            Some(s) => s.clone(),
            None => return,
        },
    };
    // SAFETY: the AsyncFd keeps its Arc of the socket, so the descriptor stays open while
    // it is registered.
    let fd = match unsafe { AsyncFd::register_with_interest(Shared(socket), io::READ) } {
        Ok(fd) => fd,
        Err(err) => return warn!(error = %err, "cannot poll a steered UDP socket"),
    };
    loop {
        let mut ready = tokio::select! {
            biased;
            // Queued datagrams stay for a new process (an upgrade) or go with the socket.
            () = shutdown.cancelled() => return,
            ready = fd.readable() => match ready {
                Ok(ready) => ready,
                Err(err) => return warn!(error = %err, "cannot poll a steered UDP socket"),
            },
        };
        for _ in 0..BATCHES_PER_WAKE {
            let read = Batch::with(|batch| {
                let n = batch.recv_steered(&fd.get_ref().0)?;
                TABLES.with_borrow_mut(|tables| dispatch(&sockets, thread, tables, batch, n));
                Ok::<_, std::io::Error>(n)
            });
            match read {
                Ok(n) if n == BATCH => continue,
                Ok(_) => ready.clear_ready(),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(err) => debug!(error = %err, "steered UDP read failed"),
            }
            break;
        }
    }
}

/// Hands each run of consecutive buffers dialled to one address to its port's table.
fn dispatch(
    sockets: &Sockets,
    thread: usize,
    tables: &mut HashMap<SocketAddr, Box<Table>>,
    batch: &mut Batch,
    n: usize,
) {
    let mut i = 0;
    while i < n {
        let Some(dialled) = batch.dialled(i) else {
            i += 1;
            continue;
        };
        let mut end = i + 1;
        while end < n && batch.dialled(end) == Some(dialled) {
            end += 1;
        }
        let found = find(tables, dialled).or_else(|| {
            sockets.drain(thread, tables);
            find(tables, dialled)
        });
        match found.and_then(|k| Some((k, tables.get_mut(&k)?))) {
            Some((key, table)) => {
                table.forward(batch, i..end);
                // Its first flow: from now on it is swept.
                if table.sweep_at.is_none() && table.has_flows() {
                    let at = table.next_sweep();
                    plan(&sockets.threads[thread].sooner, key, table, Some(at));
                }
            }
            None => {
                debug!(%dialled, datagrams = end - i, "datagrams to a UDP port no longer steered here; dropped")
            }
        }
        i = end;
    }
}

/// Plans `table`'s next expiry sweep at `at` (`None`: no flow is open, no sweep), in place
/// of the one planned; `sooner` is told when it comes before every other of the thread.
fn plan(sooner: &Notify, key: SocketAddr, table: &mut Table, at: Option<Instant>) {
    SWEEPS.with_borrow_mut(|sweeps| {
        if let Some(old) = table.sweep_at.take() {
            sweeps.remove(&(old, key));
        }
        if let Some(at) = at {
            if sweeps.first().is_none_or(|&(first, _)| at < first) {
                sooner.notify_one();
            }
            sweeps.insert((at, key));
            table.sweep_at = Some(at);
        }
    });
}

/// A forwarding thread's sweeper, until `shutdown`: at each planned time, the table planned
/// expires its idle flows and plans its next sweep, while it has flows.
async fn sweep(sockets: Arc<Sockets>, thread: usize, shutdown: CancellationToken) {
    let sooner = &sockets.threads[thread].sooner;
    loop {
        let soonest = SWEEPS.with_borrow(|sweeps| sweeps.first().map(|&(at, _)| at));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = sooner.notified() => continue,
            () = tokio::time::sleep_until(soonest.unwrap_or_else(Instant::now).into()), if soonest.is_some() => {}
        }
        let now = Instant::now();
        let mut due = Vec::new();
        SWEEPS.with_borrow_mut(|sweeps| {
            while let Some(&(at, key)) = sweeps.first().filter(|&&(at, _)| at <= now) {
                sweeps.pop_first();
                due.push((at, key));
            }
        });
        TABLES.with_borrow_mut(|tables| {
            for (at, key) in due {
                // Not there, or planned anew since: a stopped port's, or a stale plan.
                if let Some(table) = tables.get_mut(&key).filter(|t| t.sweep_at == Some(at)) {
                    table.sweep_at = None;
                    let next = table.expire();
                    plan(sooner, key, table, next);
                }
            }
        });
    }
}
