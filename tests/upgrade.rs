//! Upgrades and reloads that drop nothing: `kill -USR2` starts the binary now installed at
//! the server's path with the old process's sockets, and `kill -HUP` re-reads the config.
//!
//! Each test runs a copy of the binary from a temporary directory, so that it can "install"
//! another program at that path. The processes that take over inherit the first one's
//! stderr, so the test reads their log lines too; every process started is killed at the end.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// How long an upgrade may take, from the signal to the new process serving.
const UPGRADE: Duration = Duration::from_secs(30);

/// A copy of the binary in a directory of its own, which the test may replace.
struct Installed {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        // Beside the binary, so that a hard link makes the copy: a file just written could
        // still be open in a child that another test thread is forking, and exec would
        // then fail with "text file busy".
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = dir.path().join("tcp-redirs");
        std::fs::hard_link(BIN, &path).expect("link the binary");
        Installed { _dir: dir, path }
    }

    /// Installs another program at the path, as a package upgrade does (a new file renamed
    /// over the old one: the running process keeps its own).
    fn install(&self, program: &[u8]) {
        let next = self.path.with_extension("new");
        std::fs::write(&next, program).unwrap();
        std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }
}

/// Kills (SIGKILL) the processes that took over from the test's server, at the end.
#[derive(Default)]
struct Successors(Vec<u32>);

impl Drop for Successors {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "signal {signal} to {pid}");
}

/// Sends SIGUSR2 to `pid` and waits for the new process to serve; its pid.
fn upgrade(server: &Server, pid: u32, successors: &mut Successors) -> u32 {
    let skip = server.log().len();
    signal(pid, libc::SIGUSR2);
    let log = server.wait_for_log("upgrade: the new process serves every socket", skip, UPGRADE);
    let line = log.lines().last().unwrap_or_default();
    let new_pid: u32 = line
        .split("new_pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no new_pid in `{line}`"));
    successors.0.push(new_pid);
    new_pid
}

/// Whether process `pid` still runs (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

/// What went wrong for the short connections of a load loop.
#[derive(Default)]
struct Failures {
    done: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    other: std::sync::Mutex<Vec<String>>,
}

/// Opens, uses and closes connections through `port` as fast as it can until `stop`
/// (bounded: 60 s or 200,000 connections).
fn churn(port: u16, stop: Arc<AtomicBool>, failures: Arc<Failures>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let started = Instant::now();
        let message = b"0123456789abcdef";
        while !stop.load(Ordering::Relaxed)
            && started.elapsed() < Duration::from_secs(60)
            && failures.done.load(Ordering::Relaxed) < 200_000
        {
            let outcome = (|| -> std::io::Result<()> {
                let mut conn = TcpStream::connect(("127.0.0.1", port))?;
                conn.set_read_timeout(Some(IO_TIMEOUT))?;
                conn.write_all(message)?;
                let mut back = [0u8; 16];
                conn.read_exact(&mut back)?;
                if &back != message {
                    return Err(std::io::Error::other("the echo differs"));
                }
                Ok(())
            })();
            match outcome {
                Ok(()) => failures.done.fetch_add(1, Ordering::Relaxed),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    failures.refused.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof) => {
                    failures.reset.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => {
                    failures.other.lock().unwrap().push(e.to_string());
                    0
                }
            };
        }
    })
}

/// Sends `data` through `port` in slices while reading the echo back, slowly enough to span
/// an upgrade; the bytes that came back.
fn long_transfer(port: u16, data: Arc<Vec<u8>>, pace: Duration) -> thread::JoinHandle<Vec<u8>> {
    let mut conn = connect(port);
    let mut reader = conn.try_clone().unwrap();
    let want = data.len();
    let read = thread::spawn(move || {
        let mut got = Vec::with_capacity(want);
        let _ = reader.read_to_end(&mut got);
        got
    });
    thread::spawn(move || {
        for slice in data.chunks(64 * 1024) {
            conn.write_all(slice).unwrap();
            thread::sleep(pace);
        }
        conn.shutdown(Shutdown::Write).unwrap();
        read.join().unwrap()
    })
}

fn server_on(installed: &Installed) -> Server {
    Server::builder().binary(&installed.path).args(&["--drain-timeout", "30"]).start()
}

