//! Nothing lost: crashes in the middle of changes, clean drains, and data directories that
//! are not ours.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use rand::Rng;
use serde_json::json;

fn org_of(server: &Server) -> String {
    server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned()
}

/// What one worker saw: its last acknowledged state, and the call in flight when the server died.
#[derive(Debug, Default, Clone)]
struct Seen {
    acknowledged_port: Option<u16>,
    in_flight: Option<&'static str>,
    calls: usize,
}

/// One worker owns one (application, namespace) pair and alternates add and remove on it
/// until a call fails (the server was killed), so at most one call per pair is in doubt.
fn worker(
    addr: std::net::SocketAddr,
    token: String,
    path: String,
    namespace: &'static str,
    stop: Arc<AtomicBool>,
) -> Seen {
    let auth = format!("Bearer {token}");
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) && seen.calls < 400 {
        let (call, method, url, body) = match seen.acknowledged_port {
            None => ("add", "POST", path.clone(), Some(format!(r#"{{"namespace":"{namespace}"}}"#))),
            Some(port) => ("remove", "DELETE", format!("{path}/{port}?namespace={namespace}"), None),
        };
        seen.in_flight = Some(call);
        let answer =
            catch_unwind(AssertUnwindSafe(|| http(addr, method, &url, Some(&auth), body.as_deref())));
        match answer {
            Ok(a) if (200..300).contains(&a.status) => {
                seen.acknowledged_port = match call {
                    "add" => Some(port_of(&a.json())),
                    _ => None,
                };
                seen.in_flight = None;
                seen.calls += 1;
            }
            Ok(a) => panic!("{method} {url} answered {} {}", a.status, a.text()),
            Err(_) => break, // the server is gone: the call's outcome is in doubt
        }
    }
    seen
}

#[test]
fn a_crash_in_the_middle_of_changes_loses_no_acknowledged_change() {
    let mut server = Server::start();
    let echo = TcpService::echo();
    let org = org_of(&server);
    let mut apps = Vec::new();
    for i in 0..4 {
        let body = json!({"name": format!("crash{i}"), "instances": [{"address": echo.addr().to_string()}]})
            .to_string();
        let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
        apps.push(format!("/v2/organisations/{org}/applications/{}/tcpRedirs", app["id"].as_str().unwrap()));
    }
    let mut rng = rand::rng();
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = apps
            .iter()
            .flat_map(|path| ["default", "cleverapps"].map(|ns| (path.clone(), ns)))
            .map(|(path, ns)| {
                let (addr, token, stop) = (server.addr, server.token.clone(), stop.clone());
                thread::spawn(move || worker(addr, token, path, ns, stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(rng.random_range(50..400)));
        server = server.crash_and_restart();
        stop.store(true, Ordering::Relaxed);
        let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().expect("worker")).collect();
        let calls: usize = seen.iter().map(|s| s.calls).sum();
        assert!(calls > 8, "round {round}: the workers made only {calls} calls before the crash");

        // Compare every pair's state after the restart with what was acknowledged.
        let mut held = HashSet::new();
        let pairs = apps.iter().flat_map(|path| ["default", "cleverapps"].map(|ns| (path.clone(), ns)));
        for ((path, ns), seen) in pairs.zip(&seen) {
            let listed = server.api("GET", &path, None).ok_json();
            let present: Vec<u16> =
                listed.as_array().unwrap().iter().filter(|r| r["namespace"] == ns).map(port_of).collect();
            match (seen.acknowledged_port, seen.in_flight) {
                (Some(port), None) => assert_eq!(present, vec![port], "round {round}: acknowledged add lost"),
                (Some(port), Some(_)) => assert!(
                    present.is_empty() || present == vec![port],
                    "round {round}: {present:?} vs {seen:?}"
                ),
                (None, None) => {
                    assert!(present.is_empty(), "round {round}: acknowledged remove came back: {present:?}")
                }
                (None, Some(_)) => assert!(present.len() <= 1, "round {round}: {present:?}"),
            }
            for port in present {
                assert!(held.insert((ns, port)), "round {round}: port {port} held twice in {ns}");
                let payload = random_bytes(512);
                assert_same_bytes(
                    &send_and_read_back(port, &payload),
                    &payload,
                    "forwarding after the crash",
                );
            }
        }
        // Leave every pair in a known state for the next round: nothing.
        for path in &apps {
            for r in server.api("GET", path, None).ok_json().as_array().unwrap() {
                let url = format!("{path}/{}?namespace={}", port_of(r), r["namespace"].as_str().unwrap());
                server.api("DELETE", &url, None).ok_json();
            }
        }
    }
}

#[test]
fn sigterm_lets_open_connections_finish_and_refuses_new_ones() {
    let mut server = Server::start();
    // A backend that answers only after the client's end of stream.
    let backend = TcpService::answer_after_eof();
    server.create_app("drained", backend.addr());
    let port = server.add("drained", "default");

    let mut held = connect(port);
    held.write_all(b"first half ").unwrap();
    server.send_signal(libc::SIGTERM);
    // The public port stops accepting; wait for that (bounded) rather than sleeping.
    wait_until(
        Duration::from_secs(10),
        "the port still accepts after SIGTERM",
        || match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => Err(format!("port {port} accepted a connection")),
            Err(_) => Ok(()),
        },
    );
    // The open connection still works to its end.
    held.write_all(b"second half").unwrap();
    held.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    held.read_to_end(&mut answer).expect("the held connection completes during the drain");
    assert_eq!(answer, answer_after_eof_for(b"first half second half"));
    let status = server.wait_for_exit(Duration::from_secs(20)).expect("the server exits once drained");
    assert!(status.success(), "exit status after a clean drain: {status:?}\n{}", server.log());
}

/// A CLI call that meets a server draining after SIGTERM is told at once that the server
/// cannot be reached (exit 5), not left waiting for the drain's end and a reset.
#[test]
fn a_cli_call_during_the_drain_exits_5_at_once() {
    let mut server = Server::start();
    let echo = TcpService::echo();
    server.create_app("held", echo.addr());
    let port = server.add("held", "default");
    // An open connection keeps the server draining (30 s by default).
    let mut held = connect(port);
    held.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    held.read_exact(&mut byte).unwrap();
    server.send_signal(libc::SIGTERM);
    wait_until(
        Duration::from_secs(10),
        "the port still accepts after SIGTERM",
        || match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => Err(format!("port {port} accepted a connection")),
            Err(_) => Ok(()),
        },
    );
    let started = std::time::Instant::now();
    let out = server.cli(&["list-namespaces"]);
    out.assert_error(5, &["control server", "tcp-redirs serve"]);
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    // The drain goes on: the open connection still carries bytes.
    held.write_all(b"y").unwrap();
    held.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"y");
    drop(held);
    let status = server.wait_for_exit(Duration::from_secs(20)).expect("the server exits once drained");
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_drain_timeout_closes_what_is_still_open() {
    let mut server = Server::builder().args(&["--drain-timeout", "1"]).start();
    let echo = TcpService::echo();
    server.create_app("slow", echo.addr());
    let port = server.add("slow", "default");
    let mut held = connect(port);
    held.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    held.read_exact(&mut byte).unwrap();
    server.send_signal(libc::SIGINT);
    let status =
        server.wait_for_exit(Duration::from_secs(15)).expect("the server exits after the drain timeout");
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    let ended = held.read_to_end(&mut rest);
    assert!(ended.is_err() || rest.is_empty(), "the held connection is closed: {ended:?} {rest:?}");
}

#[test]
fn the_data_directory_is_private() {
    let server = Server::start();
    let dir = server.data_path();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
    }
}

