//! Helpers shared by the black-box tests: the real `tcp-redirs` binary, real sockets on
//! 127.0.0.1, nothing mocked.
//!
//! - [`Server`]: `tcp-redirs serve` on port 0 with a temp data dir, ready when it logs
//!   `control API listening on http://…`; killed (and reaped) when dropped.
//! - [`Server::cli`] / [`run_cli`]: the CLI as a child process with an isolated config dir,
//!   giving back (exit code, stdout, stderr).
//! - [`TcpService`]: a small TCP server run by the test (an echo server by default), the
//!   application instance a redirection forwards to.
//! - [`http`]: a raw HTTP/1.1 request over a `TcpStream` ([`try_http`] gives errors back).
//! - [`etcd`]: a real etcd and a proxy that can cut a node off from it, for `tests/fleet.rs`;
//!   `ServerBuilder::ip` and `ServerBuilder::token` put fleet nodes on their own loopback
//!   address with one shared admin token.
//!
//! Nothing here sleeps to wait for readiness: waits are on a signal (a log line, a process
//! exit, a socket event) and every one of them is bounded in time. Whatever is polled goes
//! through [`poll`] (in `wait.rs`, which `etcd.rs` loads) or [`poll_async`]: the tests
//! write no polling loop of their own.

#![allow(dead_code)]

pub mod etcd;
pub mod netns;
pub mod pki;

// `wait.rs` is loaded once, by `etcd.rs` (which unit tests include on its own, with it).
use etcd::wait;
#[allow(unused_imports)] // each test binary uses some of them
pub use etcd::wait::{hold, poll, poll_every, wait_for_child, wait_until, POLL};

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tcp-redirs");
/// How long `serve` may take to log that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one CLI invocation may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout on every socket the tests open.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The log line `serve` prints once it is ready; the URL follows it.
const READY_MARKER: &str = "control API listening on ";

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A `Command` for the binary with none of the caller's `TCP_REDIRS_*` settings.
fn command() -> Command {
    command_for(Path::new(BIN))
}

