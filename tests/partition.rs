//! Issue 31 with the partitions made for real: every etcd member and every node in a network
//! namespace of its own, joined by veth pairs and bridges (`tests/common/netns.rs`), a
//! partition being a link taken down in the namespaces the test made (never the machine's).
//!
//! - [`a_node_whose_link_to_etcd_goes_down_keeps_forwarding_and_mixes_no_tenants`]: one etcd,
//!   three nodes; each node has a front link (its clients, the test) and a back link (etcd);
//!   n1's back link goes down: it keeps forwarding, its writes answer 503 within 5 s, the
//!   others take writes and list it down, no port leads to another tenant, and after the
//!   heal it converges within 10 s; then rounds of churn with the link cut at random
//!   moments (one of them over a lossy, delayed link where the kernel has netem).
//! - [`an_etcd_member_cut_off_with_a_node_behind_it_stalls_that_node_only`]: three etcd
//!   members; member e0 and node n1 on one segment, the others on a second, joined by a
//!   trunk that goes down: a minority with a node behind it.
//! - [`a_node_cut_off_during_an_upgrade_hands_over_or_fails_cleanly`]: SIGUSR2 on a node cut
//!   off from etcd.
//! - [`a_fleet_under_partitions_every_30_s_soaks_back_to_its_baseline`] (ignored, run by
//!   `scripts/test`): churn and traffic with partitions and heals every 30 s, for
//!   `PARTITION_SOAK_SECS` (90 s unless told; 600 by hand), then every node's memory and
//!   descriptors against their baseline.
//!
//! Each test makes its own namespaces (root: `scripts/test` and CI run as root) and deletes
//! them when it ends, even on a failure; one that cannot make them fails and says why.
//! Like the other fleet suites, it needs the `etcd` feature (`--all-features`).

#![cfg(feature = "etcd")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::{drain_tagged, etcd_command, http10, ETCD_BIN, ETCD_READY_TIMEOUT};
use common::netns::{listening_in, Lab};
use common::*;
use rand::Rng;
use serde_json::{json, Value};

/// `serve --node-ttl`, in seconds.
const NODE_TTL_SECS: u64 = 2;
/// How long a change on one node may take to show on the others.
const PROPAGATION: Duration = Duration::from_secs(2);
/// The promised bound of a write on a cut-off node.
const WRITE_BOUND: Duration = Duration::from_secs(5);
/// The promised bound of a node's convergence after the heal.
const CONVERGE_BOUND: Duration = Duration::from_secs(10);
/// The public ports of the built-in namespaces.
const PUBLIC_PORTS: std::ops::RangeInclusive<u16> = 5001..=32767;

/// The front network (clients, the test, the applications: the hub is .1) and the back
/// network (nodes and etcd: the hub is .1 on the majority's segment).
const FRONT: [u8; 3] = [10, 31, 0];
const BACK: [u8; 3] = [10, 31, 1];

fn front_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(FRONT[0], FRONT[1], FRONT[2], 11 + i as u8)
}

fn back_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(BACK[0], BACK[1], BACK[2], 11 + i as u8)
}

fn member_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(BACK[0], BACK[1], BACK[2], 21 + k as u8)
}

fn hub_front() -> Ipv4Addr {
    Ipv4Addr::new(FRONT[0], FRONT[1], FRONT[2], 1)
}

// ---------------------------------------------------------------------------------------
// etcd members in namespaces
// ---------------------------------------------------------------------------------------

