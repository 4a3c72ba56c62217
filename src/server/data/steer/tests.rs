//! Steering for real: each test runs in a thread of its own that moves to a new network
//! namespace (so nothing touches the machine's), brings its `lo` up, loads the program there
//! and dials loopback. Made for root (as `scripts/test` and CI run); where a namespace or the
//! program cannot be made, the test fails and says why.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;

const LOCAL4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LOCAL6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
/// Bounds a read that must not block forever if a test fails; never waited out when it passes.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `body` in a new thread moved to a new network namespace with `lo` up.
fn in_netns<F: FnOnce() + Send + 'static>(body: F) {
    let thread = std::thread::spawn(move || {
        // SAFETY: plain system call; in a multi-threaded process it moves this thread only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "cannot make a network namespace for the test (unshare(CLONE_NEWNET): {}); \
                 steering tests need root (CAP_SYS_ADMIN), as scripts/test and CI run",
                io::Error::last_os_error()
            );
        }
        if let Err(e) = loopback_up() {
            panic!("cannot bring lo up in the test's network namespace: {e}");
        }
        body()
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `ip link set lo up`, with the `SIOCSIFFLAGS` ioctl.
fn loopback_up() -> io::Result<()> {
    const SIOCGIFFLAGS: u64 = 0x8913;
    const SIOCSIFFLAGS: u64 = 0x8914;
    let sock = UdpSocket::bind("0.0.0.0:0").or_else(|_| {
        // SAFETY: socket() returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is new and ours.
        Ok(UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    })?;
    // SAFETY: ifreq is plain data; all zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: both ioctls read and write an ifreq, which `req` is.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS as _, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS as _, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn load() -> Steering {
    Steering::load().unwrap_or_else(|e| panic!("{e}"))
}

fn tcp(ip: IpAddr, port: u16) -> Key {
    Key::new(Proto::Tcp, ip, port)
}

fn udp(ip: IpAddr, port: u16) -> Key {
    Key::new(Proto::Udp, ip, port)
}

/// Dials `ip:port`, accepts on `listener`, checks the accepted side saw the dialled address
/// and that bytes pass both ways; returns both ends.
fn dial_accept(listener: &TcpListener, ip: IpAddr, port: u16) -> (TcpStream, TcpStream) {
    let dialled = SocketAddr::new(ip, port);
    let mut client = TcpStream::connect(dialled).unwrap_or_else(|e| panic!("connect {dialled}: {e}"));
    let (mut server, peer) = listener.accept().unwrap();
    assert_eq!(peer, client.local_addr().unwrap(), "accepted the wrong connection");
    assert_eq!(server.local_addr().unwrap(), dialled, "getsockname of the accepted socket");
    exchange(&mut client, &mut server);
    (client, server)
}

fn exchange(client: &mut TcpStream, server: &mut TcpStream) {
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    server.set_read_timeout(Some(DEADLINE)).unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    server.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

fn assert_refused(ip: IpAddr, port: u16) {
    match TcpStream::connect(SocketAddr::new(ip, port)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("connect {ip}:{port}: {e}, expected refused"),
        Ok(s) => panic!("connect {ip}:{port} succeeded ({s:?}), expected refused"),
    }
}

/// A UDP socket that reports each datagram's original destination.
fn udp_server(addr: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind(addr).unwrap();
    let (level, opt) = match addr {
        SocketAddr::V4(_) => (libc::SOL_IP, libc::IP_RECVORIGDSTADDR),
        SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR),
    };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of_val(&one) as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt RECVORIGDSTADDR: {}", io::Error::last_os_error());
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    sock
}

/// Receives one datagram: payload, source, original destination.
fn recv_orig(sock: &UdpSocket) -> (Vec<u8>, SocketAddr, SocketAddr) {
    let mut buf = [0u8; 1500];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: zeroed sockaddr_storage and msghdr are valid.
    let mut src: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut cbuf = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut src as *mut _ as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of_val(&src) as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points to live buffers of the sizes it says.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    assert!(n >= 0, "recvmsg: {}", io::Error::last_os_error());
    let mut orig = None;
    // SAFETY: walking the control buffer the kernel filled, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c) as *const libc::sockaddr_storage;
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_IP, libc::IP_ORIGDSTADDR) | (libc::SOL_IPV6, libc::IPV6_ORIGDSTADDR) => {
                    orig = Some(sockaddr(&std::ptr::read_unaligned(data)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    (buf[..n as usize].to_vec(), sockaddr(&src), orig.expect("no IP_ORIGDSTADDR"))
}

fn sockaddr(s: &libc::sockaddr_storage) -> SocketAddr {
    // SAFETY: the family says which sockaddr the storage holds.
    unsafe {
        match s.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(s as *const _ as *const libc::sockaddr_in);
                SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                    u16::from_be(a.sin_port),
                )
            }
            libc::AF_INET6 => {
                let a = &*(s as *const _ as *const libc::sockaddr_in6);
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)), u16::from_be(a.sin6_port))
            }
            f => panic!("address family {f}"),
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn program_loads_and_attaches() {
    in_netns(|| {
        let steering = load();
        let fds = steering.raw_fds();
        assert!(fds.iter().all(|&fd| fd >= 0));
        assert!(Steering::program_len() < 64, "{} instructions", Steering::program_len());
    });
}

