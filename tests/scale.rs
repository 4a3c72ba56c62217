//! Scale: one server with 10,000 redirections and as many connections open at once as the
//! descriptor limit leaves room for. It makes them through the API, forwards on every port,
//! holds the connections, lets every descriptor go when they close, and stops cleanly on
//! SIGTERM. It prints what a port and a connection cost (descriptors, resident memory) and
//! asserts loose bounds on both, so that a regression shows.
//!
//! The descriptor budget decides everything here. The server inherits this process's limit
//! (the soft limit raised to the hard one: 20,000 on the development machines and CI) and
//! holds, besides a few dozen of its own, its listening sockets (one per port) and two per
//! open connection: N = (limit - what it holds with the 10,000 ports - a margin) / 2, at most one per port.
//! This process holds the N clients and, since the echo backend runs here on a tokio thread,
//! the N backend sockets too: 2N, which fits in the same limit. A port is one listening
//! socket whatever the number of threads, so the server runs with two.
//!
//! The redirections are made the way an operator makes many: one manifest of the 5,000
//! applications (each with one instance, the echo backend) and their redirections in
//! `default` and `cleverapps`, applied with the real binary (`tcp-redirs apply -f FILE -F
//! json`) against the running server. `apply` creates each application with one call and
//! sends the 10,000 redirections in batches (`POST /v2/organisations/{orgId}/tcpRedirs`, up
//! to 1,000 each), each a change that costs what it touches, not the size of the table; the
//! test prints how long it took. The ports are the server's random picks. Ten more are then
//! added with the CLI, and each `add` at that size is timed.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Redirections made by `apply`.
const PORTS: usize = 10_000;
/// Applications of the manifest: each has a redirection in `default` and one in `cleverapps`.
const APPS: usize = PORTS / 2;
/// Applications added with the CLI once the server has the 10,000, one redirection each.
const ADDED: usize = 10;
/// The forwarding threads, when the descriptor budget allows (see the module's comment).
const THREADS: usize = 2;
/// Descriptors kept free in the server for what it opens along the way (API connections,
/// the store's files, connections that are closing).
const MARGIN: usize = 300;
/// The fewest connections worth the name: below this, the test cannot run here.
const MIN_CONNECTIONS: usize = 1_000;
/// Parallel clients of the ports while each is checked.
const WORKERS: usize = 8;
/// The most redirections in one `POST …/tcpRedirs` of `apply` (`wire::MAX_BATCH`).
const BATCH: usize = 1_000;
/// How long the `apply` of the manifest may take, CLI included (debug build: some 24 s, of
/// which 20 s for the 5,000 applications, one call each, and 3 s for the 10 batches). A
/// change whose cost grew with the table again would cross it by far: when each one
/// reconciled the whole table, 10,000 would have taken some twenty minutes.
const MAX_APPLY: Duration = Duration::from_secs(90);

// Loose bounds that a regression would cross; the figures measured on the development
// machine (2 cores, debug build, 2026-12-03) are in the README's Tests section.
/// Resident memory per redirection, KiB: its tables, its listener(s), its accept loop(s).
const MAX_KIB_PER_PORT: f64 = 32.0;
/// Resident memory per idle connection that has carried a few bytes each way, KiB.
const MAX_KIB_PER_CONNECTION: f64 = 32.0;
/// How long one `add` may take with 10,000 redirections in the server (debug build).
const MAX_ADD: Duration = Duration::from_secs(5);

/// The soft open-file limit of process `pid`, from `/proc/PID/limits`.
fn fd_limit_of(pid: u32) -> usize {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read /proc/PID/limits");
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `Max open files` in /proc/{pid}/limits:\n{limits}"))
}

