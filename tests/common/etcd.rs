//! A real, single-member etcd for the fleet tests, and a TCP proxy that can cut a node off
//! from it.
//!
//! - [`Etcd`]: `/usr/bin/etcd` (Debian's `etcd-server`) on two free loopback ports with a
//!   temp data dir, ready once `GET /health` answers `"health":"true"`; [`Etcd::stop`]
//!   kills it (SIGKILL) and keeps its data, [`Etcd::restart`] brings it back on the same
//!   ports and data; killed when dropped. [`Etcd::revision`], [`Etcd::put`] and
//!   [`Etcd::compact`] go through etcd's JSON gateway (`POST /v3/kv/…`).
//! - [`CutProxy`]: forwards a loopback port to a target; [`CutProxy::cut`] closes every
//!   connection and closes new ones at once, [`CutProxy::restore`] forwards again.
//!
//! - [`Cluster`]: three `/usr/bin/etcd` members on free loopback ports, one fresh data dir
//!   each, `--initial-cluster` naming all three; ready once every member answers `/health`
//!   healthy. [`Cluster::kill`] SIGKILLs a member (its data stays), [`Cluster::restart`]
//!   brings members back on the same ports and data, [`Cluster::leader`] says which member
//!   leads (`POST /v3/maintenance/status` on each).
//!
//! [`Etcd::start_tls`] serves the clients over TLS only and asks each for a certificate
//! (`--client-cert-auth`), with a plain listener beside it for the harness;
//! [`Etcd::enable_auth`] and [`Etcd::add_user`] set etcd's users and roles up.
//!
//! Only std, `tempfile`, `serde_json` and `libc` are used, so that unit tests may include this
//! file too (`#[path = "…/tests/common/etcd.rs"] mod etcd;`), and `wait.rs` beside it, which
//! only uses std. Nothing here sleeps to wait for readiness: waits poll a signal (the health
//! endpoint) with [`wait::poll`], bounded in time.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

#[path = "wait.rs"]
pub mod wait;
use wait::poll;

/// Where Debian's `etcd-server` installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// How long etcd may take to answer `"health":"true"` after it is spawned.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Timeout of one request to etcd's HTTP endpoints.
const ETCD_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A free port on 127.0.0.1: bound to port 0, read, released.
fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local address of the probe listener").port()
}

/// The files of an etcd that serves its clients over TLS and asks each for a certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// etcd's certificate (PEM), for 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA whose client certificates etcd accepts (`--trusted-ca-file`).
    pub client_ca: PathBuf,
}

/// A single-member etcd on loopback, killed (SIGKILL) when dropped.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    /// With TLS: a plain listener beside the TLS one, for this harness's own requests.
    tls: Option<(TlsFiles, u16)>,
    /// The root user's password and token once [`Etcd::enable_auth`] turned etcd's auth
    /// on (a restart forgets every token: [`Etcd::restart`] asks for a new one).
    token: Mutex<Option<(String, String)>>,
    data_dir: tempfile::TempDir,
    /// Everything etcd printed on stdout and stderr, over all its runs.
    log: Arc<Mutex<String>>,
}

impl Etcd {
    /// Starts etcd on two free loopback ports and a fresh data dir, and waits (bounded) until
    /// it reports itself healthy. Panics if etcd is not installed: the fleet tests never skip.
    pub fn start() -> Etcd {
        Etcd::start_with(None)
    }

    /// Starts etcd serving its clients over TLS only, with `--client-cert-auth`; the harness
    /// itself talks to it on a second, plain loopback listener.
    pub fn start_tls(tls: TlsFiles) -> Etcd {
        Etcd::start_with(Some(tls))
    }

