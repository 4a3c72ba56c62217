//! Network namespaces for the partition tests (`tests/partition.rs`): a small network of
//! its own per test, where a partition is a link taken down, as between machines.
//!
//! A [`Lab`] makes a *hub* namespace holding Linux bridges (the network's switches), and one
//! namespace per *host* (an etcd member, a node), each joined to one or more bridges by a
//! veth pair whose far end (the *port*) sits in the hub. [`Lab::cut`] takes a port down in
//! the hub: the host's own interface stays up and routed, so what it sends over it is lost
//! without an error, as when a cable or a switch between two machines fails (a black hole,
//! not a refusal); [`Lab::heal`] brings it back. Two bridges may be joined by a trunk (a
//! veth pair inside the hub), which [`Lab::cut`] takes down the same way: the hosts on each
//! side still reach each other, not those across.
//!
//! The test's own thread joins the hub ([`Lab::enter_hub`]), where the bridges have
//! addresses, so that it reaches every host as a client would; the processes it starts go
//! to their host's namespace with [`Lab::enter`] (a `pre_exec` `setns`), so their pid is
//! the test's child's own (signals, `/proc/PID`).
//!
//! Everything is made with `ip` (iproute2) as root, in the namespaces the lab made: nothing
//! touches the machine's own. Names are `trpPID-SEQ-…`, unique per test; dropping the lab
//! (even on a panic) kills what still runs in its namespaces, deletes them (their veths
//! and bridges go with them) and puts the test's thread back where it was. Namespaces left by
//! a test process that died without dropping its lab (SIGKILL) are deleted by the next lab
//! made, once their process is gone. A namespace that cannot be made fails the test and
//! says why: these tests never skip.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where `ip netns add` puts the namespaces it names.
const NETNS_DIR: &str = "/run/netns";

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip ARGS`; its error output when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e} (install iproute2)", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program ARGS` inside namespace `ns` (`ip netns exec`); its stdout, or its error.
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip netns exec {ns} {program}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` in {ns} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One host: its namespace's name and its links (bridge, port in the hub).
struct Host {
    name: String,
    ns: String,
    links: Vec<(String, String)>,
}

/// A test's network: the hub, its bridges and trunks, the hosts. See the module's text.
pub struct Lab {
    prefix: String,
    hub: String,
    hosts: Vec<Host>,
    /// Trunks: (name, bridge a, bridge b), the name being the port on bridge a.
    trunks: Vec<String>,
    /// Every namespace made, the hub first.
    made: Vec<String>,
    /// The test thread's namespace before [`Lab::enter_hub`].
    home: Option<File>,
    next_port: usize,
}

impl Lab {
    /// Makes the hub namespace of a new lab; panics (the test fails) with why when it cannot.
    pub fn new(test: &str) -> Lab {
        if unsafe { libc::geteuid() } != 0 {
            panic!("{test} makes network namespaces, veth pairs and bridges: run it as root, as scripts/test and CI do");
        }
        reap_stale_labs();
        let prefix = format!("trp{}-{}", std::process::id(), NEXT_LAB.fetch_add(1, Ordering::SeqCst));
        let hub = format!("{prefix}-hub");
        let mut lab = Lab {
            prefix,
            hub: hub.clone(),
            hosts: Vec::new(),
            trunks: Vec::new(),
            made: Vec::new(),
            home: None,
            next_port: 0,
        };
        lab.must(test, ip(&["netns", "add", &hub]));
        lab.made.push(hub.clone());
        lab.must(test, ip(&["-n", &hub, "link", "set", "lo", "up"]));
        lab
    }

    fn must(&self, what: &str, result: Result<(), String>) {
        if let Err(e) = result {
            panic!("{what}: cannot make the test's network namespaces ({e}): the partition tests need root, iproute2 and a kernel with network namespaces, veth and bridges");
        }
    }

    /// The hub's namespace name.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// A bridge `name` in the hub, with the hub's address `cidr` on it (`None`: none).
    pub fn bridge(&mut self, name: &str, cidr: Option<&str>) {
        let hub = self.hub.clone();
        self.must("bridge", ip(&["-n", &hub, "link", "add", name, "type", "bridge"]));
        if let Some(cidr) = cidr {
            self.must("bridge address", ip(&["-n", &hub, "addr", "add", cidr, "dev", name]));
        }
        self.must("bridge up", ip(&["-n", &hub, "link", "set", name, "up"]));
    }

    /// Joins bridges `a` and `b` by a veth pair in the hub; its name, for [`Lab::cut`].
    pub fn trunk(&mut self, a: &str, b: &str) -> String {
        let hub = self.hub.clone();
        let (end_a, end_b) = (format!("tr{}a", self.trunks.len()), format!("tr{}b", self.trunks.len()));
        self.must("trunk", ip(&["-n", &hub, "link", "add", &end_a, "type", "veth", "peer", "name", &end_b]));
        self.must("trunk a", ip(&["-n", &hub, "link", "set", &end_a, "master", a, "up"]));
        self.must("trunk b", ip(&["-n", &hub, "link", "set", &end_b, "master", b, "up"]));
        self.trunks.push(end_a.clone());
        end_a
    }

    /// A host `name` in a namespace of its own, with loopback up and, for each
    /// `(bridge, interface, cidr)`, an interface of that name and address joined to the
    /// bridge. Its namespace's name.
    pub fn host(&mut self, name: &str, links: &[(&str, &str, &str)]) -> String {
        let ns = format!("{}-{name}", self.prefix);
        self.must("host namespace", ip(&["netns", "add", &ns]));
        self.made.push(ns.clone());
        self.must("host loopback", ip(&["-n", &ns, "link", "set", "lo", "up"]));
        let hub = self.hub.clone();
        let mut host = Host { name: name.to_owned(), ns: ns.clone(), links: Vec::new() };
        for &(bridge, dev, cidr) in links {
            let port = format!("p{}", self.next_port);
            self.next_port += 1;
            self.must(
                "veth",
                ip(&["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", dev, "netns", &ns]),
            );
            self.must("port", ip(&["-n", &hub, "link", "set", &port, "master", bridge, "up"]));
            self.must("address", ip(&["-n", &ns, "addr", "add", cidr, "dev", dev]));
            self.must("interface up", ip(&["-n", &ns, "link", "set", dev, "up"]));
            host.links.push((bridge.to_owned(), port));
        }
        self.hosts.push(host);
        ns
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> &str {
        &self.host_named(name).ns
    }

    fn host_named(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// The hub port of host `name`'s link to `bridge`.
    pub fn port(&self, name: &str, bridge: &str) -> String {
        let host = self.host_named(name);
        host.links
            .iter()
            .find(|(b, _)| b == bridge)
            .map(|(_, port)| port.clone())
            .unwrap_or_else(|| panic!("host {name} has no link to {bridge}"))
    }

    /// Takes `port` (a host's port, [`Lab::port`], or a trunk) down in the hub: a partition.
    pub fn cut(&self, port: &str) {
        if let Err(e) = ip(&["-n", &self.hub, "link", "set", port, "down"]) {
            panic!("cannot take {port} down in {}: {e}", self.hub);
        }
    }

    /// Brings `port` back up in the hub: the partition heals.
    pub fn heal(&self, port: &str) {
        if let Err(e) = ip(&["-n", &self.hub, "link", "set", port, "up"]) {
            panic!("cannot bring {port} up in {}: {e}", self.hub);
        }
    }

    /// Runs `tc ARGS` in the hub (`tc qdisc add dev PORT root netem …` on a port); its error,
    /// e.g. a kernel without netem.
    pub fn tc(&self, args: &[&str]) -> Result<String, String> {
        run_in(&self.hub, "tc", args)
    }

    /// Moves the calling thread into the hub's namespace (the threads and processes it
    /// starts from then on go along); the lab's drop brings it back.
    pub fn enter_hub(&mut self) {
        if self.home.is_none() {
            self.home =
                Some(File::open("/proc/thread-self/ns/net").expect("open this thread's network namespace"));
        }
        let hub = File::open(self.path(&self.hub)).expect("open the hub's namespace");
        setns(hub.as_raw_fd()).unwrap_or_else(|e| panic!("setns into {}: {e}", self.hub));
    }

    fn path(&self, ns: &str) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(ns)
    }

    /// `/run/netns/NS` of host `name`, for `ServerBuilder::netns`.
    pub fn ns_path(&self, name: &str) -> PathBuf {
        self.path(self.ns(name))
    }

    /// A handle on host `name`'s namespace, for [`enter_in_child`] (kept open until the
    /// process is spawned).
    pub fn ns_file(&self, name: &str) -> File {
        let path = self.path(self.ns(name));
        File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    /// Arranges for `cmd`'s process to start in host `name`'s namespace; the returned file
    /// must outlive the spawn.
    pub fn enter(&self, name: &str, cmd: &mut Command) -> File {
        let file = self.ns_file(name);
        enter_in_child(cmd, file.as_raw_fd());
        file
    }

    /// The pids of the processes in host `name`'s namespace (`ip netns pids`).
    pub fn pids(&self, name: &str) -> Vec<u32> {
        pids_in(self.ns(name))
    }
}

/// `setns(fd, CLONE_NEWNET)` on the calling thread.
fn setns(fd: RawFd) -> Result<(), std::io::Error> {
    // SAFETY: setns on a namespace descriptor we hold; it changes this thread only.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Arranges for `cmd`'s child to join the network namespace open at `fd` before it execs.
pub fn enter_in_child(cmd: &mut Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure calls only setns (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

fn pids_in(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
        })
        .unwrap_or_default()
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            if let Err(e) = setns(home.as_raw_fd()) {
                eprintln!("[netns] cannot put the test's thread back in its namespace: {e}");
            }
        }
        let mut left = Vec::new();
        for ns in self.made.iter().rev() {
            // Only processes this test started live there (nodes, etcd members, and what
            // an upgrade started from them).
            for pid in pids_in(ns) {
                // SAFETY: kill only sends a signal.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                left.push(e);
            }
        }
        if !left.is_empty() {
            eprintln!("[netns] could not delete: {}", left.join("; "));
        }
    }
}

/// Deletes the namespaces of labs whose test process is gone (killed before its drop ran).
fn reap_stale_labs() {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("trp")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for pid in pids_in(&name) {
            // SAFETY: kill only sends a signal; these are leftovers of an earlier run of
            // these tests, in a namespace such a run made.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = ip(&["netns", "del", &name]);
    }
}

/// The TCP ports in LISTEN state in process `pid`'s network namespace, on `ip` (IPv4),
/// within `range` (`/proc/PID/net/tcp`).
pub fn listening_in(
    pid: u32,
    ip: std::net::Ipv4Addr,
    range: std::ops::RangeInclusive<u16>,
) -> std::collections::BTreeSet<u16> {
    let wanted = format!("{:08X}", u32::from_le_bytes(ip.octets()));
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            (state == "0A" && addr == wanted && range.contains(&port)).then_some(port)
        })
        .collect()
}
