//! The port allocator: a random free port of a namespace's range, bound on the spot.
//!
//! A port is chosen at random (as Clever Cloud and bore do) so that ports are not
//! predictable and a removed port is not handed to the next caller at once. It is
//! allocated by binding the listener itself and keeping it: checking that a port is free
//! and binding it later (frp's way) races with every other program on the machine.
//! The caller then claims the port in the store, which is what stops two gateway nodes
//! from handing out the same port.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use rand::Rng;
use socket2::{Domain, Socket, Type};

/// How many random picks to try before walking the whole range.
const RANDOM_TRIES: usize = 64;
/// The accept queue of a public listener.
const BACKLOG: i32 = 1024;

/// A public port's listening sockets: one, or one per thread when handed over by a version
/// that bound a group per port with `SO_REUSEPORT`.
pub type Listeners = Vec<std::net::TcpListener>;

/// Binds the listeners of a port of `range` that is not `taken` (asked per port, so that a
/// namespace of 60,000 ports costs no set built per call): `prefer` when it is free (a
/// client that removed and re-adds its redirection keeps its address, which frp users ask
/// for), else a random one; `Ok(None)` when none is free, and the error at once when the
/// process is out of descriptors (every other port would fail the same way).
pub fn allocate(
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    taken: impl Fn(u16) -> bool,
    prefer: Option<u16>,
) -> io::Result<Option<(u16, Listeners)>> {
    allocate_with(ip, range, taken, prefer, bind)
}

/// [`allocate`] with another way to bind a port: the UDP data plane's (`super::udp`).
pub fn allocate_with<S>(
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    taken: impl Fn(u16) -> bool,
    prefer: Option<u16>,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
) -> io::Result<Option<(u16, S)>> {
    if let Some(p) = prefer.filter(|p| range.contains(p)) {
        if let Some(found) = try_port(ip, p, &taken, &bind)? {
            return Ok(Some(found));
        }
    }
    let (low, high) = (*range.start() as u32, *range.end() as u32);
    let span = high - low + 1;
    let mut rng = rand::rng();
    for _ in 0..RANDOM_TRIES.min(span as usize) {
        let port = (low + rng.random_range(0..span)) as u16;
        if let Some(found) = try_port(ip, port, &taken, &bind)? {
            return Ok(Some(found));
        }
    }
    // The range is nearly full or busy: walk all of it once, from a random start, so that
    // "no free port" is only said when it is true.
    let start = rng.random_range(0..span);
    for port in (0..span).map(|i| (low + (start + i) % span) as u16) {
        if let Some(found) = try_port(ip, port, &taken, &bind)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Whether a socket call failed for want of descriptors, the process's or the system's.
pub fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The process's open-file limit (soft), for messages.
pub fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    }
}

/// A random port of `range` not `taken`, without binding it: for a node that does not
/// serve the namespace itself (the nodes that do bind it when the claim reaches them).
pub fn pick(range: &RangeInclusive<u16>, taken: impl Fn(u16) -> bool, prefer: Option<u16>) -> Option<u16> {
    if let Some(port) = prefer.filter(|&p| range.contains(&p) && !taken(p)) {
        return Some(port);
    }
    let (low, high) = (*range.start() as u32, *range.end() as u32);
    let span = high - low + 1;
    let start = rand::rng().random_range(0..span);
    (0..span).map(|i| (low + (start + i) % span) as u16).find(|&p| !taken(p))
}

/// Binds every port of `first..first + n` with `bind`, or none: on a failure the sockets
/// bound so far are closed (dropped) and the answer is the port that failed, with why.
pub fn bind_block<S>(
    ip: IpAddr,
    first: u16,
    n: u16,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
) -> Result<Vec<S>, (u16, io::Error)> {
    let mut bound = Vec::with_capacity(usize::from(n));
    for port in block(first, n) {
        match bind(SocketAddr::new(ip, port)) {
            Ok(socket) => bound.push(socket),
            Err(err) => return Err((port, err)),
        }
    }
    Ok(bound)
}

/// The ports of the block of `n` from `first` (to 65535 at most).
fn block(first: u16, n: u16) -> RangeInclusive<u16> {
    first..=first.saturating_add(n.max(1) - 1)
}

/// The first ports of `range` where a block of `n` fits, in the order to try them:
/// `prefer`, a few at random, then every one from a random start (so that "no free
/// block" is only said when it is true); `None` when the range is shorter than `n`.
fn block_starts(range: &RangeInclusive<u16>, n: u16, prefer: Option<u16>) -> Option<Vec<u16>> {
    let (low, high) = (u32::from(*range.start()), u32::from(*range.end()));
    let last_start = high.checked_sub(u32::from(n.max(1)) - 1).filter(|&s| s >= low)?;
    let span = last_start - low + 1;
    let mut rng = rand::rng();
    let mut starts: Vec<u16> =
        prefer.filter(|&p| (low..=last_start).contains(&u32::from(p))).into_iter().collect();
    starts.extend((0..RANDOM_TRIES.min(span as usize)).map(|_| (low + rng.random_range(0..span)) as u16));
    let from = rng.random_range(0..span);
    starts.extend((0..span).map(|i| (low + (from + i) % span) as u16));
    Some(starts)
}

