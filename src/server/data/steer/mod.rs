//! Steering: every public port on a handful of sockets, chosen by the kernel (issue 32).
//!
//! **What is steered.** A BPF `sk_lookup` program ([`program`]) attached to the network
//! namespace runs whenever the kernel looks for the socket of a new TCP connection (its
//! SYN: established connections are found before it runs, so open ones never see it) or of a
//! UDP datagram that no connected socket takes (a per-flow socket bound to the dialled port
//! and connected to the client is found before it, so the way of answering UDP from
//! the right port still works). It looks the packet's (protocol, family, local address,
//! local port) up in the steering table and hands the packet to the socket in the slot it
//! finds, whatever port that socket is bound to: one TCP listener takes the connections of
//! every steered port, and `getsockname()` of each accepted socket gives the port dialled;
//! one UDP socket with `IP_RECVORIGDSTADDR` / `IPV6_RECVORIGDSTADDR` reads each datagram's.
//!
//! **Map layout.** The steering table is a `BPF_MAP_TYPE_HASH` (`BPF_F_NO_PREALLOC`, so an
//! element costs memory only once inserted; [`DEFAULT_MAX_KEYS`] by default) from a 20-byte
//! key `{ u8 protocol (IPPROTO_TCP/UDP), u8 family (AF_INET/AF_INET6), u16 port (host
//! order), [u8; 16] address }` (IPv4 in the first 4 bytes, the rest zero; a v4-mapped IPv6
//! address is written as IPv4, since the kernel looks IPv4 packets up as AF_INET whichever
//! socket takes them) to an 8-byte target `{ u32 slot, u32 flags }`. The sockets are in a
//! `BPF_MAP_TYPE_SOCKMAP` of [`DEFAULT_MAX_SLOTS`] slots (u32 index; the value is a
//! descriptor going in and the socket's cookie coming out). A hash, not tubular's LPM trie:
//! we steer single ports, not prefixes, and two hash lookups cost less than a trie walk; a
//! port range is one key per port (88 B each, below).
//!
//! **Lookup order.** The exact address first, then the unspecified address of the same family
//! (`0.0.0.0` or `::`: any local address of that family), as a socket bound to a specific
//! address wins over one bound to the wildcard; there is no port wildcard. A key found with
//! its slot empty is refused (`SK_DROP`: RST, or ICMP port unreachable), never left to some
//! other socket bound there; a key not found is left to the usual lookup (`SK_PASS`), so an
//! unsteered port is refused unless a plain socket listens on it. The program runs before the
//! kernel's own listening sockets: a steered port beats a process that binds it, so whoever
//! allocates ports must not steer one that another program holds.
//!
//! **`SO_REUSEPORT`.** A socket chosen by the program that belongs to a `SO_REUSEPORT` group
//! goes through the group's selection unless `BPF_SK_LOOKUP_F_NO_REUSEPORT` is passed (the
//! issue measured 50:50 without it). Both are offered, per key, in the target's flags at no
//! cost (the value is 8 bytes either way): [`Target::slot`] (the default: the slot's socket
//! takes it, exactly) and [`Target::reuseport_group`] (the group spreads by the usual hash, for
//! a group of one listener per thread).
//!
//! **Who owns the descriptors.** [`Steering`] owns four: the link (while it is open, the
//! program stays attached), the program, and the two maps. The namespace's descriptor is
//! closed once the link is made (the link holds the namespace). Nothing is pinned in bpffs:
//! when the last descriptor of the link closes (the process exits or crashes), the program is
//! detached and every steered port is refused until a new process loads a steering again and
//! fills it (50,000 keys in 40 ms). The sockets stay the caller's: a socket map holds a
//! socket only while the socket is open, and closing its last descriptor empties its slot
//! (and so refuses its ports) even if another socket of its `SO_REUSEPORT` group still
//! listens, so the sockets in the map must outlive any one thread. The program attaches to
//! the calling *thread's* namespace (`/proc/thread-self/ns/net`).
//!
//! **What an upgrade hands over.** The old process passes the four descriptors
//! ([`Steering::fds`], in [`Fds::into_array`]'s order) and the steered sockets over
//! `SCM_RIGHTS`. The new process calls [`Steering::from_fds`], which checks each descriptor
//! (a namespace link for `sk_lookup` whose namespace still exists, the two maps with the
//! expected types and sizes, an `sk_lookup` program), loads *its own* program against the
//! inherited maps and puts it in the link with `BPF_LINK_UPDATE`: atomic, every lookup runs
//! one program or the other, and the tables keep their contents, so no port is unsteered for
//! an instant. The old process then closes its copies. If the layout of the maps changed
//! between versions, `from_fds` refuses, and the new process loads a fresh steering beside the
//! old one and fills it: two programs attached, the one attached first keeps the choice (the
//! kernel keeps a selection over a later program's verdict; this program also passes on
//! `-EEXIST`), and when the old process exits its link goes and the new one takes every port.
//!
//! **Privileges and kernels.** Loading needs `CAP_BPF` and `CAP_NET_ADMIN` together (or root,
//! `CAP_SYS_ADMIN`), and Linux 5.9 (`sk_lookup`, `BPF_LINK_CREATE` on a namespace);
//! [`Steering::load`] turns `EPERM` into a message naming the missing capabilities and the
//! systemd line that grants them, and `EINVAL`/`ENOSYS` into "needs Linux 5.9". Linux 5.9 and
//! 5.10 also charge BPF memory to `RLIMIT_MEMLOCK` (the message says so too).
//!
//! **Why hand-written instructions.** `cargo install` must need Rust alone. `libbpf-sys`
//! compiles libbpf's C (a C compiler, libelf, zlib); `aya` is pure Rust but loads ELF objects,
//! which take a BPF compiler (clang or bpf-linker) to make, or a binary checked in. The
//! program is 61 instruction slots; [`bpf`] encodes them with a label-resolving assembler of
//! a dozen functions, and the kernel's verifier checks it at each load (every test loads it).
//!
//! **Figures** (kernel 6.18, 2 shared cores), from `cargo test --lib steer::tests::figures --
//! --nocapture` (medians of 5 rounds, each on a fresh steering; debug and release builds give
//! the same, the time is the kernel's) and `cargo test --lib steer::tests::ten_thousand --
//! --nocapture --test-threads 1`:
//! - program: 61 instruction slots (58 instructions, three of them 16-byte map loads), 4,096 B
//!   of kernel memory;
//! - steering table: 88 B of kernel memory per key as the kernel counts it (`memlock` of
//!   `/proc/self/fdinfo`: 8,595,200 B with 50,000 keys against 4,195,200 B empty), plus 16 B
//!   per key of capacity for the hash buckets, allocated at creation (4 MiB for the default
//!   262,144 keys); socket map: 2,424 B;
//! - steering 50,000 keys: 38-41 ms batched (`BPF_MAP_UPDATE_BATCH`, one system call), 48-63 ms
//!   one by one; unsteering 39-43 ms batched (`BPF_MAP_DELETE_BATCH`), 50-57 ms one by one;
//! - descriptors: 20,000 steered ports (10,000 TCP, 10,000 UDP) cost 6 (4 for the steering, 2
//!   sockets), against 20,000 for a socket per port.
//!
//! **Who uses it.** [`crate::server::data::steered`] loads it in steered mode, steers TCP
//! ports to two listeners and UDP ports to one socket per forwarding thread and family, and
//! hands it over at an upgrade. Not used by the server yet (tested here): the
//! `SO_REUSEPORT` target, batched updates (ports are steered one by one as the diff starts
//! them), cookies and lookups, and counters of lookups and misses (tubular keeps them in a
//! per-CPU array).