/// A `Command` for `program` (the binary or a copy of it) with none of the caller's
/// `TCP_REDIRS_*` settings, and the port mode of this run: bound, unless `TEST_PORT_MODE`
/// says otherwise (`scripts/test` runs the forwarding, UDP, upgrade and fleet suites again
/// with `TEST_PORT_MODE=steered`, inside a network namespace of their own: a steered
/// server attaches its program to the namespace it runs in, never the machine's).
fn command_for(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TCP_REDIRS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TCP_REDIRS_PORT_MODE", port_mode());
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// The port mode the servers of this run use: `TEST_PORT_MODE`, else `bound`.
pub fn port_mode() -> String {
    std::env::var("TEST_PORT_MODE").unwrap_or_else(|_| "bound".to_owned())
}

/// A fresh random admin token.
pub fn random_token() -> String {
    format!("test-admin-{:032x}", rand::random::<u128>())
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// How to start `tcp-redirs serve`; kept by the [`Server`] so it can be restarted alike.
#[derive(Clone)]
pub struct ServerBuilder {
    data_dir: Arc<tempfile::TempDir>,
    token: String,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    /// The loopback address of both the control API and the public ports.
    ip: String,
    /// The program to run, when not the binary under test itself (an upgrade test runs a
    /// copy it can replace).
    binary: Option<PathBuf>,
    /// The network namespace to start in (`/run/netns/NAME`), when not the test's own.
    netns: Option<PathBuf>,
}

impl ServerBuilder {
    /// Serves on `ip` (e.g. `127.0.0.2`) instead of 127.0.0.1: `--listen IP:0 --public-bind IP`.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.to_owned();
        self
    }

    /// This admin token (`TCP_REDIRS_ADMIN_TOKEN`) instead of a fresh random one, so that the
    /// nodes of a fleet share one.
    pub fn token(mut self, token: &str) -> Self {
        self.token = token.to_owned();
        self
    }

    /// Runs the program at `path` (a copy of the binary) instead of the binary under test.
    pub fn binary(mut self, path: &Path) -> Self {
        self.binary = Some(path.to_owned());
        self
    }

    /// Starts the server in the network namespace at `path` (`/run/netns/NAME`, made by a
    /// [`netns::Lab`]) instead of the test thread's own.
    pub fn netns(mut self, path: &Path) -> Self {
        self.netns = Some(path.to_owned());
        self
    }

    /// A `--config FILE` for the server.
    pub fn config(mut self, path: &Path) -> Self {
        self.config = Some(path.to_owned());
        self
    }

    /// Extra arguments for `serve`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An extra environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the server and waits until it logs that its control API is listening.
    pub fn start(self) -> Server {
        self.start_watching(|_| {})
    }

    /// Like [`ServerBuilder::start`], showing each line of the server's log to `on_line`
    /// while it starts (the test's way to act at a given moment of the start).
    pub fn start_watching(self, mut on_line: impl FnMut(&str)) -> Server {
        let config_dir = tempfile::tempdir().expect("temp config dir");
        let mut cmd = command_for(self.binary.as_deref().unwrap_or(Path::new(BIN)));
        cmd.args(["serve", "--listen", &format!("{}:0", self.ip), "--public-bind", &self.ip])
            .arg("--data-dir")
            .arg(self.data_dir.path());
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(&self.args);
        cmd.env("TCP_REDIRS_ADMIN_TOKEN", &self.token)
            .env("TCP_REDIRS_CONFIG_DIR", config_dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let netns = self.netns.as_ref().map(|path| {
            let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            netns::enter_in_child(&mut cmd, std::os::fd::AsRawFd::as_raw_fd(&file));
            file
        });
        let mut child = cmd.spawn().expect("spawn `tcp-redirs serve`");
        drop(netns);
        let stderr = child.stderr.take().expect("piped stderr");
        // From here on the guard kills the child even if waiting for readiness panics.
        let mut guard = ChildGuard(child);

        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            // Drains stderr for the whole life of the process (ends at EOF, when it exits),
            // so the pipe never fills, and keeps it for failure messages.
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = strip_ansi(&String::from_utf8_lossy(&buf));
                            log.lock().unwrap().push_str(&line);
                            let _ = lines_tx.send(line);
                        }
                    }
                }
            });
        }

        let deadline = Instant::now() + READY_TIMEOUT;
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    on_line(&line);
                    if let Some(url) = ready_url(&line) {
                        break url;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "`tcp-redirs serve` did not log `{READY_MARKER}http://…` within {READY_TIMEOUT:?}\n\
                     --- server stderr ---\n{}",
                    log.lock().unwrap()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = guard.0.wait();
                    panic!(
                        "`tcp-redirs serve` exited before it was ready ({status:?})\n\
                         --- server stderr ---\n{}",
                        log.lock().unwrap()
                    )
                }
            }
        };
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse the control API address in `{url}`: {e}"));
        Server {
            child: guard,
            url: format!("http://{addr}"),
            addr,
            token: self.token.clone(),
            log,
            builder: self,
            _config_dir: config_dir,
        }
    }
}

/// The URL after the readiness marker, up to the first whitespace.
fn ready_url(line: &str) -> Option<String> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let url = rest.split_whitespace().next()?;
    url.starts_with("http://").then(|| url.to_owned())
}

/// Removes ANSI colour sequences (`ESC [ … letter`), should the logs have any.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Kills (SIGKILL) and reaps the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `tcp-redirs serve`, killed when dropped.
pub struct Server {
    child: ChildGuard,
    /// `http://127.0.0.1:PORT`, as the server logged it.
    pub url: String,
    /// The control API's address.
    pub addr: SocketAddr,
    /// The admin token.
    pub token: String,
    log: Arc<Mutex<String>>,
    builder: ServerBuilder,
    _config_dir: tempfile::TempDir,
}