    fn start_with(tls: Option<TlsFiles>) -> Etcd {
        assert!(Path::new(ETCD_BIN).exists(), "etcd not found: apt-get install etcd-server");
        // The ports are picked free, then released: another process may take one before etcd
        // binds it. Then etcd exits at once, and a few fresh tries make that harmless.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut etcd = Etcd {
                child: None,
                client_port: free_loopback_port(),
                peer_port: free_loopback_port(),
                tls: tls.clone().map(|files| (files, free_loopback_port())),
                token: Mutex::new(None),
                data_dir: tempfile::tempdir().expect("temp etcd data dir"),
                log: Arc::new(Mutex::new(String::new())),
            };
            if etcd.client_port == etcd.peer_port {
                continue;
            }
            match etcd.spawn_and_wait() {
                Ok(()) => return etcd,
                Err(e) => failures.push(format!("{e}\n--- etcd output ---\n{}", etcd.log())),
            }
        }
        panic!("etcd did not start in 3 tries:\n{}", failures.join("\n"))
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The client endpoint as a socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// `etcd://127.0.0.1:PORT`, for `serve --store`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    /// The data directory (kept across [`Etcd::stop`] and [`Etcd::restart`]).
    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_owned()
    }

    /// What etcd printed so far (stdout and stderr, every run).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the etcd process is running (spawned and not stopped).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd with SIGKILL and reaps it; the data dir is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("reap the killed etcd");
        }
    }

    /// Starts etcd again on the same ports and data dir and waits until it is healthy.
    pub fn restart(&mut self) {
        self.stop();
        self.log.lock().unwrap().push_str("--- etcd restarted by the test ---\n");
        if let Err(e) = self.spawn_and_wait() {
            panic!("etcd did not come back on {}: {e}\n--- etcd output ---\n{}", self.endpoint(), self.log());
        }
        let root_password = self.token.lock().unwrap().take().map(|(password, _)| password);
        if let Some(password) = root_password {
            self.log_in_as_root(&password);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = etcd_command("t", &self.data_dir.path().join("etcd"));
        match &self.tls {
            None => {
                let client = format!("http://127.0.0.1:{}", self.client_port);
                cmd.args(["--listen-client-urls", &client, "--advertise-client-urls", &client]);
            }
            Some((files, admin_port)) => {
                let client = format!("https://127.0.0.1:{}", self.client_port);
                let listen = format!("{client},http://127.0.0.1:{admin_port}");
                cmd.args(["--listen-client-urls", &listen, "--advertise-client-urls", &client])
                    .arg("--cert-file")
                    .arg(&files.cert)
                    .arg("--key-file")
                    .arg(&files.key)
                    .arg("--trusted-ca-file")
                    .arg(&files.client_ca)
                    .arg("--client-cert-auth");
            }
        }
        cmd.args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")]);
        let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {ETCD_BIN}: {e}"))?;
        drain(child.stdout.take().expect("piped stdout"), Arc::clone(&self.log));
        drain(child.stderr.take().expect("piped stderr"), Arc::clone(&self.log));
        self.child = Some(child);

        let mut exited = None;
        let healthy = poll(ETCD_READY_TIMEOUT, || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("wait for etcd") {
                exited = Some(status);
                return Err("FATAL: etcd exited".to_owned());
            }
            match self.request("GET", "/health", None) {
                Ok((200, body)) if body.contains(r#""health":"true""#) => Ok(()),
                Ok((status, body)) => Err(format!("status {status}: {body}")),
                Err(e) => Err(e),
            }
        });
        if let Some(status) = exited {
            self.child = None;
            return Err(format!("etcd exited before it was healthy ({status})"));
        }
        if let Err(last) = healthy {
            self.stop();
            return Err(format!("etcd was not healthy within {ETCD_READY_TIMEOUT:?} (last probe: {last})"));
        }
        Ok(())
    }

    /// One HTTP/1.0 request to etcd's client port (so the answer is neither chunked nor kept
    /// alive): (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
        let admin = match &self.tls {
            Some((_, port)) => SocketAddr::from(([127, 0, 0, 1], *port)),
            None => self.addr(),
        };
        let token = self.token.lock().unwrap().clone().map(|(_, token)| token);
        let headers: Vec<(&str, &str)> = token.iter().map(|t| ("Authorization", t.as_str())).collect();
        http10_with(admin, method, path, body, &headers, ETCD_HTTP_TIMEOUT)
    }

    /// Turns etcd's authentication on, with a `root` user of `root_password`; the harness's
    /// own requests go as root from then on.
    pub fn enable_auth(&self, root_password: &str) {
        let step = |path: &str, body: Value| {
            self.gateway(path, &body).unwrap_or_else(|e| panic!("etcd auth set-up, {path}: {e}"));
        };
        step("/v3/auth/user/add", serde_json::json!({"name": "root", "password": root_password}));
        step("/v3/auth/role/add", serde_json::json!({"name": "root"}));
        step("/v3/auth/user/grant", serde_json::json!({"user": "root", "role": "root"}));
        step("/v3/auth/enable", serde_json::json!({}));
        self.log_in_as_root(root_password);
    }

    fn log_in_as_root(&self, root_password: &str) {
        let answer = self
            .gateway("/v3/auth/authenticate", &serde_json::json!({"name": "root", "password": root_password}))
            .unwrap_or_else(|e| panic!("etcd auth: authenticate as root: {e}"));
        let token = answer["token"].as_str().unwrap_or_else(|| panic!("no token in {answer}")).to_owned();
        *self.token.lock().unwrap() = Some((root_password.to_owned(), token));
    }

    /// Adds a user with `password` and a role of its name that may read and write the keys
    /// under `prefix` (none: a user with no rights).
    pub fn add_user(&self, name: &str, password: &str, prefix: Option<&str>) {
        let step = |path: &str, body: Value| {
            self.gateway(path, &body).unwrap_or_else(|e| panic!("etcd user {name}, {path}: {e}"));
        };
        step("/v3/auth/user/add", serde_json::json!({"name": name, "password": password}));
        if let Some(prefix) = prefix {
            let mut end = prefix.as_bytes().to_vec();
            *end.last_mut().expect("a non-empty prefix") += 1;
            step("/v3/auth/role/add", serde_json::json!({"name": name}));
            let perm = serde_json::json!({"permType": "READWRITE", "key": base64(prefix.as_bytes()), "range_end": base64(&end)});
            step("/v3/auth/role/grant", serde_json::json!({"name": name, "perm": perm}));
            step("/v3/auth/user/grant", serde_json::json!({"user": name, "role": name}));
        }
    }

    /// `POST /v3/…` on the JSON gateway; the JSON answer, or an error with etcd's message.
    pub fn gateway(&self, path: &str, body: &Value) -> Result<Value, String> {
        let (status, text) = self.request("POST", path, Some(&body.to_string()))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| format!("POST {path}: status {status}, not JSON ({e}): {text}"))?;
        if status != 200 || json.get("error").is_some() {
            return Err(format!("POST {path}: status {status}: {text}"));
        }
        Ok(json)
    }

    /// The store's current revision (`header.revision` of a range request).
    pub fn revision(&self) -> i64 {
        let answer = self
            .gateway("/v3/kv/range", &serde_json::json!({"key": "AA=="}))
            .unwrap_or_else(|e| panic!("etcd revision: {e}"));
        let revision = &answer["header"]["revision"];
        // The gateway writes 64-bit integers as JSON strings.
        revision
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| revision.as_i64())
            .unwrap_or_else(|| panic!("no header.revision in etcd's answer: {answer}"))
    }

    /// Writes `key` = `value` (raw bytes, base64-encoded for the gateway); the new revision.
    pub fn put(&self, key: &[u8], value: &[u8]) -> i64 {
        let body = serde_json::json!({"key": base64(key), "value": base64(value)});
        let answer = self.gateway("/v3/kv/put", &body).unwrap_or_else(|e| panic!("etcd put: {e}"));
        answer["header"]["revision"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no header.revision in etcd's answer: {answer}"))
    }

    /// The value of `key` read at `revision` (0: the latest); `Err` carries etcd's message,
    /// e.g. `required revision has been compacted`.
    pub fn get_at(&self, key: &[u8], revision: i64) -> Result<Option<Vec<u8>>, String> {
        let body = serde_json::json!({"key": base64(key), "revision": revision.to_string()});
        let answer = self.gateway("/v3/kv/range", &body)?;
        match answer["kvs"].as_array().and_then(|kvs| kvs.first()) {
            None => Ok(None),
            Some(kv) => {
                let value = kv["value"].as_str().unwrap_or("");
                Ok(Some(unbase64(value).ok_or_else(|| format!("bad base64 value in {answer}"))?))
            }
        }
    }

    /// Compacts the store's history up to `revision` (physically: the compaction is done when
    /// this returns). A watch that asks for an older revision is then refused as compacted.
    pub fn compact(&self, revision: i64) {
        let body = serde_json::json!({"revision": revision.to_string(), "physical": true});
        if let Err(e) = self.gateway("/v3/kv/compaction", &body) {
            panic!("etcd compaction at revision {revision}: {e}");
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `etcd --name NAME --data-dir DIR`, logging errors only, its output piped, and none of
/// the test's own `ETCD_*` variables (etcd reads its flags from them too).
pub fn etcd_command(name: &str, data_dir: &Path) -> Command {
    let mut cmd = Command::new(ETCD_BIN);
    cmd.arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--logger", "zap", "--log-level", "error"])
        .env_remove("ETCDCTL_API")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Appends everything `pipe` yields to `log`, line by line, until EOF.
fn drain(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => log.lock().unwrap().push_str(&String::from_utf8_lossy(&line)),
            }
        }
    });
}