mod bpf;
mod program;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Capacity of the steering table, in keys (protocol, address, port), unless configured.
pub const DEFAULT_MAX_KEYS: u32 = 262_144;
/// Number of socket slots, unless configured.
pub const DEFAULT_MAX_SLOTS: u32 = 256;

const KEY_SIZE: usize = 20;
const DEST_SIZE: usize = 8;

/// The transport protocol of a steered port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP: new connections go to a listening socket.
    Tcp,
    /// UDP: datagrams go to an unconnected socket.
    Udp,
}

/// What is steered: a protocol, a local address (unspecified = any address of its family) and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The protocol.
    pub proto: Proto,
    /// The local address; `0.0.0.0` and `::` match any address of their family.
    pub ip: IpAddr,
    /// The local port.
    pub port: u16,
}

impl Key {
    /// A key for `proto` on `ip:port`.
    pub fn new(proto: Proto, ip: IpAddr, port: u16) -> Key {
        Key { proto, ip, port }
    }

    /// The key as the program builds it: protocol, family, port (host order), address.
    fn bytes(&self) -> [u8; KEY_SIZE] {
        let mut b = [0u8; KEY_SIZE];
        b[0] = match self.proto {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        };
        b[2..4].copy_from_slice(&self.port.to_ne_bytes());
        // A v4-mapped IPv6 address is the IPv4 address: the kernel looks IPv4 packets up as
        // AF_INET, whatever socket (dual-stack or not) ends up taking them.
        match self.ip.to_canonical() {
            IpAddr::V4(v4) => {
                b[1] = libc::AF_INET as u8;
                b[4..8].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                b[1] = libc::AF_INET6 as u8;
                b[4..20].copy_from_slice(&v6.octets());
            }
        }
        b
    }
}