impl Server {
    /// How to start a server on a fresh temp data dir with a fresh admin token.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            data_dir: Arc::new(tempfile::tempdir().expect("temp data dir")),
            token: random_token(),
            config: None,
            env: Vec::new(),
            args: Vec::new(),
            ip: LOCALHOST.to_string(),
            binary: None,
            netns: None,
        }
    }

    /// A server with default settings.
    pub fn start() -> Server {
        Server::builder().start()
    }

    /// `kill -9` the server, then start it again on the same data dir, with the same token,
    /// config and environment.
    pub fn crash_and_restart(mut self) -> Server {
        self.child.0.kill().expect("kill -9 the server");
        self.child.0.wait().expect("reap the killed server");
        self.builder.clone().start()
    }

    /// The IP the server was told to serve on (`ServerBuilder::ip`, 127.0.0.1 by default).
    pub fn ip(&self) -> std::net::IpAddr {
        self.builder.ip.parse().expect("the server's IP")
    }

    /// What the server printed on stderr so far (and the processes that took over from it
    /// in an upgrade, which inherit its stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has `needle` after its first `skip` bytes; the log up to the end
    /// of the line that has it.
    /// Polls every [`POLL`], up to `limit`, then panics with the log.
    pub fn wait_for_log(&self, needle: &str, skip: usize, limit: Duration) -> String {
        let found = poll(limit, || {
            let log = self.log();
            match log.get(skip..).and_then(|rest| rest.find(needle)) {
                Some(at) => {
                    let end = log[skip + at..].find('\n').map_or(log.len(), |n| skip + at + n);
                    Ok(log[..end].to_owned())
                }
                None => Err(format!("no `{needle}` in the log")),
            }
        });
        match found {
            Ok((log, _)) => log,
            Err(e) => panic!(
                "the server did not log `{needle}` within {limit:?} ({e})\n--- server stderr ---\n{}",
                self.log()
            ),
        }
    }

    /// Runs the CLI against this server with the admin token.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(&self.url, &self.token, args)
    }

    /// Runs the CLI, asserts it succeeded, and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.code == 0,
            "`tcp-redirs {}` failed\n{out}--- server stderr ---\n{}",
            args.join(" "),
            self.log()
        );
        out.stdout
    }

    /// Runs the CLI (with `-F json` among `args`), asserts it succeeded, and parses stdout
    /// as exactly one JSON document.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let stdout = self.cli_ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "`tcp-redirs {}` did not print one JSON document on stdout ({e}):\n{stdout}",
                args.join(" ")
            )
        })
    }

    /// `apps create NAME --instance ADDR -F json`: the new application's JSON.
    pub fn create_app(&self, name: &str, instance: SocketAddr) -> Value {
        let instance = instance.to_string();
        self.cli_json(&["apps", "create", name, "--instance", &instance, "-F", "json"])
    }

    /// `add --app APP --namespace NS -F json`: the new redirection's port.
    pub fn add(&self, app: &str, namespace: &str) -> u16 {
        let added = self.cli_json(&["add", "--app", app, "--namespace", namespace, "-F", "json"]);
        assert_eq!(added["namespace"], namespace, "namespace of `add -F json`: {added}");
        port_of(&added)
    }

    /// `list --app APP -F json` as (namespace, port) pairs, in the printed order.
    pub fn list(&self, app: &str) -> Vec<(String, u16)> {
        redirections(&self.cli_json(&["list", "--app", app, "-F", "json"]))
    }

    /// A raw HTTP request to the control API with the admin's bearer token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http(self.addr, method, path, Some(&format!("Bearer {}", self.token)), body)
    }
}

/// The `port` of a redirection object, checked to be a valid TCP port.
pub fn port_of(redirection: &Value) -> u16 {
    let port = redirection["port"].as_u64().unwrap_or_else(|| panic!("no numeric `port` in {redirection}"));
    assert!((1..=65535).contains(&port), "port out of range in {redirection}");
    port as u16
}

/// A JSON array of redirections as (namespace, port) pairs, in order.
pub fn redirections(list: &Value) -> Vec<(String, u16)> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array of redirections, got {list}"))
        .iter()
        .map(|r| {
            let namespace = r["namespace"].as_str().unwrap_or_else(|| panic!("no string `namespace` in {r}"));
            (namespace.to_owned(), port_of(r))
        })
        .collect()
}

