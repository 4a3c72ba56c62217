//! The audit trail (issue 35), end to end: the real server and CLI on loopback.
//!
//! - every kind of change leaves one event, with the credential that made it (its id and
//!   name, never its secret), the client's address and the node; the config file's
//!   applications are the config file's;
//! - an organisation reads its own events only; `GET /v2/events` is the admin's;
//! - `events --follow` across a `kill -9` and restart of the server prints every event
//!   once: nothing missed, nothing repeated (on SQLite, and on etcd).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{http, wait_until, Server, TcpService, BIN};
use serde_json::Value;

/// Creates the organisation `name` and a credential for it: (org id, token, token id).
fn org_with_token(server: &Server, name: &str) -> (String, String, String) {
    let org = server.api("POST", "/v2/organisations", Some(&format!(r#"{{"name":"{name}"}}"#))).ok_json();
    let org_id = org["id"].as_str().expect("org id").to_owned();
    let issued = server
        .api("POST", &format!("/v2/organisations/{org_id}/tokens"), Some(r#"{"name":"ci-robot"}"#))
        .ok_json();
    let id = issued["id"].as_str().expect("token id").to_owned();
    (org_id, issued["token"].as_str().expect("token").to_owned(), id)
}

/// A call with a bearer token.
fn call(server: &Server, token: &str, method: &str, path: &str, body: Option<&str>) -> common::HttpResponse {
    http(server.addr, method, path, Some(&format!("Bearer {token}")), body)
}

/// Every event the admin reads, oldest first (following from 0, no wait).
fn all_events(server: &Server) -> Vec<Value> {
    let page = server.api("GET", "/v2/events?after=0&limit=1000", None).ok_json();
    page["events"].as_array().expect("events").clone()
}

/// Every kind of change, by the API under an organisation's credential, leaves exactly one
/// event with that credential as its actor, the client's address, the node, and the
/// records before and after; the admin's changes carry the admin's credential, the config
/// file's application the config file. No secret appears in the trail.
#[test]
fn every_kind_of_change_leaves_one_event_with_its_actor() {
    let echo = TcpService::echo();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[[application]]\nname = \"from-config\"\ninstances = [\"{}\"]\n", echo.addr()),
    )
    .unwrap();
    let server = Server::builder().config(config.path()).start();
    let (org, token, issued_id) = org_with_token(&server, "acme");
    let apps = format!("/v2/organisations/{org}/applications");
    let body = format!(r#"{{"name":"db","instances":[{{"address":"{}"}}]}}"#, echo.addr());
    let app = call(&server, &token, "POST", &apps, Some(&body)).ok_json();
    let app_id = app["id"].as_str().unwrap().to_owned();
    let redirs = format!("{apps}/{app_id}/tcpRedirs");
    let added = call(&server, &token, "POST", &redirs, Some(r#"{"namespace":"default"}"#)).ok_json();
    let port = added["port"].as_u64().unwrap();
    call(
        &server,
        &token,
        "PATCH",
        &format!("{redirs}/{port}?namespace=default"),
        Some(r#"{"idleTimeout":600}"#),
    )
    .ok_json();
    call(&server, &token, "DELETE", &format!("{redirs}/{port}?namespace=default"), None).ok_json();
    call(&server, &token, "POST", &redirs, Some(r#"{"namespace":"cleverapps"}"#)).ok_json();
    let instances = format!(r#"[{{"address":"{}"}},{{"address":"127.0.0.1:9"}}]"#, echo.addr());
    call(&server, &token, "PUT", &format!("{apps}/{app_id}/instances"), Some(&instances)).ok_json();
    let check = r#"{"healthCheck":{"intervalMs":2000}}"#;
    call(&server, &token, "PATCH", &format!("{apps}/{app_id}"), Some(check)).ok_json();
    call(&server, &token, "DELETE", &format!("{apps}/{app_id}"), None).ok_json();
    server.api("DELETE", &format!("/v2/organisations/{org}/tokens/{issued_id}"), None).ok_json();

    let events = all_events(&server);
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&token), "the trail must never hold a token: {text}");
    let mine: Vec<&Value> = events.iter().filter(|e| e["orgId"] == org.as_str()).collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "organisation.created",
            "token.issued",
            "application.created",
            "redirection.added",
            "redirection.updated",
            "redirection.removed",
            "redirection.added",
            "application.instances",
            "application.health_check",
            "redirection.removed",
            "application.removed",
            "token.revoked",
        ],
        "{text}"
    );
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    for (i, event) in mine.iter().enumerate() {
        let by_org = (2..=10).contains(&i);
        let want = if by_org { issued_id.as_str() } else { "admin" };
        assert_eq!(event["actor"]["id"], want, "actor of event {i}: {event}");
        assert_eq!(event["client"], "127.0.0.1", "{event}");
        assert!(event["node"].is_string(), "{event}");
        if by_org {
            assert_eq!(event["actor"]["name"], "ci-robot", "{event}");
        }
    }
    // Before and after: the update says what changed.
    let update = mine[4];
    assert_eq!(update["after"]["idleTimeout"], 600, "{update}");
    assert!(update["before"]["idleTimeout"].is_null(), "{update}");
    assert_eq!(update["appId"], app_id.as_str());
    let instances_changed = mine[7];
    assert_eq!(instances_changed["before"]["instances"].as_array().unwrap().len(), 1, "{instances_changed}");
    assert_eq!(instances_changed["after"]["instances"].as_array().unwrap().len(), 2, "{instances_changed}");
    let checks_changed = mine[8];
    assert!(checks_changed["before"]["healthCheck"]["intervalMs"].is_null(), "{checks_changed}");
    assert_eq!(checks_changed["after"]["healthCheck"]["intervalMs"], 2000, "{checks_changed}");
    // The config file's application, created at start.
    let from_config = events
        .iter()
        .find(|e| e["kind"] == "application.created" && e["after"]["name"] == "from-config")
        .unwrap_or_else(|| panic!("no event of the config file's application: {text}"));
    assert_eq!(from_config["actor"]["name"], "config file", "{from_config}");
    assert!(from_config["actor"]["id"].is_null(), "{from_config}");

    // The CLI reads the same trail, newest first, filtered by kind.
    let page = server.cli_json(&["events", "--org", "acme", "--kind", "redirection.added", "-F", "json"]);
    let added: Vec<&Value> = page["events"].as_array().unwrap().iter().collect();
    assert_eq!(added.len(), 2, "{page}");
    assert!(added[0]["id"].as_i64() > added[1]["id"].as_i64(), "newest first: {page}");
    let human = server.cli_ok(&["events", "--org", "acme"]);
    assert!(human.contains("redirection.removed") && human.contains("ci-robot"), "{human}");
}

/// An organisation reads its own events, never another's (404, as for any of its
/// resources), nor the whole trail (403); the admin reads both. Paging backwards with the
/// cursor visits every event once.
#[test]
fn an_organisation_cannot_read_anothers_events() {
    let echo = TcpService::echo();
    let server = Server::start();
    let (a, token_a, _) = org_with_token(&server, "alpha");
    let (b, token_b, _) = org_with_token(&server, "beta");
    for (org, token) in [(&a, &token_a), (&b, &token_b)] {
        let body = format!(r#"{{"name":"app","instances":[{{"address":"{}"}}]}}"#, echo.addr());
        call(&server, token, "POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
    }
    let own = call(&server, &token_a, "GET", &format!("/v2/organisations/{a}/events"), None).ok_json();
    let own = own["events"].as_array().unwrap();
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e["orgId"] == a.as_str()), "{own:?}");
    call(&server, &token_a, "GET", &format!("/v2/organisations/{b}/events"), None).assert_error(404);
    call(&server, &token_a, "GET", "/v2/events", None).assert_error(403);
    call(&server, &token_a, "GET", &format!("/v2/organisations/{a}/events?kind=nope"), None)
        .assert_error(400);
    call(&server, &token_a, "GET", &format!("/v2/organisations/{a}/events?limit=0"), None).assert_error(400);
    let theirs = server.api("GET", &format!("/v2/organisations/{b}/events"), None).ok_json();
    assert!(theirs["events"].as_array().unwrap().iter().all(|e| e["orgId"] == b.as_str()));

    // Pages of 2, newest first, down to the oldest: each event once.
    let everything: Vec<i64> = all_events(&server).iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let mut paged = Vec::new();
    let mut path = "/v2/events?limit=2".to_owned();
    for _ in 0..100 {
        let page = server.api("GET", &path, None).ok_json();
        paged.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next"].as_i64() {
            Some(next) => path = format!("/v2/events?limit=2&before={next}"),
            None => break,
        }
    }
    paged.reverse();
    assert_eq!(paged, everything);
}

/// A TCP forwarder on a fixed loopback port to whatever address `target` holds: the CLI
/// keeps one URL while the server behind it restarts on another port.
fn forwarder(target: Arc<Mutex<SocketAddr>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let to = *target.lock().unwrap();
            let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else { continue };
            for (mut from, mut into) in
                [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
            {
                thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}

/// `events --follow -F json` prints each event once, in order, across a `kill -9` of the
/// server and its restart: it resumes after the last id it printed.
#[test]
fn follow_across_a_server_restart_misses_nothing_and_repeats_nothing() {
    follows_across_a_restart(Server::start());
}

/// The same on etcd, whose trail indexes each event after its change commits: the node is
/// killed with events perhaps not indexed yet.
#[cfg(feature = "etcd")]
#[test]
fn follow_across_a_server_restart_on_etcd_misses_nothing_and_repeats_nothing() {
    let etcd = common::etcd::Etcd::start();
    follows_across_a_restart(Server::builder().args(&["--store", &etcd.url(), "--node", "a"]).start());
}

/// Follows `server`'s trail with the CLI through a forwarder, across its `kill -9` and
/// restart, and compares what was printed with what the store holds.
fn follows_across_a_restart(server: Server) {
    let echo = TcpService::echo();
    let target = Arc::new(Mutex::new(server.addr));
    let front = forwarder(target.clone());
    let config_dir = tempfile::tempdir().unwrap();
    let mut follower = Command::new(BIN)
        .args(["--server", &format!("http://{front}"), "events", "--all", "--follow", "-F", "json"])
        .env("TCP_REDIRS_TOKEN", &server.token)
        .env("TCP_REDIRS_CONFIG_DIR", config_dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = scopeguard(follower.id());
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut printed: Vec<Value> = Vec::new();
    let read_until = |printed: &mut Vec<Value>, want: &dyn Fn(&[Value]) -> bool| {
        wait_until(Duration::from_secs(30), "the follower prints the events", || {
            while let Ok(line) = lines.try_recv() {
                printed.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
            }
            if want(printed) {
                Ok(())
            } else {
                Err(format!("printed only {printed:?}"))
            }
        })
    };
    let app = server.create_app("db", echo.addr());
    let app_id = app["id"].as_str().unwrap().to_owned();
    server.add(&app_id, "default");
    read_until(&mut printed, &|p| p.iter().any(|e| e["kind"] == "redirection.added"));

    // kill -9, changes while the follower cannot reach the server, then the restart.
    let server = server.crash_and_restart();
    *target.lock().unwrap() = server.addr;
    server.add(&app_id, "cleverapps");
    server.create_app("cache", echo.addr());
    read_until(&mut printed, &|p| p.iter().any(|e| e["after"]["name"] == "cache"));

    let stored: Vec<i64> = all_events(&server).iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let seen: Vec<i64> = printed.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    // The follower started with the newest 20 (all there were), then everything after.
    assert_eq!(seen, stored, "printed ids against the store's");
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(*id).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "duplicates: {seen:?}");
    drop(guard);
    let _ = follower.kill();
    let _ = follower.wait();
}

/// Kills the process `pid` when dropped (a failed assertion must not leave the follower).
fn scopeguard(pid: u32) -> impl Drop {
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    Kill(pid)
}
