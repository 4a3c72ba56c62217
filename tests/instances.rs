//! Several instances per application: balancing, weights, fail-over and health checks.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A backend that writes its name to every connection and closes it.
fn named_backend(name: &'static str) -> SocketAddr {
    named_backend_on(TcpListener::bind((LOCALHOST, 0)).expect("bind a backend"), name)
}

fn named_backend_on(listener: TcpListener, name: &'static str) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, name.as_bytes());
        }
    });
    addr
}

/// Which backend answered a connection through the redirection.
fn who_answers(port: u16) -> String {
    let mut stream = TcpStream::connect((LOCALHOST, port)).expect("connect to the redirection");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut name = String::new();
    stream.read_to_string(&mut name).expect("read the backend's name");
    name
}

struct Fixture {
    server: Server,
    app_path: String,
    port: u16,
}

fn fixture(instances: Value) -> Fixture {
    let server = Server::start();
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let body = json!({"name": "pool", "instances": instances}).to_string();
    let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
    let app_path = format!("/v2/organisations/{org}/applications/{}", app["id"].as_str().unwrap());
    let added = server.api("POST", &format!("{app_path}/tcpRedirs"), Some(r#"{"namespace":"default"}"#));
    let port = port_of(&added.ok_json());
    Fixture { server, app_path, port }
}

fn instance_states(f: &Fixture) -> Vec<(String, String)> {
    let app = f.server.api("GET", &f.app_path, None).ok_json();
    app["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["address"].as_str().unwrap().to_owned(), i["state"].as_str().unwrap_or("?").to_owned()))
        .collect()
}

/// Waits until the gateway holds no connection open to any instance of the fixture's
/// application (its instances' `activeConnections`, which least-connections balancing reads).
fn wait_for_no_open_connection(f: &Fixture) {
    wait_until(IO_TIMEOUT, "the gateway closes its connections to the instances", || {
        let app = f.server.api("GET", &f.app_path, None).ok_json();
        let counts: Vec<u64> = app["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["activeConnections"].as_u64())
            .collect();
        let open: u64 = counts.iter().sum();
        // A connection was made: the instance that took it shows its count.
        if !counts.is_empty() && open == 0 {
            Ok(())
        } else {
            Err(format!("{open} open: {app}"))
        }
    })
}

#[test]
fn connections_are_spread_over_the_instances() {
    let (a, b) = (named_backend("A"), named_backend("B"));
    let f = fixture(json!([{"address": a.to_string()}, {"address": b.to_string()}]));
    // One connection at a time, each once the gateway has closed the one before: an
    // instance still holding the previous connection would take none (fewest open first),
    // so that a loaded machine, slow to close them, would decide the spread, not the ties.
    let answers: Vec<String> = (0..10)
        .map(|_| {
            let who = who_answers(f.port);
            wait_for_no_open_connection(&f);
            who
        })
        .collect();
    let count = |n: &str| answers.iter().filter(|a| *a == n).count();
    assert!(count("A") >= 3 && count("B") >= 3, "both instances take connections: {answers:?}");
}

/// An instance named by host name is looked up (then cached for 30 s, see
/// `balance::DNS_CACHE`) and reached; one that does not resolve is skipped for the next.
#[test]
fn a_host_name_instance_is_looked_up_and_a_name_that_does_not_resolve_is_skipped() {
    let a = named_backend("A");
    let f = fixture(json!([{"address": format!("localhost:{}", a.port())}]));
    for _ in 0..3 {
        assert_eq!(who_answers(f.port), "A");
    }
    let b = named_backend("B");
    let body =
        json!([{"address": "no-such-host.invalid:80"}, {"address": format!("localhost:{}", b.port())}]);
    f.server.api("PUT", &format!("{}/instances", f.app_path), Some(&body.to_string())).ok_json();
    for _ in 0..3 {
        assert_eq!(who_answers(f.port), "B");
    }
}

#[test]
fn an_instance_of_weight_zero_takes_no_new_connection() {
    let (a, b) = (named_backend("A"), named_backend("B"));
    let f = fixture(json!([{"address": a.to_string()}, {"address": b.to_string()}]));
    let body =
        json!([{"address": a.to_string(), "weight": 1}, {"address": b.to_string(), "weight": 0}]).to_string();
    let app = f.server.api("PUT", &format!("{}/instances", f.app_path), Some(&body)).ok_json();
    assert_eq!(app["instances"][1]["weight"], 0, "{app}");
    let answers: Vec<String> = (0..6).map(|_| who_answers(f.port)).collect();
    assert!(answers.iter().all(|n| n == "A"), "weight 0 takes nothing new: {answers:?}");
}

#[test]
fn a_dead_instance_is_skipped_marked_down_and_brought_back_by_the_checks() {
    let dead = refused_port();
    let a = named_backend("A");
    let dead_addr = SocketAddr::from((LOCALHOST, dead));
    let f = fixture(json!([{"address": dead_addr.to_string()}, {"address": a.to_string()}]));
    for _ in 0..4 {
        assert_eq!(who_answers(f.port), "A", "every connection is retried on the live instance");
    }
    let states = instance_states(&f);
    assert!(states.contains(&(dead_addr.to_string(), "down".into())), "{states:?}");
    assert!(states.contains(&(a.to_string(), "up".into())), "{states:?}");

    // The instance comes back: the active check notices within a few seconds.
    named_backend_on(TcpListener::bind(dead_addr).expect("rebind the dead port"), "B");
    wait_until(Duration::from_secs(15), "the instance was not seen up again", || {
        let states = instance_states(&f);
        if states.contains(&(dead_addr.to_string(), "down".into())) {
            Err(format!("{states:?}"))
        } else {
            Ok(())
        }
    });
    let answers: Vec<String> = (0..6).map(|_| who_answers(f.port)).collect();
    assert!(answers.iter().any(|n| n == "B"), "the recovered instance takes connections again: {answers:?}");
}

#[test]
fn invalid_instance_lists_are_refused() {
    let a = named_backend("A");
    let f = fixture(json!([{"address": a.to_string()}]));
    let path = format!("{}/instances", f.app_path);
    for (bad, status) in [
        (json!([{"address": "nowhere"}]), 400),
        (json!([{"address": a.to_string(), "weight": 100000}]), 400),
        (json!([{"address": a.to_string(), "state": "up"}]), 400),
        // A repeat is well formed (the document cannot say "each address once"): 422.
        (json!([{"address": a.to_string()}, {"address": a.to_string(), "weight": 2}]), 422),
    ] {
        f.server.api("PUT", &path, Some(&bad.to_string())).assert_error(status);
    }
    assert_eq!(who_answers(f.port), "A", "a refused change leaves the running instances alone");
}

#[test]
fn the_cli_sets_weighted_instances_live_and_shows_their_state() {
    let server = Server::start();
    let (a, b) = (named_backend("A"), named_backend("B"));
    let dead = SocketAddr::from((LOCALHOST, refused_port()));
    let app = server.cli_json(&["apps", "create", "cli-pool", "--instance", &format!("{a}=2"), "-F", "json"]);
    assert_eq!(app["instances"][0]["weight"], 2, "{app}");
    let port = server.add("cli-pool", "default");
    assert_eq!(who_answers(port), "A");
    let set = server.cli_json(&[
        "apps",
        "set-instances",
        "cli-pool",
        "--instance",
        &format!("{a}=0"),
        "--instance",
        &b.to_string(),
        "--instance",
        &dead.to_string(),
        "-F",
        "json",
    ]);
    assert_eq!(set["instances"].as_array().unwrap().len(), 3, "{set}");
    for _ in 0..4 {
        assert_eq!(who_answers(port), "B", "weight 0 takes nothing new; the dead one is skipped");
    }
    let human = server.cli_ok(&["list", "--app", "cli-pool"]);
    assert!(human.contains(&format!("{dead} down")), "{human}");
    assert!(human.contains(&format!("{b} up")), "{human}");
    let usage = server.cli(&["apps", "set-instances", "cli-pool", "--instance", "nowhere=1"]);
    assert_eq!(usage.code, 2, "a bad instance is a usage error: {}", usage.stderr);
    assert!(usage.stderr.contains("nowhere") && usage.stdout.is_empty(), "{}", usage.stderr);
}