/// The `namespace` values of a JSON array of namespaces, in order.
pub fn namespace_names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected a JSON array of namespaces, got {list}"))
        .iter()
        .map(|n| n["namespace"].as_str().unwrap_or_else(|| panic!("no string `namespace` in {n}")).to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------

/// What one CLI invocation did.
pub struct CliOutput {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl CliOutput {
    /// Asserts the error contract: exit code `code`, nothing on stdout, one line on stderr
    /// that starts with `error: ` and contains every needle (case-insensitive).
    pub fn assert_error(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, code, "wrong exit code\n{self}");
        assert!(self.stdout.is_empty(), "an error must print nothing on stdout\n{self}");
        assert!(self.stderr.starts_with("error: "), "stderr must start with `error: `\n{self}");
        assert_eq!(self.stderr.trim_end().lines().count(), 1, "stderr must be one line\n{self}");
        let lower = self.stderr.to_lowercase();
        for needle in needles {
            assert!(lower.contains(&needle.to_lowercase()), "stderr should mention `{needle}`\n{self}");
        }
    }
}

/// Runs `tcp-redirs --server URL ARGS…` with `TCP_REDIRS_TOKEN=token` and a fresh, empty
/// `TCP_REDIRS_CONFIG_DIR`; kills it if it runs longer than [`CLI_TIMEOUT`].
pub fn run_cli(url: &str, token: &str, args: &[&str]) -> CliOutput {
    run_cli_for(url, token, args, CLI_TIMEOUT)
}

/// [`run_cli`] with its own time limit.
fn run_cli_for(url: &str, token: &str, args: &[&str], limit: Duration) -> CliOutput {
    let config_dir = tempfile::tempdir().expect("temp config dir");
    let mut child = command()
        .arg("--server")
        .arg(url)
        .args(args)
        .env("TCP_REDIRS_TOKEN", token)
        .env("TCP_REDIRS_CONFIG_DIR", config_dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the tcp-redirs CLI");
    let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));

    let Some(status) = wait_for_child(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`tcp-redirs {}` still running after {limit:?}; killed it. stderr so far:\n{}",
            args.join(" "),
            stderr.join().unwrap_or_default()
        );
    };
    CliOutput {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------------------
// The application side: small TCP servers run by the test
// ---------------------------------------------------------------------------------------

/// A TCP server on 127.0.0.1 that runs `handler` on a thread per connection; stopped
/// (its accept loop ends and its listener closes) when dropped.
pub struct TcpService {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl TcpService {
    /// Sends every byte back; on EOF from the client, shuts down its write half.
    pub fn echo() -> TcpService {
        TcpService::start(echo_connection)
    }

    /// Reads until the client's EOF, and only then answers `got N bytes: ` followed by the
    /// bytes reversed, then closes: the answer exists only if the half-close went through.
    pub fn answer_after_eof() -> TcpService {
        TcpService::start(answer_after_eof_connection)
    }

    pub fn start(handler: fn(TcpStream)) -> TcpService {
        let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind a test TCP service");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accept_loop = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut errors = 0;
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(conn) => {
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                            let _ = conn.set_write_timeout(Some(Duration::from_secs(60)));
                            thread::spawn(move || handler(conn));
                        }
                        Err(_) if errors < 100 => errors += 1,
                        Err(_) => break,
                    }
                }
            })
        };
        TcpService { addr, stop, accept_loop: Some(accept_loop) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A UDP echo server on 127.0.0.1, the instance of a UDP redirection: each datagram goes
/// back whole to the address it came from; stopped when dropped.
pub struct UdpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// On a free port.
    pub fn start() -> UdpEcho {
        UdpEcho::on(SocketAddr::from((LOCALHOST, 0))).expect("bind a test UDP echo server")
    }

    /// On `addr` (the port of a TCP service, say, so that one instance address serves both).
    pub fn on(addr: SocketAddr) -> std::io::Result<UdpEcho> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let addr = socket.local_addr()?;
        // The stop flag is looked at between datagrams and at least every 100 ms.
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        };
        Ok(UdpEcho { addr, stop, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP client socket connected to `port` on `ip`, with [`IO_TIMEOUT`]-bounded reads.
pub fn udp_client(ip: IpAddr, port: u16) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind a UDP client");
    socket.connect((ip, port)).expect("connect the UDP client");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// Sends `data` as one datagram and reads the one that comes back (an echo's), whole.
pub fn udp_round_trip(socket: &std::net::UdpSocket, data: &[u8]) -> std::io::Result<Vec<u8>> {
    socket.send(data)?;
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(handle) = self.accept_loop.take() {
            let _ = handle.join();
        }
    }
}

fn echo_connection(conn: TcpStream) {
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = &conn;
    let _ = std::io::copy(&mut reader, &mut writer);
    let _ = conn.shutdown(Shutdown::Write);
}

fn answer_after_eof_connection(mut conn: TcpStream) {
    let mut received = Vec::new();
    if conn.read_to_end(&mut received).is_err() {
        return;
    }
    let _ = conn.write_all(&answer_after_eof_for(&received));
    let _ = conn.shutdown(Shutdown::Write);
}

/// What [`TcpService::answer_after_eof`] answers to `request`.
pub fn answer_after_eof_for(request: &[u8]) -> Vec<u8> {
    let mut answer = format!("got {} bytes: ", request.len()).into_bytes();
    answer.extend(request.iter().rev());
    answer
}

// ---------------------------------------------------------------------------------------
// The client side: talking through a redirection
// ---------------------------------------------------------------------------------------

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes
}

