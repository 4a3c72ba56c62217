//! Fleet mode: several `tcp-redirs serve` nodes sharing one redirection table in a real etcd
//! (`serve --store etcd://…`). Each node serves its public ports and its control API on its
//! own loopback address, so that every node can bind the same port; each test uses its own
//! block of addresses (127.0.N.2, .3, .4 with N >= 1; tests/cluster.rs has N = 10), so that the tests, which run in
//! parallel, never collide on a port, nor with a fleet started by hand on the usual
//! 127.0.0.2, .3, .4. Nothing here sleeps to wait: waits poll a socket, an HTTP answer or a
//! JSON field every 20 ms up to a bound.
//!
//! `cargo test --all-features --test fleet` (needs `/usr/bin/etcd`: `apt-get install etcd-server`);
//! `FLEET_FULL_LOGS=1` puts the nodes' whole logs, not their last lines, in failure messages.

#![cfg(feature = "etcd")]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::etcd::{http10, CutProxy, Etcd};
use common::pki::Pki;
use common::*;
use rand::Rng;
use serde_json::{json, Value};

/// The lease TTL of every node's liveness (`serve --node-ttl`), in seconds.
const NODE_TTL_SECS: u64 = 2;
/// How long a change made on one node may take to be live (or gone) on the others.
const PROPAGATION: Duration = Duration::from_secs(1);
/// The built-in namespaces, sorted.
const NAMESPACES: [&str; 2] = ["cleverapps", "default"];
/// Where the built-in namespaces take their ports (below the kernel's ephemeral range).
const PUBLIC_PORTS: RangeInclusive<u16> = 5001..=32767;

// ---------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Sockets on the nodes' public addresses
// ---------------------------------------------------------------------------------------

