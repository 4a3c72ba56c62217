//! Batched reads and offloaded sends on UDP sockets, through `quinn-udp`.
//!
//! A read takes up to [`BATCH`] datagrams, or GRO bundles of same-size datagrams from one
//! source, in one `recvmmsg`, into the thread's own buffers ([`Batch`]); a bundle is
//! handed on as its segments, or sent on whole with GSO at the same segment size, so a
//! datagram is never split or merged with another on the way. Consecutive datagrams of a
//! read that go to the same peer at one size (the last may be shorter) are joined into
//! one GSO send too ([`Run`]): the kernel then builds, routes and hands on one packet
//! where it would build one per datagram, and the receiver still gets them one by one.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What a socket is polled for: datagrams, and errors to read (see [`Sock::new`]).
pub(super) const READ: Interest = Interest::READABLE.add(Interest::ERROR);
/// Datagrams (or GRO bundles) read per system call.
pub(super) const BATCH: usize = quinn_udp::BATCH_SIZE;
/// One receive buffer: the largest UDP payload, and the largest GRO bundle, fit in it.
const BUFFER: usize = 1 << 16;
/// The receive and send buffers asked of the kernel for a public socket (it may give less:
/// `net.core.rmem_max`, `wmem_max`), so that a burst of datagrams waits for the thread, or
/// for the network, instead of being dropped: every flow's answers leave by this socket.
const PUBLIC_BUFFERS: usize = 4 << 20;

/// A UDP socket polled by this thread's runtime, with its `quinn-udp` state.
pub(super) struct Sock {
    pub(super) fd: AsyncFd<std::net::UdpSocket>,
    pub(super) state: UdpSocketState,
}

impl Sock {
    /// Registers `socket` with the current runtime, for reads and errors (an ICMP error on a
    /// flow's connected socket wakes it with `EPOLLERR` alone).
    pub(super) fn new(socket: std::net::UdpSocket) -> io::Result<Sock> {
        let state = prepare(&socket)?;
        // SAFETY: the AsyncFd owns the socket and keeps it open for as long as it lives.
        let fd = unsafe { AsyncFd::register_with_interest(socket, READ) };
        Ok(Sock { fd: fd.map_err(|e| e.into_parts().1)?, state })
    }

    /// Sends one datagram, or a bundle of `segment`-byte datagrams with GSO, to `to`
    /// (from `src`, the address the client sent to, when known).
    pub(super) fn send(
        &self,
        to: SocketAddr,
        src: Option<IpAddr>,
        data: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let segment_size = (data.len() > segment).then_some(segment);
        let transmit = Transmit { destination: to, ecn: None, contents: data, segment_size, src_ip: src };
        self.state.try_send((&self.fd).into(), &transmit)
    }

    /// Whether a bundle of `n` datagrams can go in one GSO send.
    pub(super) fn gso(&self, n: usize) -> bool {
        n <= self.segments()
    }

    /// The most datagrams one send can carry (1 without GSO).
    pub(super) fn segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Sets a socket up for batched reads, GRO and destination addresses (`quinn-udp`), with
/// fragmentation allowed.
pub(super) fn prepare(socket: &std::net::UdpSocket) -> io::Result<UdpSocketState> {
    let state = UdpSocketState::new(socket.into())?;
    allow_fragmentation(socket)?;
    Ok(state)
}

/// Undoes `quinn-udp`'s ban on fragmentation (it sets `IP_PMTUDISC_PROBE` and
/// `IPV6_DONTFRAG` for QUIC): a relayed datagram larger than the path's MTU must be
/// fragmented by IP, as the kernel does by default (`IP_PMTUDISC_WANT`), not refused.
fn allow_fragmentation(socket: &std::net::UdpSocket) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let v6 = socket.local_addr()?.is_ipv6();
    if v6 {
        set(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_WANT)?;
        set(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0)?;
    }
    // On a dual-stack socket the IPv4 option governs its IPv4 datagrams.
    match set(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_WANT) {
        Err(err) if v6 => drop(err),
        other => other?,
    }
    Ok(())
}