/// A server run from its own copy of the binary, with application `db` on an echo backend
/// and its port in `default`.
fn serving_db() -> (Installed, Server, TcpService, u16) {
    let installed = Installed::new();
    let server = server_on(&installed);
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let port = server.add("db", "default");
    (installed, server, echo, port)
}

#[test]
fn an_upgrade_refuses_and_resets_nothing_and_open_connections_finish() {
    let (_installed, mut server, echo, port) = serving_db();
    let mut successors = Successors::default();

    // A transfer of 4 MiB paced over about 1.3 s, started before the upgrade.
    let data = Arc::new(random_bytes(4 << 20));
    let transfer = long_transfer(port, data.clone(), Duration::from_millis(20));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Failures::default());
    let churners: Vec<_> = (0..2).map(|_| churn(port, stop.clone(), failures.clone())).collect();
    // The API answers throughout.
    let api_failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let api = {
        let (addr, token, stop, api_failures) =
            (server.addr, server.token.clone(), stop.clone(), api_failures.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let mut calls = 0u32;
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
                && calls < 50_000
            {
                let auth = format!("Bearer {token}");
                match try_http(addr, "GET", "/v2/organisations", Some(&auth), None, IO_TIMEOUT) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => api_failures.lock().unwrap().push(format!("status {}", r.status)),
                    Err(e) => api_failures.lock().unwrap().push(e),
                }
                calls += 1;
            }
            calls
        })
    };
    // Let the loops run a moment before the upgrade: wait until they made connections (at
    // most 10 s; the counts are checked after the upgrade).
    let made = |least: u64| match failures.done.load(Ordering::Relaxed) {
        done if done >= least => Ok(()),
        done => Err(format!("{done} connections made, waiting for {least}")),
    };
    let _ = poll(Duration::from_secs(10), || made(200));
    let old = server.process_id();
    let new = upgrade(&server, old, &mut successors);
    assert_ne!(new, old);
    // The loops go on against the new process for a while, then stop.
    let after = failures.done.load(Ordering::Relaxed);
    let _ = poll(Duration::from_secs(10), || made(after + 500));
    let got = transfer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
    let calls = api.join().unwrap();

    assert_same_bytes(&got, &data, "the transfer that spanned the upgrade");
    let (done, refused, reset) = (
        failures.done.load(Ordering::Relaxed),
        failures.refused.load(Ordering::Relaxed),
        failures.reset.load(Ordering::Relaxed),
    );
    eprintln!("[upgrade] {done} short connections, {calls} API calls during the upgrade");
    assert!(done > after + 100, "connections went on after the upgrade: {done} in all, {after} before it");
    assert_eq!(
        (refused, reset),
        (0, 0),
        "refused and reset connections; others: {:?}\n{}",
        failures.other.lock().unwrap(),
        server.log()
    );
    assert!(failures.other.lock().unwrap().is_empty(), "{:?}", failures.other.lock().unwrap());
    assert!(api_failures.lock().unwrap().is_empty(), "API calls failed: {:?}", api_failures.lock().unwrap());

    // The old process drained and exited 0; the new one holds the port and the store.
    let status =
        server.wait_for_exit(Duration::from_secs(40)).expect("the old process exits after its drain");
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(alive(new));
    assert_same_bytes(&send_and_read_back(port, b"after"), b"after", "the port after the old process left");
    assert_eq!(server.list("db"), vec![("default".to_owned(), port)]);
    server.create_app("web", echo.addr());
    let web = server.add("web", "default");
    assert_same_bytes(&send_and_read_back(web, b"new"), b"new", "a port added by the new process");
}

#[test]
fn an_upgrade_to_a_binary_that_exits_at_once_leaves_the_old_process_serving() {
    let (installed, server, echo, port) = serving_db();
    installed.install(b"#!/bin/sh\necho 'this build is broken' >&2\nexit 3\n");
    let skip = server.log().len();
    signal(server.process_id(), libc::SIGUSR2);
    let log = server.wait_for_log("upgrade failed; this process goes on serving", skip, UPGRADE);
    let line = log.lines().last().unwrap();
    assert!(line.contains("exited before it was ready") && line.contains("exit status: 3"), "{line}");
    assert!(log[skip..].contains("this build is broken"), "the new binary's own output is in the log");
    // Nothing changed: the port forwards, the API answers and changes state.
    assert_same_bytes(
        &send_and_read_back(port, b"still here"),
        b"still here",
        "the port after a failed upgrade",
    );
    server.create_app("web", echo.addr());
    let web = server.add("web", "default");
    assert_same_bytes(&send_and_read_back(web, b"new"), b"new", "a port added after a failed upgrade");
}