/// A minimal HTTP/1.0 client: one request, the response read to EOF; (status, body).
pub fn http10(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    http10_with(addr, method, path, body, &[], timeout)
}

/// [`http10`] with more request headers.
pub fn http10_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read the answer to {method} {path}: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| format!("no end of headers in: {raw}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in: {head}"))?;
    Ok((status, body.to_owned()))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as etcd's gateway expects for `bytes` fields.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` on a character outside the alphabet.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = BASE64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// A three-member cluster
// ---------------------------------------------------------------------------------------

/// How many members a [`Cluster`] has.
pub const CLUSTER_SIZE: usize = 3;

/// One member of a [`Cluster`]: its ports and data dir, and its process while it runs.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: tempfile::TempDir,
    /// Behind a lock so that a test may kill a member while other threads use the cluster.
    child: Mutex<Option<Child>>,
}

impl Member {
    fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Kills the member with SIGKILL and reaps it; the data dir is kept.
    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            child.wait().expect("reap the killed etcd member");
        }
    }
}

/// A member's answer to a status request: its own id and the id of the leader it knows.
type MemberStatus = Result<(u64, u64), String>;

/// A 3-member etcd cluster on loopback; every member is killed (SIGKILL) when dropped.
pub struct Cluster {
    members: Vec<Member>,
    /// `--initial-cluster-token`: unique, so that members of two tests' clusters never join.
    token: String,
    /// Everything the members printed, each line prefixed with the member's name.
    log: Arc<Mutex<String>>,
}