fn start_on(dir: &std::path::Path) -> std::process::Output {
    let config = tempfile::tempdir().unwrap();
    std::process::Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0", "--public-bind", "127.0.0.1", "--data-dir"])
        .arg(dir)
        .env("TCP_REDIRS_CONFIG_DIR", config.path())
        .env("TCP_REDIRS_ADMIN_TOKEN", "t")
        .output()
        .expect("run serve")
}

#[test]
fn a_corrupt_or_foreign_store_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tcp-redirs.db");
    std::fs::write(&db, b"this is not a database, and it must survive").unwrap();
    let out = start_on(dir.path());
    assert!(!out.status.success(), "a corrupt store must stop the server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a tcp-redirs store") && stderr.contains("--data-dir"), "{stderr}");
    assert!(
        std::fs::read(&db).unwrap() == b"this is not a database, and it must survive",
        "the corrupt file was changed"
    );

    // Another program's SQLite database.
    let other = tempfile::tempdir().unwrap();
    let sqlite = other.path().join("tcp-redirs.db");
    {
        let conn = rusqlite::Connection::open(&sqlite).unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
    }
    let before = std::fs::read(&sqlite).unwrap();
    let out = start_on(other.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a tcp-redirs store"));
    assert!(std::fs::read(&sqlite).unwrap() == before, "a foreign database is never written");
}