#[test]
fn two_upgrades_in_a_row_the_second_while_the_first_drains() {
    let (_installed, mut server, _echo, port) = serving_db();
    let mut successors = Successors::default();
    // A connection opened before both upgrades stays open: the first process drains it.
    let mut held = connect(port);
    held.write_all(b"one").unwrap();
    let mut back = [0u8; 3];
    held.read_exact(&mut back).unwrap();

    let first = server.process_id();
    let second = upgrade(&server, first, &mut successors);
    assert!(alive(first), "the first process drains its open connection");
    let third = upgrade(&server, second, &mut successors);
    assert!(alive(first), "the first process still drains while the second hands over");
    assert_same_bytes(&send_and_read_back(port, b"after two"), b"after two", "the port after two upgrades");
    assert_eq!(server.list("db"), vec![("default".to_owned(), port)]);
    // The connection opened before both is still served by the first process.
    held.write_all(b"two").unwrap();
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"two");
    drop(held);
    let status = server.wait_for_exit(Duration::from_secs(40)).expect("the first process exits once drained");
    assert!(status.success(), "{status}");
    assert!(alive(third));
}

#[test]
fn sighup_applies_a_changed_config_file_and_keeps_the_running_one_when_it_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let write = |max: &str, with_dedicated: bool| {
        let mut text = format!("[[namespace]]\nname = \"default\"\n{max}\n");
        if with_dedicated {
            text.push_str("\n[[namespace]]\nname = \"dedicated\"\nports = \"6400-6499\"\n");
        }
        std::fs::write(&config, text).unwrap();
    };
    write("max_connections = 1", true);
    let server = Server::builder().config(&config).start();
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let port = server.add("db", "default");
    let dedicated = server.add("db", "dedicated");
    let reload = |needle: &str| {
        let skip = server.log().len();
        signal(server.process_id(), libc::SIGHUP);
        server.wait_for_log(needle, skip, Duration::from_secs(10))
    };
    // One connection at a time: a second is refused.
    let mut first = connect(port);
    first.write_all(b"1").unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).unwrap();
    assert!(refused_or_reset(port), "maxConnections 1: a second connection is refused");

    // Raised to 3: new connections get it, the open one keeps going.
    write("max_connections = 3", true);
    reload("SIGHUP: config reloaded");
    let mut second = connect(port);
    let mut third = connect(port);
    for conn in [&mut second, &mut third, &mut first] {
        conn.write_all(b"x").unwrap();
        conn.read_exact(&mut byte).unwrap();
    }
    let listed = server.cli_json(&["--app", "db", "-F", "json"]);
    assert!(listed.to_string().contains("\"maxConnections\":3"), "{listed}");

    // A broken file changes nothing.
    std::fs::write(&config, "[[namespace]\nname = ").unwrap();
    reload("the config file is invalid; the running config stays");
    assert!(refused_or_reset(port), "maxConnections is still 3 (three are open)");

    // A namespace gone from the file keeps its redirection, and takes no new one.
    write("max_connections = 3", false);
    let log = reload("SIGHUP: config reloaded");
    assert!(log.contains("namespace no longer in the config file"), "{log}");
    assert_same_bytes(&send_and_read_back(dedicated, b"kept"), b"kept", "the retired namespace's port");
    let namespaces = server.cli_json(&["list-namespaces", "--app", "db", "-F", "json"]);
    assert_eq!(namespace_names(&namespaces), ["cleverapps", "default"]);
    server.create_app("web", echo.addr());
    server.cli(&["add", "--app", "web", "--namespace", "dedicated"]).assert_error(3, &["dedicated"]);
    server.cli_ok(&["remove", &dedicated.to_string(), "--app", "db", "--namespace", "dedicated"]);
    assert_refuses(dedicated);
    drop((first, second, third));
}