/// Where a key goes: a socket slot, and whether the slot's `SO_REUSEPORT` group picks the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The slot of the socket map.
    pub slot: u32,
    /// If the socket in the slot is in a `SO_REUSEPORT` group, let the group choose (false:
    /// the socket in the slot takes it, `BPF_SK_LOOKUP_F_NO_REUSEPORT`).
    pub reuseport: bool,
}

impl Target {
    /// The socket in `slot` takes the connection, even if it belongs to a `SO_REUSEPORT` group.
    pub fn slot(slot: u32) -> Target {
        Target { slot, reuseport: false }
    }

    /// The `SO_REUSEPORT` group of the socket in `slot` chooses among its members.
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn reuseport_group(slot: u32) -> Target {
        Target { slot, reuseport: true }
    }

    fn bytes(&self) -> [u8; DEST_SIZE] {
        let flags = if self.reuseport { 0 } else { program::F_NO_REUSEPORT };
        let mut b = [0u8; DEST_SIZE];
        b[..4].copy_from_slice(&self.slot.to_ne_bytes());
        b[4..].copy_from_slice(&flags.to_ne_bytes());
        b
    }

    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    fn from_bytes(b: &[u8; DEST_SIZE]) -> Target {
        let slot = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let flags = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        Target { slot, reuseport: flags & program::F_NO_REUSEPORT == 0 }
    }
}

/// Sizes of the maps.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Capacity of the steering table, in keys.
    pub max_keys: u32,
    /// Number of socket slots.
    pub max_slots: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_keys: DEFAULT_MAX_KEYS, max_slots: DEFAULT_MAX_SLOTS }
    }
}

/// The descriptors that make a steering, in the order [`Fds::into_array`] gives them.
#[derive(Debug)]
pub struct Fds<T> {
    /// The link: while it is open, the program is attached to the namespace.
    pub link: T,
    /// The program.
    pub program: T,
    /// The steering table (hash map: key -> target).
    pub bindings: T,
    /// The socket map (slot -> socket).
    pub sockets: T,
}

impl<T> Fds<T> {
    /// Link, program, bindings, sockets: the order to pass them to a new process in.
    pub fn into_array(self) -> [T; 4] {
        [self.link, self.program, self.bindings, self.sockets]
    }

    /// Rebuilds from [`Fds::into_array`]'s order.
    pub fn from_array([link, program, bindings, sockets]: [T; 4]) -> Fds<T> {
        Fds { link, program, bindings, sockets }
    }
}

/// The steering program attached to this thread's network namespace, with its maps.
#[derive(Debug)]
pub struct Steering {
    fds: Fds<OwnedFd>,
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    batch: bool,
}

impl Steering {
    /// Creates the maps, loads the program and attaches it to the calling thread's network namespace.
    pub fn load() -> io::Result<Steering> {
        Steering::load_with(Config::default())
    }

