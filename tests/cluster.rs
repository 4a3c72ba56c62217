//! A fleet over a 3-member etcd cluster, and the cluster's failures: three `tcp-redirs serve`
//! nodes (127.0.10.2, .3, .4, a block no other test uses) share one table in three real
//! `/usr/bin/etcd` members on loopback (`--store etcd://M0,M1,M2`).
//!
//! - The leader is SIGKILLed while workers add and remove on all three nodes and traffic runs
//!   through their ports: nothing acknowledged is lost, no port is given twice, writes work
//!   again within seconds (measured), open and new connections keep working throughout.
//! - Then a second member goes (no quorum): writes answer 503 (id 5030) within a bound, and
//!   within 500 ms each once the nodes have seen etcd without a leader for 2 s;
//!   forwarding goes on, reads answer from each node's copy; both members come back and
//!   everything resumes without restarting a gateway node.
//!
//! Nothing here sleeps to wait for readiness: waits poll a socket, an HTTP answer or a JSON
//! field every 20 ms up to a bound; the only sleeps pace the load. Every loop is bounded in
//! count and time. `cargo test --all-features --test cluster -- --nocapture` shows the
//! measured times (`[cluster] …` lines).

#![cfg(feature = "etcd")]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use common::*;
use rand::Rng;
use serde_json::{json, Value};

/// The gateway nodes: name and loopback address.
const NODES: [(&str, &str); 3] = [("a", "127.0.10.2"), ("b", "127.0.10.3"), ("c", "127.0.10.4")];
/// The built-in namespaces.
const NAMESPACES: [&str; 2] = ["cleverapps", "default"];
/// The longest a call to a node's API may take before it counts as unanswered: an add may
/// wait 5 s for its node's copy and 3 s for the other nodes, on top of its store calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Load: workers, the applications each one owns, the most calls each makes, the pause
/// between two of its calls.
const WORKERS: usize = 6;
const APPS_PER_WORKER: usize = 3;
const MAX_OPS_PER_WORKER: usize = 400;
const PACE: Duration = Duration::from_millis(30);
/// How long after the leader's kill every node must have made a write again.
const WRITES_BACK_WITHIN: Duration = Duration::from_secs(10);
/// From this long after the leader's kill on, no write may answer 503: a new leader is
/// elected in about a second, and a call caught by the kill times out after 3 s.
const SETTLED_AFTER_KILL: Duration = Duration::from_secs(5);
/// And from this long after the two members left agree on a new leader, should their
/// election take longer (a split vote costs them another election timeout: 6 s from the
/// kill was seen once): what the nodes must do once etcd has a leader, not how fast etcd
/// elects one.
const SETTLED_AFTER_ELECTION: Duration = Duration::from_secs(1);
/// How long the load runs on after [`SETTLED_AFTER_KILL`], with one member down.
const LOAD_AFTER_SETTLED: Duration = Duration::from_secs(3);
/// How fast a write must answer 503 when etcd has no quorum (its request timeout is 3 s).
const NO_QUORUM_503_WITHIN: Duration = Duration::from_secs(4);
/// From this long after the quorum was lost (an election timeout for the last member to
/// see it has no leader, then the nodes' 2 s of patience for an election), every write
/// answers 503 within [`NO_QUORUM_FAST_503`].
const NO_QUORUM_FAST_AFTER: Duration = Duration::from_secs(7);
const NO_QUORUM_FAST_503: Duration = Duration::from_millis(500);
/// How long after the members are back an add must succeed on each node.
const RECOVERY_WITHIN: Duration = Duration::from_secs(15);
/// When a port was held by an application: from the add's answer to the remove's call
/// (`None`: never removed), and the application.
type HeldSpan<'a> = (Instant, Option<Instant>, &'a String);

// ---------------------------------------------------------------------------------------
// Polling and sockets
// ---------------------------------------------------------------------------------------

/// A connection held open through a node's port, checked with a round trip now and then.
struct Held {
    node: usize,
    port: u16,
    stream: TcpStream,
}

impl Held {
    fn open(node: usize, ip: IpAddr, port: u16) -> Result<Held, String> {
        let addr = SocketAddr::new(ip, port);
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut held = Held { node, port, stream };
        held.round_trip()?;
        Ok(held)
    }