/// Connects to 127.0.0.1:port (5 s timeout) with [`IO_TIMEOUT`] on reads and writes.
pub fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::from((LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to the redirection on {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Writes `data` to 127.0.0.1:port from one thread, then shuts the write half; reads
/// everything that comes back until EOF on this thread (so neither side can deadlock on
/// full buffers); returns what was read.
pub fn send_and_read_back(port: u16, data: &[u8]) -> Vec<u8> {
    let stream = connect(port);
    let mut writer_side = stream.try_clone().expect("clone the client socket");
    let data = data.to_vec();
    let writer = thread::spawn(move || {
        writer_side.write_all(&data)?;
        writer_side.shutdown(Shutdown::Write)
    });
    let mut received = Vec::new();
    let read = (&stream).read_to_end(&mut received);
    let written = writer.join().expect("writer thread");
    written.unwrap_or_else(|e| panic!("writing to the redirection on port {port} failed: {e}"));
    read.unwrap_or_else(|e| {
        panic!("reading from the redirection on port {port} failed after {} bytes: {e}", received.len())
    });
    received
}

/// Writes `message`, shuts down the write half, then reads until EOF: a half-closed client
/// must still receive the whole answer.
pub fn half_close_exchange(port: u16, message: &[u8]) -> Vec<u8> {
    let mut stream = connect(port);
    stream.write_all(message).expect("write the message");
    stream.shutdown(Shutdown::Write).expect("shut down the client's write half");
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap_or_else(|e| {
        panic!("reading after the half-close failed after {} bytes: {e}", received.len())
    });
    received
}

/// Asserts two byte strings are equal without dumping megabytes into the message.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, expected {}; first difference at byte {:?}",
        got.len(),
        want.len(),
        first_diff.or(Some(got.len().min(want.len())))
    );
}

/// Asserts nothing accepts connections on 127.0.0.1:port.
pub fn assert_refuses(port: u16) {
    let addr = SocketAddr::from((LOCALHOST, port));
    if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        panic!("{addr} still accepts connections (connected from {:?})", stream.local_addr());
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn refused_port() -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind a port to release");
    listener.local_addr().unwrap().port()
}

/// Two consecutive ports (N, N+1) that are free on 127.0.0.1, verified by binding both.
/// They are picked in 4000..5000: below the default namespace range (above 5000), where
/// the other tests' servers allocate, and below the kernel's ephemeral range, where
/// outgoing connections take their ports.
pub fn free_port_pair() -> (u16, u16) {
    for _ in 0..200 {
        let low = rand::random_range(4000..4999u16);
        let first = TcpListener::bind((LOCALHOST, low));
        let second = TcpListener::bind((LOCALHOST, low + 1));
        if first.is_ok() && second.is_ok() {
            return (low, low + 1);
        }
    }
    panic!("found no two consecutive free ports in 4000..5000 after 200 tries");
}

// ---------------------------------------------------------------------------------------
// Port ranges
// ---------------------------------------------------------------------------------------

/// The instances of a range's application (issue 34): `n` consecutive loopback ports, each answering
/// every connection with its own port number, then closing it.
pub struct Numbered {
    /// The first instance port.
    pub first: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Numbered {
    /// Listens on `n` consecutive free ports of 127.0.0.1 in 61000..65500 (found by binding
    /// every one of them): above the kernel's ephemeral range (32768-60999), where the
    /// machine's outgoing connections take their ports, and the namespaces' ranges.
    pub fn start(n: u16) -> Numbered {
        for _ in 0..200 {
            let first = rand::random_range(61000..65500 - n);
            let bound: Result<Vec<TcpListener>, _> =
                (first..first + n).map(|p| TcpListener::bind((LOCALHOST, p))).collect();
            let Ok(listeners) = bound else { continue };
            let stop = Arc::new(AtomicBool::new(false));
            let threads = listeners
                .into_iter()
                .map(|listener| {
                    let stop = stop.clone();
                    thread::spawn(move || {
                        let port = listener.local_addr().unwrap().port();
                        for conn in listener.incoming() {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            if let Ok(mut conn) = conn {
                                let _ = conn.write_all(port.to_string().as_bytes());
                            }
                        }
                    })
                })
                .collect();
            return Numbered { first, stop, threads };
        }
        panic!("found no {n} consecutive free ports in 61000..65500 after 200 tries");
    }

    /// The first instance port: the application's instance address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.first))
    }
}

impl Drop for Numbered {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Each accept loop wakes on a connection of its own, sees the flag, and ends.
        for i in 0..self.threads.len() as u16 {
            let _ = TcpStream::connect((LOCALHOST, self.first + i));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a connection to public port `port` of 127.0.0.1 reads before the instance closes
/// it: a [`Numbered`] instance's port number, as text.
pub fn answer(port: u16) -> Result<String, String> {
    answer_at(LOCALHOST.into(), port)
}

/// [`answer`] on `ip`.
pub fn answer_at(ip: IpAddr, port: u16) -> Result<String, String> {
    let addr = SocketAddr::new(ip, port);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut back = String::new();
    stream.read_to_string(&mut back).map_err(|e| format!("{addr}: {e}"))?;
    Ok(back)
}

/// Every port of `first..first + n` answers the matching instance port: `instance + i`.
pub fn assert_each_port_matches(first: u16, n: u16, instance: u16, when: &str) {
    if let Err(e) = each_port_matches(LOCALHOST.into(), first, n, instance) {
        panic!("{when}: {e}");
    }
}

/// Whether every port of `first..first + n` on `ip` answers the matching instance port.
pub fn each_port_matches(ip: IpAddr, first: u16, n: u16, instance: u16) -> Result<(), String> {
    for i in 0..n {
        let got =
            answer_at(ip, first + i).map_err(|e| format!("public port {} did not answer: {e}", first + i))?;
        if got != (instance + i).to_string() {
            return Err(format!(
                "public port {} reached instance port {got}, not {}",
                first + i,
                instance + i
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------

/// An HTTP response, read to EOF and de-chunked.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the status and body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("expected a JSON body ({e}); status {}, body: {}", self.status, self.text())
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts a 2xx status and returns the JSON body.
    pub fn ok_json(&self) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "expected a 2xx status, got {}: {}",
            self.status,
            self.text()
        );
        self.json()
    }

    /// Asserts the error contract: this status and `{"type":"error","id":<number>,
    /// "message":"<non-empty>"}`; returns the message.
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "wrong status; body: {}", self.text());
        let body = self.json();
        assert_eq!(body["type"], "error", "error body: {body}");
        assert!(body["id"].is_number(), "error `id` must be a number: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "error `message` must be non-empty: {body}");
        message.to_owned()
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the response to EOF.
/// `authorization` is the whole `Authorization` header value; `body` is sent as JSON.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    try_http(addr, method, path, authorization, body, IO_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// [`http`] that reports a failure (no connection, no answer within `timeout`, a malformed
/// answer) as an `Err` instead of panicking.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5).min(timeout))
        .map_err(|e| format!("cannot connect to the control API at {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();

    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(auth) = authorization {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).map_err(|e| format!("sending {method} {path} failed: {e}"))?;

    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the response to {method} {path} failed: {e}"))?;
    parse_response(&raw)
        .map_err(|e| format!("bad HTTP response to {method} {path}: {e}\n{}", String::from_utf8_lossy(&raw)))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("no status line")?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = HttpResponse { status, headers, body: Vec::new() };
    response.body =
        if response.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("bad content-length `{len}`"))?;
            rest.get(..len).ok_or("body shorter than content-length")?.to_vec()
        } else {
            rest.to_vec()
        };
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    // Each chunk is at least 5 bytes ("0\r\n\r\n"), so this bounds the loop.
    for _ in 0..=rest.len() {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("chunk size line without CRLF")?;
        let size_line = std::str::from_utf8(&rest[..line_end]).map_err(|e| e.to_string())?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size `{size_line}`"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
        rest = rest.get(size + 2..).ok_or("chunk without trailing CRLF")?;
    }
    Err("too many chunks".into())
}

// ---------------------------------------------------------------------------------------
// Process control, for the reliability tests
// ---------------------------------------------------------------------------------------

impl Server {
    /// The server's process id.
    pub fn process_id(&self) -> u32 {
        self.child.0.id()
    }

    /// The server's data directory.
    pub fn data_path(&self) -> PathBuf {
        self.builder.data_dir.path().to_owned()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server.
    pub fn send_signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        let rc = unsafe { libc::kill(self.process_id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.process_id());
    }

    /// Starts the server again on the same data dir, with the same token, config, arguments
    /// and environment, once it has exited (a SIGTERM and [`Server::wait_for_exit`]).
    pub fn restart(mut self) -> Server {
        let exited = self.child.0.try_wait().expect("wait for the server");
        assert!(exited.is_some(), "restart: the server is still running");
        self.builder.clone().start()
    }

    /// Waits up to `limit` for the server to exit, returning its status.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_for_child(&mut self.child.0, limit)
    }
}

/// How many descriptors process `pid` holds (0 once it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Sets another process's soft open-file limit, leaving its hard limit as it is (so it can
/// be raised back: lowering the hard limit could not be undone without CAP_SYS_RESOURCE).
pub fn set_soft_fd_limit(pid: u32, soft: u64) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit reads `new` only when non-null and writes `old`; both are ours.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit({pid}): {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: old.rlim_max };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit({pid}, {soft}): {}", std::io::Error::last_os_error());
}

/// Waits (polling every [`POLL`], up to `limit`) until process `pid` holds at most `most`
/// descriptors; returns how many it holds then.
pub fn wait_for_fds_at_most(pid: u32, most: usize, limit: Duration, what: &str) -> usize {
    let held = poll(limit, || match fd_count(pid) {
        now if now <= most => Ok(now),
        now => Err(format!("the server holds {now} descriptors")),
    });
    held.unwrap_or_else(|e| panic!("{what}: {e}; expected at most {most}")).0
}

/// Waits (polling every [`POLL`], up to `limit`) until process `pid` holds at least `least`
/// descriptors; returns how many it holds then.
pub fn wait_for_fds_at_least(pid: u32, least: usize, limit: Duration, what: &str) -> usize {
    let held = poll(limit, || match fd_count(pid) {
        now if now >= least => Ok(now),
        now => Err(format!("the server holds {now} descriptors")),
    });
    held.unwrap_or_else(|e| panic!("{what}: {e}; expected at least {least}")).0
}

/// Listening sockets on 127.0.0.1:`port` in this thread's network namespace (the machine's, or
/// the one a steered test made: `/proc/thread-self/net/tcp`, since `/proc/net` is the
/// process's main thread's).
pub fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    // Columns: slot, local address, remote address, state (0A is LISTEN), ...
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A")
        })
        .count()
}

/// The resident memory of process `pid` (`VmRSS`), in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's soft open-file limit to its hard limit (the servers it starts
/// inherit it); returns the soft limit now.
pub fn raise_own_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
    }
    limit.rlim_cur
}

