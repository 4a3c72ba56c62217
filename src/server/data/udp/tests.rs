//! The UDP data plane on loopback: real sockets, exact datagrams, real descriptors.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::server::data::balance::Health;
use crate::server::data::forward::Policy;
use crate::server::data::metrics::{Dropped, Metrics, UdpCounts};
use crate::server::spec::{Access, UdpLimits, UDP_DEFAULTS as DEFAULT_UDP_LIMITS};
use crate::wire::{Instance, Protocol};
use crate::wire::{ProxyProtocol, RedirSettings};

/// How long a test waits for anything it expects.
const WAIT: Duration = Duration::from_secs(10);

fn workers() -> Arc<Workers> {
    static WORKERS: OnceLock<Arc<Workers>> = OnceLock::new();
    WORKERS.get_or_init(|| Arc::new(Workers::start(NonZeroUsize::new(2)).unwrap())).clone()
}

/// What a test instance does with a datagram, besides telling the test about it.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Echo,
    Nothing,
}

/// A UDP instance on loopback: every datagram goes to `seen` with its source.
struct Backend {
    addr: SocketAddr,
    seen: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(ip: IpAddr, answer: Answer) -> Backend {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        // Forty clients' datagrams of up to 9 KB at once overflow the default buffer (208 KiB
        // of kernel memory, about twice the bytes on loopback), and UDP drops what overflows.
        socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0; 1 << 16];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                // Recorded before the answer: a client that has its answer finds the
                // datagram in `seen`.
                if tx.send((peer, buf[..n].to_vec())).is_err() {
                    return;
                }
                if answer == Answer::Echo {
                    socket.send_to(&buf[..n], peer).unwrap();
                }
            }
        });
        Backend { addr, seen, stop, thread: Some(thread) }
    }

    fn next(&self) -> (SocketAddr, Vec<u8>) {
        self.seen.recv_timeout(WAIT).expect("the instance received no datagram")
    }

    fn drain(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.seen.try_iter().collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP port served by the data plane.
struct Gateway {
    addr: SocketAddr,
    /// The node's registry, with this port's series as `app_1`.
    registry: Metrics,
    stop: CancellationToken,
    metrics: Arc<RedirMetrics>,
    port: Arc<UdpPort>,
    node: Arc<NodeFlows>,
    targets: Arc<Pool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    fn start(
        ip: IpAddr,
        instances: &[SocketAddr],
        limits: UdpLimits,
        access: Access,
        node: Arc<NodeFlows>,
    ) -> Gateway {
        let instances: Vec<Instance> =
            instances.iter().map(|a| Instance { address: a.to_string(), ..Default::default() }).collect();
        Gateway::with_instances(ip, &instances, limits, access, node)
    }

    fn with_instances(
        ip: IpAddr,
        instances: &[Instance],
        limits: UdpLimits,
        access: Access,
        node: Arc<NodeFlows>,
    ) -> Gateway {
        let socket = io::bind(SocketAddr::new(ip, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        let targets = Arc::new(Pool::new(instances, &Arc::new(Health::default())));
        let registry = Metrics::new();
        let port = Arc::new(UdpPort {
            addr,
            targets: targets.clone(),
            stop: CancellationToken::new(),
            bound: AtomicBool::default(),
            bound_changed: Arc::default(),
            limits: ArcSwap::from_pointee(limits),
            limits_changed: Notify::default(),
            policy: ArcSwap::from_pointee(Policy { generation: 0, access, log: None }),
            metrics: registry.redirection("default", Protocol::Udp, addr.port(), "app_1"),
            node: node.clone(),
            workers: workers(),
            fds: Mutex::default(),
        });
        let (stop, metrics) = (port.stop.clone(), port.metrics.clone());
        let task = tokio::spawn(run(port.clone(), Some(socket)));
        Gateway { addr, registry, stop, metrics, port, node, targets, task: Some(task) }
    }

    fn simple(instances: &[SocketAddr], limits: UdpLimits) -> Gateway {
        let ip = instances[0].ip();
        Gateway::start(ip, instances, limits, Access::default(), Arc::new(NodeFlows::new(100_000)))
    }

    fn counts(&self) -> &UdpCounts {
        self.metrics.udp.get_or_init(Box::default)
    }

    /// Waits until `done` holds, or fails saying `what`.
    async fn until(&self, what: &str, done: impl Fn(&Gateway) -> bool) {
        let began = Instant::now();
        while !done(self) {
            assert!(began.elapsed() < WAIT, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task).await.expect("the port stops").unwrap();
    }
}

fn client(ip: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Sends `data` through the gateway and answers what comes back, checking its source.
fn round_trip(client: &UdpSocket, gateway: SocketAddr, data: &[u8]) -> Vec<u8> {
    client.send_to(data, gateway).unwrap();
    let mut buf = vec![0; 1 << 16];
    let (n, from) = client.recv_from(&mut buf).expect("no answer through the gateway");
    assert_eq!(from, gateway, "the answer comes from the address the client sent to");
    buf.truncate(n);
    buf
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// The payload of datagram `seq` of client `c`: its size varies from 0 to 9,000 bytes, and
/// it names its client and rank in its first bytes when it has room.
fn payload(c: usize, seq: usize) -> Vec<u8> {
    let len = if seq == 0 { 0 } else { (c * 131 + seq * 977) % 9_000 + 4 };
    let mut data: Vec<u8> = (0..len).map(|i| (i * 7 + c + seq) as u8).collect();
    if len >= 4 {
        data[..2].copy_from_slice(&(c as u16).to_be_bytes());
        data[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_flows_carry_exact_datagrams_both_ways_each_pinned_to_one_instance() {
    const CLIENTS: usize = 40;
    const EACH: usize = 25;
    let (a, b) = (Backend::start(localhost(), Answer::Echo), Backend::start(localhost(), Answer::Echo));
    let gateway = Gateway::simple(&[a.addr, b.addr], DEFAULT_UDP_LIMITS);
    let to = gateway.addr;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let socket = client(localhost());
                let mut bytes = 0;
                for seq in 0..EACH {
                    let sent = payload(c, seq);
                    assert_eq!(round_trip(&socket, to, &sent), sent, "client {c}, datagram {seq}");
                    bytes += sent.len() as u64;
                }
                bytes
            })
        })
        .collect();
    let bytes: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();

    // Every client reached one instance, from one address of the gateway's.
    let mut seen: HashMap<u16, HashSet<(SocketAddr, SocketAddr)>> = HashMap::new();
    let mut per_instance = [0usize; 2];
    for (i, backend) in [&a, &b].into_iter().enumerate() {
        let mut peers = HashSet::new();
        for (peer, data) in backend.drain() {
            if data.len() >= 4 {
                seen.entry(u16::from_be_bytes([data[0], data[1]])).or_default().insert((backend.addr, peer));
            }
            peers.insert(peer);
        }
        per_instance[i] = peers.len();
    }
    assert_eq!(seen.len(), CLIENTS);
    for (c, paths) in &seen {
        assert_eq!(paths.len(), 1, "client {c} reached the instances by {paths:?}");
    }
    assert_eq!(per_instance[0] + per_instance[1], CLIENTS, "one gateway address per client");
    assert!(
        per_instance[0].abs_diff(per_instance[1]) <= 2,
        "flows spread over the instances: {per_instance:?}"
    );

    let datagrams = (CLIENTS * EACH) as u64;
    // Counted once per batch, after its sends: maybe after the last answer is back.
    gateway
        .until("every datagram counted", |g| {
            let t = g.metrics.traffic.totals();
            (g.counts().datagrams_in.get(), g.counts().datagrams_out.get(), t.bytes_in, t.bytes_out)
                == (datagrams, datagrams, bytes, bytes)
        })
        .await;
    let counts = gateway.counts();
    let totals = gateway.metrics.traffic.totals();
    assert_eq!((totals.accepted, totals.active), (CLIENTS as u64, CLIENTS as i64), "flows started, open");
    assert_eq!((totals.bytes_in, totals.bytes_out), (bytes, bytes));
    assert!(Dropped::ALL.iter().all(|&r| counts.dropped(r) == 0), "nothing dropped");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_of_64_kib_pass_whole_over_ipv4_and_ipv6() {
    // The largest UDP payloads: 65,535 bytes less the IPv4 (20) or IPv6 (0: its header is
    // outside the payload length) header and UDP's 8.
    for (ip, largest) in [(localhost(), 65_507), ("::1".parse().unwrap(), 65_527)] {
        let backend = Backend::start(ip, Answer::Echo);
        let gateway = Gateway::simple(&[backend.addr], DEFAULT_UDP_LIMITS);
        let socket = client(ip);
        for len in [largest, 1, largest - 1, 40_000] {
            let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(round_trip(&socket, gateway.addr, &sent), sent, "{len} bytes over {ip}");
            assert_eq!(backend.next().1.len(), len, "the instance got it whole");
        }
        gateway.stop().await;
    }
}

/// A client that sends with UDP GSO (one system call, many datagrams) arrives at the
/// gateway as a GRO bundle: the instance must still get each datagram alone, and so must
/// the client on the way back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gso_burst_reaches_the_instance_as_its_datagrams() {
    let backend = Backend::start(localhost(), Answer::Echo);
    let gateway = Gateway::simple(&[backend.addr], DEFAULT_UDP_LIMITS);
    let socket = client(localhost());
    let segment: libc::c_int = 1_000;
    // SAFETY: setsockopt reads one c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&segment as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    let burst: Vec<u8> = (0..10_500).map(|i| (i / 1_000) as u8).collect();
    socket.send_to(&burst, gateway.addr).unwrap();
    let mut at_instance = Vec::new();
    let mut back = Vec::new();
    let mut buf = vec![0; 1 << 16];
    for _ in 0..11 {
        at_instance.push(backend.next().1);
        let n = socket.recv(&mut buf).expect("an answer");
        back.push(buf[..n].to_vec());
    }
    let expected: Vec<Vec<u8>> = burst.chunks(1_000).map(<[u8]>::to_vec).collect();
    assert_eq!(at_instance, expected, "11 datagrams, the last of 500 bytes");
    assert_eq!(back, expected);
    // Counted once per batch, after its sends: maybe after the answer is back.
    gateway
        .until("11 datagrams counted each way", |g| {
            (g.counts().datagrams_in.get(), g.counts().datagrams_out.get()) == (11, 11)
        })
        .await;
    gateway.stop().await;
}

/// The local ports of this process's UDP sockets, from /proc: a socket in
/// /proc/net/udp{,6} whose inode is one of our descriptors.
fn our_udp_ports() -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else { continue };
            if inodes.contains(*inode) {
                let port = local.rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flow_ends_and_its_socket_is_closed() {
    let backend = Backend::start(localhost(), Answer::Echo);
    let limits = UdpLimits { idle_timeout: Duration::from_millis(300), ..DEFAULT_UDP_LIMITS };
    let gateway = Gateway::simple(&[backend.addr], limits);
    let clients: Vec<UdpSocket> = (0..10).map(|_| client(localhost())).collect();
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(round_trip(c, gateway.addr, &[i as u8; 3]), [i as u8; 3]);
    }
    let flow_ports: HashSet<u16> = backend.drain().into_iter().map(|(peer, _)| peer.port()).collect();
    assert_eq!(flow_ports.len(), 10, "one flow socket per client");
    assert!(flow_ports.is_subset(&our_udp_ports()), "the flows' sockets are this process's");
    assert_eq!(gateway.node.open(), 10);

    gateway.until("the idle flows' sockets closed", |_| our_udp_ports().is_disjoint(&flow_ports)).await;
    gateway.until("no flow open", |g| g.metrics.traffic.totals().active == 0 && g.node.open() == 0).await;

    // The client's next datagram starts a new flow.
    assert_eq!(round_trip(&clients[0], gateway.addr, b"again"), b"again");
    assert_eq!(gateway.metrics.traffic.totals().accepted, 11);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_caps_shed_new_flows_and_count_them() {
    let backend = Backend::start(localhost(), Answer::Echo);
    let limits = UdpLimits { max_connections: 3, ..DEFAULT_UDP_LIMITS };
    let node = Arc::new(NodeFlows::new(4));
    let gateway = Gateway::start(localhost(), &[backend.addr], limits, Access::default(), node.clone());
    let admitted: Vec<UdpSocket> = (0..3).map(|_| client(localhost())).collect();
    for c in &admitted {
        assert_eq!(round_trip(c, gateway.addr, b"in"), b"in");
    }
    let shed: Vec<UdpSocket> = (0..4).map(|_| client(localhost())).collect();
    for c in &shed {
        c.send_to(b"one", gateway.addr).unwrap();
        c.send_to(b"two", gateway.addr).unwrap();
    }
    // One thread reads the port in order: once this answer is back, the shed datagrams
    // were handled.
    assert_eq!(round_trip(&admitted[0], gateway.addr, b"after"), b"after");
    assert_eq!(gateway.counts().dropped(Dropped::flow_cap), 8);
    assert_eq!(gateway.metrics.rare().over_capacity.get(), 8, "each shed datagram was a refused flow");
    assert_eq!(gateway.metrics.traffic.totals().active, 3);
    gateway.until("the answers counted", |g| g.counts().datagrams_out.get() == 4).await;
    let _tcp = gateway.registry.redirection("default", Protocol::Tcp, 1, "tcp_app");
    let text = gateway.registry.encode();
    let series = |name: &str, label: &str| {
        format!(
            "tcp_redirs_{name}_total{{namespace=\"default\",port=\"{}\",protocol=\"udp\",app=\"app_1\",{label}}}",
            gateway.addr.port()
        )
    };
    for (name, label, n) in [
        ("udp_datagrams_dropped", "reason=\"flow_cap\"", 8),
        ("udp_datagrams_dropped", "reason=\"denied\"", 0),
        ("udp_datagrams", "direction=\"in\"", 4),
        ("udp_datagrams", "direction=\"out\"", 4),
    ] {
        assert!(
            text.contains(&format!("{} {n}\n", series(name, label))),
            "{} {n} in:\n{text}",
            series(name, label)
        );
    }
    assert!(
        !text.lines().any(|l| l.contains("udp_") && l.contains("tcp_app")),
        "a TCP redirection has no UDP series"
    );
    for c in &shed {
        c.set_nonblocking(true).unwrap();
        let err = c.recv(&mut [0; 16]).expect_err("a shed client got an answer");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    // A second port of the same node takes the node's fourth flow; its next is shed.
    let other =
        Gateway::start(localhost(), &[backend.addr], DEFAULT_UDP_LIMITS, Access::default(), node.clone());
    let (c4, c5) = (client(localhost()), client(localhost()));
    assert_eq!(round_trip(&c4, other.addr, b"4th"), b"4th");
    c5.send_to(b"5th", other.addr).unwrap();
    assert_eq!(round_trip(&c4, other.addr, b"sync"), b"sync");
    assert_eq!(other.counts().dropped(Dropped::node_flow_cap), 1);
    assert_eq!(node.open(), 4);
    let seen: HashSet<SocketAddr> = backend.drain().into_iter().map(|(peer, _)| peer).collect();
    assert_eq!(seen.len(), 4, "the instance saw the admitted flows only");
    gateway.stop().await;
    other.stop().await;
    assert_eq!(node.open(), 0, "stopped ports give their flows back to the node");

    // The default node cap leaves half the descriptors to the rest, and ports to spare.
    let host = NodeFlows::for_this_host().max as u64;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let range: Vec<u64> = range.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert!(host >= 1 && host <= crate::server::data::ports::descriptor_limit() / 2, "{host}");
    assert!(host <= (range[1] - range[0] + 1) * 3 / 4, "{host}");
}

/// Reads a PROXY v2 header by the specification (not by the crate that wrote it): the
/// family byte, and the source and destination addresses.
fn parse_v2(datagram: &[u8]) -> (u8, SocketAddr, SocketAddr, &[u8]) {
    assert_eq!(&datagram[..12], b"\r\n\r\n\0\r\nQUIT\n", "the v2 signature");
    assert_eq!(datagram[12], 0x21, "version 2, PROXY");
    let family = datagram[13];
    let len = u16::from_be_bytes([datagram[14], datagram[15]]) as usize;
    let body = &datagram[16..16 + len];
    let (src, dst) = match family {
        0x12 => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap());
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
        }
        0x22 => {
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
        }
        other => panic!("family {other:#x}, not DGRAM over IPv4 or IPv6"),
    };
    (family, src, dst, &datagram[16 + len..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_dgram_headers_name_the_client_on_the_first_or_every_datagram() {
    for (ip, family, mode) in [
        (localhost(), 0x12, ProxyProtocol::V2),
        (localhost(), 0x12, ProxyProtocol::V2Every),
        ("::1".parse().unwrap(), 0x22, ProxyProtocol::V2Every),
    ] {
        let backend = Backend::start(ip, Answer::Nothing);
        let limits = UdpLimits { proxy_protocol: Some(mode), ..DEFAULT_UDP_LIMITS };
        let gateway = Gateway::simple(&[backend.addr], limits);
        let socket = client(ip);
        let sent: [&[u8]; 3] = [b"first", b"", b"third datagram"];
        for data in sent {
            socket.send_to(data, gateway.addr).unwrap();
        }
        for (i, data) in sent.into_iter().enumerate() {
            let (_, got) = backend.next();
            if i == 0 || mode == ProxyProtocol::V2Every {
                let (fam, src, dst, rest) = parse_v2(&got);
                assert_eq!(fam, family, "DGRAM over the client's family");
                assert_eq!(src, socket.local_addr().unwrap(), "the header names the client");
                assert_eq!(dst, gateway.addr, "and the address it sent to");
                assert_eq!(rest, data, "then the datagram, whole");
            } else {
                assert_eq!(got, data, "{mode:?}: no header after the first");
            }
        }
        if mode == ProxyProtocol::V2Every && family == 0x12 {
            // 65,507 bytes are the most a datagram holds: with the header it cannot go.
            socket.send_to(&[7; 65_507], gateway.addr).unwrap();
            gateway
                .until("the oversized datagram counted", |g| g.counts().dropped(Dropped::send_failed) == 1)
                .await;
        }
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_answers_nothing_or_is_not_there() {
    let silent = Backend::start(localhost(), Answer::Nothing);
    let limits = UdpLimits { idle_timeout: Duration::from_millis(300), ..DEFAULT_UDP_LIMITS };
    let gateway = Gateway::simple(&[silent.addr], limits);
    let socket = client(localhost());
    for i in 0..5u8 {
        socket.send_to(&[i; 10], gateway.addr).unwrap();
        assert_eq!(silent.next().1, [i; 10]);
    }
    assert_eq!(gateway.metrics.traffic.totals().active, 1, "one flow, kept while the client sends");
    gateway.until("the silent flow expired", |g| g.metrics.traffic.totals().active == 0).await;
    assert_eq!(gateway.counts().datagrams_out.get(), 0);
    socket.set_nonblocking(true).unwrap();
    assert_eq!(socket.recv(&mut [0; 16]).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    gateway.stop().await;

    // Nothing listens on the instance's port: the host answers with ICMP, which is counted.
    let gone = UdpSocket::bind((localhost(), 0)).unwrap().local_addr().unwrap();
    let gateway = Gateway::simple(&[gone], DEFAULT_UDP_LIMITS);
    let socket = client(localhost());
    socket.send_to(b"anyone?", gateway.addr).unwrap();
    gateway
        .until("the ICMP port unreachable counted", |g| g.counts().dropped(Dropped::unreachable) >= 1)
        .await;
    assert_eq!(gateway.metrics.traffic.totals().active, 1, "the flow stays until it is idle");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_list_applies_to_each_source_and_a_change_ends_refused_flows() {
    let backend = Backend::start(localhost(), Answer::Echo);
    let allow = |ranges: &[&str]| {
        Access::parse(&RedirSettings {
            allow: ranges.iter().map(|r| r.to_string()).collect(),
            ..RedirSettings::default()
        })
        .unwrap()
    };
    let node = Arc::new(NodeFlows::new(100));
    let gateway =
        Gateway::start(localhost(), &[backend.addr], DEFAULT_UDP_LIMITS, allow(&["127.0.0.2"]), node);
    let (refused, admitted) = (client(localhost()), client(IpAddr::from([127, 0, 0, 2])));
    refused.send_to(b"no", gateway.addr).unwrap();
    refused.send_to(b"no", gateway.addr).unwrap();
    assert_eq!(round_trip(&admitted, gateway.addr, b"yes"), b"yes");
    assert_eq!(gateway.counts().dropped(Dropped::denied), 2);
    assert_eq!(gateway.metrics.traffic.totals().accepted, 1);

    // The list now refuses 127.0.0.2: its open flow ends at the next datagram read.
    gateway.port.policy.store(Arc::new(Policy { generation: 1, access: allow(&["127.0.0.1"]), log: None }));
    admitted.send_to(b"still?", gateway.addr).unwrap();
    assert_eq!(round_trip(&refused, gateway.addr, b"now"), b"now");
    assert_eq!(gateway.counts().dropped(Dropped::denied), 3);
    assert_eq!(gateway.metrics.traffic.totals().active, 1, "the refused flow ended");
    gateway.stop().await;
}

#[test]
fn relayed_datagrams_may_be_fragmented_by_ip() {
    for ip in [localhost(), "::1".parse().unwrap()] {
        let socket = io::bind(SocketAddr::new(ip, 0)).unwrap();
        io::prepare(&socket).unwrap();
        let get = |level, name| {
            let mut value: libc::c_int = -1;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into the c_int.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    level,
                    name,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            value
        };
        assert_eq!(get(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER), libc::IP_PMTUDISC_WANT, "{ip}");
        if ip.is_ipv6() {
            assert_eq!(get(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER), libc::IPV6_PMTUDISC_WANT);
            assert_eq!(get(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
        }
    }
}

/// On a port bound to every address, the answer leaves from the address the client sent
/// to (read from the datagram with `IP_PKTINFO`), not from the one routing would pick:
/// a client of 127.0.0.2 would drop an answer from 127.0.0.1. The same over IPv4 on a
/// dual-stack IPv6 socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_leave_from_the_address_the_client_sent_to() {
    let backend = Backend::start(localhost(), Answer::Echo);
    for wildcard in ["0.0.0.0", "::"] {
        let wildcard: IpAddr = wildcard.parse().unwrap();
        let node = Arc::new(NodeFlows::new(100));
        let gateway = Gateway::start(wildcard, &[backend.addr], DEFAULT_UDP_LIMITS, Access::default(), node);
        for ip in [localhost(), IpAddr::from([127, 0, 0, 2])] {
            let to = SocketAddr::new(ip, gateway.addr.port());
            let socket = client(ip);
            assert_eq!(round_trip(&socket, to, b"where from?"), b"where from?", "{wildcard} via {ip}");
        }
        gateway.stop().await;
    }
}

/// Flows go to instances as TCP connections do: never to one of weight 0, to one marked
/// down only when every other one is, and the open flows count on their instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_pick_their_instance_as_tcp_connections_do() {
    let (a, b, c) = (
        Backend::start(localhost(), Answer::Echo),
        Backend::start(localhost(), Answer::Echo),
        Backend::start(localhost(), Answer::Echo),
    );
    let instance =
        |addr: SocketAddr, weight| Instance { address: addr.to_string(), weight, ..Default::default() };
    let instances = [instance(a.addr, Some(0)), instance(b.addr, None), instance(c.addr, None)];
    let node = Arc::new(NodeFlows::new(100));
    let gateway =
        Gateway::with_instances(localhost(), &instances, DEFAULT_UDP_LIMITS, Access::default(), node);
    // `c` is marked down (as a failed TCP connect would): new flows go to `b` alone.
    gateway.targets.members()[2].failed();
    let clients: Vec<UdpSocket> = (0..6).map(|_| client(localhost())).collect();
    for c in &clients {
        assert_eq!(round_trip(c, gateway.addr, b"x"), b"x");
    }
    assert!(a.drain().is_empty(), "an instance of weight 0 took a flow");
    assert!(c.drain().is_empty(), "an instance marked down took a flow while another was up");
    assert_eq!(b.drain().len(), 6);
    let described: Vec<Option<u64>> =
        gateway.targets.members().iter().map(|m| m.describe().active_connections).collect();
    assert_eq!(described, [Some(0), Some(6), Some(0)], "open flows count on their instance");
    let targets = gateway.targets.clone();
    gateway.stop().await;
    let described: Vec<Option<u64>> =
        targets.members().iter().map(|m| m.describe().active_connections).collect();
    assert_eq!(described, [Some(0), Some(0), Some(0)], "ended flows leave their instance");
}

/// A UDP port is allocated like a TCP one, in the UDP space: the port a TCP listener holds
/// is free for UDP, one a UDP socket holds is not, and the taken ones are skipped.
#[test]
fn udp_ports_are_allocated_in_their_own_space() {
    let tcp = std::net::TcpListener::bind((localhost(), 0)).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (got, socket) =
        allocate(localhost(), &(port..=port), |_| false, None).unwrap().expect("the port is free for UDP");
    assert_eq!((got, socket.local_addr().unwrap()), (port, SocketAddr::new(localhost(), port)));
    assert!(allocate(localhost(), &(port..=port), |_| false, None).unwrap().is_none(), "bound twice");
    assert!(allocate(localhost(), &(port..=port), |p| p == port, None).unwrap().is_none(), "a taken port");
    drop(socket);
    let range = port.saturating_sub(50)..=port;
    let (preferred, _socket) = allocate(localhost(), &range, |_| false, Some(port)).unwrap().unwrap();
    assert_eq!(preferred, port, "the preferred port when it is free");
    // Another program's UDP socket with SO_REUSEPORT is not joined.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other.bind(&SocketAddr::new(localhost(), 0).into()).unwrap();
    let held = other.local_addr().unwrap().as_socket().unwrap().port();
    assert!(allocate(localhost(), &(held..=held), |_| false, None).unwrap().is_none());
}

/// The redirection's new-flow rate (its `maxConnectionsPerSecond`, a burst of one second)
/// drops the datagrams that would start flows past it; the open flows go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_flow_rate_drops_datagrams_past_it() {
    let backend = Backend::start(localhost(), Answer::Echo);
    let limits = UdpLimits { max_connections_per_second: Some(2), ..DEFAULT_UDP_LIMITS };
    let gateway = Gateway::simple(&[backend.addr], limits);
    let first = client(localhost());
    assert_eq!(round_trip(&first, gateway.addr, b"1"), b"1");
    let began = Instant::now();
    let others: Vec<UdpSocket> = (0..5).map(|_| client(localhost())).collect();
    for c in &others {
        c.send_to(b"new", gateway.addr).unwrap();
    }
    assert_eq!(round_trip(&first, gateway.addr, b"sync"), b"sync", "an open flow is not rate limited");
    let dropped = gateway.counts().dropped(Dropped::rate_limited);
    let started = gateway.metrics.traffic.totals().accepted;
    assert_eq!(started + dropped, 6, "each datagram started a flow or was dropped");
    // Two tokens to start with, one of them taken by `first`, and 2 more a second since.
    let refilled = (began.elapsed().as_secs_f64() * 2.0).ceil() as u64;
    assert!(
        started <= 2 + refilled && dropped >= 4u64.saturating_sub(refilled),
        "{started} started, {dropped} dropped"
    );
    assert_eq!(gateway.metrics.rare().rate_limited.get(), dropped);
    gateway.stop().await;
}

/// `maxDatagramsPerSecond` limits each client on its own: a client that sends a burst past
/// it has the rest dropped (counted `rate_limited`) while another client's datagrams pass,
/// and its bucket refills with time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_is_held_to_its_datagram_rate() {
    let backend = Backend::start(localhost(), Answer::Echo);
    let limits = UdpLimits { max_datagrams_per_second: Some(5), ..DEFAULT_UDP_LIMITS };
    let gateway = Gateway::simple(&[backend.addr], limits);
    let (flooder, calm) = (client(localhost()), client(localhost()));
    for i in 0..20u8 {
        flooder.send_to(&[i], gateway.addr).unwrap();
    }
    // One thread reads the port in order: once the calm client's answer is back, the
    // flooder's burst was handled.
    assert_eq!(round_trip(&calm, gateway.addr, b"calm"), b"calm", "another client is not limited");
    let dropped = gateway.counts().dropped(Dropped::rate_limited);
    // A second's worth passes (5), and one more per 200 ms the burst took to arrive.
    assert!((14..=15).contains(&dropped), "{dropped} of 20 dropped");
    flooder.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut answers = 0;
    let mut buf = [0u8; 16];
    while flooder.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    assert_eq!(answers, 20 - dropped, "what was not dropped was answered");
    // The read above waited 500 ms at its end: the bucket holds at least 2 again.
    flooder.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(round_trip(&flooder, gateway.addr, b"later"), b"later");
    gateway.stop().await;
}