    /// 32 random bytes there and back.
    fn round_trip(&mut self) -> Result<(), String> {
        let data = random_bytes(32);
        let mut back = [0u8; 32];
        self.stream
            .write_all(&data)
            .and_then(|_| self.stream.read_exact(&mut back))
            .map_err(|e| format!("the connection held through node {} port {}: {e}", self.node, self.port))?;
        if back[..] != data[..] {
            return Err(format!(
                "the connection held through node {} port {}: the echo differs",
                self.node, self.port
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The fleet over the cluster
// ---------------------------------------------------------------------------------------

/// The cluster and three nodes on it, with one admin token.
struct Gateway {
    // Declared first, dropped first: the nodes go before etcd.
    servers: Vec<Server>,
    ips: Vec<IpAddr>,
    cluster: Cluster,
    token: String,
    org: String,
    /// Broken promises found so far that do not stop the test: reported together at the end.
    problems: Mutex<Vec<String>>,
}

impl Gateway {
    fn start() -> Gateway {
        let cluster = Cluster::start();
        let token = random_token();
        let url = cluster.url();
        eprintln!("[cluster] 3 etcd members up: {url}");
        let servers: Vec<Server> = thread::scope(|scope| {
            let starting: Vec<_> = NODES
                .iter()
                .map(|&(name, ip)| {
                    let builder = Server::builder().ip(ip).token(&token).args(&[
                        "--store",
                        &url,
                        "--node",
                        name,
                        "--node-ttl",
                        "2",
                    ]);
                    scope.spawn(move || builder.start())
                })
                .collect();
            starting.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        let ips = NODES.iter().map(|(_, ip)| ip.parse().expect("node IP")).collect();
        let mut gateway =
            Gateway { servers, ips, cluster, token, org: String::new(), problems: Mutex::default() };
        let orgs = gateway.call(0, "GET", "/v2/organisations", None).unwrap_or_else(|e| gateway.fail(&e));
        gateway.org = orgs.json()[0]["id"]
            .as_str()
            .unwrap_or_else(|| gateway.fail(&format!("no org: {}", orgs.text())))
            .to_owned();
        gateway
    }

    fn name(node: usize) -> &'static str {
        NODES[node].0
    }

    /// A raw API call with the admin token on node `node`; `Err` when no answer came.
    fn call(
        &self,
        node: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<HttpResponse, String> {
        try_http(
            self.servers[node].addr,
            method,
            path,
            Some(&format!("Bearer {}", self.token)),
            body,
            CALL_TIMEOUT,
        )
        .map_err(|e| format!("node {}: {e}", Gateway::name(node)))
    }

    fn apps_path(&self) -> String {
        format!("/v2/organisations/{}/applications", self.org)
    }

    fn redirs_path(&self, app: &str) -> String {
        format!("/v2/organisations/{}/applications/{app}/tcpRedirs", self.org)
    }

    /// Creates an application on `node` with one instance; its id.
    fn create_app(&self, node: usize, name: &str, instance: SocketAddr) -> String {
        let body = json!({"name": name, "instances": [{"address": instance.to_string()}]}).to_string();
        let created =
            self.call(node, "POST", &self.apps_path(), Some(&body)).unwrap_or_else(|e| self.fail(&e));
        if !matches!(created.status, 200 | 201) {
            self.fail(&format!("create {name}: status {} {}", created.status, created.text()));
        }
        created.json()["id"].as_str().expect("application id").to_owned()
    }

    /// `POST …/tcpRedirs` on `node`.
    fn add(&self, node: usize, app: &str, namespace: &str) -> Result<HttpResponse, String> {
        self.call(node, "POST", &self.redirs_path(app), Some(&json!({"namespace": namespace}).to_string()))
    }

    /// `DELETE …/tcpRedirs/PORT?namespace=NS` on `node`.
    fn remove(&self, node: usize, app: &str, namespace: &str, port: u16) -> Result<HttpResponse, String> {
        self.call(node, "DELETE", &format!("{}/{port}?namespace={namespace}", self.redirs_path(app)), None)
    }

    /// `app`'s (namespace, port) pairs as `node` lists them.
    fn list(&self, node: usize, app: &str) -> Result<BTreeSet<(String, u16)>, String> {
        let listed = self.call(node, "GET", &self.redirs_path(app), None)?;
        if listed.status != 200 {
            return Err(format!(
                "list of {app} on {}: status {} {}",
                Gateway::name(node),
                listed.status,
                listed.text()
            ));
        }
        Ok(redirections(&listed.json()).into_iter().collect())
    }

    /// Every application's pairs as `node` lists them.
    fn table(
        &self,
        node: usize,
        apps: &[String],
    ) -> Result<BTreeMap<String, BTreeSet<(String, u16)>>, String> {
        apps.iter().map(|app| Ok((app.clone(), self.list(node, app)?))).collect()
    }

    /// Polls until the three nodes list the same table of `apps`; that table.
    fn converged(&self, limit: Duration, apps: &[String]) -> BTreeMap<String, BTreeSet<(String, u16)>> {
        self.must(limit, "the three nodes list the same table", || {
            let tables: Vec<_> = (0..3).map(|n| self.table(n, apps)).collect::<Result<_, _>>()?;
            if tables[0] != tables[1] || tables[0] != tables[2] {
                let differ: Vec<&String> = apps
                    .iter()
                    .filter(|app| tables[0][*app] != tables[1][*app] || tables[0][*app] != tables[2][*app])
                    .collect();
                let first = differ[0];
                return Err(format!(
                    "they differ on {differ:?}: {first}: a {:?} / b {:?} / c {:?}",
                    tables[0][first], tables[1][first], tables[2][first]
                ));
            }
            Ok(tables.into_iter().next().unwrap())
        })
    }

    /// Every node's log (the last lines) and etcd's, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (n, server) in self.servers.iter().enumerate() {
            let log = server.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            out.push_str(&format!(
                "--- node {} log, last {} lines ---\n{}\n",
                Gateway::name(n),
                tail.len(),
                tail.join("\n")
            ));
        }
        let etcd = self.cluster.log();
        let lines: Vec<&str> = etcd.lines().collect();
        out.push_str(&format!(
            "--- etcd output, last lines ---\n{}\n",
            lines[lines.len().saturating_sub(30)..].join("\n")
        ));
        out
    }

    /// Polls `probe` up to `limit`; panics with `what`, the last error and the logs.
    fn must<T>(&self, limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        match poll(limit, probe) {
            Ok((value, took)) => {
                eprintln!("[cluster] {what}: after {took:?}");
                value
            }
            Err(e) => self.fail(&format!("{what} (bound {limit:?}): {e}")),
        }
    }

    /// Records a broken promise and goes on.
    fn problem(&self, problem: String) {
        eprintln!("[cluster] PROBLEM: {problem}");
        self.problems.lock().unwrap().push(problem);
    }

    /// Panics with `message`, the problems recorded so far and the logs.
    fn fail(&self, message: &str) -> ! {
        let problems = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        panic!("{message}\n--- problems recorded before ---\n{}\n{}", problems.join("\n"), self.logs())
    }

    /// Panics with every recorded problem and the logs, if there is one.
    fn finish(&self) {
        let problems = self.problems.lock().unwrap().clone();
        if !problems.is_empty() {
            panic!("{} problem(s):\n{}\n{}", problems.len(), problems.join("\n"), self.logs());
        }
    }
}

/// The error `id` of an answer, if it has one.
fn error_id(answer: &HttpResponse) -> Option<i64> {
    serde_json::from_slice::<Value>(&answer.body).ok().and_then(|b| b["id"].as_i64())
}

/// The nodes a successful add's answer says listen on its port.
fn listening_nodes(answer: &Value) -> Vec<usize> {
    let Some(nodes) = answer["nodes"].as_array() else { return Vec::new() };
    nodes
        .iter()
        .filter(|n| n["state"] == "listening")
        .filter_map(|n| NODES.iter().position(|(name, _)| n["node"] == *name))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The load: adds and removes by workers that each own a few applications
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Add,
    Remove,
}

/// One call of a worker, with when it was sent and answered.
#[derive(Debug, Clone)]
struct Op {
    worker: usize,
    node: usize,
    action: Action,
    app: String,
    namespace: &'static str,
    /// The port removed, or the one the add answered.
    port: Option<u16>,
    /// 0: no answer (the connection failed or timed out).
    status: u16,
    id: Option<i64>,
    body: String,
    sent: Instant,
    answered: Instant,
}

impl Op {
    /// Acknowledged: an add answered 201, a remove 200.
    fn acked(&self) -> bool {
        match self.action {
            Action::Add => matches!(self.status, 200 | 201),
            Action::Remove => self.status == 200,
        }
    }

    /// Known to have changed nothing (a refusal the node or the store decided).
    fn refused(&self) -> bool {
        matches!((self.status, self.id), (409, Some(4090)) | (404, Some(4044)))
    }

    /// Neither acknowledged nor refused: it may or may not have been applied (a 503 whose
    /// transaction etcd applied anyway, an answer lost).
    fn ambiguous(&self) -> bool {
        !self.acked() && !self.refused()
    }
}

/// What a worker knows of one of its (application, namespace) pairs.
#[derive(Debug, Clone, Copy)]
enum Belief {
    /// From an acknowledged call made through `node`: the port there, or none.
    Sure { port: Option<u16>, node: usize, listening: [bool; 3] },
    /// From a node's list (which may lag, or precede an ambiguous write that lands later).
    Maybe(Option<u16>),
    /// After an ambiguous call: to be read again.
    Unknown,
}

/// Runs one worker: up to [`MAX_OPS_PER_WORKER`] calls on random nodes on its own pairs,
/// until `stop`. Each successful add is checked at once on the nodes its answer says listen.
fn worker(gw: &Gateway, worker: usize, apps: &[String], stop: &AtomicBool, ops: &Mutex<Vec<Op>>) {
    let mut rng = rand::rng();
    let mut beliefs: HashMap<(usize, usize), Belief> = HashMap::new();
    for _ in 0..MAX_OPS_PER_WORKER {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        thread::sleep(PACE);
        let node = rng.random_range(0..3);
        let (a, n) = (rng.random_range(0..apps.len()), rng.random_range(0..NAMESPACES.len()));
        let (app, namespace) = (&apps[a], NAMESPACES[n]);
        let belief =
            *beliefs.entry((a, n)).or_insert(Belief::Sure { port: None, node, listening: [true; 3] });
        let port = match belief {
            Belief::Unknown => {
                if let Ok(listed) = gw.list(node, app) {
                    let port = listed.iter().find(|(ns, _)| ns == namespace).map(|&(_, p)| p);
                    beliefs.insert((a, n), Belief::Maybe(port));
                }
                continue;
            }
            Belief::Sure { port, .. } | Belief::Maybe(port) => port,
        };
        let action = if port.is_some() { Action::Remove } else { Action::Add };
        let sent = Instant::now();
        let answer = match (action, port) {
            (Action::Remove, Some(port)) => gw.remove(node, app, namespace, port),
            _ => gw.add(node, app, namespace),
        };
        let answered = Instant::now();
        let (status, id, body, json) = match &answer {
            Ok(r) => (r.status, error_id(r), r.text(), serde_json::from_slice::<Value>(&r.body).ok()),
            Err(e) => (0, None, e.clone(), None),
        };
        let answered_port = json.as_ref().and_then(|j| j["port"].as_u64()).map(|p| p as u16);
        let op = Op {
            worker,
            node,
            action,
            app: app.clone(),
            namespace,
            port: if action == Action::Remove {
                port
            } else {
                answered_port.filter(|_| matches!(status, 200 | 201))
            },
            status,
            id,
            body,
            sent,
            answered,
        };
        let what = format!(
            "worker {worker}: {action:?} {namespace}{} of {app} on node {} ({:?} after the call was sent)",
            port.map(|p| format!(":{p}")).unwrap_or_default(),
            Gateway::name(node),
            answered - sent
        );
        let allowed = match action {
            Action::Add => {
                matches!(status, 200 | 201)
                    || (status, id) == (409, Some(4090))
                    || (status, id) == (503, Some(5030))
            }
            Action::Remove => {
                status == 200 || (status, id) == (404, Some(4044)) || (status, id) == (503, Some(5030))
            }
        };
        if !allowed {
            gw.problem(format!("{what} got an answer the spec does not allow: {status} {}", op.body));
        }
        // A refusal that contradicts what an acknowledged call through the same node (or one
        // its answer said listens) established: an acknowledged write was lost.
        if let Belief::Sure { node: by, listening, .. } = belief {
            if op.refused() && (by == node || listening[node]) {
                gw.problem(format!(
                    "{what} was refused ({status} {}) although an acknowledged call through node {} said otherwise",
                    op.body,
                    Gateway::name(by)
                ));
            }
        }
        let next = if op.acked() {
            let mut listening = [false; 3];
            listening[node] = true;
            if action == Action::Add {
                let json = json.unwrap_or_default();
                for n in listening_nodes(&json) {
                    listening[n] = true;
                }
                // `add` answers once the port accepts on every node that says `listening`.
                for (n, &ip) in gw.ips.iter().enumerate().filter(|&(n, _)| listening[n]) {
                    if let Err(e) = echo_via(ip, op.port.unwrap_or_default()) {
                        gw.problem(format!("{what}: node {} says it listens but: {e}", Gateway::name(n)));
                    }
                }
            } else {
                // A remove's answer names no nodes: only the node that took it is known.
            }
            Belief::Sure { port: op.port.filter(|_| action == Action::Add), node, listening }
        } else {
            Belief::Unknown
        };
        beliefs.insert((a, n), next);
        ops.lock().unwrap().push(op);
    }
}

/// The latest acknowledged op of `ops` (one pair's, in order), and the ops after it.
fn last_ack(ops: &[&Op]) -> Option<(usize, Vec<Op>)> {
    let i = ops.iter().rposition(|op| op.acked())?;
    Some((i, ops[i + 1..].iter().map(|op| (*op).clone()).collect()))
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[test]
fn a_cluster_that_loses_its_leader_then_its_quorum_loses_nothing_and_keeps_forwarding() {
    let gw = Gateway::start();
    let echo = TcpService::echo();

    // Applications: each worker owns APPS_PER_WORKER; two `steady` ones keep one port each
    // (never removed) for the held connections; `q0..q2` get their first port in phase B.
    let worker_apps: Vec<Vec<String>> = (0..WORKERS)
        .map(|w| {
            (0..APPS_PER_WORKER)
                .map(|i| gw.create_app((w + i) % 3, &format!("w{w}-{i}"), echo.addr()))
                .collect()
        })
        .collect();
    let steady: Vec<String> = (0..2).map(|i| gw.create_app(i, &format!("steady-{i}"), echo.addr())).collect();
    let late: Vec<String> = (0..3).map(|i| gw.create_app(i, &format!("q{i}"), echo.addr())).collect();
    let all_apps: Vec<String> = worker_apps.iter().flatten().chain(&steady).chain(&late).cloned().collect();
    gw.must(Duration::from_secs(3), "every node knows every application", || {
        for node in 0..3 {
            for app in &all_apps {
                let r = gw.call(node, "GET", &format!("{}/{app}", gw.apps_path()), None)?;
                if r.status != 200 {
                    return Err(format!("node {} answers {} for {app}", Gateway::name(node), r.status));
                }
            }
        }
        Ok(())
    });
    let steady_ports: Vec<(String, u16)> = steady
        .iter()
        .zip(NAMESPACES)
        .enumerate()
        .map(|(i, (app, ns))| {
            let answer = gw.add(i, app, ns).unwrap_or_else(|e| gw.fail(&e));
            if answer.status != 201 {
                gw.fail(&format!("add steady {ns}: {} {}", answer.status, answer.text()));
            }
            (ns.to_owned(), port_of(&answer.json()))
        })
        .collect();
    for &(_, port) in &steady_ports {
        gw.must(Duration::from_secs(3), &format!("steady port {port} forwards through every node"), || {
            gw.ips.iter().try_for_each(|&ip| echo_via(ip, port))
        });
    }
    // Long connections: one per steady port per node, opened before anything breaks.
    let mut held: Vec<Held> = Vec::new();
    for &(_, port) in &steady_ports {
        for (n, &ip) in gw.ips.iter().enumerate() {
            held.push(Held::open(n, ip, port).unwrap_or_else(|e| gw.fail(&e)));
        }
    }
    let held = Mutex::new(held);

    // ---- Phase A: the leader dies under load ----------------------------------------
    let leader = gw.cluster.leader(Duration::from_secs(5)).unwrap_or_else(|e| gw.fail(&e));
    let ops = Mutex::new(Vec::<Op>::new());
    let stop = AtomicBool::new(false);
    let stop_traffic = AtomicBool::new(false);
    let traffic_rounds = AtomicUsize::new(0);
    let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
    // When the calls sent must all succeed: the later of SETTLED_AFTER_KILL after the kill
    // and SETTLED_AFTER_ELECTION after a new leader is agreed on.
    let settled_at: Mutex<Option<Instant>> = Mutex::new(None);
    thread::scope(|scope| {
        for (w, apps) in worker_apps.iter().enumerate() {
            let (gw, ops, stop) = (&gw, &ops, &stop);
            scope.spawn(move || worker(gw, w, apps, stop, ops));
        }
        // Traffic: round trips on the held connections and new connections to every steady
        // port through every node, every 100 ms, until told to stop (at most 1,000 rounds).
        {
            let (gw, held, stop_traffic, rounds, steady_ports) =
                (&gw, &held, &stop_traffic, &traffic_rounds, &steady_ports);
            scope.spawn(move || {
                for _ in 0..1000 {
                    if stop_traffic.load(Ordering::SeqCst) {
                        break;
                    }
                    for conn in held.lock().unwrap().iter_mut() {
                        if let Err(e) = conn.round_trip() {
                            gw.problem(format!("during phase A: {e}"));
                        }
                    }
                    for (_, port) in steady_ports {
                        for (n, &ip) in gw.ips.iter().enumerate() {
                            if let Err(e) = echo_via(ip, *port) {
                                gw.problem(format!(
                                    "during phase A, a new connection through node {}: {e}",
                                    Gateway::name(n)
                                ));
                            }
                        }
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // Some load first, then the kill.
        let acked = || ops.lock().unwrap().iter().filter(|op| op.acked()).count();
        if let Err(e) = poll(Duration::from_secs(20), || {
            if acked() >= 40 {
                Ok(())
            } else {
                Err(format!("{} acked", acked()))
            }
        }) {
            stop.store(true, Ordering::SeqCst);
            stop_traffic.store(true, Ordering::SeqCst);
            gw.problem(format!("the load did not get going: {e}"));
            return;
        }
        eprintln!("[cluster] killing the leader, member {} ({})", leader, gw.cluster.name(leader));
        *killed_at.lock().unwrap() = Some(Instant::now());
        gw.cluster.kill(leader);
        let kill = killed_at.lock().unwrap().expect("set above");
        let settled = match gw.cluster.leader(WRITES_BACK_WITHIN) {
            Ok(new) => {
                let elected = kill.elapsed();
                eprintln!(
                    "[cluster] member {new} ({}) leads, found {elected:?} after the kill",
                    gw.cluster.name(new)
                );
                (kill + SETTLED_AFTER_KILL).max(Instant::now() + SETTLED_AFTER_ELECTION)
            }
            Err(e) => {
                gw.problem(format!("no new leader after the kill: {e}"));
                kill + SETTLED_AFTER_KILL
            }
        };
        *settled_at.lock().unwrap() = Some(settled);
        // Run on until every node made a write after the kill, and through the settled window.
        let back = poll(WRITES_BACK_WITHIN + Duration::from_secs(10), || {
            let ops = ops.lock().unwrap();
            let missing: Vec<&str> = (0..3)
                .filter(|&n| !ops.iter().any(|op| op.node == n && op.acked() && op.sent > kill))
                .map(Gateway::name)
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no write acked since the kill on {missing:?}"))
            }
        });
        if let Err(e) = back {
            gw.problem(format!("writes after the leader's kill: {e}"));
        } else {
            let end = settled + LOAD_AFTER_SETTLED;
            let _ = poll(end.saturating_duration_since(Instant::now()), || {
                if Instant::now() >= end {
                    Ok(())
                } else {
                    Err(String::new())
                }
            });
        }
        stop.store(true, Ordering::SeqCst);
        stop_traffic.store(true, Ordering::SeqCst);
    });
    let kill = killed_at.lock().unwrap().unwrap_or_else(|| gw.fail("the leader was never killed"));
    let settled_from = settled_at.lock().unwrap().unwrap_or(kill + SETTLED_AFTER_KILL);
    let ops = ops.into_inner().unwrap();
    eprintln!(
        "[cluster] phase A: {} traffic rounds (6 held connections, 6 new ones each)",
        traffic_rounds.load(Ordering::SeqCst)
    );

    // What the load saw.
    let acked: Vec<&Op> = ops.iter().filter(|op| op.acked()).collect();
    let unavailable = ops.iter().filter(|op| op.status == 503).count();
    let ambiguous: Vec<&Op> = ops.iter().filter(|op| op.ambiguous()).collect();
    let slowest = ops.iter().map(|op| op.answered - op.sent).max().unwrap_or_default();
    eprintln!(
        "[cluster] phase A: {} calls, {} acked ({} adds, {} removes), {unavailable} answered 503, {} ambiguous, slowest {slowest:?}",
        ops.len(),
        acked.len(),
        acked.iter().filter(|op| op.action == Action::Add).count(),
        acked.iter().filter(|op| op.action == Action::Remove).count(),
        ambiguous.len()
    );
    for op in ambiguous.iter().take(20) {
        eprintln!(
            "[cluster]   ambiguous: worker {} {:?} {} {} on {} at kill{:+.3}s, {:?}: {} {}",
            op.worker,
            op.action,
            op.namespace,
            op.port.map(|p| p.to_string()).unwrap_or_default(),
            Gateway::name(op.node),
            signed_secs(op.sent, kill),
            op.answered - op.sent,
            op.status,
            op.body.chars().take(160).collect::<String>()
        );
    }
    // Writes again after the kill: the first acked call sent after it, per node and overall.
    let mut first_overall: Option<Duration> = None;
    for n in 0..3 {
        let first = ops
            .iter()
            .filter(|op| op.node == n && op.acked() && op.sent > kill)
            .map(|op| op.answered - kill)
            .min();
        let first_add = ops
            .iter()
            .filter(|op| op.node == n && op.acked() && op.action == Action::Add && op.sent > kill)
            .map(|op| op.answered - kill)
            .min();
        eprintln!(
            "[cluster] node {}: first acked write sent after the leader's kill answered {first:?} after the kill (first add: {first_add:?})",
            Gateway::name(n)
        );
        match first {
            Some(t) if t <= WRITES_BACK_WITHIN => {}
            other => gw.problem(format!(
                "node {}: no write acked within {WRITES_BACK_WITHIN:?} of the leader's kill ({other:?})",
                Gateway::name(n)
            )),
        }
        first_overall = match (first_overall, first_add) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    eprintln!("[cluster] kill of the leader -> first successful add: {first_overall:?}");
    let stalled_after_kill = ops.iter().filter(|op| op.sent > kill).map(|op| op.answered - op.sent).max();
    eprintln!("[cluster] slowest call sent after the kill: {stalled_after_kill:?}");
    // 503s per second after the kill: a dead member must be skipped, not keep failing calls.
    let per_second: Vec<String> = (0..(SETTLED_AFTER_KILL + LOAD_AFTER_SETTLED).as_secs())
        .map(|s| {
            let in_second: Vec<&Op> = ops
                .iter()
                .filter(|op| {
                    op.sent >= kill + Duration::from_secs(s) && op.sent < kill + Duration::from_secs(s + 1)
                })
                .collect();
            format!("{}/{}", in_second.iter().filter(|op| op.status == 503).count(), in_second.len())
        })
        .collect();
    eprintln!("[cluster] 503s/calls sent in each second after the kill: {}", per_second.join(" "));
    let settled: Vec<&Op> = ops.iter().filter(|op| op.sent >= settled_from).collect();
    let late_503: Vec<&&Op> = settled.iter().filter(|op| op.status == 503).collect();
    if settled.len() < 20 {
        gw.problem(format!(
            "only {} calls were sent after the settling time: the load stopped early",
            settled.len()
        ));
    }
    if !late_503.is_empty() {
        gw.problem(format!(
            "{} of the {} calls sent {:?} or more after the leader's kill (at least {SETTLED_AFTER_KILL:?}, and \
             {SETTLED_AFTER_ELECTION:?} after the members agreed on a new leader; two members of three up) answered 503, \
             e.g. {:?} on node {} in {:?}: {}",
            late_503.len(),
            settled.len(),
            settled_from - kill,
            late_503[0].action,
            Gateway::name(late_503[0].node),
            late_503[0].answered - late_503[0].sent,
            late_503[0].body
        ));
    }

    // The nodes converge on one table, and it holds every acknowledged change.
    let table = gw.converged(Duration::from_secs(10), &all_apps);
    check_acked_changes(&gw, &ops, &table);
    check_no_port_twice(&gw, &ops, &table);
    check_forwarding(&gw, &table, &ops);
    for conn in held.lock().unwrap().iter_mut() {
        if let Err(e) = conn.round_trip() {
            gw.problem(format!("after phase A: {e}"));
        }
    }

    // ---- Phase B: no quorum --------------------------------------------------------
    let second = gw.cluster.leader(Duration::from_secs(10)).unwrap_or_else(|e| gw.fail(&e));
    eprintln!(
        "[cluster] killing the new leader, member {second} ({}): one member of three left",
        gw.cluster.name(second)
    );
    gw.cluster.kill(second);
    let lost_quorum = Instant::now();

    // Writes answer 503 id 5030 within the bound, on every node at once.
    let body =
        json!({"name": "while-no-quorum", "instances": [{"address": echo.addr().to_string()}]}).to_string();
    let (steady_ns, steady_port) = steady_ports[0].clone();
    let writes: Vec<(usize, &str, String, Option<String>)> = (0..3)
        .flat_map(|n| {
            [
                (n, "POST", gw.redirs_path(&late[n]), Some(json!({"namespace": "default"}).to_string())),
                (
                    n,
                    "DELETE",
                    format!("{}/{steady_port}?namespace={steady_ns}", gw.redirs_path(&steady[0])),
                    None,
                ),
                (n, "POST", gw.apps_path(), Some(body.clone())),
            ]
        })
        .collect();
    // One round: every write at once; each must answer 503 id 5030, naming the store,
    // within `bound`. The slowest answer.
    let round = |bound: Duration| -> Duration {
        let answers: Vec<(String, Result<HttpResponse, String>, Duration)> = thread::scope(|scope| {
            let handles: Vec<_> = writes
                .iter()
                .map(|(n, method, path, body)| {
                    let gw = &gw;
                    scope.spawn(move || {
                        let started = Instant::now();
                        let answer = gw.call(*n, method, path, body.as_deref());
                        (format!("{method} {path} on node {}", Gateway::name(*n)), answer, started.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut slowest = Duration::ZERO;
        for (what, answer, took) in &answers {
            slowest = slowest.max(*took);
            match answer {
                Ok(r) if r.status == 503 && error_id(r) == Some(5030) => {
                    let message = r.json()["message"].as_str().unwrap_or_default().to_lowercase();
                    if !message.contains("etcd") {
                        gw.problem(format!("{what}: the 503 must name the store: {}", r.text()));
                    }
                }
                Ok(r) => gw.problem(format!(
                    "{what} with no quorum must answer 503 id 5030, got {} {}",
                    r.status,
                    r.text()
                )),
                Err(e) => gw.problem(format!("{what} with no quorum got no answer: {e}")),
            }
            if *took > bound {
                gw.problem(format!("{what} with no quorum took {took:?}, over {bound:?}"));
            }
        }
        slowest
    };
    let slowest_503 = round(NO_QUORUM_503_WITHIN);
    eprintln!("[cluster] no quorum: the first writes answered 503 within {slowest_503:?}");
    // Once the nodes have seen etcd without a leader for longer than an election, a write
    // answers 503 at once, not after a request timeout. Rounds every 300 ms until three were
    // sent after that; bounded by the round in flight then and three more, each of which
    // ends within [`CALL_TIMEOUT`].
    let mut fast_rounds = 0;
    let _ = poll_every(PACE * 10, NO_QUORUM_FAST_AFTER + 4 * CALL_TIMEOUT, || {
        let started = lost_quorum.elapsed();
        let bound = if started >= NO_QUORUM_FAST_AFTER { NO_QUORUM_FAST_503 } else { NO_QUORUM_503_WITHIN };
        let slowest = round(bound);
        eprintln!("[cluster] no quorum: writes sent {started:?} after the quorum was lost answered 503 within {slowest:?}");
        if started >= NO_QUORUM_FAST_AFTER {
            fast_rounds += 1;
        }
        match fast_rounds {
            3 => Ok(()),
            n => Err(format!("{n} rounds sent after {NO_QUORUM_FAST_AFTER:?}")),
        }
    });
    assert_eq!(fast_rounds, 3, "three rounds of writes after {NO_QUORUM_FAST_AFTER:?} with no quorum");

    // Forwarding goes on: held connections, and new ones on every port through every node.
    for conn in held.lock().unwrap().iter_mut() {
        if let Err(e) = conn.round_trip() {
            gw.problem(format!("with no quorum: {e}"));
        }
    }
    let live: BTreeSet<u16> = table.values().flatten().map(|&(_, p)| p).collect();
    for (n, &ip) in gw.ips.iter().enumerate() {
        for &port in &live {
            if let Err(e) = echo_via(ip, port) {
                gw.problem(format!("with no quorum, port {port} through node {}: {e}", Gateway::name(n)));
            }
        }
    }
    // Reads answer from each node's copy, at once, with the table as it was.
    for n in 0..3 {
        let started = Instant::now();
        match gw.table(n, &all_apps) {
            Ok(t) if t == table => {}
            Ok(t) => gw.problem(format!(
                "with no quorum, node {} lists another table: {:?}",
                Gateway::name(n),
                t.iter().filter(|(app, l)| table.get(*app) != Some(l)).collect::<Vec<_>>()
            )),
            Err(e) => gw.problem(format!("with no quorum, the lists on node {}: {e}", Gateway::name(n))),
        }
        let apps = gw.call(n, "GET", &gw.apps_path(), None);
        match apps {
            Ok(r) if r.status == 200 => {}
            other => {
                gw.problem(format!("with no quorum, applications on node {}: {other:?}", Gateway::name(n)))
            }
        }
        eprintln!(
            "[cluster] no quorum: node {} answered {} lists and the applications in {:?}",
            Gateway::name(n),
            all_apps.len(),
            started.elapsed()
        );
    }
    eprintln!(
        "[cluster] no quorum for {:?}; restarting members {leader} and {second}",
        lost_quorum.elapsed()
    );

    // ---- Both members back: everything resumes, no gateway node restarted -------------
    let restarted = Instant::now();
    gw.cluster.restart_all(&[leader, second]);
    let healthy_after = restarted.elapsed();
    eprintln!("[cluster] members back and healthy {healthy_after:?} after their restart");
    let late_ports: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|n| {
                let (gw, late) = (&gw, &late);
                scope.spawn(move || {
                    let result = poll(RECOVERY_WITHIN, || {
                        let answer = gw.add(n, &late[n], "default")?;
                        match (answer.status, error_id(&answer)) {
                            (200 | 201, _) => Ok(port_of(&answer.json())),
                            (503, Some(5030)) => Err(format!("still 503: {}", answer.text())),
                            // An earlier try that answered 503 may have been applied after all.
                            (409, Some(4090)) => gw
                                .list(n, &late[n])?
                                .iter()
                                .find(|(ns, _)| ns == "default")
                                .map(|&(_, p)| p)
                                .ok_or_else(|| "409 but not listed".to_owned()),
                            (s, _) => Err(format!("FATAL {s}: {}", answer.text())),
                        }
                    });
                    (n, result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (n, result) = h.join().unwrap();
                match result {
                    Ok((port, took)) => {
                        eprintln!(
                            "[cluster] node {}: first add after the members' restart succeeded {:?} after they were healthy ({:?} after the restart began)",
                            Gateway::name(n),
                            took,
                            took + healthy_after
                        );
                        port
                    }
                    Err(e) => gw.fail(&format!(
                        "node {}: an add once the members are back (bound {RECOVERY_WITHIN:?}): {e}",
                        Gateway::name(n)
                    )),
                }
            })
            .collect()
    });
    // The new ports reach every node, and forward through each.
    for (n, &port) in late_ports.iter().enumerate() {
        gw.must(
            Duration::from_secs(5),
            &format!("q{n}'s new port {port} forwards through every node"),
            || gw.ips.iter().try_for_each(|&ip| echo_via(ip, port)),
        );
    }
    let final_table = gw.converged(Duration::from_secs(5), &all_apps);
    for (n, &port) in late_ports.iter().enumerate() {
        if final_table[&late[n]] != BTreeSet::from([("default".to_owned(), port)]) {
            gw.problem(format!("q{n} lists {:?}, not its one new port {port}", final_table[&late[n]]));
        }
    }
    // The writes refused with no quorum changed nothing.
    for app in worker_apps.iter().flatten().chain(&steady) {
        if final_table[app] != table[app] {
            gw.problem(format!("{app} changed with no quorum: {:?} -> {:?}", table[app], final_table[app]));
        }
    }
    // Every node is listed up again (their leases lapsed with no quorum).
    gw.must(Duration::from_secs(10), "every node lists a, b and c up", || {
        for n in 0..3 {
            let r = gw.call(n, "GET", "/v2/nodes", None)?;
            let nodes = r.json();
            for (name, _) in NODES {
                let state = nodes
                    .as_array()
                    .and_then(|l| l.iter().find(|x| x["name"] == name))
                    .map(|x| x["state"].clone());
                if state != Some(json!("up")) {
                    return Err(format!("node {} lists {name} as {state:?}", Gateway::name(n)));
                }
            }
        }
        Ok(())
    });
    // A remove works too, and the old connections and ports still carry traffic.
    let removed = gw.remove(1, &late[0], "default", late_ports[0]).unwrap_or_else(|e| gw.fail(&e));
    if removed.status != 200 {
        gw.problem(format!("remove after recovery: {} {}", removed.status, removed.text()));
    }
    gw.must(Duration::from_secs(3), "the removed port is closed on every node", || {
        gw.ips.iter().try_for_each(|&ip| refused_via(ip, late_ports[0]))
    });
    for conn in held.lock().unwrap().iter_mut() {
        if let Err(e) = conn.round_trip() {
            gw.problem(format!("after recovery: {e}"));
        }
    }
    for &(_, port) in &steady_ports {
        for (n, &ip) in gw.ips.iter().enumerate() {
            if let Err(e) = echo_via(ip, port) {
                gw.problem(format!(
                    "after recovery, steady port {port} through node {}: {e}",
                    Gateway::name(n)
                ));
            }
        }
    }
    gw.finish();
}

/// `t - origin` in seconds, negative when `t` is earlier.
fn signed_secs(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        (t - origin).as_secs_f64()
    } else {
        -(origin - t).as_secs_f64()
    }
}

/// Every acknowledged add is listed (unless a later remove may have taken it), every
/// acknowledged remove is gone (unless a later add may have brought it back).
fn check_acked_changes(gw: &Gateway, ops: &[Op], table: &BTreeMap<String, BTreeSet<(String, u16)>>) {
    let mut pairs: BTreeMap<(String, &str), Vec<&Op>> = BTreeMap::new();
    for op in ops {
        pairs.entry((op.app.clone(), op.namespace)).or_default().push(op);
    }
    let mut checked = 0;
    for ((app, namespace), history) in &pairs {
        let listed: BTreeSet<u16> =
            table[app].iter().filter(|(ns, _)| ns == namespace).map(|&(_, p)| p).collect();
        let Some((i, after)) = last_ack(history) else { continue };
        let last = history[i];
        let maybe_undone = after.iter().any(|op| op.ambiguous());
        let port = last.port.unwrap_or_default();
        let what = format!(
            "{namespace} of {app} ({:?} of port {port} acked on node {})",
            last.action,
            Gateway::name(last.node)
        );
        match last.action {
            Action::Add if !maybe_undone && listed != BTreeSet::from([port]) => {
                gw.problem(format!("{what}: the table lists {listed:?}: an acknowledged add was lost"))
            }
            Action::Remove if listed.contains(&port) && !maybe_undone => {
                gw.problem(format!("{what}: the port is listed again: an acknowledged remove was lost"))
            }
            Action::Remove
                if !listed.is_empty() && !maybe_undone && !history.iter().any(|op| op.ambiguous()) =>
            {
                gw.problem(format!("{what}: the table lists {listed:?} although nothing added since"))
            }
            _ => checked += 1,
        }
    }
    eprintln!("[cluster] {checked} of {} (application, namespace) pairs checked against their last acknowledged change", pairs.len());
}

/// No two applications hold one (namespace, port): neither in the final table nor, from the
/// calls' answers, at any moment (an acked add holds its port from its answer until its
/// remove is sent).
fn check_no_port_twice(gw: &Gateway, ops: &[Op], table: &BTreeMap<String, BTreeSet<(String, u16)>>) {
    let mut holders: HashMap<(String, u16), Vec<&String>> = HashMap::new();
    for (app, pairs) in table {
        for pair in pairs {
            holders.entry(pair.clone()).or_default().push(app);
        }
    }
    for (pair, apps) in &holders {
        if apps.len() > 1 {
            gw.problem(format!("{pair:?} is listed for several applications: {apps:?}"));
        }
    }
    // (namespace, port) -> intervals [acked, remove sent) with their application.
    let mut held: HashMap<(&str, u16), Vec<HeldSpan>> = HashMap::new();
    for (i, op) in ops.iter().enumerate().filter(|(_, op)| op.action == Action::Add && op.acked()) {
        let port = op.port.unwrap_or_default();
        let until = ops[i + 1..]
            .iter()
            .find(|o| {
                o.action == Action::Remove
                    && o.app == op.app
                    && o.namespace == op.namespace
                    && o.port == Some(port)
            })
            .map(|o| o.sent);
        held.entry((op.namespace, port)).or_default().push((op.answered, until, &op.app));
    }
    for ((namespace, port), spans) in &held {
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                let a_before_b = a.1.is_some_and(|end| end <= b.0);
                let b_before_a = b.1.is_some_and(|end| end <= a.0);
                if !a_before_b && !b_before_a {
                    gw.problem(format!(
                        "{namespace}:{port} was given to {} and {} at the same time",
                        a.2, b.2
                    ));
                }
            }
        }
    }
}

/// Every listed port forwards through every node; every port acked then removed for good
/// (no application lists it now) is refused on every node.
fn check_forwarding(gw: &Gateway, table: &BTreeMap<String, BTreeSet<(String, u16)>>, ops: &[Op]) {
    let live: BTreeSet<u16> = table.values().flatten().map(|&(_, p)| p).collect();
    for (n, &ip) in gw.ips.iter().enumerate() {
        for &port in &live {
            if let Err(e) = echo_via(ip, port) {
                gw.problem(format!("listed port {port} through node {}: {e}", Gateway::name(n)));
            }
        }
    }
    let gone: BTreeSet<u16> =
        ops.iter().filter(|op| op.acked()).filter_map(|op| op.port).filter(|p| !live.contains(p)).collect();
    for (n, &ip) in gw.ips.iter().enumerate() {
        for &port in &gone {
            if let Err(e) = refused_via(ip, port) {
                gw.problem(format!("removed port {port} through node {}: {e}", Gateway::name(n)));
            }
        }
    }
    eprintln!(
        "[cluster] {} listed ports forward through every node, {} removed ones are refused",
        live.len(),
        gone.len()
    );
}