impl Cluster {
    /// Starts three members on six distinct free loopback ports with fresh data dirs, and
    /// waits (bounded) until each answers `/health` healthy, which needs an elected leader.
    /// Panics if etcd is not installed: the cluster tests never skip.
    pub fn start() -> Cluster {
        assert!(Path::new(ETCD_BIN).exists(), "etcd not found: apt-get install etcd-server");
        // The ports are picked free, then released: another process may take one before its
        // member binds it (the member then exits at once); a few fresh tries make that harmless.
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let mut ports = Vec::new();
            while ports.len() < 2 * CLUSTER_SIZE {
                let port = free_loopback_port();
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            let members = (0..CLUSTER_SIZE)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    data_dir: tempfile::tempdir().expect("temp etcd data dir"),
                    child: Mutex::new(None),
                })
                .collect();
            let token = format!("tcp-redirs-test-{:016x}-{attempt}", rand_u64());
            let cluster = Cluster { members, token, log: Arc::new(Mutex::new(String::new())) };
            let all: Vec<usize> = (0..CLUSTER_SIZE).collect();
            match cluster.spawn_and_wait(&all) {
                Ok(()) => return cluster,
                Err(e) => {
                    failures.push(format!("{e}\n--- etcd output ---\n{}", cluster.log()));
                    for member in &cluster.members {
                        member.kill();
                    }
                }
            }
        }
        panic!("the etcd cluster did not start in 3 tries:\n{}", failures.join("\n"))
    }

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, for `serve --store`.
    pub fn url(&self) -> String {
        let endpoints: Vec<String> = (0..CLUSTER_SIZE).map(|i| self.endpoint(i)).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// `127.0.0.1:PORT`, member `i`'s client endpoint.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_addr().to_string()
    }

    /// Member `i`'s name (`m0`, `m1`, `m2`).
    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    /// What the members printed so far (every run), each line prefixed with `[mN]`.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether member `i`'s process is running.
    pub fn is_running(&self, i: usize) -> bool {
        match &mut *self.members[i].child.lock().unwrap() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs member `i` and reaps it; its data dir is kept.
    pub fn kill(&self, i: usize) {
        self.log
            .lock()
            .unwrap()
            .push_str(&format!("--- {} killed (SIGKILL) by the test ---\n", self.members[i].name));
        self.members[i].kill();
    }

    /// Starts member `i` again on its ports and data dir and waits until it is healthy
    /// (which needs a quorum: to bring back two members of three, use [`Cluster::restart_all`]).
    pub fn restart(&self, i: usize) {
        self.restart_all(&[i]);
    }

    /// Starts every member of `which` again (all at once, on their ports and data dirs) and
    /// waits until each is healthy.
    pub fn restart_all(&self, which: &[usize]) {
        for &i in which {
            self.members[i].kill();
            self.log
                .lock()
                .unwrap()
                .push_str(&format!("--- {} restarted by the test ---\n", self.members[i].name));
        }
        if let Err(e) = self.spawn_and_wait(which) {
            panic!("etcd members {which:?} did not come back: {e}\n--- etcd output ---\n{}", self.log());
        }
    }

    /// Spawns the members `which` (the others are left as they are), then waits for each to
    /// answer `/health` healthy within [`ETCD_READY_TIMEOUT`].
    fn spawn_and_wait(&self, which: &[usize]) -> Result<(), String> {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect();
        let initial = initial.join(",");
        for &i in which {
            let member = &self.members[i];
            let client = format!("http://{}", member.client_addr());
            let peer = member.peer_url();
            let mut cmd = etcd_command(&member.name, &member.data_dir.path().join("etcd"));
            // The `--initial-*` flags only matter to a fresh data dir: a restarted member
            // finds its cluster in its data.
            cmd.args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &self.token]);
            let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {ETCD_BIN}: {e}"))?;
            let tag = format!("[{}] ", member.name);
            drain_tagged(child.stdout.take().expect("piped stdout"), Arc::clone(&self.log), tag.clone());
            drain_tagged(child.stderr.take().expect("piped stderr"), Arc::clone(&self.log), tag);
            *self.members[i].child.lock().unwrap() = Some(child);
        }
        let mut waiting: Vec<usize> = which.to_vec();
        let healthy = poll(ETCD_READY_TIMEOUT, || {
            for &i in &waiting {
                let member = &self.members[i];
                let mut child = member.child.lock().unwrap();
                let exited = match child.as_mut() {
                    Some(c) => c.try_wait().expect("wait for etcd"),
                    None => return Err(format!("FATAL: member {} was killed while it started", member.name)),
                };
                if let Some(status) = exited {
                    *child = None;
                    return Err(format!(
                        "FATAL: member {} exited before it was healthy ({status})",
                        member.name
                    ));
                }
            }
            let mut last = String::new();
            waiting.retain(|&i| match self.health(i) {
                Ok(()) => false,
                Err(e) => {
                    last = format!("{}: {e}", self.members[i].name);
                    true
                }
            });
            if waiting.is_empty() {
                Ok(())
            } else {
                Err(last)
            }
        });
        match healthy {
            Ok(_) => Ok(()),
            Err(e) => match e.strip_prefix("FATAL: ") {
                Some(fatal) => Err(fatal.to_owned()),
                None => Err(format!(
                    "members {waiting:?} were not healthy within {ETCD_READY_TIMEOUT:?} (last probe: {e})"
                )),
            },
        }
    }

    /// `Ok` when member `i` answers `GET /health` with `"health":"true"` (it sees a leader).
    pub fn health(&self, i: usize) -> Result<(), String> {
        match self.request(i, "GET", "/health", None) {
            Ok((200, body)) if body.contains(r#""health":"true""#) => Ok(()),
            Ok((status, body)) => Err(format!("status {status}: {body}")),
            Err(e) => Err(e),
        }
    }

    /// One HTTP/1.0 request to member `i`'s client port, with a 2 s timeout: (status, body).
    pub fn request(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        http10(self.members[i].client_addr(), method, path, body, Duration::from_secs(2))
    }

    /// `POST /v3/maintenance/status` on member `i`: (its member id, the leader it knows, 0
    /// for none). The gateway writes 64-bit integers as JSON strings.
    pub fn status(&self, i: usize) -> Result<(u64, u64), String> {
        let (status, text) = self.request(i, "POST", "/v3/maintenance/status", Some("{}"))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("status {status}, not JSON ({e}): {text}"))?;
        let number = |v: &Value| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64());
        let own =
            number(&json["header"]["member_id"]).ok_or_else(|| format!("no header.member_id in {json}"))?;
        Ok((own, number(&json["leader"]).unwrap_or(0)))
    }

    /// Which running member leads, as every running member that answers agrees, polled up to
    /// `limit`; `Err` with what they said when no such member shows within it.
    pub fn leader(&self, limit: Duration) -> Result<usize, String> {
        // Bounded by the limit (each probe takes at most 3 requests of 2 s).
        let found = poll(limit, || {
            let running: Vec<usize> = (0..CLUSTER_SIZE).filter(|&i| self.is_running(i)).collect();
            // (member, its status: its own id and the leader it knows).
            let answers: Vec<(usize, MemberStatus)> = running.iter().map(|&i| (i, self.status(i))).collect();
            let ids: HashMap<u64, usize> =
                answers.iter().filter_map(|(i, a)| a.as_ref().ok().map(|(own, _)| (*own, *i))).collect();
            let leaders: Vec<u64> =
                answers.iter().filter_map(|(_, a)| a.as_ref().ok().map(|(_, l)| *l)).collect();
            match leaders.first() {
                Some(&leader) if leader != 0 && leaders.iter().all(|&l| l == leader) => {
                    match ids.get(&leader) {
                        Some(&i) => Ok(i),
                        None => Err(format!("the leader {leader:x} is no running member: {answers:?}")),
                    }
                }
                _ => Err(format!("no agreed leader: {answers:?}")),
            }
        });
        found.map(|(i, _)| i).map_err(|e| format!("no agreed leader within {limit:?}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &self.members {
            member.kill();
        }
    }
}