/// Fails a test that cannot run here, saying why. Such a test is `#[ignore]`d with the same
/// reason, so that `cargo test` shows it skipped; `.ci/run` runs the ignored tests, where
/// a test that cannot run is a failure.
pub fn cannot_run_here(test: &str, why: &str) -> ! {
    panic!("{test} cannot run here: {why}");
}

/// [`run_cli`] against `server`, killed after `limit` instead of [`CLI_TIMEOUT`]: for the
/// one invocation known to take longer (`tests/scale.rs`: an `apply` of 5,000 applications,
/// each created with one call, in a debug build).
pub fn run_cli_within(server: &Server, args: &[&str], limit: Duration) -> CliOutput {
    run_cli_for(&server.url, &server.token, args, limit)
}

// ---------------------------------------------------------------------------------------
// Polling and probes of a node's public address (the fleet and cluster tests)
// ---------------------------------------------------------------------------------------

/// [`poll`] for a tokio test: awaits `probe` every `every` (without blocking the runtime)
/// until it answers `Ok` or `limit` has passed (then the last error); the value and how long
/// it took. An error that starts with `FATAL` ends it at once. (`every` is the caller's: a
/// probe of a web page costs a round trip to the browser.)
pub async fn poll_async<T>(
    every: Duration,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<(T, Duration), String> {
    let start = Instant::now();
    let mut last = String::from("never probed");
    for _ in 0..wait::max_probes(every, limit) {
        match probe().await {
            Ok(value) => return Ok((value, start.elapsed())),
            Err(e) if e.starts_with("FATAL") => return Err(e),
            Err(e) => last = e,
        }
        if start.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(every).await;
    }
    Err(format!("still not the case after {:?}: {last}", start.elapsed()))
}

/// Connects to ip:port, sends 64 random bytes, half-closes, and expects them back.
pub fn echo_via(ip: IpAddr, port: u16) -> Result<(), String> {
    let addr = SocketAddr::new(ip, port);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let data = random_bytes(64);
    stream.write_all(&data).map_err(|e| format!("write to {addr}: {e}"))?;
    stream.shutdown(Shutdown::Write).map_err(|e| format!("half-close {addr}: {e}"))?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back).map_err(|e| format!("read from {addr} after {} bytes: {e}", back.len()))?;
    if back != data {
        return Err(format!("{addr} answered {} bytes that are not the 64 sent", back.len()));
    }
    Ok(())
}