/// One etcd member: its namespace's host name, address, data dir and process.
struct Member {
    ip: Ipv4Addr,
    /// Held so that it outlives the member.
    _data: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

/// etcd members, each in its host's namespace, on port 2379 (clients) and 2380 (peers) of
/// its own address; killed when dropped.
struct Members {
    members: Vec<Member>,
    log: Arc<Mutex<String>>,
}

impl Members {
    fn start(lab: &Lab, hosts: &[(&str, Ipv4Addr)]) -> Members {
        assert!(std::path::Path::new(ETCD_BIN).exists(), "etcd not found: apt-get install etcd-server");
        let initial: Vec<String> =
            hosts.iter().map(|(name, ip)| format!("{name}=http://{ip}:2380")).collect();
        let initial = initial.join(",");
        let token = format!("partition-{}-{}", std::process::id(), rand::random::<u32>());
        let log = Arc::new(Mutex::new(String::new()));
        let mut members = Vec::new();
        for &(name, ip) in hosts {
            let data = tempfile::tempdir().expect("etcd data dir");
            let (client, peer) = (format!("http://{ip}:2379"), format!("http://{ip}:2380"));
            let mut cmd = etcd_command(name, &data.path().join("etcd"));
            cmd.args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token]);
            let ns = lab.enter(name, &mut cmd);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn etcd {name}: {e}"));
            drop(ns);
            let tag = format!("[{name}] ");
            drain_tagged(child.stdout.take().unwrap(), Arc::clone(&log), tag.clone());
            drain_tagged(child.stderr.take().unwrap(), Arc::clone(&log), tag);
            members.push(Member { ip, _data: data, child: Mutex::new(Some(child)) });
        }
        let members = Members { members, log };
        let healthy = poll(ETCD_READY_TIMEOUT, || {
            for member in &members.members {
                members.health(member.ip)?;
            }
            Ok(())
        });
        if let Err(e) = healthy {
            panic!("the etcd members were not healthy within {ETCD_READY_TIMEOUT:?}: {e}\n{}", members.log());
        }
        members
    }

    fn health(&self, ip: Ipv4Addr) -> Result<(), String> {
        match http10(SocketAddr::from((ip, 2379)), "GET", "/health", None, Duration::from_secs(2)) {
            Ok((200, body)) if body.contains(r#""health":"true""#) => Ok(()),
            Ok((status, body)) => Err(format!("{ip}: {status} {body}")),
            Err(e) => Err(format!("{ip}: {e}")),
        }
    }

    /// `etcd://IP:2379,…`, every member.
    fn url(&self) -> String {
        let endpoints: Vec<String> = self.members.iter().map(|m| format!("{}:2379", m.ip)).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The keys under `tcp-redirs/{kind}/`, read from member `k` (etcd's JSON gateway).
    fn keys(&self, k: usize, kind: &str) -> Result<Vec<String>, String> {
        let prefix = format!("tcp-redirs/{kind}/");
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().unwrap() += 1;
        let body = json!({"key": common::etcd::base64(prefix.as_bytes()), "range_end": common::etcd::base64(&end), "keys_only": true});
        let (status, text) = http10(
            SocketAddr::from((self.members[k].ip, 2379)),
            "POST",
            "/v3/kv/range",
            Some(&body.to_string()),
            Duration::from_secs(5),
        )?;
        let answer: Value = serde_json::from_str(&text).map_err(|e| format!("{status}: {e}: {text}"))?;
        Ok(answer["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .filter_map(|kv| kv["key"].as_str().and_then(common::etcd::unbase64))
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for member in &self.members {
            if let Some(mut child) = member.child.lock().unwrap().take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fleet
// ---------------------------------------------------------------------------------------

struct Node {
    name: String,
    front: Ipv4Addr,
    server: Option<Server>,
}

/// Where each host sits: the segment (bridge) of each member's and node's back link.
struct Layout<'a> {
    /// (member name, back bridge).
    members: &'a [(&'a str, &'a str)],
    /// (node name, back bridge); node i gets front_ip(i) and back_ip(i).
    nodes: &'a [(&'a str, &'a str)],
    /// Whether a second back segment `ba`, trunked to `bb`, is made.
    two_segments: bool,
    /// Extra `serve` arguments (e.g. an installed copy of the binary is given apart).
    binary: Option<PathBuf>,
}

/// A fleet on its own network: dropped nodes first, then etcd, then the network.
struct NsFleet {
    nodes: Vec<Node>,
    etcd: Members,
    trunk: Option<String>,
    token: String,
    org: String,
    problems: Mutex<Vec<String>>,
    lab: Lab,
}

impl NsFleet {
    fn start(test: &str, layout: Layout) -> NsFleet {
        let mut lab = Lab::new(test);
        lab.bridge("bf", Some(&format!("{}/24", hub_front())));
        lab.bridge("bb", Some(&format!("{}.{}.{}.1/24", BACK[0], BACK[1], BACK[2])));
        let trunk = layout.two_segments.then(|| {
            lab.bridge("ba", None);
            lab.trunk("ba", "bb")
        });
        for (k, &(name, bridge)) in layout.members.iter().enumerate() {
            lab.host(name, &[(bridge, "back", &format!("{}/24", member_ip(k)))]);
        }
        for (i, &(name, bridge)) in layout.nodes.iter().enumerate() {
            lab.host(
                name,
                &[
                    ("bf", "front", &format!("{}/24", front_ip(i))),
                    (bridge, "back", &format!("{}/24", back_ip(i))),
                ],
            );
        }
        lab.enter_hub();
        let hosts: Vec<(&str, Ipv4Addr)> =
            layout.members.iter().enumerate().map(|(k, &(name, _))| (name, member_ip(k))).collect();
        let etcd = Members::start(&lab, &hosts);
        let token = random_token();
        let url = etcd.url();
        let ttl = NODE_TTL_SECS.to_string();
        let builders: Vec<(String, Ipv4Addr, ServerBuilder)> = layout
            .nodes
            .iter()
            .enumerate()
            .map(|(i, &(name, _))| {
                let mut builder = Server::builder()
                    .ip(&front_ip(i).to_string())
                    .token(&token)
                    .netns(&lab.ns_path(name))
                    .args(&["--store", &url, "--node", name, "--node-ttl", &ttl]);
                if let Some(binary) = &layout.binary {
                    builder = builder.binary(binary);
                }
                (name.to_owned(), front_ip(i), builder)
            })
            .collect();
        let servers: Vec<Server> = thread::scope(|scope| {
            let starting: Vec<_> =
                builders.iter().map(|(_, _, b)| scope.spawn(|| b.clone().start())).collect();
            starting.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        let nodes = builders
            .into_iter()
            .zip(servers)
            .map(|((name, front, _), server)| Node { name, front, server: Some(server) })
            .collect();
        let mut fleet =
            NsFleet { nodes, etcd, trunk, token, org: String::new(), problems: Mutex::default(), lab };
        let orgs = fleet.api(&fleet.nodes[0].name.clone(), "GET", "/v2/organisations", None).json();
        fleet.org = orgs[0]["id"].as_str().unwrap_or_else(|| panic!("no organisation: {orgs}")).to_owned();
        fleet
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn server(&self, name: &str) -> &Server {
        self.node(name).server.as_ref().unwrap_or_else(|| panic!("node {name} is not running"))
    }

    fn ip(&self, name: &str) -> IpAddr {
        IpAddr::V4(self.node(name).front)
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Cuts node `name`'s back link (to etcd): its clients still reach it.
    fn cut_node(&self, name: &str) {
        self.lab.cut(&self.lab.port(name, &self.back_bridge(name)));
    }

    fn heal_node(&self, name: &str) {
        self.lab.heal(&self.lab.port(name, &self.back_bridge(name)));
    }

    fn back_bridge(&self, name: &str) -> String {
        // A node's second link is its back one (see `start`).
        if self.trunk.is_some() && name == "n1" {
            "ba".to_owned()
        } else {
            "bb".to_owned()
        }
    }

    /// The ports node `name` listens on (its namespace's LISTEN sockets on its front IP).
    fn listening(&self, name: &str) -> BTreeSet<u16> {
        match self.lab.pids(name).first() {
            Some(&pid) => listening_in(pid, self.node(name).front, PUBLIC_PORTS),
            None => BTreeSet::new(),
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            if let Some(server) = &node.server {
                let log = server.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                out.push_str(&format!(
                    "--- node {} log, last {} lines ---\n{}\n",
                    node.name,
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        let etcd = self.etcd.log();
        let lines: Vec<&str> = etcd.lines().collect();
        out.push_str(&format!(
            "--- etcd, last lines ---\n{}\n",
            lines[lines.len().saturating_sub(30)..].join("\n")
        ));
        out
    }

    fn problem(&self, problem: String) {
        eprintln!("[partition] PROBLEM: {problem}");
        self.problems.lock().unwrap().push(problem);
    }

    fn fail(&self, message: &str) -> ! {
        let problems = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        panic!("{message}\n--- problems recorded before ---\n{}\n{}", problems.join("\n"), self.logs())
    }

    fn finish(&self) {
        let problems = self.problems.lock().unwrap().clone();
        if !problems.is_empty() {
            panic!("{} problem(s):\n{}\n{}", problems.len(), problems.join("\n"), self.logs());
        }
    }

    fn must<T>(&self, limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        match poll(limit, probe) {
            Ok((value, took)) => {
                eprintln!("[partition] {what}: after {took:?}");
                value
            }
            Err(e) => self.fail(&format!("{what} (bound {limit:?}): {e}")),
        }
    }

    fn call(&self, name: &str, method: &str, path: &str, body: Option<&str>) -> Result<HttpResponse, String> {
        let server = self.server(name);
        try_http(server.addr, method, path, Some(&format!("Bearer {}", self.token)), body, IO_TIMEOUT)
            .map_err(|e| format!("node {name}: {e}"))
    }

    fn api(&self, name: &str, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.call(name, method, path, body).unwrap_or_else(|e| self.fail(&e))
    }

    fn apps_path(&self) -> String {
        format!("/v2/organisations/{}/applications", self.org)
    }

    fn redirs_path(&self, app: &str) -> String {
        format!("/v2/organisations/{}/applications/{app}/tcpRedirs", self.org)
    }

    /// Creates an application with one instance on node `name`, and waits until every
    /// running node knows it; its id.
    fn create_app_everywhere(&self, name: &str, app: &str, instance: SocketAddr) -> String {
        let body = json!({"name": app, "instances": [{"address": instance.to_string()}]}).to_string();
        let created = self.api(name, "POST", &self.apps_path(), Some(&body));
        if !matches!(created.status, 200 | 201) {
            self.fail(&format!("create {app} on {name}: {} {}", created.status, created.text()));
        }
        let id = created.json()["id"].as_str().expect("application id").to_owned();
        let path = format!("{}/{id}", self.apps_path());
        for node in self.names() {
            self.must(PROPAGATION, &format!("{node} knows {app}"), || {
                match self.call(&node, "GET", &path, None)? {
                    r if r.status == 200 => Ok(()),
                    r => Err(format!("{} {}", r.status, r.text())),
                }
            });
        }
        id
    }

    fn add_with(&self, name: &str, app: &str, body: Value) -> HttpResponse {
        self.api(name, "POST", &self.redirs_path(app), Some(&body.to_string()))
    }

    fn add_ok(&self, name: &str, app: &str, body: Value) -> u16 {
        let added = self.add_with(name, app, body.clone());
        if !matches!(added.status, 200 | 201) {
            self.fail(&format!("add {body} for {app} on {name}: {} {}", added.status, added.text()));
        }
        port_of(&added.json())
    }

    fn remove_ok(&self, name: &str, app: &str, port: u16) {
        let path = format!("{}/{port}?namespace=default", self.redirs_path(app));
        let removed = self.api(name, "DELETE", &path, None);
        if removed.status != 200 {
            self.fail(&format!("remove {port} of {app} on {name}: {} {}", removed.status, removed.text()));
        }
    }

    fn list(&self, name: &str, app: &str) -> Result<BTreeSet<(String, u16)>, String> {
        let listed = self.call(name, "GET", &self.redirs_path(app), None)?;
        if listed.status != 200 {
            return Err(format!("list of {app} on {name}: {} {}", listed.status, listed.text()));
        }
        Ok(redirections(&listed.json()).into_iter().collect())
    }

    /// The state (`up`, `down`) node `name` lists node `of` in.
    fn state_of(&self, name: &str, of: &str) -> Option<String> {
        let answer = self.call(name, "GET", "/v2/nodes", None).ok()?;
        let nodes = answer.json();
        nodes
            .as_array()?
            .iter()
            .find(|n| n["name"] == of)
            .and_then(|n| n["state"].as_str().map(str::to_owned))
    }

    /// A write on node `name` (an application created): (status, how long it took). 0: no
    /// answer.
    fn timed_write(&self, name: &str, what: &str) -> (u16, Duration) {
        let body = json!({"name": what, "instances": []}).to_string();
        let started = Instant::now();
        let status = self.call(name, "POST", &self.apps_path(), Some(&body)).map_or(0, |r| r.status);
        (status, started.elapsed())
    }

    /// Waits until every node listens on the same ports as `reference`; how long it took.
    fn converged(&self, reference: &str, extra: impl Fn() -> Result<(), String>) -> Result<Duration, String> {
        let names = self.names();
        poll(CONVERGE_BOUND, || {
            let want = self.listening(reference);
            for name in &names {
                let got = self.listening(name);
                if got != want {
                    return Err(format!("{name} listens on {got:?}, {reference} on {want:?}"));
                }
            }
            extra()
        })
        .map(|((), took)| took)
    }
}

// ---------------------------------------------------------------------------------------
// Tagged applications and probes
// ---------------------------------------------------------------------------------------

/// A service that answers each connection with its tag: which application was reached.
/// It listens on the hub's front address, where every node reaches it.
struct Tagged {
    addr: SocketAddr,
}

impl Tagged {
    fn start(tag: &'static str) -> Tagged {
        let listener = std::net::TcpListener::bind((hub_front(), 0)).expect("bind a tagged service");
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(tag.as_bytes());
            }
        });
        Tagged { addr }
    }
}

/// Which application a new connection to ip:port reached (`None`: none answered).
fn reached(ip: IpAddr, port: u16) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut back = Vec::new();
    let _ = stream.read_to_end(&mut back);
    (!back.is_empty()).then(|| String::from_utf8_lossy(&back).into_owned())
}

fn reaches(ip: IpAddr, port: u16, tag: &str) -> Result<(), String> {
    match reached(ip, port) {
        Some(t) if t == tag => Ok(()),
        other => Err(format!("{ip}:{port} reached {other:?}, not {tag}")),
    }
}

// ---------------------------------------------------------------------------------------
// Issue 31's shape, once, with figures
// ---------------------------------------------------------------------------------------

/// The figures of one partition of [`cut_once`].
#[derive(Debug)]
struct Figures {
    write_503: Duration,
    listed_down: Option<Duration>,
    converged: Duration,
    port_given: Duration,
    majority_503s: usize,
}

/// Issue 31's scenario on `cut` (node `cut_off` cut off from etcd's majority, `healer`
/// bringing it back): while cut, n2 removes A's port P and is asked to give it to B; no
/// connection to P through the cut-off node reaches A once another holds it; the cut-off
/// node keeps forwarding C's port, its writes answer 503 within 5 s, n3 takes writes, n2
/// lists it down once its lease lapsed; after the heal it converges within 10 s and B gets P.
fn cut_once(
    fleet: &NsFleet,
    round: &str,
    cut_off: &str,
    cut: &dyn Fn(),
    heal: &dyn Fn(),
    hold_for: Duration,
    settle: Duration,
) -> Figures {
    let tags: [&'static str; 4] = ["A", "B", "C", "D"];
    let services: Vec<Tagged> = tags.iter().map(|t| Tagged::start(t)).collect();
    let ids: Vec<String> = tags
        .iter()
        .zip(&services)
        .map(|(t, s)| fleet.create_app_everywhere("n2", &format!("{round}-tenant-{t}"), s.addr))
        .collect();
    let (a, b, c, d) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let p = fleet.add_ok("n2", a, json!({"namespace": "default"}));
    let kept = fleet.add_ok("n2", c, json!({"namespace": "cleverapps"}));
    let via = fleet.ip(cut_off);
    fleet.must(PROPAGATION, &format!("{round}: P leads to A through {cut_off}"), || reaches(via, p, "A"));
    fleet.must(PROPAGATION, &format!("{round}: C's port leads to C through {cut_off}"), || {
        reaches(via, kept, "C")
    });

    cut();
    let cut_at = Instant::now();
    let (status, write_503) = fleet.timed_write(cut_off, &format!("{round}-written-while-cut"));
    eprintln!(
        "[partition] MEASURE {round}: a write on the cut-off {cut_off} answered {status} in {write_503:?}"
    );
    if status != 503 || write_503 > WRITE_BOUND {
        fleet.problem(format!(
            "{round}: a write on the cut-off node must answer 503 within 5 s: {status} after {write_503:?}"
        ));
    }

    // The others take writes: at once, or (`settle`) once they dropped their connection to
    // a member cut off with the node (a write that meets it answers 503 until then).
    let unsettled = Mutex::new(Vec::new());
    let other_write = |what: &str, call: &dyn Fn() -> HttpResponse| {
        let first = Instant::now();
        loop {
            let answer = call();
            if answer.status != 503 || first.elapsed() >= settle {
                return (answer, first.elapsed());
            }
            unsettled.lock().unwrap().push(format!("{what}: 503 at {:.2?} after the cut", cut_at.elapsed()));
            thread::sleep(Duration::from_millis(100));
        }
    };
    let path = format!("{}/{p}?namespace=default", fleet.redirs_path(a));
    let (removed, _) = other_write("remove A's P on n2", &|| fleet.api("n2", "DELETE", &path, None));
    // A removal answered 503 may have been made: then it is gone (404).
    let retried = !unsettled.lock().unwrap().is_empty();
    if removed.status != 200 && !(retried && removed.status == 404) {
        fleet.fail(&format!("{round}: remove A's P on n2: {} {}", removed.status, removed.text()));
    }
    let (explicit, _) = other_write("add B --port P on n2", &|| {
        fleet.add_with("n2", b, json!({"namespace": "default", "port": p}))
    });
    let (ranged, _) = other_write("add D in P-P on n2", &|| {
        fleet.add_with("n2", d, json!({"namespace": "default", "minPort": p, "maxPort": p}))
    });
    eprintln!(
        "[partition] {round}: while {cut_off} is cut off: add B --port {p}: {} {}; add D in {p}-{p}: {}",
        explicit.status,
        explicit.text(),
        ranged.status
    );
    let holder = match (explicit.status, ranged.status) {
        (200 | 201, _) => Some("B"),
        (_, 200 | 201) => Some("D"),
        _ => None,
    };
    if explicit.status != 409 || !explicit.text().contains(cut_off) {
        fleet.problem(format!(
            "{round}: a port whose removal {cut_off} has not confirmed must answer 409 naming it: {} {}",
            explicit.status,
            explicit.text()
        ));
    }
    if ranged.status != 409 {
        fleet.problem(format!(
            "{round}: a pick must skip a port in quarantine: {} {}",
            ranged.status,
            ranged.text()
        ));
    }
    let (other, _) =
        other_write("add D on n3", &|| fleet.add_with("n3", d, json!({"namespace": "cleverapps"})));
    if !matches!(other.status, 200 | 201) {
        fleet.problem(format!(
            "{round}: a random add on n3 during the partition: {} {}",
            other.status,
            other.text()
        ));
    }
    let unsettled = unsettled.into_inner().unwrap();
    let settled = cut_at.elapsed();
    eprintln!(
        "[partition] MEASURE {round}: the other nodes took every write by {settled:.2?} after the cut; 503s before: {unsettled:?}"
    );
    if settle.is_zero() && !unsettled.is_empty() {
        fleet.problem(format!(
            "{round}: the other nodes must take writes during the partition: {unsettled:?}"
        ));
    }

    let (mut to_a, mut to_other, mut to_none, mut kept_ok, mut probes) = (0, 0, 0, 0, 0);
    let mut listed_down = None;
    while cut_at.elapsed() < hold_for {
        probes += 1;
        match reached(via, p).as_deref() {
            Some("A") => to_a += 1,
            Some(_) => to_other += 1,
            None => to_none += 1,
        }
        if reaches(via, kept, "C").is_ok() {
            kept_ok += 1;
        }
        if listed_down.is_none() && fleet.state_of("n2", cut_off).as_deref() == Some("down") {
            listed_down = Some(cut_at.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "[partition] MEASURE {round}: {probes} connections to P through {cut_off} while cut off: {to_a} reached A, {to_other} another, {to_none} none (P held by {holder:?}); C's port forwarded {kept_ok} of {probes}; n2 listed {cut_off} down after {listed_down:?}"
    );
    if holder.is_some() && to_a > 0 {
        fleet.problem(format!(
            "{round}: {to_a} connections to P through {cut_off} reached A after P went to {holder:?}"
        ));
    }
    if to_other > 0 && holder.is_none() {
        fleet.problem(format!(
            "{round}: {to_other} connections to P reached an application that never held it"
        ));
    }
    if kept_ok != probes {
        fleet.problem(format!(
            "{round}: {cut_off} must keep forwarding C's port while cut off: {kept_ok} of {probes}"
        ));
    }
    match listed_down {
        Some(after) if after <= Duration::from_secs(NODE_TTL_SECS + 4) => {}
        other => {
            fleet.problem(format!("{round}: n2 must list {cut_off} down once its lease lapsed: {other:?}"))
        }
    }

    heal();
    let healed = Instant::now();
    let converged = fleet
        .converged("n2", || match reached(via, p) {
            None => Ok(()),
            Some(tag) => Err(format!("P still reaches {tag} through {cut_off}")),
        })
        .unwrap_or_else(|e| {
            fleet.fail(&format!("{round}: {cut_off} must converge within 10 s of the heal: {e}"))
        });
    eprintln!("[partition] MEASURE {round}: {cut_off} converged {converged:?} after the heal");
    let port_given = if holder.is_none() {
        let given = fleet.must(Duration::from_secs(10), &format!("{round}: B gets P after the heal"), || {
            let added = fleet.add_with("n2", b, json!({"namespace": "default", "port": p}));
            match added.status {
                200 | 201 => Ok(healed.elapsed()),
                _ => Err(format!("{} {}", added.status, added.text())),
            }
        });
        eprintln!("[partition] MEASURE {round}: B got P {given:?} after the heal");
        fleet.must(PROPAGATION, &format!("{round}: P leads to B through {cut_off}"), || reaches(via, p, "B"));
        given
    } else {
        Duration::ZERO
    };
    let up = fleet.must(
        Duration::from_secs(NODE_TTL_SECS + 8),
        &format!("{round}: n2 lists {cut_off} up again"),
        || match fleet.state_of("n2", cut_off) {
            Some(state) if state == "up" => Ok(healed.elapsed()),
            other => Err(format!("{other:?}")),
        },
    );
    eprintln!("[partition] MEASURE {round}: n2 listed {cut_off} up {up:?} after the heal");
    // Leave nothing behind: the next round starts from an empty pool.
    for (app, port) in [(b, p), (c, kept)] {
        if fleet.list("n2", app).unwrap_or_default().iter().any(|(_, q)| *q == port) {
            let path = format!(
                "{}/{port}?namespace={}",
                fleet.redirs_path(app),
                if app == c { "cleverapps" } else { "default" }
            );
            fleet.api("n2", "DELETE", &path, None);
        }
    }
    if let Ok(listed) = fleet.list("n2", d) {
        for (ns, port) in listed {
            fleet.api("n2", "DELETE", &format!("{}/{port}?namespace={ns}", fleet.redirs_path(d)), None);
        }
    }
    let figures = Figures { write_503, listed_down, converged, port_given, majority_503s: unsettled.len() };
    eprintln!(
        "[partition] MEASURE {round}: write on the cut-off node 503 in {:.2?}; listed down {:.2?} after the cut; converged {:.2?} and P given {:.2?} after the heal; {} writes on the others answered 503",
        figures.write_503,
        figures.listed_down.unwrap_or_default(),
        figures.converged,
        figures.port_given,
        figures.majority_503s
    );
    figures
}

// ---------------------------------------------------------------------------------------
// Churn at random moments
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Added { app: usize, port: u16, at: Instant },
    MaybeAdded { app: usize, port: Option<u16>, at: Instant },
    RemoveSent { app: usize, port: u16, at: Instant },
}

#[derive(Debug, Clone)]
struct Probe {
    node: usize,
    port: u16,
    tag: Option<String>,
    from: Instant,
    to: Instant,
}

const CHURN_TAGS: [&str; 6] = ["T0", "T1", "T2", "T3", "T4", "T5"];

/// Six applications churning over a pool of five ports from the three nodes, with probers
/// on every port of every node; [`Churn::round`] runs one round around a partition schedule,
/// [`Churn::check`] checks all the rounds: nothing acknowledged lost, no port given twice,
/// no connection delivered to an application that did not hold the port.
struct Churn {
    apps: Vec<String>,
    _services: Vec<Tagged>,
    pool: Vec<u16>,
    ops: Mutex<Vec<Op>>,
    probes: Mutex<Vec<Probe>>,
    /// Each application's port as known: Some(None) none, None unknown (a 503).
    held: Mutex<Vec<Option<Option<u16>>>>,
    answers: Mutex<BTreeMap<u16, usize>>,
    /// The pause between two sweeps of a prober over the pool.
    probe_pause: Duration,
}

impl Churn {
    fn new(fleet: &NsFleet, label: &str) -> Churn {
        let services: Vec<Tagged> = CHURN_TAGS.iter().map(|t| Tagged::start(t)).collect();
        let apps = (0..CHURN_TAGS.len())
            .map(|i| fleet.create_app_everywhere("n2", &format!("{label}-churn-{i}"), services[i].addr))
            .collect();
        let base: u16 = rand::rng().random_range(20000..30000);
        Churn {
            apps,
            _services: services,
            pool: (base..base + 5).collect(),
            ops: Mutex::default(),
            probes: Mutex::default(),
            held: Mutex::new(vec![Some(None); CHURN_TAGS.len()]),
            answers: Mutex::default(),
            probe_pause: Duration::from_millis(30),
        }
    }

    /// Churn and probes until `schedule` returns (it cuts and heals), then waits for the
    /// fleet to agree and reads back the writes whose outcome was unknown.
    fn round(&self, fleet: &NsFleet, round: &str, schedule: impl FnOnce() + Send) -> Duration {
        let names = fleet.names();
        let ips: Vec<IpAddr> = names.iter().map(|n| fleet.ip(n)).collect();
        let running = AtomicBool::new(true);
        let go = || running.load(Ordering::SeqCst);
        thread::scope(|scope| {
            for (node, &ip) in ips.iter().enumerate() {
                let go = &go;
                scope.spawn(move || {
                    while go() {
                        for &port in &self.pool {
                            let from = Instant::now();
                            let tag = reached(ip, port);
                            self.probes.lock().unwrap().push(Probe {
                                node,
                                port,
                                tag,
                                from,
                                to: Instant::now(),
                            });
                        }
                        thread::sleep(self.probe_pause);
                    }
                });
            }
            for (w, node) in names.iter().enumerate() {
                let go = &go;
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    while go() {
                        let app = w + 3 * rng.random_range(0..2);
                        let state = self.held.lock().unwrap()[app];
                        let at = Instant::now();
                        match state {
                            None => {}
                            Some(None) => {
                                let explicit = rng.random_bool(0.7);
                                let port = self.pool[rng.random_range(0..self.pool.len())];
                                let body = if explicit {
                                    json!({"namespace": "default", "port": port})
                                } else {
                                    json!({"namespace": "default", "minPort": self.pool[0], "maxPort": self.pool[self.pool.len() - 1]})
                                };
                                let answer =
                                    fleet.call(node, "POST", &fleet.redirs_path(&self.apps[app]), Some(&body.to_string()));
                                let status = answer.as_ref().map_or(0, |r| r.status);
                                *self.answers.lock().unwrap().entry(status).or_default() += 1;
                                match answer {
                                    Ok(r) if r.status == 201 => {
                                        let port = port_of(&r.json());
                                        self.ops.lock().unwrap().push(Op::Added { app, port, at: Instant::now() });
                                        self.held.lock().unwrap()[app] = Some(Some(port));
                                    }
                                    Ok(r) if r.status == 409 || r.status == 422 => {}
                                    _ => {
                                        let port = explicit.then_some(port);
                                        self.ops.lock().unwrap().push(Op::MaybeAdded { app, port, at });
                                        self.held.lock().unwrap()[app] = None;
                                    }
                                }
                            }
                            Some(Some(port)) => {
                                self.ops.lock().unwrap().push(Op::RemoveSent { app, port, at });
                                let path = format!("{}/{port}?namespace=default", fleet.redirs_path(&self.apps[app]));
                                let status = fleet.call(node, "DELETE", &path, None).map_or(0, |r| r.status);
                                *self.answers.lock().unwrap().entry(status).or_default() += 1;
                                self.held.lock().unwrap()[app] = match status {
                                    200 | 404 => Some(None),
                                    _ => None,
                                };
                            }
                        }
                        thread::sleep(Duration::from_millis(rng.random_range(20..200)));
                    }
                });
            }
            schedule();
            running.store(false, Ordering::SeqCst);
        });
        let converged = fleet.converged("n2", || Ok(())).unwrap_or_else(|e| {
            fleet.fail(&format!("{round}: the nodes must agree within 10 s of the heal: {e}"))
        });
        eprintln!("[partition] MEASURE {round}: every node listened on the same ports {converged:?} after the round");
        let mut held = self.held.lock().unwrap();
        for (app, id) in self.apps.iter().enumerate() {
            let listed = fleet.list("n2", id).unwrap_or_else(|e| fleet.fail(&e));
            let port = listed.iter().find(|(ns, _)| ns == "default").map(|(_, p)| *p);
            match held[app] {
                Some(known) if known != port => fleet.problem(format!(
                    "{round}: application {app} should hold {known:?} after its acknowledged changes, n2 lists {port:?}"
                )),
                Some(_) => {}
                None => {
                    if let Some(port) = port {
                        self.ops.lock().unwrap().push(Op::Added { app, port, at: Instant::now() });
                    }
                    held[app] = Some(port);
                }
            }
        }
        converged
    }

    /// The checks over every round so far; a summary line.
    fn check(&self, fleet: &NsFleet) -> String {
        let ops = self.ops.lock().unwrap().clone();
        let probes = self.probes.lock().unwrap().clone();
        let names = fleet.names();
        let removal_sent = |app: usize, port: u16, after: Instant, before: Instant| {
            ops.iter().any(|op| matches!(op, Op::RemoveSent { app: a, port: p, at } if *a == app && *p == port && *at >= after && *at <= before))
        };
        let adds: Vec<(usize, u16, Instant)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Added { app, port, at } => Some((*app, *port, *at)),
                _ => None,
            })
            .collect();
        for &(u, port, at_u) in &adds {
            for &(t, _, at_t) in adds.iter().filter(|&&(t, p, at_t)| p == port && t != u && at_t < at_u) {
                if !removal_sent(t, port, at_t, at_u) {
                    fleet.problem(format!("port {port} given to application {u} while {t} held it"));
                }
            }
        }
        let (mut crossed, mut unasked, mut delivered) = (0, 0, 0);
        for probe in &probes {
            let Some(tag) = &probe.tag else { continue };
            delivered += 1;
            let Some(t) = CHURN_TAGS.iter().position(|x| x == tag) else {
                fleet.problem(format!("a connection reached an unknown service: {probe:?}"));
                continue;
            };
            let asked = ops.iter().any(|op| match op {
                Op::Added { app, port, at } => {
                    *app == t && *port == probe.port && *at <= probe.to + Duration::from_secs(10)
                }
                Op::MaybeAdded { app, port, at } => {
                    *app == t && port.is_none_or(|p| p == probe.port) && *at <= probe.to
                }
                _ => false,
            });
            if !asked {
                unasked += 1;
            }
            let other_held = adds.iter().any(|&(u, port, at_u)| {
                u != t && port == probe.port && at_u <= probe.from && !removal_sent(u, port, at_u, probe.to)
            });
            if other_held {
                crossed += 1;
                if crossed <= 5 {
                    fleet.problem(format!(
                        "a connection to port {} on {} reached {tag} while another application held the port: {probe:?}",
                        probe.port, names[probe.node]
                    ));
                }
            }
        }
        if crossed > 5 {
            fleet.problem(format!(
                "{crossed} connections in all reached an application while another held the port"
            ));
        }
        if unasked > 0 {
            fleet.problem(format!(
                "{unasked} connections reached an application that never asked for the port"
            ));
        }
        let held = self.held.lock().unwrap().clone();
        for (app, id) in self.apps.iter().enumerate() {
            let want: BTreeSet<(String, u16)> =
                held[app].flatten().map(|p| ("default".to_owned(), p)).into_iter().collect();
            for name in &names {
                // The rounds end with a heal: a node cut off until then may still be finding
                // etcd again (its gRPC keep-alive, then its lease), which the promised bound of
                // convergence after a heal covers, not the propagation between healthy nodes
                // (CI once saw n1 converge 2.0 s after the check began, the store back and the
                // node registered again 1 s apart).
                fleet.must(
                    CONVERGE_BOUND,
                    &format!("{name} lists churn application {app} as acknowledged"),
                    || match fleet.list(name, id)? {
                        got if got == want => Ok(()),
                        got => Err(format!("{got:?}, want {want:?}")),
                    },
                );
            }
        }
        format!(
            "answers by status {:?}; {} acknowledged adds; {} connections, {delivered} delivered, {crossed} to another tenant",
            self.answers.lock().unwrap(),
            adds.len(),
            probes.len()
        )
    }

    /// Removes what the applications hold (between the soak's measures).
    fn clear(&self, fleet: &NsFleet) {
        let mut held = self.held.lock().unwrap();
        for (app, id) in self.apps.iter().enumerate() {
            for (ns, port) in fleet.list("n2", id).unwrap_or_default() {
                self.ops.lock().unwrap().push(Op::RemoveSent { app, port, at: Instant::now() });
                fleet.api("n2", "DELETE", &format!("{}/{port}?namespace={ns}", fleet.redirs_path(id)), None);
            }
            held[app] = Some(None);
        }
    }
}

/// A partition of `cut_for` at a random moment of a round of about `round_for`.
fn random_partition(cut: &dyn Fn(), heal: &dyn Fn(), round_for: Duration) -> Duration {
    let mut rng = rand::rng();
    let cut_for = Duration::from_millis(rng.random_range(1500..4500));
    let before = Duration::from_millis(rng.random_range(300..1500));
    thread::sleep(before);
    cut();
    thread::sleep(cut_for);
    heal();
    thread::sleep(round_for.saturating_sub(before + cut_for).max(Duration::from_millis(500)));
    cut_for
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// One etcd, three nodes, each node with a front link (clients) and a back link (etcd) in
/// namespaces of their own; n1's back link goes down (in the hub, so n1's own interface
/// stays up: what it sends is lost, as across a failed switch).
#[test]
fn a_node_whose_link_to_etcd_goes_down_keeps_forwarding_and_mixes_no_tenants() {
    let fleet = NsFleet::start(
        "a_node_whose_link_to_etcd_goes_down_keeps_forwarding_and_mixes_no_tenants",
        Layout {
            members: &[("e0", "bb")],
            nodes: &[("n1", "bb"), ("n2", "bb"), ("n3", "bb")],
            two_segments: false,
            binary: None,
        },
    );
    let started = Instant::now();
    let _ = cut_once(
        &fleet,
        "link-down",
        "n1",
        &|| fleet.cut_node("n1"),
        &|| fleet.heal_node("n1"),
        Duration::from_secs(6),
        Duration::ZERO,
    );

    // Rounds of churn, n1's link cut at a random moment of each; the second over a link
    // that delays and loses packets where the kernel has netem.
    let churn = Churn::new(&fleet, "netns");
    for round in 0..2 {
        let port = fleet.lab.port("n1", "bb");
        let degraded = round == 1
            && match fleet
                .lab
                .tc(&["qdisc", "add", "dev", &port, "root", "netem", "delay", "40ms", "10ms", "loss", "3%"])
            {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("[partition] round {round}: no delay or loss on n1's link, the kernel refuses netem: {e}");
                    false
                }
            };
        let cut_for = churn.round(&fleet, &format!("churn round {round}"), || {
            let cut_for =
                random_partition(&|| fleet.cut_node("n1"), &|| fleet.heal_node("n1"), Duration::from_secs(5));
            eprintln!(
                "[partition] churn round {round}: n1 cut off for {cut_for:?}{}",
                if degraded { " over netem" } else { "" }
            );
        });
        let _ = cut_for;
        if degraded {
            let _ = fleet.lab.tc(&["qdisc", "del", "dev", &port, "root"]);
        }
    }
    conclude(&fleet, &churn, "link-down partitions", started, 0);
}

/// Three etcd members: e0 and node n1 on one segment, e1, e2, n2 and n3 on another, the
/// two joined by a trunk that goes down: e0 is a minority with a node behind it. n1's store
/// URL names all three members, as a real node's would.
#[test]
fn an_etcd_member_cut_off_with_a_node_behind_it_stalls_that_node_only() {
    let fleet = NsFleet::start(
        "an_etcd_member_cut_off_with_a_node_behind_it_stalls_that_node_only",
        Layout {
            members: &[("e0", "ba"), ("e1", "bb"), ("e2", "bb")],
            nodes: &[("n1", "ba"), ("n2", "bb"), ("n3", "bb")],
            two_segments: true,
            binary: None,
        },
    );
    let trunk = fleet.trunk.clone().expect("the trunk");
    let started = Instant::now();
    // A node of the majority whose client talked to e0 meets a black hole until its HTTP/2
    // keep-alive (2 s, then 2 s for the answer) drops that connection: its writes may answer
    // 503 until then (measured, and bounded here to 6 s after the cut).
    let _ = cut_once(
        &fleet,
        "minority",
        "n1",
        &|| fleet.lab.cut(&trunk),
        &|| fleet.lab.heal(&trunk),
        Duration::from_secs(7),
        Duration::from_secs(3),
    );
    // e0 is healthy again (it sees a leader) once healed.
    fleet.must(Duration::from_secs(10), "e0 sees a leader again", || fleet.etcd.health(member_ip(0)));
    let churn = Churn::new(&fleet, "minority");
    churn.round(&fleet, "minority churn", || {
        let cut_for =
            random_partition(&|| fleet.lab.cut(&trunk), &|| fleet.lab.heal(&trunk), Duration::from_secs(5));
        eprintln!("[partition] minority churn: e0 and n1 cut off for {cut_for:?}");
    });
    conclude(&fleet, &churn, "a minority partition", started, 1);
}

/// Ends a churn test: checks its rounds and reports them as `what`, clears the churn, waits
/// for the quarantines to go (asking etcd member `member`), and checks the fleet's logs.
fn conclude(fleet: &NsFleet, churn: &Churn, what: &str, started: Instant, member: usize) {
    let summary = churn.check(fleet);
    eprintln!("[partition] MEASURE churn with {what}, {:?} in all: {summary}", started.elapsed());
    churn.clear(fleet);
    fleet.must(Duration::from_secs(10), "no quarantine record is left once every node confirmed", || {
        match fleet.etcd.keys(member, "quarantine")? {
            keys if keys.is_empty() => Ok(()),
            keys => Err(format!("left: {keys:?}")),
        }
    });
    fleet.finish();
}

/// A partition's cut or heal, in the soak.
type Step<'a> = Box<dyn Fn() + Sync + 'a>;

/// Sends `signal` to `pid`.
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill only sends a signal, to a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "signal {signal} to {pid}");
}

/// n1 is cut off from etcd, then told to upgrade (SIGUSR2): the new process cannot load the
/// table while the partition lasts. Throughout, n1 keeps forwarding, its API answers within
/// 5 s, no connection reaches an application that does not hold the port; after the heal,
/// the hand-over completes (or has failed cleanly, the old process serving) and n1
/// converges within 10 s.
#[test]
fn a_node_cut_off_during_an_upgrade_hands_over_or_fails_cleanly() {
    let fleet = NsFleet::start(
        "a_node_cut_off_during_an_upgrade_hands_over_or_fails_cleanly",
        Layout {
            members: &[("e0", "bb")],
            nodes: &[("n1", "bb"), ("n2", "bb"), ("n3", "bb")],
            two_segments: false,
            binary: None,
        },
    );
    let (tag_a, tag_b, tag_c) = (Tagged::start("A"), Tagged::start("B"), Tagged::start("C"));
    let a = fleet.create_app_everywhere("n2", "upgrade-a", tag_a.addr);
    let b = fleet.create_app_everywhere("n2", "upgrade-b", tag_b.addr);
    let c = fleet.create_app_everywhere("n2", "upgrade-c", tag_c.addr);
    let p = fleet.add_ok("n2", &a, json!({"namespace": "default"}));
    let kept = fleet.add_ok("n2", &c, json!({"namespace": "cleverapps"}));
    let n1 = fleet.ip("n1");
    fleet.must(PROPAGATION, "P leads to A through n1", || reaches(n1, p, "A"));
    let server = fleet.server("n1");
    let old = server.process_id();
    let skip = server.log().len();

    fleet.cut_node("n1");
    let cut_at = Instant::now();
    signal(old, libc::SIGUSR2);
    // The new process waits for the store it cannot reach; meanwhile n2 frees P and B asks.
    fleet.remove_ok("n2", &a, p);
    let asked = fleet.add_with("n2", &b, json!({"namespace": "default", "port": p}));
    if asked.status != 409 || !asked.text().contains("n1") {
        fleet.problem(format!(
            "P, whose removal n1 has not confirmed, must answer 409 naming n1: {} {}",
            asked.status,
            asked.text()
        ));
    }
    let (mut writes, mut slowest, mut kept_ok, mut probes, mut to_other) =
        (Vec::new(), Duration::ZERO, 0, 0, 0);
    while cut_at.elapsed() < Duration::from_secs(8) {
        let (status, took) = fleet.timed_write("n1", &format!("during-upgrade-{}", writes.len()));
        slowest = slowest.max(took);
        writes.push((status, took));
        for _ in 0..5 {
            probes += 1;
            if reaches(n1, kept, "C").is_ok() {
                kept_ok += 1;
            }
            if let Some(tag) = reached(n1, p) {
                if tag != "A" {
                    to_other += 1;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "[partition] MEASURE upgrade while cut off: writes on n1 answered {:?} (slowest {slowest:?}); C's port forwarded {kept_ok} of {probes}",
        writes.iter().map(|(s, t)| format!("{s} in {t:.2?}")).collect::<Vec<_>>()
    );
    if writes.iter().any(|&(status, took)| status != 503 || took > WRITE_BOUND) {
        fleet.problem(format!(
            "writes on n1 while cut off during its hand-over must answer 503 within 5 s: {writes:?}"
        ));
    }
    if kept_ok != probes {
        fleet
            .problem(format!("n1 must keep forwarding C's port during its hand-over: {kept_ok} of {probes}"));
    }
    if to_other > 0 {
        fleet.problem(format!(
            "{to_other} connections to P through n1 reached an application that never held it"
        ));
    }

    fleet.heal_node("n1");
    let healed = Instant::now();
    // The hand-over completes after the heal, or has failed cleanly: either way one process
    // serves, and it follows the table.
    let outcome = fleet.must(Duration::from_secs(30), "the hand-over ends", || {
        let log = server.log();
        let rest = log.get(skip..).unwrap_or("");
        if rest.contains("upgrade: the new process serves every socket") {
            Ok("completed")
        } else if rest.contains("upgrade failed")
            || rest.contains("upgrade: ") && rest.contains("keeps serving")
        {
            Ok("failed cleanly")
        } else {
            Err("no word yet".to_owned())
        }
    });
    eprintln!("[partition] MEASURE the hand-over {outcome} {:?} after the heal", healed.elapsed());
    let converged = fleet
        .converged("n2", || match reached(n1, p) {
            None => Ok(()),
            Some(tag) => Err(format!("P still reaches {tag} through n1")),
        })
        .unwrap_or_else(|e| fleet.fail(&format!("n1 must converge within 10 s of the heal: {e}")));
    eprintln!("[partition] MEASURE n1 converged {converged:?} after the heal (hand-over {outcome})");
    let given = fleet.must(Duration::from_secs(10), "B gets P after the heal", || {
        let added = fleet.add_with("n2", &b, json!({"namespace": "default", "port": p}));
        match added.status {
            200 | 201 => Ok(healed.elapsed()),
            _ => Err(format!("{} {}", added.status, added.text())),
        }
    });
    eprintln!("[partition] MEASURE B got P {given:?} after the heal");
    fleet.must(PROPAGATION, "P leads to B through n1", || reaches(n1, p, "B"));
    let write = fleet.must(Duration::from_secs(10), "a write on n1 succeeds after the heal", || match fleet
        .timed_write("n1", "after-the-upgrade")
    {
        (201, took) => Ok(took),
        (status, _) => Err(format!("status {status}")),
    });
    eprintln!("[partition] a write on n1 after the heal took {write:?}");
    if outcome == "completed" {
        let processes = fleet.lab.pids("n1");
        fleet.must(Duration::from_secs(40), "the old process exits once drained", || {
            match fleet.lab.pids("n1") {
                pids if !pids.contains(&old) => Ok(()),
                pids => Err(format!("processes in n1's namespace: {pids:?} (were {processes:?})")),
            }
        });
    }
    fleet.finish();
}

/// Churn and traffic on three nodes and three etcd members, a partition every 30 s (held
/// 15 s, then healed), in turn: n2's link to etcd, the minority (e0 with n1), n3's link;
/// for `PARTITION_SOAK_SECS` (90 unless told; 600 for the issue's ten minutes). Each
/// period is checked as a churn round, then every node's descriptors must come back to
/// their baseline and its memory stay within 16 MiB of it.
#[test]
#[ignore = "a soak: scripts/test runs it with the ignored tests (PARTITION_SOAK_SECS, 90 s unless told)"]
fn a_fleet_under_partitions_every_30_s_soaks_back_to_its_baseline() {
    let total = Duration::from_secs(
        std::env::var("PARTITION_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(90),
    );
    const PERIOD: Duration = Duration::from_secs(30);
    let fleet = NsFleet::start(
        "a_fleet_under_partitions_every_30_s_soaks_back_to_its_baseline",
        Layout {
            members: &[("e0", "ba"), ("e1", "bb"), ("e2", "bb")],
            nodes: &[("n1", "ba"), ("n2", "bb"), ("n3", "bb")],
            two_segments: true,
            binary: None,
        },
    );
    let trunk = fleet.trunk.clone().expect("the trunk");
    let mut churn = Churn::new(&fleet, "soak");
    churn.probe_pause = Duration::from_millis(150);
    let names = fleet.names();
    let pids: Vec<u32> = names.iter().map(|n| fleet.server(n).process_id()).collect();
    // The baseline: the fleet set up, its applications known, no redirection yet, after a
    // first warm-up period of churn without partitions cleared away.
    churn.round(&fleet, "soak warm-up", || thread::sleep(Duration::from_secs(5)));
    churn.clear(&fleet);
    fleet.converged("n2", || Ok(())).unwrap_or_else(|e| fleet.fail(&e));
    thread::sleep(Duration::from_secs(1));
    let baseline: Vec<(usize, u64)> = pids.iter().map(|&pid| (fd_count(pid), rss_kib(pid))).collect();
    eprintln!("[partition] MEASURE soak baseline (descriptors, RSS KiB) per node: {baseline:?}");

    let started = Instant::now();
    let mut period = 0;
    let mut worst_converge = Duration::ZERO;
    while started.elapsed() + PERIOD / 2 <= total {
        let (what, cut, heal): (String, Step, Step) = match period % 3 {
            0 => (
                "n2's link to etcd".into(),
                Box::new(|| fleet.cut_node("n2")),
                Box::new(|| fleet.heal_node("n2")),
            ),
            1 => (
                "the minority e0 + n1".into(),
                Box::new(|| fleet.lab.cut(&trunk)),
                Box::new(|| fleet.lab.heal(&trunk)),
            ),
            _ => (
                "n3's link to etcd".into(),
                Box::new(|| fleet.cut_node("n3")),
                Box::new(|| fleet.heal_node("n3")),
            ),
        };
        let left = total.saturating_sub(started.elapsed()).min(PERIOD);
        let took = churn.round(&fleet, &format!("soak period {period} ({what})"), || {
            cut();
            thread::sleep(left / 2);
            heal();
            thread::sleep(left / 2 - Duration::from_millis(left.as_millis() as u64 % 2));
        });
        worst_converge = worst_converge.max(took);
        let now: Vec<(usize, u64)> = pids.iter().map(|&pid| (fd_count(pid), rss_kib(pid))).collect();
        eprintln!(
            "[partition] soak period {period} ({what}) at {:?}: (descriptors, RSS KiB) {now:?}",
            started.elapsed()
        );
        period += 1;
    }
    let summary = churn.check(&fleet);
    churn.clear(&fleet);
    fleet.converged("n2", || Ok(())).unwrap_or_else(|e| fleet.fail(&e));
    fleet.must(Duration::from_secs(10), "no quarantine record is left", || {
        match fleet.etcd.keys(1, "quarantine")? {
            keys if keys.is_empty() => Ok(()),
            keys => Err(format!("left: {keys:?}")),
        }
    });
    for (i, &pid) in pids.iter().enumerate() {
        let (fds, rss) = baseline[i];
        let back = poll(Duration::from_secs(10), || match fd_count(pid) {
            now if now <= fds + 2 => Ok(now),
            now => Err(format!("{now} descriptors, baseline {fds}")),
        });
        let end_rss = rss_kib(pid);
        eprintln!(
            "[partition] MEASURE soak {}: descriptors {fds} -> {:?}, RSS {rss} KiB -> {end_rss} KiB ({:+} KiB)",
            names[i],
            back.as_ref().map(|(n, _)| *n),
            end_rss as i64 - rss as i64
        );
        if let Err(e) = back {
            fleet.problem(format!("{}'s descriptors must come back to their baseline: {e}", names[i]));
        }
        if end_rss > rss + 16 * 1024 {
            fleet.problem(format!("{}'s memory grew by {} KiB over the soak", names[i], end_rss - rss));
        }
    }
    eprintln!(
        "[partition] MEASURE soak: {period} partitions in {:?}, slowest agreement after a period {worst_converge:?}; {summary}",
        started.elapsed()
    );
    fleet.finish();
}