#[test]
fn tcp_ports_reach_one_listener_with_their_port() {
    in_netns(|| {
        let steering = load();
        let listener = TcpListener::bind((LOCAL4, 0)).unwrap();
        steering.insert_socket(0, listener.as_fd()).unwrap();
        let ports: Vec<u16> = (20_000..20_010).collect();
        for &p in &ports {
            steering.steer(tcp(LOCAL4, p), Target::slot(0)).unwrap();
        }
        let mut open = Vec::new();
        for &p in &ports {
            open.push(dial_accept(&listener, LOCAL4, p));
        }
        // Not steered: nothing listens there.
        assert_refused(LOCAL4, 20_010);
        // The listener's own port still works the usual way.
        dial_accept(&listener, LOCAL4, listener.local_addr().unwrap().port());
        // UDP keys do not steer TCP.
        steering.steer(udp(LOCAL4, 20_011), Target::slot(0)).unwrap();
        assert_refused(LOCAL4, 20_011);

        // Unsteered: refused from when unsteer returns; the open connection goes on.
        assert!(steering.unsteer(tcp(LOCAL4, 20_003)).unwrap());
        assert!(!steering.unsteer(tcp(LOCAL4, 20_003)).unwrap());
        assert_refused(LOCAL4, 20_003);
        let (client, server) = &mut open[3];
        exchange(client, server);
        dial_accept(&listener, LOCAL4, 20_004);
    });
}

#[test]
fn empty_slot_refuses_and_a_new_socket_takes_over() {
    in_netns(|| {
        let steering = load();
        steering.steer(tcp(LOCAL4, 20_100), Target::slot(7)).unwrap();
        assert_refused(LOCAL4, 20_100);
        let listener = TcpListener::bind((LOCAL4, 0)).unwrap();
        steering.insert_socket(7, listener.as_fd()).unwrap();
        assert!(steering.socket_cookie(7).unwrap().is_some());
        dial_accept(&listener, LOCAL4, 20_100);
        // Closing the socket empties its slot: the port is refused, not left to another.
        drop(listener);
        assert_eq!(steering.socket_cookie(7).unwrap(), None);
        assert_refused(LOCAL4, 20_100);
        let next = TcpListener::bind((LOCAL4, 0)).unwrap();
        steering.insert_socket(7, next.as_fd()).unwrap();
        dial_accept(&next, LOCAL4, 20_100);
        assert!(steering.remove_socket(7).unwrap());
        assert_refused(LOCAL4, 20_100);
    });
}