/// A pseudo-random u64 from the clock and the process id (this file uses no `rand`).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Appends every line `pipe` yields to `log`, prefixed with `tag`, until EOF.
pub fn drain_tagged(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>, tag: String) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let mut log = log.lock().unwrap();
                    log.push_str(&tag);
                    log.push_str(&String::from_utf8_lossy(&line));
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// A proxy that can cut a node off from etcd
// ---------------------------------------------------------------------------------------

/// The two sockets of one forwarded connection, kept so that [`CutProxy::cut`] can close them.
struct Pair {
    client: TcpStream,
    upstream: TcpStream,
}

impl Pair {
    fn close(&self) {
        // A reset rather than a FIN, as when a network path or a host disappears.
        set_linger_zero(&self.client);
        set_linger_zero(&self.upstream);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

struct ProxyState {
    cut: AtomicBool,
    /// A partition ([`CutProxy::partition`]): bytes stop, connections stay open.
    paused: AtomicBool,
    stop: AtomicBool,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Pair>>,
}

/// A TCP proxy on 127.0.0.1:0 forwarding to `target`, one thread per direction per
/// connection; stopped (and every connection closed) when dropped.
pub struct CutProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: Arc<ProxyState>,
    accept_loop: Option<JoinHandle<()>>,
}

impl CutProxy {
    /// Starts forwarding 127.0.0.1:(free port) to `target` (e.g. `etcd.endpoint()`).
    pub fn start(target: &str) -> CutProxy {
        let target: SocketAddr = target.parse().unwrap_or_else(|e| panic!("proxy target `{target}`: {e}"));
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            cut: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept_loop = {
            let state = Arc::clone(&state);
            thread::spawn(move || {
                let mut errors = 0;
                for conn in listener.incoming() {
                    if state.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(client) => proxy_connection(client, target, &state),
                        Err(_) if errors < 100 => errors += 1,
                        Err(_) => break,
                    }
                }
            })
        };
        CutProxy { addr, target, state, accept_loop: Some(accept_loop) }
    }

