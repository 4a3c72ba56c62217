//! The UDP data plane: datagrams from a public port forwarded to an application's
//! instances, and their answers back.
//!
//! UDP has no connection, so the gateway makes one: a *flow* is one client address
//! (IP and port). A flow's first datagram picks an instance the way a TCP connection does
//! ([`super::balance`]: least flows per unit of weight, instances marked down last, weight
//! 0 never) and opens a UDP socket of its own, connected to that instance. Every later
//! datagram of the client goes out on that socket, so the instance sees one peer per
//! client, and whatever the instance sends back on it goes to that client and no other
//! (the lesson of sozu's, Envoy's and nginx's UDP proxies). A flow ends when nothing has
//! moved either way for its idle timeout (60 s by default, [`UdpLimits::idle_timeout`]); its
//! socket is closed then ([`flow`]), and the client's next datagram starts a new flow.
//!
//! Every flow costs a descriptor (two in steered mode: see [`steered`]) and an ephemeral
//! port, and any host on the Internet can
//! start flows by sending one datagram from many source ports: a cap per redirection
//! ([`UdpLimits::max_connections`]) and one per node ([`NodeFlows`], by default half the open-file
//! limit and at most three quarters of the ephemeral port range) shed the datagrams that
//! would start a flow past them (counted under `udp_datagrams_dropped`, warned at most
//! every 10 s) instead of running the process out of descriptors or ports (Quilkin #1396,
//! Envoy #21712). The access list and the redirection's new-flow rate (its
//! `maxConnectionsPerSecond`) are the TCP ones, through [`super::admission`]: a source the
//! list refuses starts no flow, and each of its datagrams is dropped and counted.
//!
//! **Threads.** In bound mode a UDP port is one socket, served by one forwarding thread
//! (ports are dealt to the threads in turn); in steered mode (`serve --port-mode`) a port is
//! a key in the kernel's steering table that sends its datagrams to a socket of the thread
//! that owns it ([`steered`]: no socket per port, two descriptors per flow). Either way
//! one thread owns the port's flow table: finding a datagram's flow is
//! a hash map look-up with no lock, and a flow's reply task runs on the same thread.
//! Polling one socket from every thread, as TCP's accept does, would need the table
//! shared (a lock per datagram); a `SO_REUSEPORT` group of one socket per thread would
//! cost a descriptor per thread per port, would let another program of the same user join
//! the port (which `ports` refuses for TCP), and the kernel's hash of a client onto a
//! socket of the group changes whenever the group does, so a client would move to another
//! thread's table mid-flow and reach the instance from a second address. Measured on
//! loopback (`python3 bench/udp_reuseport_moves.py`): growing a group from 2 sockets to 3
//! moved 49 % of 1,000 clients to another socket, and closing one of 3 moved 81 to 83 %
//! (a third had to move). The price is one core per port: a single port's datagrams are
//! not spread over threads, but many ports are.
//!
//! **System calls.** Datagrams are read 32 at a time (`recvmmsg`), with UDP GRO where the
//! kernel has it, and sent with UDP GSO when several datagrams of one flow have the same
//! size, through `quinn-udp` ([`io`]); a GRO bundle is cut back at its segment size, so
//! every datagram reaches the other side whole and alone, up to 64 KiB. The receive
//! buffers are the thread's own (2 MiB per forwarding thread, not per port or flow), used
//! between a read and the sends it leads to with no wait in between. `quinn-udp` also reads
//! each datagram's destination address (`IP_PKTINFO`), so that answers leave from the
//! address the client sent to, on a host with several; its socket set-up forbids IP
//! fragmentation (QUIC wants that), which [`io`] undoes: a 64 KiB datagram must still
//! cross a 1,500-byte network. Counted with `strace -f -c` on the test
//! `many_flows_carry_exact_datagrams_both_ways_each_pinned_to_one_instance` (40 clients,
//! one datagram in flight each, the worst case for batching): 2,000 datagrams relayed
//! took 1,063 `recvmmsg`, one send each (1,000 `sendto` to the instances, 1,000 `sendmsg`
//! to the clients) and 60 `epoll_wait`; setting a flow's socket up takes about 8
//! `setsockopt`, once per flow.
//!
//! **PROXY protocol.** With [`UdpLimits::proxy_protocol`], the instance gets a PROXY protocol v2
//! header (`DGRAM` over IPv4 or IPv6: address family 0x12 or 0x22) naming the client and
//! the address it sent to, in front of the flow's first datagram or of every one
//! ([`proxy`]): with `first`, the instance must keep what it learnt per peer address, the
//! gateway's flow socket.
//!
//! **What is counted.** Flows count as the redirection's connections (started, open),
//! bytes as its bytes, and datagrams each way and drops by reason in its
//! [`super::metrics::UdpCounts`], added once per batch. With the connection log on, a flow
//! writes one `flow` line when it ends ([`super::conn_log::ConnLog::log_flow`]).
//!
//! Not yet here: health learnt from UDP traffic (an ICMP port-unreachable is counted,
//! `unreachable`, but does not mark the instance down, since the health check connects
//! with TCP).