/// Binds a public UDP port: non-blocking, close-on-exec, dual-stack on IPv6.
///
/// Without `SO_REUSEADDR` or `SO_REUSEPORT`: on Linux either would let another socket of
/// the same user bind the same UDP port and take part of its datagrams.
pub(super) fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking().cloexec(), None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // The kernel's default (net.core.rmem_default) holds a few hundred datagrams.
    socket.set_recv_buffer_size(PUBLIC_BUFFERS).ok();
    socket.set_send_buffer_size(PUBLIC_BUFFERS).ok();
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A steered socket (steered mode): bound to the loopback address of its family on an
/// ephemeral port, it takes whatever datagrams the kernel's program assigns it, for any
/// address and port, and each one carries the address and port the client sent to
/// (`IP_RECVORIGDSTADDR` / `IPV6_RECVORIGDSTADDR`); UDP GRO where the kernel has it. It is
/// never sent from: a flow's answers leave by the flow's own client socket ([`answer_from`]).
pub(super) fn steered_socket(v6: bool) -> io::Result<std::net::UdpSocket> {
    let (domain, addr) = match v6 {
        false => (Domain::IPV4, SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))),
        true => (Domain::IPV6, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))),
    };
    let socket = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), None)?;
    if v6 {
        socket.set_only_v6(true)?;
    }
    socket.set_recv_buffer_size(PUBLIC_BUFFERS).ok();
    socket.bind(&addr.into())?;
    let fd = socket.as_raw_fd();
    let on: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match v6 {
        false => set(libc::IPPROTO_IP, libc::IP_RECVORIGDSTADDR)?,
        true => set(libc::IPPROTO_IPV6, libc::IPV6_RECVORIGDSTADDR)?,
    }
    // Without GRO each datagram is read alone: slower, not wrong.
    set(libc::SOL_UDP, libc::UDP_GRO).ok();
    Ok(socket.into())
}

/// A steered flow's client socket: bound to the address and port the client dialled (with
/// `SO_REUSEADDR`, as every flow of the port binds there too) and connected to the client.
/// Its answers leave from the dialled port, and the client's later datagrams reach it: the
/// kernel finds a connected socket before it runs the steering program.
pub(super) fn answer_from(dialled: SocketAddr, client: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(dialled), Type::DGRAM.nonblocking().cloexec(), None)?;
    if dialled.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_send_buffer_size(PUBLIC_BUFFERS).ok();
    socket.bind(&dialled.into())?;
    socket.connect(&client.into())?;
    Ok(socket.into())
}

/// A flow's own socket: an ephemeral port, connected to the instance, so that only the
/// instance's datagrams reach it.
pub(super) fn connect(instance: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(instance), Type::DGRAM.nonblocking().cloexec(), None)?;
    socket.connect(&instance.into())?;
    Ok(socket.into())
}

/// The largest datagram joined with others into one GSO send: one that fits a 1,500-byte
/// path over IPv6 (1,500 less 40 and 8 bytes of headers). The kernel refuses a GSO send
/// whose segments exceed the path's MTU, and `quinn-udp` then turns GSO off for the
/// socket for good, so larger ones go alone, as they came.
const JOIN_MAX_DATAGRAM: usize = 1_452;
/// The most bytes of one joined send: within the 65,507 of a UDP payload over IPv4.
const JOIN_MAX_BYTES: usize = 65_000;

/// What a read gave: up to [`BATCH`] buffers, each one datagram or a GRO bundle, and
/// room to join consecutive ones into one send.
pub(super) struct Batch {
    data: Box<[u8]>,
    meta: [RecvMeta; BATCH],
    /// The address and port each buffer was sent to, as a steered socket reads it.
    dialled: [Option<SocketAddr>; BATCH],
    /// Where a [`Run`] of several buffers is copied, end to end, for one GSO send.
    joined: Box<[u8]>,
}