    /// [`Steering::load`] with the given map sizes.
    pub fn load_with(config: Config) -> io::Result<Steering> {
        let (bindings, sockets) = create_maps(config).map_err(|e| explain("create the maps", e))?;
        let program = load_program(bindings.as_fd(), sockets.as_fd())?;
        let netns = current_netns()?;
        let link = bpf::link_create(program.as_fd(), netns.as_fd(), bpf::ATTACH_SK_LOOKUP)
            .map_err(|e| explain("attach the program to the network namespace", e))?;
        Ok(Steering { fds: Fds { link, program, bindings, sockets }, batch: true })
    }

    /// Takes over a steering handed over by another process ([`Steering::into_fds`]): checks each
    /// descriptor, then puts this binary's program in the link in place of the old one, atomically.
    pub fn from_fds(fds: Fds<OwnedFd>) -> io::Result<Steering> {
        let bad = |what: String| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("handed-over steering: {what}"))
        };
        let link = bpf::link_info(fds.link.as_fd()).map_err(|e| bad(format!("link: {e}")))?;
        if link.link_type != bpf::LINK_TYPE_NETNS || link.attach_type != bpf::ATTACH_SK_LOOKUP {
            return Err(bad(format!("not a socket lookup link ({link:?})")));
        }
        if link.netns_ino == 0 {
            return Err(bad("the link's network namespace is gone".into()));
        }
        let expect = |fd: BorrowedFd<'_>, name: &str, map_type: u32, key: usize, value: usize| {
            let info = bpf::map_info(fd).map_err(|e| bad(format!("{name}: {e}")))?;
            if info.map_type != map_type || info.key_size as usize != key || info.value_size as usize != value
            {
                return Err(bad(format!("{name} is not the expected map ({info:?})")));
            }
            Ok(info)
        };
        expect(fds.bindings.as_fd(), "bindings", bpf::MAP_TYPE_HASH, KEY_SIZE, DEST_SIZE)?;
        expect(fds.sockets.as_fd(), "sockets", bpf::MAP_TYPE_SOCKMAP, 4, 8)?;
        let (prog, _) = bpf::prog_info(fds.program.as_fd()).map_err(|e| bad(format!("program: {e}")))?;
        if prog.prog_type != bpf::PROG_TYPE_SK_LOOKUP {
            return Err(bad(format!("program of type {}", prog.prog_type)));
        }
        let program = load_program(fds.bindings.as_fd(), fds.sockets.as_fd())?;
        bpf::link_update(fds.link.as_fd(), program.as_fd())
            .map_err(|e| explain("replace the program of the handed-over link", e))?;
        Ok(Steering { fds: Fds { program, ..fds }, batch: true })
    }

    /// The descriptors, to hand over to a new process (which calls [`Steering::from_fds`]).
    pub fn fds(&self) -> Fds<BorrowedFd<'_>> {
        Fds {
            link: self.fds.link.as_fd(),
            program: self.fds.program.as_fd(),
            bindings: self.fds.bindings.as_fd(),
            sockets: self.fds.sockets.as_fd(),
        }
    }

    /// The raw descriptors, in [`Fds::into_array`]'s order.
    pub fn raw_fds(&self) -> [RawFd; 4] {
        self.fds().into_array().map(|fd| fd.as_raw_fd())
    }

    /// Gives up the descriptors; closing all of them detaches the program.
    #[allow(dead_code)] // API for hand-overs and figures, not called yet
    pub fn into_fds(self) -> Fds<OwnedFd> {
        self.fds
    }

    /// Puts a socket in a slot: a TCP listener, or a bound unconnected UDP socket.
    pub fn insert_socket(&self, slot: u32, socket: BorrowedFd<'_>) -> io::Result<()> {
        let fd = socket.as_raw_fd() as u64;
        bpf::map_update(self.fds.sockets.as_fd(), &slot.to_ne_bytes(), &fd.to_ne_bytes())
            .map_err(|e| context(e, format!("socket map: put the socket in slot {slot}")))
    }

    /// Empties a slot: the keys steered to it are refused. `Ok(false)` if it was empty.
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn remove_socket(&self, slot: u32) -> io::Result<bool> {
        bpf::map_delete(self.fds.sockets.as_fd(), &slot.to_ne_bytes())
            .map_err(|e| context(e, format!("socket map: empty slot {slot}")))
    }

    /// The cookie (`SO_COOKIE`) of the socket in a slot, `None` if it is empty.
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn socket_cookie(&self, slot: u32) -> io::Result<Option<u64>> {
        let mut v = [0u8; 8];
        let found = bpf::map_lookup(self.fds.sockets.as_fd(), &slot.to_ne_bytes(), &mut v)?;
        Ok(found.then(|| u64::from_ne_bytes(v)))
    }

    /// Steers a key to a target: from when it returns, every new connection or datagram goes there.
    pub fn steer(&self, key: Key, to: Target) -> io::Result<()> {
        bpf::map_update(self.fds.bindings.as_fd(), &key.bytes(), &to.bytes())
            .map_err(|e| context(e, format!("steering table: steer {key:?}")))
    }

    /// Stops steering a key: from when it returns, new connections are refused (unless a
    /// wildcard key or a plain socket takes them). `Ok(false)` if it was not steered.
    pub fn unsteer(&self, key: Key) -> io::Result<bool> {
        bpf::map_delete(self.fds.bindings.as_fd(), &key.bytes())
            .map_err(|e| context(e, format!("steering table: unsteer {key:?}")))
    }

    /// Where a key is steered, if it is (the exact key only: no wildcard).
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn target(&self, key: Key) -> io::Result<Option<Target>> {
        let mut v = [0u8; DEST_SIZE];
        let found = bpf::map_lookup(self.fds.bindings.as_fd(), &key.bytes(), &mut v)?;
        Ok(found.then(|| Target::from_bytes(&v)))
    }

    /// Steers many keys: one system call per batch where the kernel can, else one per key.
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn steer_many(&self, entries: &[(Key, Target)]) -> io::Result<()> {
        if !self.batch {
            return entries.iter().try_for_each(|&(k, t)| self.steer(k, t));
        }
        let mut keys = Vec::with_capacity(entries.len() * KEY_SIZE);
        let mut values = Vec::with_capacity(entries.len() * DEST_SIZE);
        for (k, t) in entries {
            keys.extend_from_slice(&k.bytes());
            values.extend_from_slice(&t.bytes());
        }
        let mut done = 0usize;
        while done < entries.len() {
            let count = (entries.len() - done).min(u32::MAX as usize) as u32;
            let k = &keys[done * KEY_SIZE..];
            let v = &values[done * DEST_SIZE..];
            match bpf::map_update_batch(self.fds.bindings.as_fd(), k, v, count) {
                Ok(()) => done += count as usize,
                Err((e, n)) if n == 0 && done == 0 && unsupported(&e) => {
                    return entries.iter().try_for_each(|&(k, t)| self.steer(k, t));
                }
                Err((e, n)) => {
                    let at = done + n as usize;
                    return Err(context(
                        e,
                        format!(
                            "steering table: steer {:?} ({at} of {} done)",
                            entries.get(at),
                            entries.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Unsteers many keys (those not steered are skipped): one system call per batch where the kernel can.
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn unsteer_many(&self, keys: &[Key]) -> io::Result<()> {
        if !self.batch {
            return keys.iter().try_for_each(|&k| self.unsteer(k).map(drop));
        }
        let mut bytes = Vec::with_capacity(keys.len() * KEY_SIZE);
        for k in keys {
            bytes.extend_from_slice(&k.bytes());
        }
        let mut done = 0usize;
        while done < keys.len() {
            let count = (keys.len() - done).min(u32::MAX as usize) as u32;
            match bpf::map_delete_batch(self.fds.bindings.as_fd(), &bytes[done * KEY_SIZE..], count) {
                Ok(()) => done += count as usize,
                // The batch stops at a key that is not there: skip it, go on with the rest.
                Err((e, n)) if e.raw_os_error() == Some(libc::ENOENT) => done += n as usize + 1,
                Err((e, n)) if n == 0 && done == 0 && unsupported(&e) => {
                    return keys.iter().try_for_each(|&k| self.unsteer(k).map(drop));
                }
                Err((e, n)) => {
                    let at = done + n as usize;
                    return Err(context(e, format!("steering table: unsteer {:?}", keys.get(at))));
                }
            }
        }
        Ok(())
    }

    /// Kernel memory charged to the program and its maps, in bytes (`memlock` of `/proc/self/fdinfo`).
    #[allow(dead_code)] // API for hand-overs and figures, not called yet
    pub fn kernel_memory(&self) -> io::Result<u64> {
        let fds = [&self.fds.program, &self.fds.bindings, &self.fds.sockets];
        fds.iter().map(|fd| memlock(fd.as_fd())).sum()
    }

    /// Number of instruction slots of the program this binary loads.
    #[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
    pub fn program_len() -> usize {
        program::instructions(-1, -1).len()
    }

    #[cfg(test)]
    fn without_batches(mut self) -> Steering {
        self.batch = false;
        self
    }
}

fn create_maps(config: Config) -> io::Result<(OwnedFd, OwnedFd)> {
    let bindings = bpf::map_create(
        bpf::MAP_TYPE_HASH,
        KEY_SIZE as u32,
        DEST_SIZE as u32,
        config.max_keys,
        bpf::F_NO_PREALLOC,
        "redirs_steer",
    )?;
    // Value size 8: userspace reads a slot back as the socket's cookie.
    let sockets = bpf::map_create(bpf::MAP_TYPE_SOCKMAP, 4, 8, config.max_slots, 0, "redirs_socks")?;
    Ok((bindings, sockets))
}

fn load_program(bindings: BorrowedFd<'_>, sockets: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let insns = program::instructions(bindings.as_raw_fd(), sockets.as_raw_fd());
    bpf::prog_load(bpf::PROG_TYPE_SK_LOOKUP, bpf::ATTACH_SK_LOOKUP, &insns, "redirs_steer")
        .map_err(|e| explain("load the program", e))
}

/// The calling thread's network namespace (`/proc/self` would be the main thread's).
fn current_netns() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
        // SAFETY: gettid has no preconditions.
        .or_else(|_| File::open(format!("/proc/self/task/{}/ns/net", unsafe { libc::gettid() })))
        .map_err(|e| context(e, "open /proc/thread-self/ns/net".into()))
}

#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | bpf::ENOTSUPP))
}

/// Says what failed; keeps the error's kind (the errno itself is in the text).
fn context(e: io::Error, what: String) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::E2BIG) => " (full: more keys or slots than the maps were made for)",
        Some(libc::EOPNOTSUPP) => " (a socket map takes TCP listeners and bound UDP sockets)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

/// Turns a failure to set steering up into a message that says what to grant or upgrade.
fn explain(step: &str, e: io::Error) -> io::Error {
    let advice = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            let missing = missing_capabilities();
            format!(
                "steering needs CAP_BPF and CAP_NET_ADMIN together, or root{}: grant them \
                 (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN); on Linux 5.9-5.10 also \
                 raise the locked-memory limit (LimitMEMLOCK=infinity)",
                if missing.is_empty() { String::new() } else { format!(" (missing: {missing})") }
            )
        }
        Some(libc::EINVAL | libc::ENOSYS | libc::E2BIG | libc::EOPNOTSUPP | bpf::ENOTSUPP) => {
            "the kernel lacks BPF socket lookup (sk_lookup): it needs Linux 5.9 or later, built \
             with CONFIG_BPF_SYSCALL"
                .to_string()
        }
        _ => String::new(),
    };
    let msg = if advice.is_empty() {
        format!("cannot {step}: {e}")
    } else {
        format!("cannot {step}: {e}; {advice}")
    };
    io::Error::new(e.kind(), msg)
}

/// The capabilities steering needs that the thread lacks, named (empty when it has them).
fn missing_capabilities() -> String {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return String::new();
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
    else {
        return String::new();
    };
    let has = |cap: u32| eff & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing.join(", ")
}

/// The `memlock:` line of a descriptor's fdinfo.
#[cfg_attr(not(test), allow(dead_code))] // tested; the server does not use it yet
fn memlock(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock in fdinfo"))
}