#[test]
fn udp_datagrams_reach_one_socket_with_their_destination() {
    in_netns(|| {
        let steering = load();
        let server = udp_server(SocketAddr::new(LOCAL4, 0));
        steering.insert_socket(1, server.as_fd()).unwrap();
        let ports: Vec<u16> = (21_000..21_010).collect();
        let keys: Vec<_> = ports.iter().map(|&p| (udp(LOCAL4, p), Target::slot(1))).collect();
        steering.steer_many(&keys).unwrap();
        let client = UdpSocket::bind((LOCAL4, 0)).unwrap();
        for &p in &ports {
            client.send_to(format!("to {p}").as_bytes(), (LOCAL4, p)).unwrap();
            let (data, from, orig) = recv_orig(&server);
            assert_eq!(data, format!("to {p}").as_bytes());
            assert_eq!(from, client.local_addr().unwrap());
            assert_eq!(orig, SocketAddr::new(LOCAL4, p));
        }
        // Not steered, or no longer: ICMP port unreachable, which a connected socket reports.
        steering.unsteer(udp(LOCAL4, 21_005)).unwrap();
        for p in [21_005, 21_010] {
            let probe = UdpSocket::bind((LOCAL4, 0)).unwrap();
            probe.set_read_timeout(Some(DEADLINE)).unwrap();
            probe.connect((LOCAL4, p)).unwrap();
            probe.send(b"x").unwrap();
            let err = probe.recv(&mut [0u8; 8]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "port {p}: {err}");
        }
    });
}

#[test]
fn ipv6_tcp_and_udp() {
    in_netns(|| {
        let steering = load();
        let listener = TcpListener::bind((LOCAL6, 0)).unwrap();
        let server = udp_server(SocketAddr::new(LOCAL6, 0));
        steering.insert_socket(0, listener.as_fd()).unwrap();
        steering.insert_socket(1, server.as_fd()).unwrap();
        steering.steer(tcp(LOCAL6, 22_000), Target::slot(0)).unwrap();
        steering.steer(tcp(ANY6, 22_001), Target::slot(0)).unwrap();
        steering.steer(udp(LOCAL6, 22_000), Target::slot(1)).unwrap();
        dial_accept(&listener, LOCAL6, 22_000);
        dial_accept(&listener, LOCAL6, 22_001);
        assert_refused(LOCAL6, 22_002);
        // An IPv6 key steers IPv6 only; IPv4 on the same port is not ours.
        assert_refused(LOCAL4, 22_000);
        let client = UdpSocket::bind((LOCAL6, 0)).unwrap();
        client.send_to(b"six", (LOCAL6, 22_000)).unwrap();
        let (data, from, orig) = recv_orig(&server);
        assert_eq!((data.as_slice(), from), (&b"six"[..], client.local_addr().unwrap()));
        assert_eq!(orig, SocketAddr::new(LOCAL6, 22_000));
        // An IPv4 key written as v4-mapped IPv6 is the IPv4 key.
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let v4 = TcpListener::bind((LOCAL4, 0)).unwrap();
        steering.insert_socket(2, v4.as_fd()).unwrap();
        steering.steer(tcp(mapped, 22_003), Target::slot(2)).unwrap();
        dial_accept(&v4, LOCAL4, 22_003);
    });
}