/// Turning a namespace's connection log on (a SIGHUP) changes the port in place: the
/// connection open across the reload keeps going, and new connections are logged.
#[test]
fn sighup_turning_the_connection_log_on_resets_no_open_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[namespace]]\nname = \"default\"\n").unwrap();
    let server = Server::builder().config(&config).start();
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let port = server.add("db", "default");
    let mut open = connect(port);
    let mut byte = [0u8; 1];
    open.write_all(b"1").unwrap();
    open.read_exact(&mut byte).unwrap();

    std::fs::write(&config, "[[namespace]]\nname = \"default\"\naccess_log = true\n").unwrap();
    let skip = server.log().len();
    signal(server.process_id(), libc::SIGHUP);
    server.wait_for_log("new access list, PROXY protocol or logging", skip, Duration::from_secs(10));
    open.write_all(b"2").unwrap_or_else(|e| panic!("the open connection was cut by the reload: {e}"));
    open.read_exact(&mut byte).unwrap_or_else(|e| panic!("the open connection was cut by the reload: {e}"));
    assert_eq!(&byte, b"2");
    assert!(!server.log()[skip..].contains("port closed"), "the reload restarted the port");

    assert_same_bytes(&send_and_read_back(port, b"new"), b"new", "a connection after the reload");
    let log = server.wait_for_log("end=client_closed", skip, Duration::from_secs(10));
    assert!(log.contains(&format!("port={port}")), "{log}");
    drop(open);
}

/// Whether a new connection through `port` is refused: reset at once, or closed before
/// its echo.
fn refused_or_reset(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else { return true };
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    if conn.write_all(b"?").is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    !matches!(conn.read(&mut byte), Ok(1))
}

#[test]
fn systemd_hears_ready_and_the_new_main_pid_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let installed = Installed::new();
    let server =
        Server::builder().binary(&installed.path).env("NOTIFY_SOCKET", path.to_str().unwrap()).start();
    let mut successors = Successors::default();
    let mut message = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut message).expect("a notification within 30 s");
        String::from_utf8_lossy(&message[..n]).into_owned()
    };
    let first = next();
    assert!(
        first.contains("READY=1") && first.contains(&format!("MAINPID={}", server.process_id())),
        "{first}"
    );
    let new = upgrade(&server, server.process_id(), &mut successors);
    let second = next();
    assert!(second.contains("READY=1") && second.contains(&format!("MAINPID={new}")), "{second}");
    // The old process drains without telling systemd that the service stops.
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut extra = [0u8; 512];
    if let Ok(n) = socket.recv(&mut extra) {
        panic!("unexpected notification: {}", String::from_utf8_lossy(&extra[..n]));
    }
}

#[test]
fn the_systemd_unit_is_valid_and_hardened() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/tcp-redirs.service")).unwrap();
    for directive in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecReload=/bin/kill -USR2 $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=tcp-redirs",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        // Ports below 1024, and steered mode (BPF sk_lookup): nothing else.
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_BPF CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_BPF CAP_NET_ADMIN",
    ] {
        assert!(unit.lines().any(|l| l == directive), "the unit lacks `{directive}`");
    }
    // systemd-analyze checks the binary too: point the copy at the one under test. The
    // fleet's drop-in is read with it, from the unit's directory made a unit path.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tcp-redirs.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/tcp-redirs", BIN)).unwrap();
    let drop_in = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/tcp-redirs.service.d/fleet.conf");
    let fleet = std::fs::read_to_string(drop_in).unwrap();
    for directive in [
        "Environment=TCP_REDIRS_STORE_PASSWORD_FILE=%d/etcd-password",
        "Environment=TCP_REDIRS_STORE_CA=%d/etcd-ca.pem",
    ] {
        assert!(fleet.lines().any(|l| l == directive), "the fleet drop-in lacks `{directive}`");
    }
    std::fs::create_dir(dir.path().join("tcp-redirs.service.d")).unwrap();
    std::fs::write(dir.path().join("tcp-redirs.service.d/fleet.conf"), fleet).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{said}");
    assert!(
        !said.contains("tcp-redirs.service"),
        "systemd-analyze has something to say about the unit or its fleet drop-in:\n{said}"
    );
}