/// Consecutive buffers of a read that go out in one send: to the same peer, all their
/// datagrams of one size but the last, which may be shorter (what GSO can carry).
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    /// The first buffer and the buffers in the run.
    first: usize,
    parts: usize,
    /// Bytes taken from the last buffer, and whether that is all of it (a rate limit may
    /// cut a bundle short; nothing joins after a cut one).
    last_len: usize,
    last_whole: bool,
    /// Bytes in the run, datagrams, and their size.
    len: usize,
    count: usize,
    pub(super) stride: usize,
}

impl Run {
    /// A run of buffer `i`'s first `len` bytes (`whole`: all it holds), datagrams of
    /// `stride` bytes.
    pub(super) fn new(i: usize, len: usize, stride: usize, whole: bool) -> Run {
        let count = len.div_ceil(stride).max(1);
        Run { first: i, parts: 1, last_len: len, last_whole: whole, len, count, stride }
    }

    /// Adds buffer `i` (its first `len` bytes, at `stride`) if it follows the run and one
    /// GSO send of at most `segments` datagrams can carry both.
    pub(super) fn join(&mut self, i: usize, len: usize, stride: usize, whole: bool, segments: usize) -> bool {
        let single = len <= stride;
        let fits = i == self.first + self.parts
            && self.last_whole
            && self.len > 0
            && len > 0
            && self.stride <= JOIN_MAX_DATAGRAM
            && self.len.is_multiple_of(self.stride)
            && (if single { len <= self.stride } else { stride == self.stride })
            && self.len + len <= JOIN_MAX_BYTES
            && self.count + len.div_ceil(self.stride) <= segments;
        if fits {
            self.parts += 1;
            (self.last_len, self.last_whole) = (len, whole);
            self.len += len;
            self.count += len.div_ceil(self.stride);
        }
        fits
    }
}