/// One echo listener on a tokio thread of this process: thousands of connections need no
/// thread each. Stopped when dropped.
struct Echo {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Echo {
    fn start() -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the echo server");
        let listener = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((LOCALHOST, 0)))?;
                socket.listen(4096)
            })
            .expect("bind the echo server");
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(echo(stream));
                    }
                    // Out of descriptors, or a connection reset before it was taken: the
                    // client then fails and says so.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Echo { addr, runtime: Some(runtime) }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn echo(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A small buffer: thousands of these live at once.
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Writes `message` on `stream` and reads it back; `what` names the connection in a failure.
fn round_trip(stream: &mut TcpStream, message: &[u8], what: &str) {
    stream.write_all(message).unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).unwrap_or_else(|e| panic!("{what}: no echo: {e}"));
    assert_eq!(back, message, "{what}: the echo differs");
}

/// How many listening sockets a port gets from a server with `--threads threads` (a
/// throwaway server and one redirection).
fn listeners_per_port(echo: SocketAddr, threads: usize) -> usize {
    let server = Server::builder().args(&["--threads", &threads.to_string()]).start();
    server.create_app("probe", echo);
    listeners_on(server.add("probe", "default"))
}

/// SIGTERM, then asserts the server exits 0 within 30 s; how long it took.
fn stop(server: &mut Server, what: &str) -> Duration {
    let t = Instant::now();
    server.send_signal(libc::SIGTERM);
    let status = server.wait_for_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "{what}: the server did not exit within 30 s of SIGTERM\n--- server stderr ---\n{}",
            server.log()
        )
    });
    assert!(
        status.success(),
        "{what}: the server exited with {status} on SIGTERM\n--- server stderr ---\n{}",
        server.log()
    );
    t.elapsed()
}

/// Checks the report of `apply -F json` of the manifest (`many_apps_manifest`): a creation and two additions per
/// application, in the file's order, each addition with its port; the [`PORTS`] ports.
fn ports_made(report: &serde_json::Value) -> Vec<u16> {
    assert_eq!(report["dryRun"], false, "{report}");
    let changes = report["changes"].as_array().expect("`changes` in the report of apply -F json");
    assert_eq!(changes.len(), APPS * 3, "a creation and two additions per application");
    let mut ports = Vec::with_capacity(PORTS);
    for (i, group) in changes.chunks(3).enumerate() {
        let name = format!("scale-{i}");
        assert_eq!(group[0], json!({"action": "create", "kind": "application", "application": name}));
        for (change, namespace) in group[1..].iter().zip(["default", "cleverapps"]) {
            assert_eq!(
                (&change["action"], &change["kind"], &change["application"], &change["namespace"]),
                (&json!("add"), &json!("redirection"), &json!(name), &json!(namespace)),
                "{change}"
            );
            ports.push(port_of(change));
        }
    }
    // Both namespaces bind 127.0.0.1: no port twice.
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), PORTS, "a port given twice by apply");
    ports
}