#[cfg(feature = "etcd")]
#[test]
fn a_fleet_node_keeps_its_name_and_its_place_through_an_upgrade() {
    let mut etcd = common::etcd::Etcd::start();
    let installed = Installed::new();
    let node = |name: &str, ip: &str| {
        Server::builder()
            .binary(&installed.path)
            .ip(ip)
            .token("fleet-upgrade-token")
            .args(&["--store", &etcd.url(), "--node", name, "--node-ttl", "1"])
            .start()
    };
    let mut a = node("a", "127.0.8.2");
    let b = node("b", "127.0.8.3");
    let mut successors = Successors::default();
    let echo = TcpService::echo();
    a.create_app("db", echo.addr());
    let port = a.add("db", "default");
    let via_a = std::net::SocketAddr::from(([127, 0, 8, 2], port));
    // A connection open through the old process, which therefore drains after the upgrade.
    let mut held = TcpStream::connect(via_a).unwrap();
    held.write_all(b"held").unwrap();
    let mut back = [0u8; 4];
    held.read_exact(&mut back).unwrap();
    let new = upgrade(&a, a.process_id(), &mut successors);
    // While the old process drains, etcd goes away for longer than the lease TTL (1 s): the
    // new process's lease lapses (it says so), and it registers again once etcd is back.
    // The draining process must not register again: its lease would end with it, taking
    // the node's liveness along.
    let skip = a.log().len();
    etcd.stop();
    a.wait_for_log("this node's lease lapsed", skip, Duration::from_secs(20));
    etcd.restart();
    // Which processes logged that they registered the node, since `skip`.
    let registered_by = |pid: u32| {
        let field = format!("pid={pid}");
        a.log()[skip..]
            .lines()
            .filter(|l| l.contains("this node is registered in the fleet"))
            .any(|l| l.split_whitespace().any(|word| word == field))
    };
    let registered = poll(Duration::from_secs(20), || {
        if registered_by(new) {
            Ok(())
        } else {
            Err(format!("no line of pid {new} says it registered"))
        }
    });
    if let Err(e) = registered {
        panic!("the new process did not register again ({e}):\n{}", a.log());
    }
    // The old process would register within a second of etcd's return, as the new one did:
    // two seconds with no line of its own.
    let old = a.process_id();
    let stayed_out = hold(Duration::from_secs(2), || {
        if registered_by(old) {
            Err(format!("pid {old} logged that it registered the node"))
        } else {
            Ok(())
        }
    });
    assert!(alive(old), "the old process still drains its connection");
    if let Err(e) = stayed_out {
        panic!("the draining process registered the node again ({e}):\n{}", a.log());
    }
    drop(held);
    let status = a.wait_for_exit(Duration::from_secs(40)).expect("the old process exits");
    assert!(status.success());
    // The old process's lease runs out within a second; for three, b must see a up, with
    // its port, and the new process must forward on it.
    let stayed_up = hold(Duration::from_secs(3), || {
        let nodes = b.cli_json(&["nodes", "-F", "json"]);
        let a_state =
            nodes.as_array().and_then(|n| n.iter().find(|n| n["name"] == "a")).map(|n| n["state"].clone());
        match a_state {
            Some(state) if state == "up" => Ok(()),
            other => Err(format!("b lists a as {other:?}: {nodes}")),
        }
    });
    if let Err(e) = stayed_up {
        panic!("b must see a up, for three seconds after the old process left: {e}");
    }
    assert!(alive(new));
    let mut conn = TcpStream::connect(via_a).unwrap();
    conn.write_all(b"fleet").unwrap();
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"fleet");
}

