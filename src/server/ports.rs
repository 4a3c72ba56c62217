//! The port allocator: a random free port of a namespace's range, bound on the spot.
//!
//! A port is chosen at random (as Clever Cloud and bore do) so that ports are not
//! predictable and a removed port is not handed to the next caller at once. It is
//! allocated by binding the listener itself and keeping it: checking that a port is free
//! and binding it later (frp's way) races with every other program on the machine.
//! The caller then claims the port in the store, which is what stops two gateway nodes
//! from handing out the same port.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use rand::Rng;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

/// How many random picks to try before walking the whole range.
const RANDOM_TRIES: usize = 64;
/// The accept queue of a public listener.
const BACKLOG: i32 = 1024;

/// Binds a listener on a port of `range` that is not in `taken`: `prefer` when it is free
/// (a client that removed and re-adds its redirection keeps its address, which frp users
/// ask for), else a random one; `None` when none is free.
pub fn allocate(
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    taken: &HashSet<u16>,
    prefer: Option<u16>,
) -> Option<(u16, TcpListener)> {
    if let Some(found) = prefer.filter(|p| range.contains(p)).and_then(|p| try_port(ip, p, taken)) {
        return Some(found);
    }
    let (low, high) = (*range.start() as u32, *range.end() as u32);
    let span = high - low + 1;
    let mut rng = rand::rng();
    for _ in 0..RANDOM_TRIES.min(span as usize) {
        let port = (low + rng.random_range(0..span)) as u16;
        if let Some(found) = try_port(ip, port, taken) {
            return Some(found);
        }
    }
    // The range is nearly full or busy: walk all of it once, from a random start, so that
    // "no free port" is only said when it is true.
    let start = rng.random_range(0..span);
    (0..span).map(|i| (low + (start + i) % span) as u16).find_map(|port| try_port(ip, port, taken))
}

fn try_port(ip: IpAddr, port: u16, taken: &HashSet<u16>) -> Option<(u16, TcpListener)> {
    if taken.contains(&port) {
        return None;
    }
    bind(SocketAddr::new(ip, port)).ok().map(|l| (port, l))
}

/// Binds a public listener, the way every listener of the gateway is bound.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // SO_REUSEADDR lets a restarted server take its ports back while old connections sit
    // in TIME_WAIT; on Linux it never lets two listeners share a port.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}