thread_local! {
    /// The thread's receive buffers: made at its first UDP read, used between a read and
    /// the sends it leads to, never across a wait.
    static BATCH_BUFFERS: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

impl Batch {
    /// Runs `f` with this thread's buffers.
    pub(super) fn with<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
        BATCH_BUFFERS.with_borrow_mut(|batch| {
            let batch = batch.get_or_insert_with(|| Batch {
                data: vec![0; BATCH * BUFFER].into_boxed_slice(),
                meta: [RecvMeta::default(); BATCH],
                dialled: [None; BATCH],
                joined: vec![0; JOIN_MAX_BYTES].into_boxed_slice(),
            });
            f(batch)
        })
    }

    /// Reads what `socket` holds, up to a batch, without waiting: the number of buffers
    /// filled, or `WouldBlock`.
    pub(super) fn recv(&mut self, socket: &Sock) -> io::Result<usize> {
        let mut chunks = self.data.chunks_exact_mut(BUFFER);
        let mut slices: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        socket.state.recv((&socket.fd).into(), &mut slices, &mut self.meta)
    }

    /// Reads what a steered socket holds, up to a batch, without waiting, with each
    /// buffer's dialled address and port ([`Batch::dialled`]): the number of buffers
    /// filled, or `WouldBlock`. `quinn-udp` reads the destination address but not the
    /// port (`IP_PKTINFO`), so this is a `recvmmsg` of its own.
    pub(super) fn recv_steered(&mut self, socket: &std::net::UdpSocket) -> io::Result<usize> {
        // Room for a socket address (28 bytes for IPv6) and the GRO segment size, each with
        // its header, aligned.
        const CONTROL: usize = 128;
        let mut names: [libc::sockaddr_storage; BATCH] =
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
            unsafe { std::mem::zeroed() };
        let mut control = [[0u64; CONTROL / 8]; BATCH];
        let mut chunks = self.data.chunks_exact_mut(BUFFER);
        let mut iovecs: [libc::iovec; BATCH] = std::array::from_fn(|_| {
            let chunk = chunks.next().unwrap_or_default();
            libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: chunk.len() }
        });
        // SAFETY: mmsghdr is plain data; all zeroes is a valid value, filled in below.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, h) in headers.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = control[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CONTROL as _;
        }
        // SAFETY: every header points into live arrays of this frame, sized as said.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let h = &headers[i].msg_hdr;
            let len = headers[i].msg_len as usize;
            let (mut dialled, mut stride) = (None, len);
            // SAFETY: the kernel wrote msg_controllen bytes of well-formed messages there.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(h);
                while !cmsg.is_null() {
                    let c = &*cmsg;
                    let data = libc::CMSG_DATA(cmsg);
                    match (c.cmsg_level, c.cmsg_type) {
                        (libc::IPPROTO_IP, libc::IP_ORIGDSTADDR) => {
                            dialled = sockaddr(data.cast(), std::mem::size_of::<libc::sockaddr_in>())
                        }
                        (libc::IPPROTO_IPV6, libc::IPV6_ORIGDSTADDR) => {
                            dialled = sockaddr(data.cast(), std::mem::size_of::<libc::sockaddr_in6>())
                        }
                        (libc::SOL_UDP, libc::UDP_GRO) => {
                            let segment = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                            stride = usize::try_from(segment).unwrap_or(len);
                        }
                        _ => {}
                    }
                    cmsg = libc::CMSG_NXTHDR(h, cmsg);
                }
            }
            // SAFETY: the kernel wrote msg_namelen bytes of a socket address there.
            let source = unsafe { sockaddr(&names[i], h.msg_namelen as usize) };
            let Some(source) = source else {
                // Not an IP source: nothing to answer; read as an empty buffer, no dialled port.
                self.meta[i].len = 0;
                self.dialled[i] = None;
                continue;
            };
            let meta = &mut self.meta[i];
            meta.addr = source;
            meta.len = len;
            meta.stride = stride.max(1);
            meta.ecn = None;
            meta.dst_ip = dialled.map(|d| d.ip());
            self.dialled[i] = dialled;
        }
        Ok(n)
    }

    /// The address and port buffer `i` of the last steered read was sent to.
    pub(super) fn dialled(&self, i: usize) -> Option<SocketAddr> {
        self.dialled[i]
    }

    /// Buffer `i` of the last read: its source, its bytes, and its segment size (its length
    /// when it holds one datagram), its destination address when the kernel gave it.
    pub(super) fn get(&self, i: usize) -> (SocketAddr, &[u8], usize, Option<IpAddr>) {
        let meta = &self.meta[i];
        let data = &self.data[i * BUFFER..i * BUFFER + meta.len.min(BUFFER)];
        let stride = if meta.stride == 0 { data.len().max(1) } else { meta.stride };
        (meta.addr, data, stride, meta.dst_ip)
    }

    /// The bytes of `run`: its one buffer as read, or its buffers copied end to end.
    pub(super) fn bytes(&mut self, run: &Run) -> &[u8] {
        let part = |i: usize| {
            let len =
                if i + 1 == run.first + run.parts { run.last_len } else { self.meta[i].len.min(BUFFER) };
            i * BUFFER..i * BUFFER + len
        };
        if run.parts == 1 {
            return &self.data[part(run.first)];
        }
        let mut at = 0;
        for i in run.first..run.first + run.parts {
            let range = part(i);
            self.joined[at..at + range.len()].copy_from_slice(&self.data[range.clone()]);
            at += range.len();
        }
        &self.joined[..at]
    }
}

/// The IP socket address at `addr`, of `len` bytes (`None` for another family).
///
/// # Safety
/// `addr` must point to `len` readable bytes of a socket address.
unsafe fn sockaddr(addr: *const libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    let family = std::ptr::read_unaligned(addr.cast::<libc::sa_family_t>());
    match libc::c_int::from(family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            let a = std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>());
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let a = std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>());
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