/// [`allocate_with`] for a block of `n` consecutive ports (a range, issue 34): the first
/// port of a block of `range` none of whose ports is `taken`, with every port bound;
/// `Ok(None)` when no block is free, the error at once when out of descriptors.
pub fn allocate_block<S>(
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    n: u16,
    taken: impl Fn(u16) -> bool,
    prefer: Option<u16>,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
) -> io::Result<Option<(u16, Vec<S>)>> {
    let Some(starts) = block_starts(range, n, prefer) else { return Ok(None) };
    // A port found taken or unbindable rules out every block that holds it: remembered,
    // so that the walk over every start costs about the range, not the range times `n`.
    let mut bad: Option<u16> = None;
    for first in starts {
        let ports = block(first, n);
        if bad.is_some_and(|p| ports.contains(&p)) {
            continue;
        }
        if let Some(p) = ports.clone().find(|&p| taken(p)) {
            bad = Some(p);
            continue;
        }
        match bind_block(ip, first, n, &bind) {
            Ok(bound) => return Ok(Some((first, bound))),
            Err((_, err)) if out_of_descriptors(&err) => return Err(err),
            Err((p, _)) => bad = Some(p),
        }
    }
    Ok(None)
}

/// [`pick`] for a block of `n` consecutive ports: the first port of a block of `range`
/// none of whose ports is `taken`, without binding them.
pub fn pick_block(
    range: &RangeInclusive<u16>,
    n: u16,
    taken: impl Fn(u16) -> bool,
    prefer: Option<u16>,
) -> Option<u16> {
    let mut bad: Option<u16> = None;
    block_starts(range, n, prefer)?.into_iter().find(|&first| {
        let ports = block(first, n);
        if bad.is_some_and(|p| ports.contains(&p)) {
            return false;
        }
        bad = ports.clone().find(|&p| taken(p));
        bad.is_none()
    })
}

fn try_port<S>(
    ip: IpAddr,
    port: u16,
    taken: &impl Fn(u16) -> bool,
    bind: &impl Fn(SocketAddr) -> io::Result<S>,
) -> io::Result<Option<(u16, S)>> {
    if taken(port) {
        return Ok(None);
    }
    match bind(SocketAddr::new(ip, port)) {
        Ok(l) => Ok(Some((port, l))),
        Err(err) if out_of_descriptors(&err) => Err(err),
        Err(_) => Ok(None),
    }
}

/// Binds a public port: one listening socket, which every forwarding thread polls.
///
/// One descriptor per port whatever the number of threads: a node with 64 threads and
/// 27,000 ports holds 27,000 listening sockets, not 1.7 million. Without `SO_REUSEPORT`,
/// binding fails if anything else holds the port, so the gateway never joins a port that
/// another program listens on.
pub fn bind(addr: SocketAddr) -> io::Result<Listeners> {
    let socket = socket(addr)?;
    socket.listen(BACKLOG)?;
    Ok(vec![socket.into()])
}

/// A non-blocking TCP socket bound to `addr`, the way every public socket is made.
fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    // SO_REUSEADDR lets a restarted server take its ports back while old connections sit
    // in TIME_WAIT; on Linux it never lets two listeners share a port (SO_REUSEPORT does).
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // Accepted sockets inherit TCP_NODELAY from their listener on Linux: set once here, it
    // saves a system call per connection (small answers must not wait for Nagle).
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A descriptor the new process can inherit: a duplicate without close-on-exec.
pub fn inheritable(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: `dup` only makes a new descriptor for an open one; we own the result.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn a_port_is_one_listening_socket_and_its_connections_have_nodelay() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let listeners = bind(addr).expect("bind a port");
        assert_eq!(listeners.len(), 1, "one socket, polled by every thread");
        assert_eq!(listeners[0].local_addr().unwrap(), addr);
        // The accepted socket carries bytes and has TCP_NODELAY without a setsockopt of its own.
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"ping").unwrap();
        listeners[0].set_nonblocking(false).unwrap();
        let (mut accepted, _) = listeners[0].accept().unwrap();
        let mut got = [0; 4];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        assert!(accepted.nodelay().unwrap(), "an accepted socket lacks TCP_NODELAY");
        // A second bind of the same port fails: nothing can join it.
        assert_eq!(bind(addr).expect_err("bound the port twice").kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_port_another_socket_shares_with_so_reuseport_is_not_joined() {
        // Another program of the same user listening with SO_REUSEPORT: joining its group
        // would silently take part of its connections.
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        other.set_reuse_port(true).unwrap();
        other.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
        other.listen(8).unwrap();
        let addr = other.local_addr().unwrap().as_socket().unwrap();
        let err = bind(addr).expect_err("bound a port that another socket listens on");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let range = addr.port()..=addr.port();
        assert!(allocate(addr.ip(), &range, |_| false, None).unwrap().is_none());
    }
}