    /// `127.0.0.1:PORT`, where the proxy listens.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// `etcd://127.0.0.1:PORT`, for `serve --store`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection (with a reset) and, until [`CutProxy::restore`], closes
    /// each new connection as soon as it is accepted.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        let open: Vec<Pair> = self.state.open.lock().unwrap().drain().map(|(_, p)| p).collect();
        for pair in &open {
            pair.close();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// A partition rather than a crash: from now until [`CutProxy::heal`], no byte passes
    /// either way, and no connection is closed. Open connections keep what is sent in
    /// their buffers (as a network that drops packets keeps a sender retransmitting); new
    /// connections are accepted and wait. The node notices only by its own timeouts.
    pub fn partition(&self) {
        self.state.paused.store(true, Ordering::SeqCst);
    }

    /// Ends a [`CutProxy::partition`]: the bytes held go on, in order, and new connections
    /// reach etcd again.
    pub fn heal(&self) {
        self.state.paused.store(false, Ordering::SeqCst);
    }

    /// How many forwarded connections are open.
    pub fn open_connections(&self) -> usize {
        self.state.open.lock().unwrap().len()
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(handle) = self.accept_loop.take() {
            let _ = handle.join();
        }
    }
}

fn proxy_connection(client: TcpStream, target: SocketAddr, state: &Arc<ProxyState>) {
    if state.paused.load(Ordering::SeqCst) {
        // Held, off the accept loop, until the partition ends (or the proxy stops).
        let state = Arc::clone(state);
        thread::spawn(move || {
            while state.paused.load(Ordering::SeqCst) && !state.stop.load(Ordering::SeqCst) {
                thread::sleep(PAUSE_POLL);
            }
            forward_connection(client, target, &state);
        });
        return;
    }
    forward_connection(client, target, state);
}

/// How often a connection held by a partition looks whether it ended.
const PAUSE_POLL: Duration = Duration::from_millis(5);

fn forward_connection(client: TcpStream, target: SocketAddr, state: &Arc<ProxyState>) {
    if state.cut.load(Ordering::SeqCst) || state.stop.load(Ordering::SeqCst) {
        set_linger_zero(&client);
        return; // dropped: closed at once
    }
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        set_linger_zero(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(client2), Ok(upstream2), Ok(client3), Ok(upstream3)) =
        (client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    {
        let mut open = state.open.lock().unwrap();
        // A cut that raced with this accept must not miss the new pair.
        if state.cut.load(Ordering::SeqCst) {
            set_linger_zero(&client);
            set_linger_zero(&upstream);
            return;
        }
        open.insert(id, Pair { client: client3, upstream: upstream3 });
    }
    let up = {
        let state = Arc::clone(state);
        thread::spawn(move || {
            copy_then_shutdown(client, upstream, &state);
            forget(&state, id);
        })
    };
    let state = Arc::clone(state);
    thread::spawn(move || {
        copy_then_shutdown(upstream2, client2, &state);
        let _ = up.join();
        forget(&state, id);
    });
}

fn forget(state: &ProxyState, id: u64) {
    state.open.lock().unwrap().remove(&id);
}

/// Copies `from` into `to` until EOF or an error, then passes the end on; bytes read during
/// a partition are held until it ends.
fn copy_then_shutdown(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    // Bounded by the connection's life: each turn moves bytes or ends the loop.
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                while state.paused.load(Ordering::SeqCst) && !state.stop.load(Ordering::SeqCst) {
                    thread::sleep(PAUSE_POLL);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