/// `Ok` when ip:port refuses connections.
pub fn refused_via(ip: IpAddr, port: u16) -> Result<(), String> {
    let addr = SocketAddr::new(ip, port);
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Ok(_) => Err(format!("{addr} still accepts connections")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("connecting to {addr} failed otherwise than refused: {e}")),
    }
}

/// Moves the calling thread (and so every process and thread it starts from now on) into a
/// network namespace of its own, with loopback up: where a test runs a steered server, whose
/// BPF program attaches to the namespace it runs in, never to the machine's. Needs root (or
/// CAP_SYS_ADMIN); where the namespace cannot be made, the test fails and says why.
pub fn enter_network_namespace() {
    // SAFETY: unshare(CLONE_NEWNET) changes this thread's namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        panic!(
            "this test needs a network namespace of its own (unshare(CLONE_NEWNET): {}): run it as root, as scripts/test and CI do",
            std::io::Error::last_os_error()
        );
    }
    let up = Command::new("ip").args(["link", "set", "lo", "up"]).status();
    assert!(
        up.as_ref().is_ok_and(|s| s.success()),
        "`ip link set lo up` in the test's network namespace: {up:?} (install iproute2)"
    );
}

/// The manifest of one application `name`, one instance at `backend`, and one redirection in
/// `default` with `settings` (TOML lines, e.g. `port = 5000\nidle_timeout = 600\n`).
pub fn one_app_manifest(name: &str, backend: SocketAddr, settings: &str) -> String {
    format!(
        "[[application]]\nname = \"{name}\"\ninstances = [{{ address = \"{backend}\" }}]\n\n\
         [[application.redirection]]\nnamespace = \"default\"\n{settings}"
    )
}

/// The manifest of `apps` applications `PREFIX-0`…, each with one instance at `backend` and
/// a redirection on a port of the server's choosing in `default` and in `cleverapps`, the
/// latter with `cleverapps_extra` (TOML lines, e.g. `idle_timeout = 600\n`): what an
/// operator applies to make many redirections at once.
pub fn many_apps_manifest(prefix: &str, apps: usize, backend: SocketAddr, cleverapps_extra: &str) -> String {
    let mut text = String::with_capacity(apps * 170);
    for i in 0..apps {
        text.push_str(&format!(
            "[[application]]\nname = \"{prefix}-{i}\"\ninstances = [{{ address = \"{backend}\" }}]\n\n\
             [[application.redirection]]\nnamespace = \"default\"\n\n\
             [[application.redirection]]\nnamespace = \"cleverapps\"\n{cleverapps_extra}\n"
        ));
    }
    text
}