/// The ports of the public range that have a LISTEN socket bound on exactly `ip`
/// (`/proc/net/tcp`): every listener any node holds there.
fn listening_sockets(ip: IpAddr) -> BTreeSet<u16> {
    let IpAddr::V4(v4) = ip else { panic!("IPv4 only: {ip}") };
    // The kernel prints the address as the hex of the 32-bit value in host order.
    let wanted = format!("{:08X}", u32::from_le_bytes(v4.octets()));
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            (state == "0A" && addr == wanted && PUBLIC_PORTS.contains(&port)).then_some(port)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The fleet
// ---------------------------------------------------------------------------------------

/// One node of the fleet: how to start it, and the running server (none while killed).
struct Node {
    name: String,
    ip: IpAddr,
    builder: ServerBuilder,
    server: Option<Server>,
    /// The logs of its previous runs.
    past_logs: String,
}

/// An etcd and nodes sharing it, all with the same admin token.
struct Fleet {
    // Declared first, dropped first: the nodes go before etcd.
    nodes: Vec<Node>,
    proxy: Option<CutProxy>,
    etcd: Etcd,
    /// On a secured etcd ([`Fleet::start_secure`]): the certificates and password file,
    /// held so that they outlive etcd and the nodes.
    _pki: Option<Pki>,
    token: String,
    /// The shared default organisation's id.
    org: String,
    /// Broken promises found so far that do not stop the test: reported together at the end
    /// ([`Fleet::finish`]), or with a failure that does stop it.
    problems: Mutex<Vec<String>>,
    /// Every port an add answered, for [`Fleet::listening_ports`] in steered mode.
    seen: Mutex<BTreeSet<u16>>,
}

/// How to start one node: `(name, ip, extra args)`.
type NodeSpec<'a> = (&'a str, &'a str, &'a [&'a str]);

impl Fleet {
    /// etcd, then every node at once (they race to set up the shared store), each on its IP
    /// with `--node-ttl 2`; `behind_proxy` names the node whose store URL goes through a
    /// [`CutProxy`].
    fn start(specs: &[NodeSpec], behind_proxy: Option<&str>) -> Fleet {
        Fleet::start_with(specs, behind_proxy, false)
    }

    /// [`Fleet::start`] on an etcd as production runs it: TLS with client certificates
    /// (`--client-cert-auth`) and auth on, the nodes logged in as user `gateway`, whose role
    /// may read and write the prefix `fleet/` only, with its password in a file.
    fn start_secure(specs: &[NodeSpec]) -> Fleet {
        Fleet::start_with(specs, None, true)
    }

    fn start_with(specs: &[NodeSpec], behind_proxy: Option<&str>, secure: bool) -> Fleet {
        let pki = secure.then(Pki::make);
        let etcd = match &pki {
            Some(pki) => {
                let etcd = Etcd::start_tls(pki.etcd_files());
                etcd.enable_auth("root-password");
                etcd.add_user("gateway", "gateway-password", Some("fleet/"));
                etcd
            }
            None => Etcd::start(),
        };
        let secure_args: Vec<String> = match &pki {
            Some(pki) => {
                let password = pki.password_file("gateway-password", "gateway-password");
                let mut args = pki.node_args();
                args.extend(["--store-user".into(), "gateway".into(), "--store-password-file".into()]);
                args.push(password.display().to_string());
                args
            }
            None => Vec::new(),
        };
        let secure_args: Vec<&str> = secure_args.iter().map(String::as_str).collect();
        let proxy = behind_proxy.map(|_| CutProxy::start(&etcd.endpoint()));
        let token = random_token();
        let builders: Vec<(String, IpAddr, ServerBuilder)> = specs
            .iter()
            .map(|&(name, ip, extra)| {
                let store = match &proxy {
                    Some(proxy) if behind_proxy == Some(name) => proxy.url(),
                    _ if secure => format!("{}/fleet", etcd.url()),
                    _ => etcd.url(),
                };
                let ttl = NODE_TTL_SECS.to_string();
                let builder = Server::builder()
                    .ip(ip)
                    .token(&token)
                    .args(&["--store", &store, "--node", name, "--node-ttl", &ttl])
                    .args(&secure_args)
                    .args(extra);
                (name.to_owned(), ip.parse().expect("node IP"), builder)
            })
            .collect();
        let servers: Vec<Server> = thread::scope(|scope| {
            let starting: Vec<_> =
                builders.iter().map(|(_, _, builder)| scope.spawn(|| builder.clone().start())).collect();
            starting
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let nodes = builders
            .into_iter()
            .zip(servers)
            .map(|((name, ip, builder), server)| Node {
                name,
                ip,
                builder,
                server: Some(server),
                past_logs: String::new(),
            })
            .collect();
        let mut fleet = Fleet {
            nodes,
            proxy,
            etcd,
            _pki: pki,
            token,
            org: String::new(),
            problems: Mutex::default(),
            seen: Mutex::default(),
        };
        fleet.org = fleet.shared_default_org();
        fleet
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The running server of node `name`.
    fn server(&self, name: &str) -> &Server {
        self.node(name).server.as_ref().unwrap_or_else(|| panic!("node {name} is not running"))
    }

    fn ip(&self, name: &str) -> IpAddr {
        self.node(name).ip
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// SIGKILLs node `name` (and reaps it); its data dir stays.
    fn kill(&mut self, name: &str) {
        let node = self.node_mut(name);
        let server = node.server.take().unwrap_or_else(|| panic!("node {name} is not running"));
        node.past_logs.push_str(&server.log());
        node.past_logs.push_str("--- killed (SIGKILL) by the test ---\n");
        drop(server); // SIGKILL and reap
    }

    /// Starts node `name` again with the same arguments, data dir and token.
    fn restart(&mut self, name: &str) {
        let node = self.node_mut(name);
        assert!(node.server.is_none(), "node {name} is still running");
        node.server = Some(node.builder.clone().start());
    }

    /// Starts node `name` again, showing each line of its log while it starts to
    /// `on_line`, which may stop and restart etcd.
    fn restart_watching(&mut self, name: &str, mut on_line: impl FnMut(&str, &mut Etcd)) {
        let etcd = &mut self.etcd;
        let node = self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"));
        assert!(node.server.is_none(), "node {name} is still running");
        node.server = Some(node.builder.clone().start_watching(|line| on_line(line, etcd)));
    }

    /// Every node's log (the last lines of each run) and etcd's, for failure messages.
    fn logs(&self) -> String {
        // FLEET_FULL_LOGS=1 shows every line, to follow a port through the nodes.
        let log_lines = if std::env::var_os("FLEET_FULL_LOGS").is_some() { usize::MAX } else { 60 };
        let mut out = String::new();
        for node in &self.nodes {
            let mut log = node.past_logs.clone();
            if let Some(server) = &node.server {
                log.push_str(&server.log());
            }
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(log_lines)..];
            out.push_str(&format!(
                "--- node {} ({}) log, last {} lines ---\n",
                node.name,
                node.ip,
                tail.len()
            ));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        let etcd = self.etcd.log();
        let lines: Vec<&str> = etcd.lines().collect();
        out.push_str("--- etcd output, last lines ---\n");
        for line in &lines[lines.len().saturating_sub(20)..] {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Polls `probe` up to `limit`; panics with `what`, the last error and the logs.
    fn must<T>(&self, limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        match poll(limit, probe) {
            Ok((value, took)) => {
                eprintln!("[fleet] {what}: after {took:?}");
                value
            }
            Err(e) => self.fail(&format!("{what} (bound {limit:?}): {e}")),
        }
    }

    /// Probes once: the promise must hold at once. When it does not, records the problem,
    /// with how long it took to hold (polled up to `then`), and goes on.
    fn at_once(&self, then: Duration, what: &str, mut probe: impl FnMut() -> Result<(), String>) {
        let Err(first) = probe() else { return };
        let later = match poll(then, probe) {
            Ok(((), took)) => format!("it held {took:?} later"),
            Err(e) => format!("and then {e}"),
        };
        self.problem(format!("{what} must hold at once, but: {first}; {later}"));
    }

    /// Records a broken promise and goes on.
    fn problem(&self, problem: String) {
        eprintln!("[fleet] PROBLEM: {problem}");
        self.problems.lock().unwrap().push(problem);
    }

    /// Records `result`'s error, if any, as a problem.
    fn check(&self, what: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.problem(format!("{what}: {e}"));
        }
    }

    /// Panics with `message`, the problems recorded so far and the logs.
    fn fail(&self, message: &str) -> ! {
        let problems = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        let earlier = if problems.is_empty() {
            String::new()
        } else {
            format!("\n--- problems recorded before ---\n{}", problems.join("\n"))
        };
        panic!("{message}{earlier}\n{}", self.logs())
    }

    /// Ends the test: panics with every recorded problem and the logs, if there is one.
    fn finish(&self) {
        let problems = self.problems.lock().unwrap().clone();
        if !problems.is_empty() {
            panic!("{} problem(s):\n{}\n{}", problems.len(), problems.join("\n"), self.logs());
        }
    }

    /// The default organisation's id, checked to be the same single `default` on every node.
    fn shared_default_org(&self) -> String {
        let mut ids = BTreeMap::new();
        for name in self.names() {
            let orgs = self.server(&name).api("GET", "/v2/organisations", None).ok_json();
            let defaults: Vec<&Value> =
                orgs.as_array().unwrap_or_else(|| panic!("not an array: {orgs}")).iter().collect();
            if defaults.len() != 1 || defaults[0]["name"] != "default" {
                self.fail(&format!("node {name} must show exactly one organisation, `default`: {orgs}"));
            }
            ids.insert(name, defaults[0]["id"].as_str().expect("organisation id").to_owned());
        }
        let distinct: BTreeSet<&String> = ids.values().collect();
        if distinct.len() != 1 {
            self.fail(&format!("the nodes do not share one default organisation: {ids:?}"));
        }
        ids.into_values().next().expect("at least one node")
    }

    /// A raw API call with the admin token on node `name`; `Err` when no answer came.
    fn call(&self, name: &str, method: &str, path: &str, body: Option<&str>) -> Result<HttpResponse, String> {
        let server = self.server(name);
        let answer =
            try_http(server.addr, method, path, Some(&format!("Bearer {}", self.token)), body, IO_TIMEOUT)
                .map_err(|e| format!("node {name}: {e}"))?;
        if method == "POST" && path.ends_with("/tcpRedirs") && matches!(answer.status, 200 | 201) {
            if let Some(port) =
                serde_json::from_str::<Value>(&answer.text()).ok().and_then(|v| v["port"].as_u64())
            {
                self.seen.lock().unwrap().insert(port as u16);
            }
        }
        Ok(answer)
    }

    /// The public ports that accept connections at `ip`. Bound mode: the listening sockets
    /// the kernel lists there. Steered mode: a steered port has no socket of its own, so
    /// every port an add of this test answered is tried with a connect (a port the test
    /// never saw cannot be a leftover of its changes).
    fn listening_ports(&self, ip: IpAddr) -> BTreeSet<u16> {
        if common::port_mode() != "steered" {
            return listening_sockets(ip);
        }
        let seen = self.seen.lock().unwrap().clone();
        seen.into_iter()
            .filter(|&port| {
                TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(1)).is_ok()
            })
            .collect()
    }

    /// A raw API call that must get an answer.
    fn api(&self, name: &str, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.call(name, method, path, body).unwrap_or_else(|e| self.fail(&e))
    }

    fn apps_path(&self) -> String {
        format!("/v2/organisations/{}/applications", self.org)
    }

    fn redirs_path(&self, app: &str) -> String {
        format!("/v2/organisations/{}/applications/{app}/tcpRedirs", self.org)
    }

    /// Creates an application on node `name` with one instance; its id.
    fn create_app(&self, name: &str, app: &str, instance: SocketAddr) -> String {
        let body = json!({"name": app, "instances": [{"address": instance.to_string()}]}).to_string();
        let created = self.api(name, "POST", &self.apps_path(), Some(&body));
        if !matches!(created.status, 200 | 201) {
            self.fail(&format!("create {app} on {name}: status {} {}", created.status, created.text()));
        }
        created.json()["id"].as_str().expect("application id").to_owned()
    }

    /// `Ok` when node `name` knows application `app` (`GET …/applications/{app}` answers 200).
    fn knows_app(&self, name: &str, app: &str) -> Result<(), String> {
        match self.call(name, "GET", &format!("{}/{app}", self.apps_path()), None)? {
            r if r.status == 200 => Ok(()),
            r => Err(format!("node {name} answers {} {}", r.status, r.text())),
        }
    }

    /// Creates an application on node `name`, then waits (bounded) until every running node
    /// knows it, for tests about other things than how fast applications propagate.
    fn create_app_everywhere(&self, name: &str, app: &str, instance: SocketAddr) -> String {
        let id = self.create_app(name, app, instance);
        let running: Vec<String> =
            self.nodes.iter().filter(|n| n.server.is_some()).map(|n| n.name.clone()).collect();
        self.must(PROPAGATION, &format!("every node knows application {app} created on {name}"), || {
            running.iter().try_for_each(|node| self.knows_app(node, &id))
        });
        id
    }

    /// `POST …/tcpRedirs` on node `name`.
    fn add(&self, name: &str, app: &str, namespace: &str) -> HttpResponse {
        self.api(name, "POST", &self.redirs_path(app), Some(&json!({"namespace": namespace}).to_string()))
    }

    /// An add that must succeed; the new redirection's JSON.
    fn add_ok(&self, name: &str, app: &str, namespace: &str) -> Value {
        let added = self.add(name, app, namespace);
        if !matches!(added.status, 200 | 201) {
            self.fail(&format!(
                "add {app} in {namespace} on {name}: status {} {}",
                added.status,
                added.text()
            ));
        }
        added.json()
    }

    /// `DELETE …/tcpRedirs/PORT?namespace=NS` on node `name`.
    fn remove(&self, name: &str, app: &str, namespace: &str, port: u16) -> HttpResponse {
        self.api(name, "DELETE", &format!("{}/{port}?namespace={namespace}", self.redirs_path(app)), None)
    }

    fn remove_ok(&self, name: &str, app: &str, namespace: &str, port: u16) {
        let removed = self.remove(name, app, namespace, port);
        if removed.status != 200 {
            self.fail(&format!(
                "remove {namespace}:{port} of {app} on {name}: status {} {}",
                removed.status,
                removed.text()
            ));
        }
    }

    /// `GET …/tcpRedirs` of `app` on node `name`: the raw redirection objects.
    fn list_json(&self, name: &str, app: &str) -> Result<Vec<Value>, String> {
        let listed = self.call(name, "GET", &self.redirs_path(app), None)?;
        if listed.status != 200 {
            return Err(format!("list of {app} on {name}: status {} {}", listed.status, listed.text()));
        }
        match listed.json() {
            Value::Array(items) => Ok(items),
            other => Err(format!("list of {app} on {name} is not an array: {other}")),
        }
    }

    /// `app`'s (namespace, port) pairs as node `name` lists them, sorted.
    fn list(&self, name: &str, app: &str) -> Result<BTreeSet<(String, u16)>, String> {
        Ok(redirections(&Value::Array(self.list_json(name, app)?)).into_iter().collect())
    }

    /// `GET /v2/nodes` on node `name`.
    fn nodes_json(&self, name: &str) -> Result<Vec<Value>, String> {
        let answer = self.call(name, "GET", "/v2/nodes", None)?;
        if answer.status != 200 {
            return Err(format!("GET /v2/nodes on {name}: status {} {}", answer.status, answer.text()));
        }
        match answer.json() {
            Value::Array(items) => Ok(items),
            other => Err(format!("GET /v2/nodes on {name} is not an array: {other}")),
        }
    }
}

/// The `nodes` field of a redirection as node name → state.
fn node_states(redirection: &Value) -> Result<BTreeMap<String, String>, String> {
    let nodes =
        redirection["nodes"].as_array().ok_or_else(|| format!("no `nodes` array in {redirection}"))?;
    nodes
        .iter()
        .map(|n| match (n["node"].as_str(), n["state"].as_str()) {
            (Some(node), Some(state)) => Ok((node.to_owned(), state.to_owned())),
            _ => Err(format!("a `nodes` entry without string `node` and `state`: {redirection}")),
        })
        .collect()
}

/// `Ok` when each of `names` shows `listening` in the redirection's `nodes`.
fn listening_on(redirection: &Value, names: &[String]) -> Result<(), String> {
    let states = node_states(redirection)?;
    for name in names {
        if states.get(name).map(String::as_str) != Some("listening") {
            return Err(format!("node {name} is not `listening` in {redirection}"));
        }
    }
    Ok(())
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---------------------------------------------------------------------------------------
// The harness itself (needs no fleet mode)
// ---------------------------------------------------------------------------------------

#[test]
fn etcd_harness_starts_and_compacts() {
    let mut etcd = Etcd::start();
    let first = etcd.revision();
    assert!(first >= 1, "a fresh etcd is at revision 1 or more, got {first}");

    let older = etcd.put(b"/harness/k", b"one");
    let newer = etcd.put(b"/harness/k", b"two");
    assert_eq!(newer, older + 1, "each put makes one revision");
    assert_eq!(etcd.revision(), newer);
    assert_eq!(etcd.get_at(b"/harness/k", older).unwrap(), Some(b"one".to_vec()));

    etcd.compact(newer);
    let compacted = etcd.get_at(b"/harness/k", older).expect_err("a read below the compaction must fail");
    assert!(compacted.contains("compacted"), "etcd should say the revision was compacted: {compacted}");
    assert_eq!(etcd.get_at(b"/harness/k", 0).unwrap(), Some(b"two".to_vec()));

    // The proxy forwards, cuts open and new connections, and forwards again.
    let proxy = CutProxy::start(&etcd.endpoint());
    let health = |addr: SocketAddr| http10(addr, "GET", "/health", None, Duration::from_secs(5));
    let (status, body) = health(proxy.addr()).expect("health through the proxy");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""health":"true""#), "{body}");

    let mut held = TcpStream::connect(proxy.addr()).expect("connect through the proxy");
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (_, took) = poll(Duration::from_secs(2), || match proxy.open_connections() {
        1 => Ok(()),
        n => Err(format!("{n} open connections through the proxy")),
    })
    .unwrap();
    eprintln!("[harness] proxy connection registered after {took:?}");
    proxy.cut();
    let mut buf = [0u8; 16];
    match held.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut => {}
        other => panic!("a connection open through a cut proxy must be closed, read gave {other:?}"),
    }
    assert!(health(proxy.addr()).is_err(), "a cut proxy must not forward a new connection");
    proxy.restore();
    let (status, _) = health(proxy.addr()).expect("health through the restored proxy");
    assert_eq!(status, 200);

    // stop keeps the data; restart comes back on the same port with it.
    etcd.stop();
    assert!(!etcd.is_running());
    assert!(health(etcd.addr()).is_err(), "a stopped etcd must not answer");
    etcd.restart();
    assert!(etcd.is_running());
    assert_eq!(etcd.revision(), newer, "the restarted etcd keeps its data");
    assert_eq!(etcd.get_at(b"/harness/k", 0).unwrap(), Some(b"two".to_vec()));
}

// ---------------------------------------------------------------------------------------
// Fleet mode
// ---------------------------------------------------------------------------------------

/// What one worker call did (every field shows in failure messages, through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
struct Op {
    worker: usize,
    node: &'static str,
    action: &'static str,
    app: String,
    namespace: &'static str,
    port: Option<u16>,
    status: u16,
    body: String,
}

#[test]
fn three_nodes_share_one_table_under_concurrent_changes() {
    share_one_table(Fleet::start(
        &[("a", "127.0.1.2", &[]), ("b", "127.0.1.3", &[]), ("c", "127.0.1.4", &[])],
        None,
    ));
}

#[test]
fn three_nodes_share_one_table_under_concurrent_changes_on_etcd_with_tls_and_users() {
    share_one_table(Fleet::start_secure(&[
        ("a", "127.0.11.2", &[]),
        ("b", "127.0.11.3", &[]),
        ("c", "127.0.11.4", &[]),
    ]));
}

/// Concurrent adds and removes from three nodes on one table: every answer holds, every
/// node ends with the same table and forwards every port of it.
fn share_one_table(fleet: Fleet) {
    let names = fleet.names();
    let echo = TcpService::echo();
    const NODES: [&str; 3] = ["a", "b", "c"];

    // 30 applications, created round-robin on the three nodes; each node sees them all.
    let apps: Vec<String> =
        (0..30).map(|i| fleet.create_app(NODES[i % 3], &format!("app-{i:02}"), echo.addr())).collect();
    let all_apps: BTreeSet<&String> = apps.iter().collect();
    for node in NODES {
        fleet.must(PROPAGATION, &format!("node {node} lists the 30 applications"), || {
            let listed = fleet.call(node, "GET", &fleet.apps_path(), None)?.json();
            let ids: BTreeSet<String> = listed
                .as_array()
                .ok_or_else(|| format!("not an array: {listed}"))?
                .iter()
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect();
            let missing: Vec<&&String> = all_apps.iter().filter(|id| !ids.contains(id.as_str())).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("{} missing: {missing:?}", missing.len()))
            }
        });
    }

    // 6 workers x 40 random adds and removes, spread over the three nodes, on the same
    // applications: concurrent changes of one pair from two nodes are the point.
    let ops = Mutex::new(Vec::<Op>::new());
    thread::scope(|scope| {
        for worker in 0..6 {
            let (fleet, apps, ops) = (&fleet, &apps, &ops);
            scope.spawn(move || {
                let mut rng = rand::rng();
                for _ in 0..40 {
                    let node = NODES[rng.random_range(0..3)];
                    let app = &apps[rng.random_range(0..apps.len())];
                    let namespace = NAMESPACES[rng.random_range(0..2)];
                    let op = if rng.random_bool(0.55) {
                        match fleet.call(
                            node,
                            "POST",
                            &fleet.redirs_path(app),
                            Some(&json!({"namespace": namespace}).to_string()),
                        ) {
                            Ok(answer) => Op {
                                worker,
                                node,
                                action: "add",
                                app: app.clone(),
                                namespace,
                                port: serde_json::from_slice::<Value>(&answer.body)
                                    .ok()
                                    .and_then(|b| b.get("port").and_then(Value::as_u64))
                                    .map(|p| p as u16),
                                status: answer.status,
                                body: answer.text(),
                            },
                            Err(e) => Op {
                                worker,
                                node,
                                action: "add",
                                app: app.clone(),
                                namespace,
                                port: None,
                                status: 0,
                                body: e,
                            },
                        }
                    } else {
                        let Ok(listed) = fleet.list(node, app) else { continue };
                        let Some(&(_, port)) = listed.iter().find(|(ns, _)| ns == namespace) else {
                            continue;
                        };
                        let path = format!("{}/{port}?namespace={namespace}", fleet.redirs_path(app));
                        let (status, body) = match fleet.call(node, "DELETE", &path, None) {
                            Ok(answer) => (answer.status, answer.text()),
                            Err(e) => (0, e),
                        };
                        Op {
                            worker,
                            node,
                            action: "remove",
                            app: app.clone(),
                            namespace,
                            port: Some(port),
                            status,
                            body,
                        }
                    };
                    // `add` answers once the port accepts on every live node: check at once
                    // (unless another worker removed it in between). Whether it was removed
                    // is asked of the node that refused: a removal reaches the nodes one
                    // after the other, and a node closes the port only once its own table
                    // dropped the row, so a node that still lists it must accept on it. (The
                    // node that added may not have seen the removal yet: asking it counted a
                    // removal that reached the refusing node first as that node's failure.)
                    if op.action == "add" && matches!(op.status, 200 | 201) {
                        let port = op.port.expect("the port of a successful add");
                        for (name, ip) in NODES.iter().map(|n| (n, fleet.ip(n))) {
                            if let Err(e) = echo_via(ip, port) {
                                let still = fleet
                                    .list(name, app)
                                    .is_ok_and(|l| l.contains(&(namespace.to_owned(), port)));
                                if still {
                                    fleet.problem(format!(
                                        "add of {namespace}:{port} on {node} answered {} before node {name} \
                                         accepted connections on it: {e}",
                                        op.status
                                    ));
                                }
                            }
                        }
                    }
                    ops.lock().unwrap().push(op);
                }
            });
        }
    });
    let ops = ops.into_inner().unwrap();

    // Every answer is one the spec allows: add 201 or 409 id 4090 (the application already
    // has one there, maybe just added through another node); remove 200 or 404 id 4044
    // (another worker removed it first).
    let error_id = |op: &Op| serde_json::from_str::<Value>(&op.body).ok().and_then(|b| b["id"].as_i64());
    let unexpected: Vec<&Op> = ops
        .iter()
        .filter(|op| match op.action {
            "add" => !(matches!(op.status, 200 | 201) || (op.status == 409 && error_id(op) == Some(4090))),
            _ => !(op.status == 200 || (op.status == 404 && error_id(op) == Some(4044))),
        })
        .collect();
    let added: Vec<&Op> =
        ops.iter().filter(|op| op.action == "add" && matches!(op.status, 200 | 201)).collect();
    let removed = ops.iter().filter(|op| op.action == "remove" && op.status == 200).count();
    let conflicts = ops.iter().filter(|op| op.status == 409).count();
    eprintln!(
        "[fleet] {} calls: {} adds succeeded, {conflicts} answered 409, {removed} removes succeeded",
        ops.len(),
        added.len()
    );
    if !unexpected.is_empty() {
        fleet.fail(&format!(
            "{} calls got an answer the spec does not allow: {unexpected:#?}",
            unexpected.len()
        ));
    }
    // Each successful add answered with per-node states; none may be `unbound` (no other
    // program holds these addresses).
    let mut not_listening = Vec::new();
    for op in &added {
        let answer: Value = serde_json::from_str(&op.body).unwrap();
        match node_states(&answer) {
            Ok(states) if states.values().all(|s| s == "listening") && states.len() == 3 => {}
            Ok(states) => {
                not_listening.push(format!("{} {}:{:?} -> {states:?}", op.node, op.namespace, op.port))
            }
            Err(e) => fleet.fail(&e),
        }
    }
    if !not_listening.is_empty() {
        eprintln!("[fleet] adds that answered before every node listened: {not_listening:#?}");
        let unbound: Vec<&String> = not_listening.iter().filter(|s| s.contains("unbound")).collect();
        if !unbound.is_empty() {
            fleet.problem(format!(
                "{} adds answered `unbound` for a node although nothing else holds these addresses: {unbound:#?}",
                unbound.len()
            ));
        }
    }

    // The three nodes converge on one table.
    let table = fleet.must(Duration::from_secs(3), "the three nodes list the same table", || {
        let mut tables = Vec::new();
        for node in NODES {
            let mut table = BTreeMap::new();
            for app in &apps {
                table.insert(app.clone(), fleet.list_json(node, app)?);
            }
            tables.push(table);
        }
        let pairs = |t: &BTreeMap<String, Vec<Value>>| -> BTreeMap<String, BTreeSet<(String, u16)>> {
            t.iter()
                .map(|(app, l)| (app.clone(), redirections(&Value::Array(l.clone())).into_iter().collect()))
                .collect()
        };
        let (a, b, c) = (pairs(&tables[0]), pairs(&tables[1]), pairs(&tables[2]));
        if a != b || a != c {
            let differ: Vec<&String> =
                apps.iter().filter(|app| a[*app] != b[*app] || a[*app] != c[*app]).collect();
            return Err(format!(
                "they differ on {differ:?}: a {:?} / b {:?} / c {:?}",
                differ.first().map(|x| &a[*x]),
                differ.first().map(|x| &b[*x]),
                differ.first().map(|x| &c[*x])
            ));
        }
        Ok(tables.swap_remove(0))
    });

    // One redirection at most per application and namespace; no (namespace, port) twice.
    let mut holders: HashMap<(String, u16), Vec<&String>> = HashMap::new();
    for (app, list) in &table {
        let pairs = redirections(&Value::Array(list.clone()));
        for namespace in NAMESPACES {
            let n = pairs.iter().filter(|(ns, _)| ns == namespace).count();
            if n > 1 {
                fleet.fail(&format!("{app} has {n} redirections in {namespace}: {pairs:?}"));
            }
        }
        for pair in pairs {
            holders.entry(pair).or_default().push(app);
        }
    }
    let doubles: Vec<_> = holders.iter().filter(|(_, apps)| apps.len() > 1).collect();
    if !doubles.is_empty() {
        fleet.fail(&format!("ports given twice in a namespace: {doubles:?}"));
    }
    let live: BTreeSet<u16> = holders.keys().map(|(_, port)| *port).collect();
    eprintln!("[fleet] {} redirections live at the end", holders.len());

    // Every node reports listening on every redirection.
    fleet.must(Duration::from_secs(3), "every listed redirection shows a, b and c `listening`", || {
        for app in &apps {
            for redirection in fleet.list_json("a", app)? {
                listening_on(&redirection, &names)?;
            }
        }
        Ok(())
    });

    // Every listed port forwards through each node's address.
    for node in &fleet.nodes {
        for &port in &live {
            if let Err(e) = echo_via(node.ip, port) {
                fleet.fail(&format!("listed port {port} does not forward through node {}: {e}", node.name));
            }
        }
    }

    // Each node's address has exactly the listed ports listening: nothing removed lingers.
    // A stray listener is shown with the calls that touched its port.
    let history = |port: u16| -> Vec<String> {
        ops.iter()
            .filter(|op| op.port == Some(port))
            .map(|op| format!("{} on {} by worker {} -> {}", op.action, op.node, op.worker, op.status))
            .collect()
    };
    for node in &fleet.nodes {
        let exact = poll(PROPAGATION, || {
            let listening = fleet.listening_ports(node.ip);
            if listening == live {
                Ok(())
            } else {
                let stray: Vec<(u16, Vec<String>)> =
                    listening.difference(&live).map(|&p| (p, history(p))).collect();
                Err(format!(
                    "listening but not listed: {stray:?}; listed but not listening: {:?}",
                    live.difference(&listening).collect::<Vec<_>>()
                ))
            }
        });
        if let Err(e) = exact {
            fleet.problem(format!(
                "node {} listens on exactly the listed ports (within {PROPAGATION:?}): {e}",
                node.name
            ));
        }
    }
    let gone: BTreeSet<u16> = added.iter().filter_map(|op| op.port).filter(|p| !live.contains(p)).collect();
    eprintln!("[fleet] {} ports were added then removed for good", gone.len());
    for node in &fleet.nodes {
        for &port in &gone {
            fleet.check(&format!("removed port {port} on node {}", node.name), refused_via(node.ip, port));
        }
    }
    fleet.finish();
}

#[test]
fn a_change_on_one_node_is_live_on_the_others() {
    live_everywhere(Fleet::start(
        &[("a", "127.0.2.2", &[]), ("b", "127.0.2.3", &[]), ("c", "127.0.2.4", &[])],
        None,
    ));
}

#[test]
fn a_change_on_one_node_is_live_on_the_others_on_etcd_with_tls_and_users() {
    live_everywhere(Fleet::start_secure(&[
        ("a", "127.0.12.2", &[]),
        ("b", "127.0.12.3", &[]),
        ("c", "127.0.12.4", &[]),
    ]));
}

/// A change made on one node (applications, redirections, tokens) is live on the others
/// within [`PROPAGATION`].
fn live_everywhere(fleet: Fleet) {
    let names = fleet.names();
    let echo = TcpService::echo();
    // Any node takes any call: an application created on a is there on c at once.
    let app = fleet.create_app("a", "shared-db", echo.addr());
    fleet.at_once(PROPAGATION, "an application created on a is known on c", || fleet.knows_app("c", &app));
    fleet.must(PROPAGATION, "an application created on a is known on b and c", || {
        fleet.knows_app("b", &app)?;
        fleet.knows_app("c", &app)
    });

    // Added on a: the answer says every node listens, and b and c forward it at once (the
    // add answers once the port accepts on every live node), at the latest within 1 s.
    let added = fleet.add_ok("a", &app, "default");
    let port = port_of(&added);
    fleet.check("the add answers once every live node listens", listening_on(&added, &names));
    for node in ["a", "b", "c"] {
        let ip = fleet.ip(node);
        let what = format!("port {port} added on a forwards through {node}");
        fleet.at_once(PROPAGATION, &what, || echo_via(ip, port));
        fleet.must(PROPAGATION, &what, || echo_via(ip, port));
    }
    for node in ["b", "c"] {
        fleet.must(PROPAGATION, &format!("node {node} lists the redirection added on a"), || {
            match fleet.list(node, &app)? {
                l if l.contains(&("default".to_owned(), port)) => Ok(()),
                l => Err(format!("lists {l:?}")),
            }
        });
    }
    // A second add for the same application and namespace, on another node: 409 id 4090.
    let second = fleet.add("b", &app, "default");
    second.assert_error(409);
    assert_eq!(second.json()["id"], 4090, "{}", second.text());

    // Removed on c: gone from c at once, from a and b within a second.
    fleet.remove_ok("c", &app, "default", port);
    if let Err(e) = refused_via(fleet.ip("c"), port) {
        fleet.fail(&format!("the node that removed the port must have closed it before answering: {e}"));
    }
    for node in ["a", "b"] {
        let ip = fleet.ip(node);
        fleet.must(PROPAGATION, &format!("port {port} removed on c refuses through {node}"), || {
            refused_via(ip, port)
        });
        fleet.must(PROPAGATION, &format!("node {node} no longer lists the removed redirection"), || {
            match fleet.list(node, &app)? {
                l if l.is_empty() => Ok(()),
                l => Err(format!("lists {l:?}")),
            }
        });
    }

    // Organisations and credentials are shared: a token issued on a works on c at once;
    // revoked on c, a refuses it within a second.
    let org = fleet.api("a", "POST", "/v2/organisations", Some(r#"{"name":"acme"}"#)).ok_json();
    let org_id = org["id"].as_str().expect("org id").to_owned();
    let issued = fleet
        .api("a", "POST", &format!("/v2/organisations/{org_id}/tokens"), Some(r#"{"name":"ci"}"#))
        .ok_json();
    let bearer = format!("Bearer {}", issued["token"].as_str().expect("token"));
    let token_id = issued["id"].as_str().expect("token id");
    let as_ci = |node: &str| {
        try_http(fleet.server(node).addr, "GET", "/v2/organisations", Some(&bearer), None, IO_TIMEOUT)
    };
    let works_on_c = || match as_ci("c")? {
        r if r.status == 200 => Ok(r.json()),
        r => Err(format!("status {} {}", r.status, r.text())),
    };
    fleet.at_once(Duration::from_secs(3), "a token issued on a works on c", || works_on_c().map(drop));
    let seen = fleet.must(Duration::from_secs(3), "a token issued on a works on c", works_on_c);
    assert_eq!(seen, json!([{"id": org_id, "name": "acme"}]), "the token sees its organisation only");

    fleet.api("c", "DELETE", &format!("/v2/organisations/{org_id}/tokens/{token_id}"), None).ok_json();
    match as_ci("c") {
        Ok(r) if r.status == 401 => {}
        other => fleet.fail(&format!("the node that revoked the token must refuse it at once: {other:?}")),
    }
    fleet.must(PROPAGATION, "the token revoked on c is refused on a", || match as_ci("a")?.status {
        401 => Ok(()),
        s => Err(format!("a answered {s}")),
    });
    fleet.finish();
}

#[test]
fn a_node_that_was_away_past_a_compaction_resyncs() {
    let fleet = Fleet::start(&[("a", "127.0.3.2", &[]), ("b", "127.0.3.3", &[])], Some("b"));
    let proxy = fleet.proxy.as_ref().expect("b's proxy");
    let echo = TcpService::echo();
    let [x, y, z] = ["x", "y", "z"].map(|name| fleet.create_app_everywhere("a", name, echo.addr()));
    let removed = port_of(&fleet.add_ok("a", &x, "default"));
    let kept = port_of(&fleet.add_ok("a", &y, "cleverapps"));
    let b = fleet.ip("b");
    for port in [removed, kept] {
        fleet.must(PROPAGATION, &format!("port {port} forwards through b before the cut"), || {
            echo_via(b, port)
        });
    }

    // b loses etcd; a removes one redirection and adds another; the history is compacted.
    proxy.cut();
    let before = fleet.etcd.revision();
    fleet.remove_ok("a", &x, "default", removed);
    // An add while b is cut off but still listed up waits for b's word at most its bound
    // (3 s), and its answer does not say b listens.
    let started = Instant::now();
    let added = fleet.add_ok("a", &z, "default");
    let took = started.elapsed();
    let new = port_of(&added);
    eprintln!("[fleet] the add while b was cut off answered in {took:?}: {}", added["nodes"]);
    if took > Duration::from_millis(3500) {
        fleet.problem(format!("an add waited {took:?} for a node cut off from etcd (bound 3 s)"));
    }
    match node_states(&added) {
        Ok(states) if states.get("b").is_none_or(|s| s == "pending") => {}
        other => {
            fleet.problem(format!("the add's answer must not say b listens while b is cut off: {other:?}"))
        }
    }
    // Once b's lease expires, the others list it down, and a change no longer waits for it.
    fleet.must(
        Duration::from_secs(NODE_TTL_SECS + 8),
        "a lists b down once its lease expired",
        || match fleet.nodes_json("a")?.iter().find(|n| n["name"] == "b") {
            Some(node) if node["state"] == "down" => Ok(()),
            other => Err(format!("b is {other:?}")),
        },
    );
    let started = Instant::now();
    let quick = fleet.add_ok("a", &x, "cleverapps");
    let took = started.elapsed();
    if took > Duration::from_secs(1) {
        fleet.problem(format!("an add waited {took:?} for a node listed down"));
    }
    fleet.remove_ok("a", &x, "cleverapps", port_of(&quick));
    // More history than b ever saw, then compacted away.
    for _ in 0..3 {
        let again = fleet.add_ok("a", &x, "cleverapps");
        fleet.remove_ok("a", &x, "cleverapps", port_of(&again));
    }
    let revision = fleet.etcd.revision();
    assert!(revision > before, "the changes made revisions ({before} -> {revision})");
    fleet.etcd.compact(revision);
    // b keeps forwarding what it has meanwhile.
    if let Err(e) = echo_via(b, kept) {
        fleet.fail(&format!("b must keep forwarding while it cannot reach etcd: {e}"));
    }

    // b comes back: it reloads the table and listens on exactly the right ports.
    proxy.restore();
    let want: BTreeSet<u16> = [kept, new].into();
    fleet.must(
        Duration::from_secs(10),
        &format!("b listens on exactly {want:?} after the compaction"),
        || match fleet.listening_ports(b) {
            l if l == want => Ok(()),
            l => Err(format!("b listens on {l:?}")),
        },
    );
    if let Err(e) = echo_via(b, new) {
        fleet.fail(&format!("the port added while b was away must forward through b: {e}"));
    }
    if let Err(e) = refused_via(b, removed) {
        fleet.fail(&format!("the port removed while b was away: {e}"));
    }
    for app in [&x, &y, &z] {
        fleet.must(PROPAGATION, &format!("b lists what a lists for {app}"), || {
            let (on_a, on_b) = (fleet.list("a", app)?, fleet.list("b", app)?);
            if on_a == on_b {
                Ok(())
            } else {
                Err(format!("a {on_a:?}, b {on_b:?}"))
            }
        });
    }
    // b is listed up again, and says it listens on the port added while it was away.
    fleet.must(Duration::from_secs(10), "a lists b up and listening on the new port", || {
        match fleet.nodes_json("a")?.iter().find(|n| n["name"] == "b") {
            Some(node) if node["state"] == "up" => {}
            other => return Err(format!("b is {other:?}")),
        }
        let list = fleet.list_json("a", &z)?;
        let redir = list.iter().find(|r| r["port"] == new).ok_or("z's redirection is not listed")?;
        listening_on(redir, &["b".to_owned()])
    });
    // And b takes part in changes again: an add on b is live on a.
    let again = port_of(&fleet.add_ok("b", &x, "default"));
    let a = fleet.ip("a");
    fleet.must(PROPAGATION, "an add on b after the resync forwards through a", || echo_via(a, again));
    fleet.finish();
}

#[test]
fn a_killed_node_catches_up_and_its_lease_never_removes_redirections() {
    let mut fleet = Fleet::start(&[("a", "127.0.4.2", &[]), ("b", "127.0.4.3", &[])], None);
    let echo = TcpService::echo();
    let [x, y, z] = ["x", "y", "z"].map(|name| fleet.create_app_everywhere("a", name, echo.addr()));
    let (a, b) = (fleet.ip("a"), fleet.ip("b"));
    let by_b = port_of(&fleet.add_ok("b", &x, "default"));
    let by_a = port_of(&fleet.add_ok("a", &y, "default"));
    fleet.must(PROPAGATION, "b's redirection forwards through a", || echo_via(a, by_b));

    // kill -9 b, then change the table while it is dead.
    fleet.kill("b");
    let killed_at = Instant::now();
    fleet.remove_ok("a", &y, "default", by_a);
    let while_dead = port_of(&fleet.add_ok("a", &z, "cleverapps"));

    // Its lease expires: a shows it down within TTL + 3 s...
    let limit = Duration::from_secs(NODE_TTL_SECS + 3).saturating_sub(killed_at.elapsed());
    fleet.must(limit, "a shows b `down` within TTL + 3 s of the kill", || {
        let nodes = fleet.nodes_json("a")?;
        match nodes.iter().find(|n| n["name"] == "b") {
            Some(n) if n["state"] == "down" => Ok(()),
            other => Err(format!("b is {other:?} in {nodes:?}")),
        }
    });
    let cli = fleet.server("a").cli_json(&["nodes", "-F", "json"]);
    let b_entry = cli.as_array().and_then(|l| l.iter().find(|n| n["name"] == "b")).cloned();
    assert_eq!(
        b_entry.as_ref().map(|n| n["state"].clone()),
        Some(json!("down")),
        "`nodes -F json` on a: {cli}"
    );
    // Each node says how its ports listen: the mode this run gave its servers.
    for node in cli.as_array().into_iter().flatten() {
        assert_eq!(node["portMode"], json!(common::port_mode()), "`nodes -F json` on a: {cli}");
    }
    let table = fleet.server("a").cli_ok(&["nodes"]);
    assert!(table.contains("MODE") && table.contains(&common::port_mode()), "`nodes` on a:\n{table}");

    // ...and that removes nothing: what b created is still listed and still forwards via a.
    match fleet.list("a", &x) {
        Ok(l) if l == BTreeSet::from([("default".to_owned(), by_b)]) => {}
        other => fleet.fail(&format!("b's redirection must outlive b's lease; a lists {other:?}")),
    }
    if let Err(e) = echo_via(a, by_b) {
        fleet.fail(&format!("b's redirection must keep forwarding through a after b's lease expired: {e}"));
    }
    for port in [by_b, while_dead] {
        if let Err(e) = echo_via(a, port) {
            fleet.fail(&format!("port {port} through a: {e}"));
        }
    }

    // b comes back with the same arguments: it serves the table as it is now, from the moment
    // it says it is ready (as a single server does: every stored redirection listens again).
    fleet.restart("b");
    let want: BTreeSet<u16> = [by_b, while_dead].into();
    let exactly = || match fleet.listening_ports(b) {
        l if l == want => Ok(()),
        l => Err(format!("b listens on {l:?}")),
    };
    let what = format!("the restarted b, once ready, listens on exactly {want:?}");
    fleet.at_once(PROPAGATION, &what, exactly);
    fleet.must(PROPAGATION, &what, exactly);
    for port in [by_b, while_dead] {
        if let Err(e) = echo_via(b, port) {
            fleet.fail(&format!("port {port} through the restarted b: {e}"));
        }
    }
    if let Err(e) = refused_via(b, by_a) {
        fleet.fail(&format!("the port removed while b was dead: {e}"));
    }
    // A node that said it is ready takes part at once: an add on a waits for it, so the new
    // port accepts through b when the add answers.
    let fresh = fleet.add_ok("a", &y, "default");
    fleet.check(
        "an add right after b restarted answers: listening on a and b",
        listening_on(&fresh, &fleet.names()),
    );
    let fresh = port_of(&fresh);
    let what = format!("port {fresh}, added on a right after b restarted, forwards through b");
    fleet.at_once(PROPAGATION, &what, || echo_via(b, fresh));
    fleet.must(PROPAGATION, &what, || echo_via(b, fresh));
    fleet.must(Duration::from_secs(NODE_TTL_SECS + 1), "a shows b `up` again", || {
        let nodes = fleet.nodes_json("a")?;
        match nodes.iter().find(|n| n["name"] == "b") {
            Some(n) if n["state"] == "up" => Ok(()),
            other => Err(format!("b is {other:?}")),
        }
    });
    match fleet.list("b", &z) {
        Ok(l) if l == BTreeSet::from([("cleverapps".to_owned(), while_dead)]) => {}
        other => fleet.fail(&format!("the restarted b lists for z: {other:?}")),
    }
    fleet.finish();
}

#[test]
fn etcd_down_keeps_forwarding_and_refuses_changes_with_503() {
    let mut fleet = Fleet::start(&[("a", "127.0.5.2", &[]), ("b", "127.0.5.3", &[])], None);
    let echo = TcpService::echo();
    let [x, y] = ["x", "y"].map(|name| fleet.create_app_everywhere("a", name, echo.addr()));
    let (a, b) = (fleet.ip("a"), fleet.ip("b"));
    let port = port_of(&fleet.add_ok("a", &x, "default"));
    fleet.must(PROPAGATION, "the port forwards through b", || echo_via(b, port));

    // A connection open through a before etcd goes.
    let mut open =
        TcpStream::connect_timeout(&SocketAddr::new(a, port), Duration::from_secs(2)).expect("connect");
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let round_trip = |stream: &mut TcpStream, what: &str| {
        let data = random_bytes(32);
        let mut back = [0u8; 32];
        let result = stream.write_all(&data).and_then(|_| stream.read_exact(&mut back));
        match result {
            Ok(()) if back[..] == data[..] => Ok(()),
            Ok(()) => Err(format!("{what}: the echo differs")),
            Err(e) => Err(format!("{what}: {e}")),
        }
    };
    round_trip(&mut open, "before etcd stops").unwrap();

    fleet.etcd.stop();

    if let Err(e) = round_trip(&mut open, "the open connection once etcd is down") {
        fleet.fail(&e);
    }
    for (name, ip) in [("a", a), ("b", b)] {
        if let Err(e) = echo_via(ip, port) {
            fleet.fail(&format!("a new connection through {name} with etcd down: {e}"));
        }
    }

    // Changes answer 503 id 5030 naming etcd; reads answer from the node's copy.
    let check_503 = |node: &str, method: &str, path: &str, body: Option<&str>| {
        let started = Instant::now();
        let answer = fleet.call(node, method, path, body).unwrap_or_else(|e| fleet.fail(&e));
        eprintln!("[fleet] {method} {path} on {node} with etcd down answered in {:?}", started.elapsed());
        if answer.status != 503 {
            fleet.fail(&format!(
                "{method} {path} on {node} with etcd down must answer 503, got {} {}",
                answer.status,
                answer.text()
            ));
        }
        let error = answer.json();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["id"], 5030, "{error}");
        let message = error["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(message.contains("etcd"), "the message must name the store: {error}");
    };
    check_503("a", "POST", &fleet.redirs_path(&y), Some(r#"{"namespace":"default"}"#));
    check_503("b", "POST", &fleet.redirs_path(&y), Some(r#"{"namespace":"cleverapps"}"#));
    check_503("b", "DELETE", &format!("{}/{port}?namespace=default", fleet.redirs_path(&x)), None);
    let body = json!({"name": "while-down", "instances": [{"address": echo.addr().to_string()}]}).to_string();
    check_503("a", "POST", &fleet.apps_path(), Some(&body));
    for node in ["a", "b"] {
        match fleet.list(node, &x) {
            Ok(l) if l == BTreeSet::from([("default".to_owned(), port)]) => {}
            other => fleet.fail(&format!("the list on {node} with etcd down: {other:?}")),
        }
        let apps = fleet.api(node, "GET", &fleet.apps_path(), None);
        assert_eq!(apps.status, 200, "applications on {node} with etcd down: {}", apps.text());
    }

    // etcd comes back on the same port and data: the nodes resync without a restart.
    fleet.etcd.restart();
    let started = Instant::now();
    let (added, took) = poll(Duration::from_secs(15), || {
        let answer = try_http(
            fleet.server("a").addr,
            "POST",
            &fleet.redirs_path(&y),
            Some(&format!("Bearer {}", fleet.token)),
            Some(r#"{"namespace":"default"}"#),
            Duration::from_secs(5),
        )?;
        match answer.status {
            200 | 201 => Ok(answer.json()),
            503 => Err(format!("still 503: {}", answer.text())),
            // Anything else (a 409 would mean that a refused add was applied after all) ends it.
            s => Err(format!("FATAL {s}: {}", answer.text())),
        }
    })
    .unwrap_or_else(|e| fleet.fail(&format!("an add on a once etcd is back (15 s): {e}")));
    eprintln!(
        "[fleet] the first add after etcd came back succeeded {took:?} after the restart ({:?})",
        started.elapsed()
    );
    let new = port_of(&added);
    fleet.must(PROPAGATION, "the add made after etcd came back forwards through b", || echo_via(b, new));
    for node in ["a", "b"] {
        fleet.must(PROPAGATION, &format!("{node} lists y's one redirection"), || {
            match fleet.list(node, &y)? {
                l if l == BTreeSet::from([("default".to_owned(), new)]) => Ok(()),
                l => Err(format!("lists {l:?}")),
            }
        });
    }
    if let Err(e) = round_trip(&mut open, "the open connection once etcd is back") {
        fleet.fail(&e);
    }
    if let Err(e) = echo_via(b, port) {
        fleet.fail(&format!("the first port through b once etcd is back: {e}"));
    }
    fleet.finish();
}

/// A node restarted while the lease of its previous run still lives (killed less than one
/// TTL ago) is waited for from the moment it says it is ready, and the old lease, when it
/// expires, does not mark the new run down: `alive/{name}` is bound to the newest lease.
#[test]
fn a_node_restarted_within_its_lease_is_waited_for_and_stays_up() {
    let mut fleet = Fleet::start(&[("a", "127.0.13.2", &[]), ("b", "127.0.13.3", &[])], None);
    let echo = TcpService::echo();
    let b = fleet.ip("b");
    let names = fleet.names();
    let apps: Vec<String> =
        (0..3).map(|i| fleet.create_app_everywhere("a", &format!("app-{i}"), echo.addr())).collect();
    for (round, app) in apps.iter().enumerate() {
        fleet.kill("b");
        let killed = Instant::now();
        fleet.restart("b");
        let restarted_in = killed.elapsed();
        eprintln!("[fleet] round {round}: b killed and ready again in {restarted_in:?}");
        // The test's own premise: b came back while its previous lease still lives.
        assert!(
            restarted_in < Duration::from_secs(NODE_TTL_SECS),
            "round {round}: b took {restarted_in:?} to restart, not within its {NODE_TTL_SECS} s lease"
        );
        let added = fleet.add_ok("a", app, "default");
        fleet.check(
            &format!("round {round}: an add right after b restarted (in {restarted_in:?}) waits for b"),
            listening_on(&added, &names),
        );
        let port = port_of(&added);
        let what = format!("round {round}: port {port}, added on a as b came back, forwards through b");
        fleet.at_once(PROPAGATION, &what, || echo_via(b, port));
        fleet.must(PROPAGATION, &what, || echo_via(b, port));
    }
    // Past the last killed run's lease, b must still be up, and still be waited for.
    let stayed_up = hold(Duration::from_secs(NODE_TTL_SECS + 1), || {
        match fleet.nodes_json("a").map(|nodes| nodes.into_iter().find(|n| n["name"] == "b")) {
            Ok(Some(n)) if n["state"] == "up" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    if let Err(e) = stayed_up {
        fleet.fail(&format!("b must stay `up` once the old run's lease expires: {e}"));
    }
    let again = fleet.add_ok("a", &apps[0], "cleverapps");
    fleet.check("an add after the old lease expired still waits for b", listening_on(&again, &names));
    fleet.finish();
}

/// etcd forgets its auth tokens when it restarts: a node logged in as a user logs in again
/// and goes on, without a restart of its own.
#[test]
fn a_fleet_logged_in_to_etcd_outlives_an_etcd_restart() {
    let mut fleet = Fleet::start_secure(&[("a", "127.0.14.2", &[]), ("b", "127.0.14.3", &[])]);
    let echo = TcpService::echo();
    let names = fleet.names();
    let [x, y, z] = ["x", "y", "z"].map(|name| fleet.create_app_everywhere("a", name, echo.addr()));
    let before = port_of(&fleet.add_ok("a", &x, "default"));
    fleet.etcd.restart();
    for (node, app) in [("b", &y), ("a", &z)] {
        let added =
            fleet.must(Duration::from_secs(10), &format!("an add on {node} after etcd restarted"), || {
                match fleet.add(node, app, "default") {
                    r if r.status == 201 => Ok(r.json()),
                    // A 503 made nothing (an add that may have been made answers otherwise):
                    // ask again, until etcd is back.
                    r if r.status == 503 && r.json()["id"] == 5030 => Err(format!("503 {}", r.text())),
                    r => Err(format!("FATAL: status {} {}", r.status, r.text())),
                }
            });
        fleet.check(
            &format!("the add on {node} after etcd restarted waits for every node"),
            listening_on(&added, &names),
        );
        let port = port_of(&added);
        for other in ["a", "b"] {
            let ip = fleet.ip(other);
            fleet.must(PROPAGATION, &format!("port {port} added on {node} forwards through {other}"), || {
                echo_via(ip, port)
            });
        }
    }
    for node in ["a", "b"] {
        let ip = fleet.ip(node);
        if let Err(e) = echo_via(ip, before) {
            fleet.fail(&format!("port {before}, added before etcd restarted, through {node}: {e}"));
        }
    }
    fleet.finish();
}

#[test]
fn nodes_lists_the_fleet() {
    let fleet = Fleet::start(
        &[
            ("alpha", "127.0.6.2", &[]),
            ("bravo", "127.0.6.3", &[]),
            ("charlie", "127.0.6.4", &["--namespaces", "default"]),
        ],
        None,
    );
    let echo = TcpService::echo();
    let expected_namespaces = |name: &str| -> Value {
        if name == "charlie" {
            json!(["default"])
        } else {
            json!(["cleverapps", "default"])
        }
    };
    let check = |nodes: &Value, ports: [u64; 3]| -> Result<(), String> {
        let list = nodes.as_array().ok_or_else(|| format!("not an array: {nodes}"))?;
        let names: Vec<&str> = list.iter().filter_map(|n| n["name"].as_str()).collect();
        if names != ["alpha", "bravo", "charlie"] {
            return Err(format!("names (sorted) {names:?} in {nodes}"));
        }
        for (node, want_ports) in list.iter().zip(ports) {
            let name = node["name"].as_str().unwrap();
            let ip = fleet.ip(name).to_string();
            if node["publicAddress"] != ip.as_str()
                || node["state"] != "up"
                || node["namespaces"] != expected_namespaces(name)
                || node["ports"] != want_ports
                || node["unbound"] != 0
            {
                return Err(format!(
                    "{name}: want publicAddress {ip}, state up, namespaces {}, ports {want_ports}, unbound 0; got {node}",
                    expected_namespaces(name)
                ));
            }
            let seen = node["lastSeen"].as_i64().ok_or_else(|| format!("no integer lastSeen: {node}"))?;
            if (seen - now_unix()).abs() > 30 {
                return Err(format!("{name}: lastSeen {seen} is not about now ({})", now_unix()));
            }
        }
        Ok(())
    };
    // Every node that said it is ready is in the fleet.
    let listed = || check(&fleet.server("alpha").cli_json(&["nodes", "-F", "json"]), [0, 0, 0]);
    let what = "`tcp-redirs nodes -F json` on alpha, once the three nodes are ready, lists them up";
    fleet.at_once(PROPAGATION, what, listed);
    fleet.must(PROPAGATION, what, listed);
    fleet.must(PROPAGATION, "GET /v2/nodes on bravo shows the same fleet", || {
        check(&Value::Array(fleet.nodes_json("bravo")?), [0, 0, 0])
    });
    let human = fleet.server("charlie").cli_ok(&["nodes"]);
    for name in ["alpha", "bravo", "charlie", "127.0.6.2", "127.0.6.3", "127.0.6.4", "up"] {
        assert!(human.contains(name), "`tcp-redirs nodes` should show {name}:\n{human}");
    }

    // One redirection per namespace: charlie serves `default` only.
    let app = fleet.create_app_everywhere("alpha", "db", echo.addr());
    let in_default = fleet.add_ok("bravo", &app, "default");
    let in_cleverapps = fleet.add_ok("bravo", &app, "cleverapps");
    let names = fleet.names();
    fleet.check(
        "the add of a default port answers: listening on the three nodes",
        listening_on(&in_default, &names),
    );
    let two = ["alpha".to_owned(), "bravo".to_owned()];
    fleet.check(
        "the add of a cleverapps port answers: listening on alpha and bravo",
        listening_on(&in_cleverapps, &two),
    );
    if node_states(&in_cleverapps).unwrap_or_default().get("charlie").map(String::as_str) == Some("listening")
    {
        fleet.problem(format!("charlie does not serve cleverapps, yet: {in_cleverapps}"));
    }
    let (default_port, cleverapps_port) = (port_of(&in_default), port_of(&in_cleverapps));
    for name in ["alpha", "bravo", "charlie"] {
        fleet.check(&format!("the default port through {name}"), echo_via(fleet.ip(name), default_port));
    }
    for name in ["alpha", "bravo"] {
        fleet
            .check(&format!("the cleverapps port through {name}"), echo_via(fleet.ip(name), cleverapps_port));
    }
    fleet.check("charlie does not serve cleverapps", refused_via(fleet.ip("charlie"), cleverapps_port));
    fleet.must(Duration::from_secs(NODE_TTL_SECS + 1), "`nodes` counts each node's ports", || {
        check(&fleet.server("charlie").cli_json(&["nodes", "-F", "json"]), [2, 2, 1])
    });
    fleet.finish();
}

#[test]
fn a_single_server_set_up_moves_to_the_fleet_with_its_ports() {
    // The single server, on SQLite, with an application and a redirection per namespace.
    let echo = TcpService::echo();
    let single = Server::builder().ip("127.0.7.1").start();
    single.create_app("db", echo.addr());
    let ports: BTreeSet<(String, u16)> =
        NAMESPACES.iter().map(|ns| (ns.to_string(), single.add("db", ns))).collect();
    let exported = single.cli_ok(&["export"]);
    drop(single);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("setup.toml");
    std::fs::write(&file, &exported).unwrap();

    // `apply` against one node of the fleet: the same ports, live on every node.
    let fleet = Fleet::start(&[("a", "127.0.7.2", &[]), ("b", "127.0.7.3", &[])], None);
    fleet.server("a").cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let apps = fleet.server("b").cli_json(&["apps", "list", "-F", "json"]);
    let id = apps
        .as_array()
        .and_then(|list| list.iter().find(|a| a["name"] == "db"))
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| fleet.fail(&format!("b does not list application db: {apps}")))
        .to_owned();
    fleet.must(PROPAGATION, "b lists db's redirections on the single server's ports", || {
        match fleet.list("b", &id)? {
            listed if listed == ports => Ok(()),
            listed => Err(format!("lists {listed:?}, the single server had {ports:?}")),
        }
    });
    for (_, port) in &ports {
        for node in ["a", "b"] {
            fleet.must(PROPAGATION, &format!("port {port} forwards through {node}"), || {
                echo_via(fleet.ip(node), *port)
            });
        }
    }
    // A second apply of the same file changes nothing.
    let again = fleet.server("b").cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    assert_eq!(again["changes"], json!([]), "{again}");
    fleet.finish();
}

/// Losing the store never ends a node: etcd goes away at each moment of a node's start
/// (before the node starts; once it has loaded the table, as it registers; once it is
/// registered and ready), the node waits it out, and once etcd is back it forwards, is
/// listed up and takes changes, with no restart. The moments are the node's own log lines,
/// so the test acts at each one.
#[test]
fn a_node_waits_out_etcd_lost_at_any_moment_of_its_start() {
    let mut fleet = Fleet::start(&[("a", "127.0.8.2", &[]), ("b", "127.0.8.3", &[])], None);
    let echo = TcpService::echo();
    let x = fleet.create_app_everywhere("a", "x", echo.addr());
    let port = port_of(&fleet.add_ok("a", &x, "default"));
    let b = fleet.ip("b");
    fleet.must(PROPAGATION, "x's port forwards through b", || echo_via(b, port));
    let moments: [(&str, Option<&str>); 3] = [
        ("before it starts", None),
        ("once it loaded the table", Some("table loaded from the store")),
        // Registration runs beside the rest of the start (its line may come after this
        // one): the node is ready only once it is listed, so this is after registration.
        ("once it is ready", Some("control API listening on")),
    ];
    let waiting =
        ["the store cannot be reached; waiting for it", "cannot register this node in the fleet yet"];
    for (i, (moment, marker)) in moments.into_iter().enumerate() {
        fleet.kill("b");
        let mut gone = false;
        if marker.is_none() {
            fleet.etcd.stop();
            gone = true;
        }
        let mut waited = false;
        fleet.restart_watching("b", |line, etcd| {
            if !gone && marker.is_some_and(|m| line.contains(m)) {
                etcd.stop();
                gone = true;
            } else if gone && !waited && waiting.iter().any(|w| line.contains(w)) {
                // The node says it waits for the store: bring etcd back.
                waited = true;
                etcd.restart();
            }
        });
        if !gone {
            fleet.fail(&format!("etcd was never stopped {moment}: the node did not log its marker"));
        }
        if !fleet.etcd.is_running() {
            // The node was ready before it noticed (it serves from its copy meanwhile).
            fleet.etcd.restart();
        }
        eprintln!("[fleet] b started with etcd lost {moment}; the node waited: {waited}");
        fleet.must(
            Duration::from_secs(20),
            &format!("b forwards x's port after etcd was lost {moment}"),
            || echo_via(b, port),
        );
        fleet.must(Duration::from_secs(20), &format!("a lists b up after etcd was lost {moment}"), || {
            let nodes = fleet.nodes_json("a")?;
            match nodes.iter().find(|n| n["name"] == "b") {
                Some(node) if node["state"] == "up" => Ok(()),
                other => Err(format!("b is {other:?}")),
            }
        });
        let body =
            json!({"name": format!("y{i}"), "instances": [{"address": echo.addr().to_string()}]}).to_string();
        let y = fleet.must(
            Duration::from_secs(20),
            &format!("an application made on b after etcd was lost {moment}"),
            || {
                let answer = fleet.call("b", "POST", &fleet.apps_path(), Some(&body))?;
                match answer.status {
                    200 | 201 => Ok(answer.json()["id"].as_str().unwrap_or_default().to_owned()),
                    503 => Err(format!("still 503: {}", answer.text())),
                    s => Err(format!("FATAL {s}: {}", answer.text())),
                }
            },
        );
        let made =
            fleet.must(Duration::from_secs(20), &format!("an add on b after etcd was lost {moment}"), || {
                let answer =
                    fleet.call("b", "POST", &fleet.redirs_path(&y), Some(r#"{"namespace":"default"}"#))?;
                match answer.status {
                    201 => Ok(answer.json()),
                    503 => Err(format!("still 503: {}", answer.text())),
                    s => Err(format!("FATAL {s}: {}", answer.text())),
                }
            });
        let new = port_of(&made);
        fleet.must(PROPAGATION, &format!("b's add forwards through a ({moment})"), || {
            echo_via(fleet.ip("a"), new)
        });
    }
    fleet.finish();
}

/// A UDP redirection added on one node answers datagrams on all three (each node binds the
/// port on its own address), and removed on another, closes everywhere.
#[test]
fn a_udp_redirection_added_on_one_node_answers_on_all_three() {
    let fleet =
        Fleet::start(&[("a", "127.0.15.2", &[]), ("b", "127.0.15.3", &[]), ("c", "127.0.15.4", &[])], None);
    let names = fleet.names();
    let echo = UdpEcho::start();
    let app = fleet.create_app_everywhere("a", "dns", echo.addr());
    let path = fleet.redirs_path(&app).replace("tcpRedirs", "udpRedirs");
    let added = fleet.api("a", "POST", &path, Some(r#"{"namespace":"default"}"#));
    if added.status != 201 {
        fleet.fail(&format!("add a UDP redirection on a: status {} {}", added.status, added.text()));
    }
    let added = added.json();
    let port = port_of(&added);
    fleet.check("the add answers once every live node listens", listening_on(&added, &names));
    let answers = |ip: IpAddr| -> Result<(), String> {
        let client = udp_client(ip, port);
        client.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
        match udp_round_trip(&client, b"who is there?") {
            Ok(back) if back == b"who is there?" => Ok(()),
            Ok(back) => Err(format!("answered {back:?}")),
            Err(e) => Err(e.to_string()),
        }
    };
    for node in ["a", "b", "c"] {
        let ip = fleet.ip(node);
        fleet
            .must(PROPAGATION, &format!("UDP port {port} added on a answers through {node}"), || answers(ip));
    }
    let removed = fleet.api("b", "DELETE", &format!("{path}/{port}?namespace=default"), None);
    if removed.status != 200 {
        fleet.fail(&format!("remove the UDP redirection on b: status {} {}", removed.status, removed.text()));
    }
    for node in ["a", "b", "c"] {
        let ip = fleet.ip(node);
        fleet.must(
            PROPAGATION,
            &format!("UDP port {port} removed on b is closed on {node}"),
            || match answers(ip) {
                Err(e) if e.contains("refused") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    fleet.finish();
}

// ---------------------------------------------------------------------------------------
// Partitions (issue 31): a node cut off from etcd while the others go on
// ---------------------------------------------------------------------------------------

/// A service that answers every connection with its tag and closes it: which application a
/// connection reached. Its thread ends with the test process.
struct Tagged {
    addr: SocketAddr,
}

impl Tagged {
    fn start(tag: &'static str) -> Tagged {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a tagged service");
        let addr = listener.local_addr().expect("its address");
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(tag.as_bytes());
            }
        });
        Tagged { addr }
    }
}

/// Which application a new connection to ip:port reached: its tag, or `None` when none
/// answered (refused, reset, or closed without a byte).
fn reached(ip: IpAddr, port: u16) -> Option<String> {
    let addr = SocketAddr::new(ip, port);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut back = Vec::new();
    let _ = stream.read_to_end(&mut back);
    (!back.is_empty()).then(|| String::from_utf8_lossy(&back).into_owned())
}

/// `Ok` when a new connection to ip:port reaches the application tagged `tag`.
fn reaches(ip: IpAddr, port: u16, tag: &str) -> Result<(), String> {
    match reached(ip, port) {
        Some(t) if t == tag => Ok(()),
        other => Err(format!("{ip}:{port} reached {other:?}, not {tag}")),
    }
}

impl Fleet {
    /// `POST …/tcpRedirs` of `app` on node `name` with `body`'s fields beside the namespace.
    fn add_with(&self, name: &str, app: &str, body: Value) -> HttpResponse {
        self.api(name, "POST", &self.redirs_path(app), Some(&body.to_string()))
    }

    /// The keys under the fleet's prefix that start with `kind/` (etcd's JSON gateway).
    fn etcd_keys(&self, kind: &str) -> Vec<String> {
        let prefix = format!("tcp-redirs/{kind}/");
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().unwrap() += 1;
        let body = json!({"key": common::etcd::base64(prefix.as_bytes()), "range_end": common::etcd::base64(&end), "keys_only": true});
        let answer = self.etcd.gateway("/v3/kv/range", &body).unwrap_or_else(|e| self.fail(&e));
        answer["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .filter_map(|kv| kv["key"].as_str().and_then(common::etcd::unbase64))
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The shape of issue 31: three nodes, n1 reaching etcd through a relay that is partitioned
/// (bytes stop, connections stay open). While n1 is cut off, n2 removes application A's
/// port P and is asked to give P to B, by number and by a range of P alone. Whatever is
/// acknowledged, no new connection to P on n1 may reach A once another application holds
/// P; the design (docs/fleet.md, "Partitions") refuses both adds with 409 until n1 has
/// confirmed the removal. n1 keeps forwarding, its writes answer 503 within 5 s, the others
/// list it down; after the heal it converges within 10 s, and B then gets P.
#[test]
fn a_node_cut_off_from_etcd_never_leads_a_port_to_an_application_that_no_longer_holds_it() {
    let fleet = Fleet::start(
        &[("n1", "127.0.21.2", &[]), ("n2", "127.0.21.3", &[]), ("n3", "127.0.21.4", &[])],
        Some("n1"),
    );
    let proxy = fleet.proxy.as_ref().expect("n1's relay");
    let (tag_a, tag_b, tag_c, tag_d) =
        (Tagged::start("A"), Tagged::start("B"), Tagged::start("C"), Tagged::start("D"));
    let a = fleet.create_app_everywhere("n2", "tenant-a", tag_a.addr);
    let b = fleet.create_app_everywhere("n2", "tenant-b", tag_b.addr);
    let c = fleet.create_app_everywhere("n2", "tenant-c", tag_c.addr);
    let d = fleet.create_app_everywhere("n2", "tenant-d", tag_d.addr);
    let p = port_of(&fleet.add_ok("n2", &a, "default"));
    let kept = port_of(&fleet.add_ok("n2", &c, "cleverapps"));
    let (n1, n2) = (fleet.ip("n1"), fleet.ip("n2"));
    fleet.must(PROPAGATION, "P leads to A through n1 before the partition", || reaches(n1, p, "A"));
    fleet.must(PROPAGATION, "C's port leads to C through n1 before the partition", || reaches(n1, kept, "C"));

    proxy.partition();
    let cut_at = Instant::now();
    // A write on n1 answers 503, and soon.
    let started = Instant::now();
    let body = json!({"name": "written-on-the-cut-node", "instances": []}).to_string();
    let write = fleet.call("n1", "POST", &fleet.apps_path(), Some(&body));
    let took = started.elapsed();
    eprintln!(
        "[partition] MEASURE a write on the cut-off node answered {:?} in {took:?}",
        write.as_ref().map(|r| r.status)
    );
    match &write {
        Ok(r) if r.status == 503 && took <= Duration::from_secs(5) => {}
        other => fleet.problem(format!(
            "a write on the cut-off node must answer 503 within 5 s: {:?} after {took:?}",
            other.as_ref().map(|r| (r.status, r.text()))
        )),
    }

    // n2 removes A's port, then is asked to give it to B, and to D by a range of P alone.
    fleet.remove_ok("n2", &a, "default", p);
    let explicit = fleet.add_with("n2", &b, json!({"namespace": "default", "port": p}));
    let ranged = fleet.add_with("n2", &d, json!({"namespace": "default", "minPort": p, "maxPort": p}));
    eprintln!(
        "[partition] while n1 is cut off: add B --port {p}: {} {}; add D in {p}-{p}: {} {}",
        explicit.status,
        explicit.text(),
        ranged.status,
        ranged.text()
    );
    let holder = match (explicit.status, ranged.status) {
        (200 | 201, _) => Some("B"),
        (_, 200 | 201) => Some("D"),
        _ => None,
    };
    if explicit.status != 409 || !explicit.text().contains("n1") {
        fleet.problem(format!(
            "an explicit port whose removal n1 has not confirmed must answer 409 naming n1: {} {}",
            explicit.status,
            explicit.text()
        ));
    }
    if ranged.status != 409 {
        fleet.problem(format!(
            "a pick among ports whose removal n1 has not confirmed must skip them: {} {}",
            ranged.status,
            ranged.text()
        ));
    }
    // The others take writes: a random add on n3 works.
    let other = fleet.add_with("n3", &d, json!({"namespace": "cleverapps"}));
    if !matches!(other.status, 200 | 201) {
        fleet.problem(format!("a random add on n3 during the partition: {} {}", other.status, other.text()));
    }

    // For the partition's length: no connection to P on n1 reaches A once P is another's;
    // n1 keeps forwarding C's port.
    let (mut to_a, mut to_other, mut to_none, mut kept_ok, mut probes) = (0, 0, 0, 0, 0);
    let mut down_after = None;
    while cut_at.elapsed() < Duration::from_secs(7) {
        probes += 1;
        match reached(n1, p).as_deref() {
            Some("A") => to_a += 1,
            Some(_) => to_other += 1,
            None => to_none += 1,
        }
        if reaches(n1, kept, "C").is_ok() {
            kept_ok += 1;
        }
        if down_after.is_none() {
            let down = fleet
                .nodes_json("n2")
                .is_ok_and(|nodes| nodes.iter().any(|n| n["name"] == "n1" && n["state"] == "down"));
            if down {
                down_after = Some(cut_at.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "[partition] {probes} connections to P on n1 while cut off: {to_a} reached A, {to_other} another, {to_none} none (P held by {holder:?}); C's port forwarded {kept_ok} of {probes}; n2 listed n1 down after {down_after:?}"
    );
    if holder.is_some() && to_a > 0 {
        fleet.problem(format!(
            "{to_a} of {probes} new connections to port {p} on n1 reached A after P was given to {holder:?}"
        ));
    }
    if kept_ok != probes {
        fleet.problem(format!("n1 must keep forwarding C's port while cut off: {kept_ok} of {probes}"));
    }
    match down_after {
        Some(after) if after <= Duration::from_secs(NODE_TTL_SECS + 4) => {}
        other => fleet.problem(format!("n2 must list n1 down once its lease lapsed: {other:?}")),
    }

    // The heal: n1 converges without a restart, and the port goes to B.
    proxy.heal();
    let healed = Instant::now();
    let converged = poll(Duration::from_secs(10), || {
        let (on_n1, on_n2) = (fleet.listening_ports(n1), fleet.listening_ports(n2));
        if on_n1 == on_n2 && refused_via(n1, p).is_ok() {
            Ok(())
        } else {
            Err(format!("n1 listens on {on_n1:?}, n2 on {on_n2:?}"))
        }
    });
    match converged {
        Ok(((), took)) => eprintln!("[partition] MEASURE n1 converged {took:?} after the heal"),
        Err(e) => fleet.fail(&format!("n1 must converge within 10 s of the heal: {e}")),
    }
    if holder.is_none() {
        let given = fleet.must(Duration::from_secs(10), "B gets P once n1 confirmed the removal", || {
            let added = fleet.add_with("n2", &b, json!({"namespace": "default", "port": p}));
            match added.status {
                200 | 201 => Ok(healed.elapsed()),
                _ => Err(format!("{} {}", added.status, added.text())),
            }
        });
        eprintln!("[partition] MEASURE B got P {given:?} after the heal");
        fleet.must(PROPAGATION, "P leads to B through n1", || reaches(n1, p, "B"));
    }
    // A removal every node confirmed leaves no quarantine behind.
    fleet.remove_ok("n2", &c, "cleverapps", kept);
    fleet.must(Duration::from_secs(5), "no quarantine record is left once every node confirmed", || {
        match fleet.etcd_keys("quarantine") {
            keys if keys.is_empty() => Ok(()),
            keys => Err(format!("left: {keys:?}")),
        }
    });
    fleet.finish();
}

/// `tcp-redirs nodes forget`: refused for a node that is up, or that the fleet does not
/// list, and to a credential that is not the admin's; a node killed for good is forgotten,
/// and a port its removal was waiting for goes to another application at once.
#[test]
fn nodes_forget_releases_the_ports_that_waited_for_a_node_gone_for_good() {
    let mut fleet = Fleet::start(&[("f1", "127.0.22.2", &[]), ("f2", "127.0.22.3", &[])], None);
    let (tag_a, tag_b) = (Tagged::start("A"), Tagged::start("B"));
    let a = fleet.create_app_everywhere("f1", "gone-a", tag_a.addr);
    let b = fleet.create_app_everywhere("f1", "gone-b", tag_b.addr);
    let p = port_of(&fleet.add_ok("f1", &a, "default"));
    let f1 = fleet.ip("f1");
    fleet.must(PROPAGATION, "P leads to A through f2", || reaches(fleet.ip("f2"), p, "A"));

    fleet.kill("f2");
    fleet.remove_ok("f1", &a, "default", p);
    let held = fleet.add_with("f1", &b, json!({"namespace": "default", "port": p}));
    if held.status != 409 || held.json()["id"] != 4096 || !held.text().contains("`f2`") {
        fleet.problem(format!(
            "a port f2 has not confirmed the removal of: want 409, 4096 naming f2: {} {}",
            held.status,
            held.text()
        ));
    }
    let server = fleet.server("f1");
    server.cli(&["nodes", "forget", "f1"]).assert_error(1, &["f1", "up"]);
    server.cli(&["nodes", "forget", "nowhere"]).assert_error(3, &["nowhere", "tcp-redirs nodes"]);
    let org_token = server.cli_json(&["tokens", "create", "--org", "default", "-F", "json"]);
    let org_token = org_token["token"].as_str().expect("a token").to_owned();
    let as_org = try_http(
        server.addr,
        "DELETE",
        "/v2/nodes/f2",
        Some(&format!("Bearer {org_token}")),
        None,
        IO_TIMEOUT,
    )
    .expect("an answer");
    if as_org.status != 403 {
        fleet.problem(format!(
            "forget as an organisation: want 403, got {} {}",
            as_org.status,
            as_org.text()
        ));
    }
    fleet.must(Duration::from_secs(NODE_TTL_SECS + 4), "f1 lists f2 down", || {
        match fleet.nodes_json("f1")?.iter().find(|n| n["name"] == "f2") {
            Some(node) if node["state"] == "down" => Ok(()),
            other => Err(format!("f2 is {other:?}")),
        }
    });
    let forgot = server.cli_ok(&["nodes", "forget", "f2"]);
    assert!(forgot.contains("f2"), "{forgot}");
    fleet.must(PROPAGATION, "f1 no longer lists f2", || match fleet.nodes_json("f1")? {
        nodes if nodes.iter().any(|n| n["name"] == "f2") => Err(format!("still listed: {nodes:?}")),
        _ => Ok(()),
    });
    let given = fleet.add_with("f1", &b, json!({"namespace": "default", "port": p}));
    if given.status != 201 {
        fleet.fail(&format!("once f2 is forgotten, B gets P: {} {}", given.status, given.text()));
    }
    fleet.must(PROPAGATION, "P leads to B through f1", || reaches(f1, p, "B"));
    // A forgotten node that comes back is listed again, and follows the table.
    fleet.restart("f2");
    fleet.must(Duration::from_secs(5), "f2 is listed again, and P leads to B through it", || {
        match fleet.nodes_json("f1")?.iter().find(|n| n["name"] == "f2") {
            Some(node) if node["state"] == "up" => reaches(fleet.ip("f2"), p, "B"),
            other => Err(format!("f2 is {other:?}")),
        }
    });
    fleet.finish();
}

/// What a churn worker of [`partitions_at_random_moments_lose_nothing_and_mix_no_tenants`] did.
#[derive(Debug, Clone)]
enum Churn {
    /// An add of `port` acknowledged at `at`.
    Added { app: usize, port: u16, at: Instant },
    /// An add sent at `at` whose outcome is unknown (503, no answer); `None`: a pick.
    MaybeAdded { app: usize, port: Option<u16>, at: Instant },
    /// A removal of `port` sent at `at` (acknowledged or not).
    RemoveSent { app: usize, port: u16, at: Instant },
}

/// One connection of a prober: which application a new connection to `port` on `node`,
/// opened at `from` and answered by `to`, reached.
#[derive(Debug, Clone)]
struct Probe {
    node: usize,
    port: u16,
    tag: Option<String>,
    from: Instant,
    to: Instant,
}

/// Issue 31's rounds: three nodes, six applications churning on a pool of five ports from
/// the three nodes at once, n1 partitioned from etcd at a random moment of each round for a
/// random while, probers connecting to every port on every node all along. Checked: no
/// connection reaches an application while another held the port for all of it (nor one
/// that never asked for it), no port is given to two applications at once, and once healed
/// every node lists exactly what the acknowledged changes say.
#[test]
fn partitions_at_random_moments_lose_nothing_and_mix_no_tenants() {
    const ROUNDS: usize = 3;
    const APPS: usize = 6;
    let fleet = Fleet::start(
        &[("n1", "127.0.23.2", &[]), ("n2", "127.0.23.3", &[]), ("n3", "127.0.23.4", &[])],
        Some("n1"),
    );
    let proxy = fleet.proxy.as_ref().expect("n1's relay");
    const TAGS: [&str; APPS] = ["T0", "T1", "T2", "T3", "T4", "T5"];
    let services: Vec<Tagged> = TAGS.iter().map(|t| Tagged::start(t)).collect();
    let apps: Vec<String> = (0..APPS)
        .map(|i| fleet.create_app_everywhere("n2", &format!("churn-{i}"), services[i].addr))
        .collect();
    let base: u16 = rand::rng().random_range(20000..30000);
    let pool: Vec<u16> = (base..base + 5).collect();
    let names = ["n1", "n2", "n3"];
    let ips: Vec<IpAddr> = names.iter().map(|n| fleet.ip(n)).collect();
    let ops: Mutex<Vec<Churn>> = Mutex::default();
    let probes: Mutex<Vec<Probe>> = Mutex::default();
    // Each application's port as its worker knows it: Some(None) none, None unknown.
    let held: Mutex<Vec<Option<Option<u16>>>> = Mutex::new(vec![Some(None); APPS]);
    let started = Instant::now();
    let (mut answers, mut partitions) = (BTreeMap::<u16, usize>::new(), Vec::new());
    for round in 0..ROUNDS {
        let running = std::sync::atomic::AtomicBool::new(true);
        let stop = || running.store(false, std::sync::atomic::Ordering::SeqCst);
        let go = || running.load(std::sync::atomic::Ordering::SeqCst);
        let statuses: Mutex<Vec<u16>> = Mutex::default();
        thread::scope(|scope| {
            // Probers: every port of the pool on every node, all along.
            for (node, &ip) in ips.iter().enumerate() {
                let (pool, probes) = (&pool, &probes);
                scope.spawn(move || {
                    while go() {
                        for &port in pool {
                            let from = Instant::now();
                            let tag = reached(ip, port);
                            probes.lock().unwrap().push(Probe { node, port, tag, from, to: Instant::now() });
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                });
            }
            // Workers: node w churns applications w and w + 3.
            for (w, &node) in names.iter().enumerate() {
                let (fleet, apps, pool, ops, held, statuses) = (&fleet, &apps, &pool, &ops, &held, &statuses);
                scope.spawn(move || {
                    let mut rng = rand::rng();
                    while go() {
                        let app = w + 3 * rng.random_range(0..2);
                        let state = held.lock().unwrap()[app];
                        let at = Instant::now();
                        match state {
                            None => {}
                            Some(None) => {
                                let explicit = rng.random_bool(0.7);
                                let port = pool[rng.random_range(0..pool.len())];
                                let body = if explicit {
                                    json!({"namespace": "default", "port": port})
                                } else {
                                    json!({"namespace": "default", "minPort": pool[0], "maxPort": pool[pool.len() - 1]})
                                };
                                let answer = fleet.call(node, "POST", &fleet.redirs_path(&apps[app]), Some(&body.to_string()));
                                let status = answer.as_ref().map_or(0, |r| r.status);
                                statuses.lock().unwrap().push(status);
                                match answer {
                                    Ok(r) if r.status == 201 => {
                                        let port = port_of(&r.json());
                                        ops.lock().unwrap().push(Churn::Added { app, port, at: Instant::now() });
                                        held.lock().unwrap()[app] = Some(Some(port));
                                    }
                                    Ok(r) if r.status == 409 || r.status == 422 => {}
                                    _ => {
                                        let port = explicit.then_some(port);
                                        ops.lock().unwrap().push(Churn::MaybeAdded { app, port, at });
                                        held.lock().unwrap()[app] = None;
                                    }
                                }
                            }
                            Some(Some(port)) => {
                                ops.lock().unwrap().push(Churn::RemoveSent { app, port, at });
                                let path = format!("{}/{port}?namespace=default", fleet.redirs_path(&apps[app]));
                                let answer = fleet.call(node, "DELETE", &path, None);
                                let status = answer.as_ref().map_or(0, |r| r.status);
                                statuses.lock().unwrap().push(status);
                                held.lock().unwrap()[app] = match status {
                                    200 | 404 => Some(None),
                                    _ => None,
                                };
                            }
                        }
                        thread::sleep(Duration::from_millis(rng.random_range(20..200)));
                    }
                });
            }
            // The partition, at a random moment of the round, for a random while.
            let mut rng = rand::rng();
            thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
            let cut_for = Duration::from_millis(rng.random_range(1500..4500));
            proxy.partition();
            thread::sleep(cut_for);
            proxy.heal();
            let healed = Instant::now();
            thread::sleep(Duration::from_millis(rng.random_range(500..1500)));
            stop();
            partitions.push((round, cut_for, healed));
        });
        for status in statuses.into_inner().unwrap() {
            *answers.entry(status).or_default() += 1;
        }
        // Healed: the nodes agree, and each application's state is read back from n2
        // (a write answered 503 during the partition may have been made after the heal).
        fleet.must(
            Duration::from_secs(10),
            &format!("round {round}: the nodes listen on the same ports"),
            || {
                let on: Vec<BTreeSet<u16>> = ips.iter().map(|&ip| fleet.listening_ports(ip)).collect();
                if on[0] == on[1] && on[1] == on[2] {
                    Ok(())
                } else {
                    Err(format!("n1 {:?}, n2 {:?}, n3 {:?}", on[0], on[1], on[2]))
                }
            },
        );
        let mut held = held.lock().unwrap();
        for (app, id) in apps.iter().enumerate() {
            let listed = fleet.list("n2", id).unwrap_or_else(|e| fleet.fail(&e));
            let port = listed.iter().find(|(ns, _)| ns == "default").map(|(_, p)| *p);
            match held[app] {
                Some(known) if known != port => fleet.problem(format!(
                    "round {round}: application {app} should hold {known:?} after its acknowledged changes, n2 lists {port:?}"
                )),
                Some(_) => {}
                None => {
                    // The unknown write resolved: what it did counts from now on.
                    if let Some(port) = port {
                        ops.lock().unwrap().push(Churn::Added { app, port, at: Instant::now() });
                    }
                    held[app] = Some(port);
                }
            }
        }
    }
    let elapsed = started.elapsed();

    // The checks, over the whole run.
    let ops = ops.into_inner().unwrap();
    let probes = probes.into_inner().unwrap();
    let removal_sent = |app: usize, port: u16, after: Instant, before: Instant| {
        ops.iter().any(|op| matches!(op, Churn::RemoveSent { app: a, port: p, at } if *a == app && *p == port && *at >= after && *at <= before))
    };
    // No port given twice: an acknowledged add of P finds every earlier holder's removal sent.
    let adds: Vec<(usize, u16, Instant)> = ops
        .iter()
        .filter_map(|op| match op {
            Churn::Added { app, port, at } => Some((*app, *port, *at)),
            _ => None,
        })
        .collect();
    for &(u, port, at_u) in &adds {
        for &(t, _, at_t) in adds.iter().filter(|&&(t, p, at_t)| p == port && t != u && at_t < at_u) {
            if !removal_sent(t, port, at_t, at_u) {
                fleet.problem(format!(
                    "port {port} given to application {u} while {t} held it (acknowledged {:?} apart)",
                    at_u - at_t
                ));
            }
        }
    }
    // No connection reaches an application while another held the port for all of it, nor
    // one that never asked for the port before it was answered.
    let (mut crossed, mut unasked, mut delivered) = (0, 0, 0);
    for probe in &probes {
        let Some(tag) = &probe.tag else { continue };
        delivered += 1;
        let Some(t) = TAGS.iter().position(|x| x == tag) else {
            fleet.problem(format!("a connection reached an unknown service: {probe:?}"));
            continue;
        };
        let asked = ops.iter().any(|op| match op {
            Churn::Added { app, port, at } => {
                *app == t && *port == probe.port && *at <= probe.to + Duration::from_secs(10)
            }
            Churn::MaybeAdded { app, port, at } => {
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
        }
        if other_held && crossed <= 5 {
            fleet.problem(format!(
                "a connection to port {} on {} reached {tag} while application {} held the port: {probe:?}",
                probe.port,
                names[probe.node],
                TAGS[adds
                    .iter()
                    .find(|&&(u, p, a)| u != t && p == probe.port && a <= probe.from)
                    .map_or(0, |x| x.0)]
            ));
        }
    }
    if crossed > 5 {
        fleet.problem(format!(
            "{crossed} connections in all reached an application while another held the port"
        ));
    }
    if unasked > 0 {
        fleet.problem(format!("{unasked} connections reached an application that never asked for the port"));
    }
    // Nothing acknowledged lost: every node lists what the workers know.
    let held = held.into_inner().unwrap();
    for (app, id) in apps.iter().enumerate() {
        let want: BTreeSet<(String, u16)> =
            held[app].flatten().map(|p| ("default".to_owned(), p)).into_iter().collect();
        for name in names {
            fleet.must(
                PROPAGATION,
                &format!("{name} lists application {app} as acknowledged"),
                || match fleet.list(name, id)? {
                    got if got == want => Ok(()),
                    got => Err(format!("{got:?}, want {want:?}")),
                },
            );
        }
    }
    eprintln!(
        "[partition] MEASURE {ROUNDS} rounds in {elapsed:?}: partitions {:?}; answers by status {answers:?}; {} acknowledged adds; {} connections, {delivered} delivered, {crossed} to another tenant",
        partitions.iter().map(|(r, cut, _)| (r, cut)).collect::<Vec<_>>(),
        adds.len(),
        probes.len()
    );
    fleet.finish();
}

// ---------------------------------------------------------------------------------------
// Settings changed in place (issue 33)
// ---------------------------------------------------------------------------------------

/// A connection to ip:port, or `None` when the node reset it at once.
fn open_at(ip: IpAddr, port: u16) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2)) {
        Ok(stream) => {
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Some(stream)
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect to {ip}:{port}: {e}"),
    }
}

/// Sends `bytes`, reads back as many plus `extra`: what came.
fn trip(stream: &mut TcpStream, bytes: &[u8], extra: usize) -> Result<Vec<u8>, String> {
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0; bytes.len() + extra];
    stream.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    Ok(got)
}

/// `Ok` when an open connection still echoes `bytes` bare.
fn still_echoes(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    match trip(stream, bytes, 0)? {
        got if got == bytes => Ok(()),
        got => Err(format!("answered {:?}", String::from_utf8_lossy(&got))),
    }
}

#[test]
fn an_update_on_one_node_holds_for_new_connections_on_every_node_when_it_answers() {
    let fleet =
        Fleet::start(&[("a", "127.0.31.2", &[]), ("b", "127.0.31.3", &[]), ("c", "127.0.31.4", &[])], None);
    let names = fleet.names();
    let echo = TcpService::echo();
    let app = fleet.create_app_everywhere("a", "mqtt", echo.addr());
    let port = port_of(&fleet.add_ok("a", &app, "default"));
    for node in ["a", "b", "c"] {
        let ip = fleet.ip(node);
        fleet.must(PROPAGATION, &format!("port {port} forwards through {node}"), || echo_via(ip, port));
    }
    // One long-lived session per node, opened before any change.
    let mut before: Vec<(&str, TcpStream)> = ["a", "b", "c"]
        .into_iter()
        .map(|node| {
            let mut s = open_at(fleet.ip(node), port).expect("a session before the update");
            still_echoes(&mut s, b"hello").unwrap_or_else(|e| fleet.fail(&e));
            (node, s)
        })
        .collect();

    // Changed through b: PROXY v1, at most 2 open, idle 1 s.
    let path = format!("{}/{port}?namespace=default", fleet.redirs_path(&app));
    let body = r#"{"proxyProtocol":"v1","maxConnections":2,"idleTimeout":1}"#;
    let patched = fleet.api("b", "PATCH", &path, Some(body)).ok_json();
    fleet.check("the update answers once every live node applied it", listening_on(&patched, &names));
    assert_eq!((port_of(&patched), &patched["idleTimeout"]), (port, &json!(1)), "{patched}");
    // At once, on every node: a new connection gets the header; a third is over the quota.
    let mut after = Vec::new();
    for node in ["a", "b", "c"] {
        let ip = fleet.ip(node);
        let mut new = open_at(ip, port).expect("a connection after the update");
        let local = new.local_addr().unwrap();
        let header = format!("PROXY TCP4 {} {ip} {} {port}\r\n", local.ip(), local.port());
        let got = trip(&mut new, b"x", header.len());
        fleet.check(
            &format!("a new connection through {node} gets the PROXY header at once"),
            match got {
                Ok(got) if got == format!("{header}x").as_bytes() => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        let third = open_at(ip, port).is_some_and(|mut s| still_echoes(&mut s, b"?").is_ok());
        fleet.check(
            &format!("a third connection through {node} is over maxConnections 2 at once"),
            if third { Err("it was served".into()) } else { Ok(()) },
        );
        after.push((node, new));
    }
    // The new connections end after 1 s without a byte; the sessions from before, idle as
    // long, go on, bare: they keep what they started with.
    for (node, new) in &mut after {
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let ended = match new.read(&mut byte) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        let took = started.elapsed();
        fleet.check(
            &format!("the new connection through {node} ends after its 1 s idle timeout"),
            if ended && took < Duration::from_secs(5) { Ok(()) } else { Err(format!("after {took:?}")) },
        );
    }
    for (node, session) in &mut before {
        fleet.check(
            &format!("the session through {node} from before the update goes on"),
            still_echoes(session, b"on"),
        );
    }

    // Changed through c: clients of 127.0.0.0/8 denied, PROXY and the quota unset.
    let body = r#"{"deny":["127.0.0.0/8"],"proxyProtocol":null,"maxConnections":null}"#;
    let patched = fleet.api("c", "PATCH", &path, Some(body)).ok_json();
    assert!(patched.get("proxyProtocol").is_none() && patched.get("maxConnections").is_none(), "{patched}");
    for node in ["a", "b", "c"] {
        let ip = fleet.ip(node);
        let served = open_at(ip, port).is_some_and(|mut s| still_echoes(&mut s, b"?").is_ok());
        fleet.check(
            &format!("a client denied through {node} is refused at once"),
            if served { Err("it was served".into()) } else { Ok(()) },
        );
    }
    for (node, session) in &mut before {
        fleet.check(
            &format!("the session through {node} is not cut by the deny"),
            still_echoes(session, b"end"),
        );
    }
    // Every node lists the port with the new settings, on the same port.
    for node in ["a", "b", "c"] {
        let listed = fleet.list_json(node, &app).unwrap_or_else(|e| fleet.fail(&e));
        fleet.check(
            &format!("{node} lists the updated redirection"),
            match listed.as_slice() {
                [r] if port_of(r) == port && r["deny"] == json!(["127.0.0.0/8"]) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    fleet.finish();
}

// ---------------------------------------------------------------------------------------
// Limits per client address and bandwidth (issue 34)
// ---------------------------------------------------------------------------------------

/// A connection to ip:port from the source address `from`, and whether it echoes (`None`
/// when the node reset it).
fn echoes_from(from: std::net::Ipv4Addr, ip: IpAddr, port: u16) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    let mut stream: TcpStream =
        match socket.connect_timeout(&SocketAddr::new(ip, port).into(), Duration::from_secs(2)) {
            Ok(()) => socket.into(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("connect from {from} to {ip}:{port}: {e}"),
        };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    still_echoes(&mut stream, b"hi").ok().map(|()| stream)
}

/// The limits per client address and the bandwidth limit, set through one node, hold on
/// every node for new connections when the update answers (each node counts its own
/// clients and meters its own bytes).
#[test]
fn limits_per_client_and_bandwidth_set_through_one_node_hold_on_every_node() {
    let fleet = Fleet::start(&[("a", "127.0.36.2", &[]), ("b", "127.0.36.3", &[])], None);
    let names = fleet.names();
    let echo = TcpService::echo();
    let app = fleet.create_app_everywhere("a", "capped", echo.addr());
    let port = port_of(&fleet.add_ok("a", &app, "default"));
    for node in ["a", "b"] {
        let ip = fleet.ip(node);
        fleet.must(PROPAGATION, &format!("port {port} forwards through {node}"), || echo_via(ip, port));
    }
    let path = format!("{}/{port}?namespace=default", fleet.redirs_path(&app));
    let body = r#"{"maxConnectionsPerClient":1,"bandwidthLimit":1000000}"#;
    let patched = fleet.api("b", "PATCH", &path, Some(body)).ok_json();
    fleet.check("the update answers once every live node applied it", listening_on(&patched, &names));
    assert_eq!(
        (&patched["maxConnectionsPerClient"], &patched["bandwidthLimit"]),
        (&json!(1), &json!(1_000_000))
    );
    let (client, other) = (std::net::Ipv4Addr::new(127, 0, 37, 2), std::net::Ipv4Addr::new(127, 0, 37, 3));
    let mut held = Vec::new();
    for node in ["a", "b"] {
        let ip = fleet.ip(node);
        let first = echoes_from(client, ip, port);
        fleet.check(
            &format!("a first connection through {node} is served"),
            first.as_ref().map(|_| ()).ok_or("reset".into()),
        );
        let second = echoes_from(client, ip, port);
        fleet.check(
            &format!("a second one from the same address through {node} is over its cap at once"),
            if second.is_some() { Err("it was served".into()) } else { Ok(()) },
        );
        fleet.check(
            &format!("another address through {node} still gets in"),
            echoes_from(other, ip, port).map(|_| ()).ok_or("reset".into()),
        );
        held.extend(first);
    }
    // 1.5 MB echoed through each node at once: each way at most 1 MB/s on each node.
    let movers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|node| {
            let ip = fleet.ip(node);
            thread::spawn(move || {
                let started = Instant::now();
                let mut stream = echoes_from(std::net::Ipv4Addr::new(127, 0, 37, 4), ip, port)
                    .ok_or(format!("a bulk connection through {ip} was reset"))?;
                let data = vec![5u8; 1_500_000];
                let writer = {
                    let mut w = stream.try_clone().unwrap();
                    thread::spawn(move || w.write_all(&data))
                };
                let mut back = vec![0u8; 1_500_000];
                stream.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
                writer.join().unwrap().map_err(|e| format!("write: {e}"))?;
                Ok::<_, String>(started.elapsed())
            })
        })
        .collect();
    for (node, mover) in ["a", "b"].into_iter().zip(movers) {
        let took = mover.join().expect("a bulk mover");
        fleet.check(
            &format!("1.5 MB through {node} at 1 MB/s takes no less than 0.85 x 1.5 s"),
            match took {
                Ok(t) if t >= Duration::from_secs_f64(0.85 * 1.5) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    drop(held);
    fleet.finish();
}

/// Issue 34 on a fleet: a range made through one node forwards each of its ports to the
/// matching instance port through every node, is refused past what etcd claims in one
/// transaction (422, 4240), makes a single port inside it taken on every node, and is
/// removed whole through another node.
#[test]
fn a_range_made_on_one_node_forwards_each_port_on_every_node_and_goes_whole() {
    let fleet = Fleet::start(&[("a", "127.0.51.2", &[]), ("b", "127.0.51.3", &[])], None);
    let names = fleet.names();
    let instances = Numbered::start(50);
    let app = fleet.create_app_everywhere("a", "media", instances.addr());
    let other = fleet.create_app_everywhere("a", "other", instances.addr());
    let too_many = fleet.add_with("a", &app, json!({"namespace": "default", "ports": 51}));
    if too_many.status != 422 || too_many.json()["id"] != 4240 {
        fleet.fail(&format!("51 ports on etcd: status {} {}", too_many.status, too_many.text()));
    }
    let added = fleet.add_with("a", &app, json!({"namespace": "default", "ports": 50}));
    if added.status != 201 {
        fleet.fail(&format!("add a range of 50 on a: status {} {}", added.status, added.text()));
    }
    let added = added.json();
    let first = port_of(&added);
    fleet.check(
        "the answer names the last port",
        match added["lastPort"].as_u64() {
            Some(last) if last == u64::from(first) + 49 => Ok(()),
            other => Err(format!("lastPort {other:?} in {added}")),
        },
    );
    fleet.check("the add answers once every live node listens", listening_on(&added, &names));
    for node in ["a", "b"] {
        let ip = fleet.ip(node);
        fleet.must(PROPAGATION, &format!("each port of {first}+50 through {node}"), || {
            each_port_matches(ip, first, 50, instances.first)
        });
    }
    // A port inside it is taken for everyone, through either node.
    let inside = fleet.add_with("b", &other, json!({"namespace": "default", "port": first + 20}));
    if inside.status != 409 || inside.json()["id"] != 4095 {
        fleet.fail(&format!("a port inside the range, on b: status {} {}", inside.status, inside.text()));
    }
    let removed =
        fleet.api("b", "DELETE", &format!("{}/{first}?namespace=default", fleet.redirs_path(&app)), None);
    if removed.status != 200 {
        fleet.fail(&format!("remove the range on b: status {} {}", removed.status, removed.text()));
    }
    for node in ["a", "b"] {
        let ip = fleet.ip(node);
        fleet.must(PROPAGATION, &format!("every port of the range closed on {node}"), || {
            match (0..50).find(|i| answer_at(ip, first + i).is_ok()) {
                Some(i) => Err(format!("port {} still answers", first + i)),
                None => Ok(()),
            }
        });
    }
    fleet.finish();
}