mod flow;
mod io;
mod proxy;
mod steered;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::balance::Pool;
use super::forward::Policy;
use super::metrics::RedirMetrics;
use super::workers::Workers;
use crate::server::spec::UdpLimits;

use crate::wire::ProxyProtocol;
pub use steered::Sockets as SteeredSockets;

/// How often a UDP port whose bind failed tries again.
const REBIND_EVERY: Duration = Duration::from_secs(5);

/// One UDP redirection's public side: what its serving task needs. Shared as one record
/// by the port's task (bound mode), its flow table and the control plane (issue 32's memory per
/// redirection: one allocation, not one per field).
pub struct UdpPort {
    /// Where to bind when no socket is handed over.
    pub addr: SocketAddr,
    /// The application's instances.
    pub targets: Arc<Pool>,
    /// Cancelled to close the port and its flows: the redirection is removed or the server stops.
    pub stop: CancellationToken,
    /// Whether the port is bound right now.
    pub bound: AtomicBool,
    /// Told when a bind that had failed succeeds.
    pub bound_changed: Arc<tokio::sync::Notify>,
    /// The flows' limits: swapped in place at a settings change, read at each new flow
    /// and each expiry sweep.
    pub limits: ArcSwap<UdpLimits>,
    /// Told after `limits` changed, so that a sweep planned at the old idle timeout is
    /// planned again (a shorter timeout must not wait for the longer one).
    pub limits_changed: tokio::sync::Notify,
    /// Who may send (the access list; its PROXY setting is TCP's and not read here), and the
    /// connection log; a change of generation re-checks the open flows against the list.
    pub policy: ArcSwap<Policy>,
    /// The redirection's metrics.
    pub metrics: Arc<RedirMetrics>,
    /// The node's flow count and cap, shared by every UDP port of the node.
    pub node: Arc<NodeFlows>,
    /// The forwarding threads; one of them serves the port.
    pub workers: Arc<Workers>,
    /// The port's socket while it is bound, for a hand-over to a new process.
    pub fds: std::sync::Mutex<Vec<std::os::fd::RawFd>>,
}

impl UdpPort {
    /// The namespace, for logs (its metrics' label: not a copy of its own).
    pub fn namespace(&self) -> &str {
        self.metrics.namespace()
    }
}

/// In front of which datagrams of a flow the PROXY protocol v2 header goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// The flow's first datagram only.
    First,
    /// Every datagram (each one stands alone, at 28 or 52 bytes more: one within that of
    /// the 65,507-byte limit of IPv4 is dropped, counted `send_failed`).
    Every,
}

impl ProxyMode {
    /// The mode a redirection's `proxyProtocol` asks for (`v1` is refused on UDP when added).
    pub fn of(setting: Option<ProxyProtocol>) -> Option<ProxyMode> {
        match setting? {
            ProxyProtocol::V2 => Some(ProxyMode::First),
            ProxyProtocol::V2Every => Some(ProxyMode::Every),
            ProxyProtocol::V1 => None,
        }
    }
}