#[test]
fn two_servers_cannot_share_a_data_directory() {
    let server = Server::start();
    let out = start_on(&server.data_path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another tcp-redirs server"), "{stderr}");
}

/// Makes a file immutable (`chattr +i`, which even root cannot write through) until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: std::path::PathBuf) -> Option<Immutable> {
        let ok =
            std::process::Command::new("chattr").arg("+i").arg(&path).status().is_ok_and(|s| s.success());
        ok.then_some(Immutable(path))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root and `chattr` on a filesystem with attributes; CI runs it (`cargo test -- --ignored`)"]
fn a_store_that_cannot_be_written_fails_the_call_and_leaves_running_redirections_alone() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("running", echo.addr());
    let late = server.create_app("late", echo.addr());
    let port = server.add("running", "default");
    let Some(frozen) = Immutable::new(server.data_path().join("tcp-redirs.db-wal")) else {
        cannot_run_here(
            "a_store_that_cannot_be_written_fails_the_call_and_leaves_running_redirections_alone",
            "chattr +i is not available here (it needs root and a filesystem with attributes)",
        );
    };
    let failed = server.cli(&["add", "--app", "late", "--namespace", "default"]);
    failed.assert_error(1, &["could not complete", "nothing was changed"]);
    let failed = server.cli(&["remove", &port.to_string(), "--app", "running", "--namespace", "default"]);
    failed.assert_error(1, &["could not complete"]);
    // The answer says nothing of the server's insides (no path, no SQL): only an id,
    // under which the server's log has the whole cause.
    let (org, app) = (late["ownerId"].as_str().unwrap(), late["id"].as_str().unwrap());
    let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");
    let message = server.api("POST", &path, Some(r#"{"namespace":"default"}"#)).assert_error(500);
    let data_dir = server.data_path().display().to_string();
    for internal in [data_dir.as_str(), "SQL", "sqlite", ".db", "disk I/O", "readonly"] {
        assert!(!message.contains(internal), "the answer must not show `{internal}`: {message}");
    }
    let id = message.split(|c: char| c.is_whitespace() || c == ';').find(|w| w.starts_with("err-"));
    let id = id.unwrap_or_else(|| panic!("the answer must give the log's id (err-…): {message}"));
    let log = server.wait_for_log(id, 0, Duration::from_secs(5));
    let line = log.lines().last().unwrap_or_default();
    assert!(line.contains(&data_dir), "the log line of {id} has the details: {line}");
    let payload = random_bytes(4096);
    assert_same_bytes(&send_and_read_back(port, &payload), &payload, "the running redirection is untouched");

    // Once the disk takes writes again, so does the server.
    drop(frozen);
    let added = server.add("late", "default");
    assert_same_bytes(&send_and_read_back(added, &payload), &payload, "a redirection added after recovery");
    assert_eq!(server.list("running"), vec![("default".to_owned(), port)]);
}