#[test]
fn exact_address_first_then_wildcard() {
    in_netns(|| {
        let steering = load();
        let exact = TcpListener::bind((LOCAL4, 0)).unwrap();
        let wild = TcpListener::bind((ANY4, 0)).unwrap();
        steering.insert_socket(0, exact.as_fd()).unwrap();
        steering.insert_socket(1, wild.as_fd()).unwrap();
        steering
            .steer_many(&[
                (tcp(LOCAL4, 23_000), Target::slot(0)),
                (tcp(ANY4, 23_000), Target::slot(1)),
                (tcp(ANY4, 23_001), Target::slot(1)),
            ])
            .unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        dial_accept(&exact, LOCAL4, 23_000);
        dial_accept(&wild, other, 23_000);
        dial_accept(&wild, LOCAL4, 23_001);
        dial_accept(&wild, other, 23_001);
        assert_eq!(steering.target(tcp(ANY4, 23_001)).unwrap(), Some(Target::slot(1)));
        steering.unsteer_many(&[tcp(LOCAL4, 23_000), tcp(LOCAL4, 23_999)]).unwrap();
        assert_eq!(steering.target(tcp(LOCAL4, 23_000)).unwrap(), None);
        dial_accept(&wild, LOCAL4, 23_000);
        steering.unsteer(tcp(ANY4, 23_000)).unwrap();
        assert_refused(LOCAL4, 23_000);
    });
}

#[test]
fn reuseport_group_chooses_only_when_asked() {
    in_netns(|| {
        let steering = load();
        let first = reuseport_listener(None);
        let second = reuseport_listener(Some(first.local_addr().unwrap()));
        steering.insert_socket(0, first.as_fd()).unwrap();
        first.set_nonblocking(true).unwrap();
        second.set_nonblocking(true).unwrap();
        let count = |listener: &TcpListener| std::iter::from_fn(|| listener.accept().ok()).count();

        steering.steer(tcp(LOCAL4, 24_000), Target::slot(0)).unwrap();
        let clients: Vec<_> = (0..64).map(|_| TcpStream::connect((LOCAL4, 24_000)).unwrap()).collect();
        assert_eq!((count(&first), count(&second)), (64, 0), "the slot's socket takes every connection");
        drop(clients);

        steering.steer(tcp(LOCAL4, 24_000), Target::reuseport_group(0)).unwrap();
        let clients: Vec<_> = (0..64).map(|_| TcpStream::connect((LOCAL4, 24_000)).unwrap()).collect();
        let (a, b) = (count(&first), count(&second));
        assert_eq!(a + b, 64);
        assert!(a > 0 && b > 0, "the group spreads connections: {a} and {b}");
        drop(clients);
    });
}

fn reuseport_listener(addr: Option<SocketAddr>) -> TcpListener {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let sock = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            &one as *const _ as *const libc::c_void,
            4,
        );
        assert_eq!(rc, 0);
        let port = addr.map_or(0, |a| a.port());
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(
            fd,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sin) as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        assert_eq!(libc::listen(fd, 128), 0);
        TcpListener::from(sock)
    }
}

#[test]
fn handover_keeps_steering_and_closing_all_detaches() {
    in_netns(|| {
        let old = load();
        let listener = TcpListener::bind((LOCAL4, 0)).unwrap();
        old.insert_socket(0, listener.as_fd()).unwrap();
        old.steer(tcp(LOCAL4, 25_000), Target::slot(0)).unwrap();
        let (mut client, mut server) = dial_accept(&listener, LOCAL4, 25_000);

        // What SCM_RIGHTS does: new descriptors of the same objects; the old ones then close.
        let passed = Fds::from_array(old.fds().into_array().map(|fd| fd.try_clone_to_owned().unwrap()));
        let old_program = bpf::prog_info(old.fds().program).unwrap().0.id;
        let new = Steering::from_fds(passed).unwrap_or_else(|e| panic!("{e}"));
        drop(old);
        let link = bpf::link_info(new.fds().link).unwrap();
        let new_program = bpf::prog_info(new.fds().program).unwrap().0.id;
        assert_eq!(link.prog_id, new_program, "the link runs the new process's program");
        assert_ne!(new_program, old_program);
        dial_accept(&listener, LOCAL4, 25_000);
        new.steer(tcp(LOCAL4, 25_001), Target::slot(0)).unwrap();
        dial_accept(&listener, LOCAL4, 25_001);
        exchange(&mut client, &mut server);

        // Not a steering's descriptors: refused with a reason.
        let sock = UdpSocket::bind((LOCAL4, 0)).unwrap();
        let wrong = Fds::from_array(new.fds().into_array().map(|fd| fd.try_clone_to_owned().unwrap()));
        let wrong = Fds { bindings: OwnedFd::from(sock), ..wrong };
        let err = Steering::from_fds(wrong).unwrap_err();
        assert!(err.to_string().contains("bindings"), "{err}");

        // Closing every descriptor detaches the program: the steered ports are gone.
        drop(new);
        assert_refused(LOCAL4, 25_000);
        exchange(&mut client, &mut server);
    });
}