/// The flows open on a node, against its cap.
#[derive(Debug)]
pub struct NodeFlows {
    open: AtomicUsize,
    max: usize,
}

impl NodeFlows {
    /// A node cap of `max` descriptors held by flows (a steered flow counts two).
    pub fn new(max: usize) -> NodeFlows {
        NodeFlows { open: AtomicUsize::new(0), max }
    }

    /// The cap this host can hold, counted in descriptors (a bound flow holds one, a steered
    /// one two): half the open-file limit (the other half for TCP and the rest), and at
    /// most three quarters of the ephemeral port range, since each flow holds one port of it.
    pub fn for_this_host() -> NodeFlows {
        let descriptors = usize::try_from(super::ports::descriptor_limit() / 2).unwrap_or(usize::MAX);
        let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| {
                let mut range = text.split_whitespace().map(|n| n.parse::<usize>().ok());
                Some(range.next()??..=range.next()??)
            })
            .map_or(28_232, |range| range.count());
        NodeFlows::new(descriptors.min(ports * 3 / 4).max(1))
    }

    /// Counts one more flow of `cost` descriptors (1 bound, 2 steered: see [`steered`]),
    /// unless the node would pass its cap.
    fn enter(&self, cost: usize) -> bool {
        if self.open.fetch_add(cost, Ordering::Relaxed) + cost > self.max {
            self.open.fetch_sub(cost, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn leave(&self, cost: usize) {
        self.open.fetch_sub(cost, Ordering::Relaxed);
    }

    /// The descriptors the node's flows hold now (one per bound flow, two per steered one).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Binds a UDP port of `range` that is not `taken`, as [`super::ports::allocate`] binds a
/// TCP one (`prefer` first, else at random; `Ok(None)` when none is free). UDP ports are a
/// space of their own: a port that TCP uses is free for UDP.
pub fn allocate(
    ip: std::net::IpAddr,
    range: &std::ops::RangeInclusive<u16>,
    taken: impl Fn(u16) -> bool,
    prefer: Option<u16>,
) -> std::io::Result<Option<(u16, std::net::UdpSocket)>> {
    super::ports::allocate_with(ip, range, taken, prefer, io::bind)
}

/// Binds a public UDP port (non-blocking, close-on-exec, dual-stack on IPv6).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    io::bind(addr)
}

/// Deals the UDP ports to the forwarding threads in turn.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Runs a UDP redirection's public port until `stop`, binding it first if `socket` is `None`.
///
/// The port is served on one forwarding thread (see the module's design); this task binds,
/// hands the socket over and waits. Returning means the socket and every flow's socket
/// were closed.
pub async fn run(port: Arc<UdpPort>, mut socket: Option<std::net::UdpSocket>) {
    let socket = loop {
        if let Some(s) = socket.take() {
            break s;
        }
        match io::bind(port.addr) {
            Ok(s) => break s,
            Err(err) => {
                warn!(namespace = %port.namespace(), addr = %port.addr, error = %err,
                    "cannot bind the UDP redirection's port (is another program using it?); retrying every {}s", REBIND_EVERY.as_secs());
                tokio::select! {
                    () = port.stop.cancelled() => return,
                    () = tokio::time::sleep(REBIND_EVERY) => {}
                }
            }
        }
    };
    // Counted from now, so that the redirection's series exist before its first datagram.
    port.metrics.udp.get_or_init(Box::default);
    if !port.bound.swap(true, Ordering::Relaxed) {
        port.bound_changed.notify_one();
    }
    *port.fds.lock().unwrap_or_else(|p| p.into_inner()) = vec![std::os::fd::AsRawFd::as_raw_fd(&socket)];
    let threads = port.workers.handles();
    let thread = threads[NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % threads.len()].clone();
    debug!(namespace = %port.namespace(), addr = %port.addr, "serving UDP");
    let _ = thread.spawn(flow::serve(port.clone(), socket)).await;
    port.fds.lock().unwrap_or_else(|p| p.into_inner()).clear();
    port.bound.store(false, Ordering::Relaxed);
}