/// A UDP port passes to the new process too: one client's datagrams, sent one at a time
/// across the upgrade and after the old process left, are answered throughout; none meets
/// a closed port (ICMP port unreachable), and at most the datagram in flight when the old
/// process closes its flow goes unanswered.
#[test]
fn an_upgrade_hands_the_udp_ports_over_and_a_flow_keeps_being_answered() {
    let installed = Installed::new();
    let mut server = server_on(&installed);
    let echo = UdpEcho::start();
    server.create_app("game", echo.addr());
    let added = server.cli_json(&["add", "--udp", "--app", "game", "--namespace", "default", "-F", "json"]);
    let port = port_of(&added);
    let mut successors = Successors::default();

    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        thread::spawn(move || {
            let client = udp_client(LOCALHOST.into(), port);
            client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let (mut answered, mut unanswered, mut refused) = (0u64, 0u64, 0u64);
            let mut buf = [0u8; 64];
            let started = Instant::now();
            // Bounded: 60 s or 100,000 datagrams.
            for i in 0u64..100_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let _ = client.send(&i.to_be_bytes());
                // Answers to earlier datagrams that came late are skipped: only this one's counts.
                loop {
                    match client.recv(&mut buf) {
                        Ok(8) if buf[..8] == i.to_be_bytes() => {
                            answered += 1;
                            break;
                        }
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                            refused += 1;
                            break;
                        }
                        Err(_) => {
                            unanswered += 1;
                            break;
                        }
                    }
                }
            }
            (answered, unanswered, refused)
        })
    };
    // The flow is open before the upgrade: the old process has answered its datagrams.
    wait_until(Duration::from_secs(10), "no datagram was answered before the upgrade", || {
        let text = server.api("GET", "/metrics", None).text();
        let out =
            |l: &&str| l.starts_with("tcp_redirs_udp_datagrams_total{") && l.contains("direction=\"out\"");
        if text.lines().filter(out).any(|l| !l.ends_with(" 0")) {
            Ok(())
        } else {
            Err(format!("the metrics say:\n{text}"))
        }
    });
    let old = server.process_id();
    upgrade(&server, old, &mut successors);
    let status = server.wait_for_exit(Duration::from_secs(40)).expect("the old process exits");
    assert!(status.success(), "{status}\n{}", server.log());
    // The flow goes on with the new process alone for a moment (half a second, or until the
    // pinger ends: it failed, and its join says how).
    let _ = hold(Duration::from_millis(500), || match pinger.is_finished() {
        true => Err("the pinger ended".to_owned()),
        false => Ok(()),
    });
    stop.store(true, Ordering::Relaxed);
    let (answered, unanswered, refused) = pinger.join().unwrap();
    eprintln!("[upgrade] UDP: {answered} answered, {unanswered} unanswered, {refused} refused");
    assert_eq!(refused, 0, "a datagram met a closed port during the upgrade\n{}", server.log());
    assert!(unanswered <= 1, "{unanswered} datagrams went unanswered\n{}", server.log());
    assert!(answered > 100, "the flow went on: {answered} answered");
    let client = udp_client(LOCALHOST.into(), port);
    assert_eq!(udp_round_trip(&client, b"after").unwrap(), b"after", "a new flow with the new process");
}

/// A namespace's limits changed by SIGHUP reach its UDP redirections in place: the flow open
/// across the reload goes on, and ends at the new idle timeout (2 s, down from the default
/// minute), its socket closed and counted.
#[test]
fn sighup_changes_a_udp_redirections_limits_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[namespace]]\nname = \"default\"\n").unwrap();
    let server = Server::builder().config(&config).start();
    let echo = UdpEcho::start();
    server.create_app("game", echo.addr());
    let added = server.cli_json(&["add", "--udp", "--app", "game", "--namespace", "default", "-F", "json"]);
    let port = port_of(&added);
    assert_eq!(added["idleTimeout"], 60, "{added}");
    let client = udp_client(LOCALHOST.into(), port);
    assert_eq!(udp_round_trip(&client, b"one").unwrap(), b"one");
    let open = || server.cli_json(&["--app", "game", "-F", "json"])[0]["activeConnections"].as_u64();
    assert_eq!(open(), Some(1), "one flow open");

    std::fs::write(&config, "[[namespace]]\nname = \"default\"\nidle_timeout = 2\n").unwrap();
    let skip = server.log().len();
    signal(server.process_id(), libc::SIGHUP);
    server.wait_for_log("SIGHUP: config reloaded", skip, Duration::from_secs(10));
    assert_eq!(server.cli_json(&["--app", "game", "-F", "json"])[0]["idleTimeout"], 2);
    assert_eq!(udp_round_trip(&client, b"two").unwrap(), b"two", "the flow goes on across the reload");
    assert_eq!(open(), Some(1), "the same flow, not a new one");
    // Idle now: the flow ends after 2 s (the sweep runs at least every second), not 60.
    let idle = Instant::now();
    wait_until(Duration::from_secs(10), "the flow did not end at its new idle timeout", || match open() {
        Some(0) => Ok(()),
        other => Err(format!("activeConnections {other:?}")),
    });
    assert!(idle.elapsed() >= Duration::from_millis(1500), "ended too early: {:?}", idle.elapsed());
    assert_eq!(udp_round_trip(&client, b"three").unwrap(), b"three", "its next datagram starts a new flow");
}