#[test]
fn without_privileges_the_error_says_what_to_grant() {
    in_netns(|| {
        drop_effective_capabilities();
        let err = Steering::load().unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{msg}");
        assert!(msg.contains("CAP_BPF") && msg.contains("CAP_NET_ADMIN"), "{msg}");
        assert!(msg.contains("AmbientCapabilities"), "{msg}");
    });
}

/// Clears this thread's effective capabilities (permitted stay: nothing else changes).
fn drop_effective_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read and write one header and two data structs (version 3).
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()), 0);
        data[0].effective = 0;
        data[1].effective = 0;
        let rc = libc::syscall(libc::SYS_capset, &mut header, data.as_ptr());
        assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
    }
}

#[test]
fn ten_thousand_ports_on_a_handful_of_descriptors() {
    in_netns(|| {
        let before = open_fds();
        let steering = load();
        let listener = TcpListener::bind((LOCAL4, 0)).unwrap();
        let server = udp_server(SocketAddr::new(LOCAL4, 0));
        steering.insert_socket(0, listener.as_fd()).unwrap();
        steering.insert_socket(1, server.as_fd()).unwrap();
        let ports: Vec<u16> = (30_000..40_000).collect();
        let mut entries: Vec<_> = ports.iter().map(|&p| (tcp(LOCAL4, p), Target::slot(0))).collect();
        entries.extend(ports.iter().map(|&p| (udp(LOCAL4, p), Target::slot(1))));
        steering.steer_many(&entries).unwrap();
        let used = open_fds().saturating_sub(before);
        // 4 for the steering, 2 sockets (run alone: 6); other tests run in parallel threads and
        // open theirs, hence a bound far below one per port rather than an exact count.
        assert!(used < 1_000, "{used} descriptors for 20,000 steered ports");
        let client = UdpSocket::bind((LOCAL4, 0)).unwrap();
        for &p in ports.iter().step_by(97).chain([ports[0], ports[ports.len() - 1]].iter()) {
            drop(dial_accept(&listener, LOCAL4, p));
            client.send_to(b"d", (LOCAL4, p)).unwrap();
            assert_eq!(recv_orig(&server).2.port(), p);
        }
        assert_refused(LOCAL4, 40_000);
        eprintln!("20,000 ports steered with {used} new descriptors");
    });
}