#[test]
#[ignore = "needs an open-file limit of 12,500 or more; CI runs it (`cargo test -- --ignored`)"]
fn ten_thousand_redirections_forward_hold_connections_and_stop_cleanly() {
    let started = Instant::now();
    let limit = raise_own_fd_limit() as usize;
    // With one listener per port: the ports, the fewest connections (two each) and the margin.
    let least = PORTS + 2 * MIN_CONNECTIONS + MARGIN;
    if limit < least {
        cannot_run_here(
            "ten_thousand_redirections_forward_hold_connections_and_stop_cleanly",
            &format!(
                "the open-file limit is {limit}, and this test needs {least} (raise the hard limit: ulimit -Hn 20000)"
            ),
        );
    }
    let echo = Echo::start();

    // A port is one listening socket whatever the number of threads: two threads fit.
    let threads = THREADS;
    let per_port = listeners_per_port(echo.addr, threads);
    assert_eq!(per_port, 1, "listening sockets per port with {threads} forwarding threads");

    // ---- 10,000 redirections made through the API, with `apply` --------------------------
    let mut server = Server::builder().args(&["--threads", &threads.to_string()]).start();
    let pid = server.process_id();
    let server_limit = fd_limit_of(pid);
    assert!(
        server_limit >= least,
        "the server's open-file limit is {server_limit}, not this process's {limit}"
    );
    // Fresh, with no redirection: the baseline.
    let (fds_base, rss_base) = (fd_count(pid), rss_kib(pid));
    let dir = tempfile::tempdir().expect("a temp dir for the manifest");
    let file = dir.path().join("scale.toml");
    std::fs::write(&file, many_apps_manifest("scale", APPS, echo.addr, "")).expect("write the manifest");
    let t = Instant::now();
    let applied = run_cli_within(&server, &["apply", "-f", file.to_str().unwrap(), "-F", "json"], MAX_APPLY);
    let applied_in = t.elapsed();
    assert_eq!(
        applied.code,
        0,
        "`apply -f` of {APPS} applications\n{applied}--- server stderr ---\n{}",
        server.log()
    );
    let report: serde_json::Value = serde_json::from_str(&applied.stdout)
        .unwrap_or_else(|e| panic!("`apply -F json` did not print one JSON document ({e})\n{applied}"));
    let ports = ports_made(&report);
    let batches = server.log().matches("redirections added").count();
    assert_eq!(batches, PORTS.div_ceil(BATCH), "batches of apply for {PORTS} redirections\n{}", server.log());
    // Every port listens before the count is taken (a batch binds its ports before it answers).
    let fds_ports = wait_for_fds_at_least(
        pid,
        fds_base + PORTS,
        Duration::from_secs(10),
        &format!("listening on {PORTS} ports"),
    );
    let rss_ports = rss_kib(pid);
    let fds_per_port = fds_ports.saturating_sub(fds_base) as f64 / PORTS as f64;
    let kib_per_port = rss_ports.saturating_sub(rss_base) as f64 / PORTS as f64;
    eprintln!(
        "`apply -f` of {APPS} applications and {PORTS} redirections ({batches} batches) took {applied_in:.1?} \
         ({:.0} redirections/s, CLI included; {threads} forwarding thread(s)): {fds_base} -> {fds_ports} descriptors \
         ({fds_per_port:.3} per port), VmRSS {rss_base} -> {rss_ports} KiB ({kib_per_port:.2} KiB per port)",
        PORTS as f64 / applied_in.as_secs_f64()
    );
    assert!(!server.log().contains("cannot bind"), "a port could not be bound:\n{}", server.log());
    // One listening socket per port; a few more descriptors (a pipe, a log) may come and go.
    assert!(fds_per_port <= 1.01, "{fds_per_port:.3} descriptors per port with {threads} forwarding threads");
    assert!(kib_per_port <= MAX_KIB_PER_PORT, "{kib_per_port:.2} KiB per port (bound {MAX_KIB_PER_PORT})");

    // ---- a few more through the API, at that size ----------------------------------------
    let mut ports = ports;
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    for i in 0..ADDED {
        let app = format!("added-{i}");
        server.create_app(&app, echo.addr);
        let t = Instant::now();
        ports.push(server.add(&app, "default"));
        slowest = slowest.max(t.elapsed());
    }
    let mean = t.elapsed() / ADDED as u32;
    eprintln!(
        "{ADDED} applications and redirections added through the CLI with {PORTS} in the server: \
         {mean:.0?} per application and add, slowest add {slowest:.0?}"
    );
    assert!(slowest <= MAX_ADD, "an add took {slowest:?} with {PORTS} redirections (bound {MAX_ADD:?})");
    let fds_ports = fd_count(pid);

    // ---- every port forwards -----------------------------------------------------------
    let t = Instant::now();
    thread::scope(|scope| {
        for chunk in ports.chunks(ports.len().div_ceil(WORKERS)) {
            scope.spawn(move || {
                for &port in chunk {
                    let mut stream = connect(port);
                    round_trip(&mut stream, format!("port {port}").as_bytes(), &format!("port {port}"));
                }
            });
        }
    });
    let swept_in = t.elapsed();
    // Those connections are closed: the server lets their descriptors go.
    wait_for_fds_at_most(pid, fds_ports + 2, Duration::from_secs(30), "after one connection on every port");
    eprintln!(
        "every one of the {} ports forwarded (a connection each, {WORKERS} clients) in {swept_in:.1?}",
        ports.len()
    );

    // ---- N connections at once, one per port ---------------------------------------------
    let fds_now = fd_count(pid);
    let n = (server_limit.saturating_sub(fds_now + MARGIN) / 2).min(PORTS);
    let own = fd_count(std::process::id());
    assert!(
        own + 2 * n + MARGIN <= limit,
        "this process holds {own} descriptors: no room for {n} clients and {n} echo sockets within {limit}"
    );
    let t = Instant::now();
    let mut clients: Vec<(u16, TcpStream)> = ports[..n].iter().map(|&port| (port, connect(port))).collect();
    for (i, (port, stream)) in clients.iter_mut().enumerate() {
        round_trip(stream, format!("{i:>8}").as_bytes(), &format!("connection {i} on port {port}"));
    }
    let opened_in = t.elapsed();
    let (fds_held, rss_held) = (fd_count(pid), rss_kib(pid));
    let fds_per_conn = fds_held.saturating_sub(fds_now) as f64 / n as f64;
    let kib_per_conn = rss_held.saturating_sub(rss_ports) as f64 / n as f64;
    eprintln!(
        "{n} connections open at once (the server's limit: {server_limit}): opened and echoed in {opened_in:.1?}; \
         {fds_now} -> {fds_held} descriptors ({fds_per_conn:.3} per connection), \
         VmRSS {rss_ports} -> {rss_held} KiB ({kib_per_conn:.2} KiB per idle connection after 8 bytes each way)"
    );
    assert!(n >= MIN_CONNECTIONS, "room for {n} connections only");
    assert!(
        fds_held.saturating_sub(fds_now).abs_diff(2 * n) <= 20,
        "{} descriptors for {n} connections: two each expected",
        fds_held.saturating_sub(fds_now)
    );
    assert!(
        kib_per_conn <= MAX_KIB_PER_CONNECTION,
        "{kib_per_conn:.2} KiB per idle connection (bound {MAX_KIB_PER_CONNECTION})"
    );
    // A second round on every connection, all of them still open.
    for (i, (port, stream)) in clients.iter_mut().enumerate() {
        round_trip(
            stream,
            format!("{:>8}", n - i).as_bytes(),
            &format!("connection {i} on port {port}, again"),
        );
    }

    // ---- closed: every descriptor goes back ----------------------------------------------
    drop(clients);
    let fds_after = wait_for_fds_at_most(
        pid,
        fds_ports + 2,
        Duration::from_secs(30),
        &format!("after closing {n} connections"),
    );
    eprintln!(
        "after closing them: {fds_after} descriptors (before them: {fds_ports}), VmRSS {} KiB",
        rss_kib(pid)
    );

    // ---- SIGTERM: exit 0 ------------------------------------------------------------------
    let stopped_in = stop(&mut server, &format!("with {} ports", ports.len()));
    eprintln!("SIGTERM: exited 0 in {stopped_in:.1?}; the whole test took {:.1?}", started.elapsed());
}

/// The server fixes glibc's malloc arenas and mmap threshold (docs/server.md, "Memory
/// allocator") and says so at start, unless the environment sets them: then the
/// environment's values hold, and the start's line names them.
#[test]
fn the_allocator_settings_yield_to_the_environment() {
    let own = Server::builder().start();
    own.wait_for_log("malloc settings arenas=2 mmap_threshold=131072", 0, Duration::from_secs(5));
    let theirs =
        Server::builder().env("MALLOC_ARENA_MAX", "4").env("MALLOC_MMAP_THRESHOLD_", "65536").start();
    theirs.wait_for_log(
        "malloc settings arenas=MALLOC_ARENA_MAX=4 mmap_threshold=MALLOC_MMAP_THRESHOLD_=65536",
        0,
        Duration::from_secs(5),
    );
    assert!(!theirs.log().contains("arenas=2"), "the environment's arenas, not the server's");
}