/// Figures for the essay: `cargo test --release --lib steer::tests::figures -- --nocapture`.
/// Each round steers then unsteers 50,000 keys on a fresh steering, batched and one by one in
/// turn (which goes first alternates); the medians of five rounds are printed. A
/// measurement for the module's essay more than a test: `scripts/test` runs it with the
/// ignored ones.
#[test]
#[ignore = "figures for the module's essay: cargo test --lib steer::tests::figures -- --ignored --nocapture"]
fn figures() {
    in_netns(|| {
        const N: u32 = 50_000;
        const ROUNDS: usize = 5;
        let entries: Vec<_> = (0..N)
            .map(|i| {
                let proto = if i % 2 == 0 { Proto::Tcp } else { Proto::Udp };
                (Key::new(proto, LOCAL4, (10_000 + i / 2) as u16), Target::slot(0))
            })
            .collect();
        let keys: Vec<Key> = entries.iter().map(|e| e.0).collect();
        let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut memory = None;
        for round in 0..ROUNDS {
            for batched in [round % 2 == 0, round % 2 != 0] {
                let steering = if batched { load() } else { load().without_batches() };
                let fds = steering.fds();
                let program = memlock(fds.program).unwrap();
                let sockets = memlock(fds.sockets).unwrap();
                let empty = memlock(fds.bindings).unwrap();
                let t = Instant::now();
                steering.steer_many(&entries).unwrap();
                times[batched as usize].push(t.elapsed());
                let full = memlock(steering.fds().bindings).unwrap();
                for (k, t) in entries.iter().step_by(1001) {
                    assert_eq!(steering.target(*k).unwrap(), Some(*t));
                }
                let t = Instant::now();
                steering.unsteer_many(&keys).unwrap();
                times[2 + batched as usize].push(t.elapsed());
                assert_eq!(steering.target(keys[N as usize - 1]).unwrap(), None);
                memory = Some((program, sockets, empty, full));
            }
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let [mut steer1, mut steer_n, mut unsteer1, mut unsteer_n] = times;
        let (program, sockets, empty, full) = memory.unwrap();
        eprintln!(
            "program: {} instructions, {program} B; socket map: {sockets} B; steering table: \
             {empty} B empty, {full} B with {N} keys ({:.1} B per key); median of {ROUNDS}: \
             steer {N}: batched {:?}, one by one {:?}; unsteer {N}: batched {:?}, one by one {:?}",
            Steering::program_len(),
            (full - empty) as f64 / N as f64,
            median(&mut steer_n),
            median(&mut steer1),
            median(&mut unsteer_n),
            median(&mut unsteer1),
        );
    });
}

#[test]
fn a_full_table_says_so() {
    in_netns(|| {
        let steering = Steering::load_with(Config { max_keys: 4, max_slots: 2 }).unwrap();
        let keys: Vec<_> = (0..5).map(|p| (tcp(LOCAL4, 27_000 + p), Target::slot(0))).collect();
        steering.steer_many(&keys[..4]).unwrap();
        let err = steering.steer_many(&keys).unwrap_err();
        assert!(err.to_string().contains("4 of 5 done"), "{err}");
        let err = steering.steer(tcp(LOCAL4, 27_010), Target::slot(0)).unwrap_err();
        assert!(err.to_string().contains("27010") && err.to_string().contains("full"), "{err}");
        let listener = TcpListener::bind((LOCAL4, 0)).unwrap();
        let err = steering.insert_socket(2, listener.as_fd()).unwrap_err();
        assert!(err.to_string().contains("full"), "slot 2 of 2: {err}");
        // A socket the map cannot take: a TCP socket neither listening nor connected.
        // SAFETY: socket() returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: fd is new and ours.
        let idle = unsafe { OwnedFd::from_raw_fd(fd) };
        let err = steering.insert_socket(1, idle.as_fd()).unwrap_err();
        assert!(err.to_string().contains("TCP listeners"), "{err}");
    });
}

#[test]
fn two_steerings_in_one_namespace_first_attached_wins() {
    in_netns(|| {
        let first = load();
        let second = load();
        let a = TcpListener::bind((LOCAL4, 0)).unwrap();
        let b = TcpListener::bind((LOCAL4, 0)).unwrap();
        first.insert_socket(0, a.as_fd()).unwrap();
        second.insert_socket(0, b.as_fd()).unwrap();
        first.steer(tcp(LOCAL4, 26_000), Target::slot(0)).unwrap();
        second.steer(tcp(LOCAL4, 26_000), Target::slot(0)).unwrap();
        second.steer(tcp(LOCAL4, 26_001), Target::slot(0)).unwrap();
        // Both programs choose: the one attached first holds, the second does not drop it.
        dial_accept(&a, LOCAL4, 26_000);
        // Only the second steers this one.
        dial_accept(&b, LOCAL4, 26_001);
        // The first steering gone, the second takes every port with no gap.
        drop(first);
        dial_accept(&b, LOCAL4, 26_000);
    });
}
