//! Many redirections at once: `POST /v2/organisations/{orgId}/tcpRedirs` and `apply`, which
//! sends its redirections through it.
//!
//! - `apply` of a file of hundreds of redirections makes each, every port forwards, the JSON
//!   report lists each with its port, and a second `apply` changes nothing;
//! - a batch with refused items makes the others and says, per item, what a single `add`
//!   would have answered; a batch that breaks the API's document is refused whole (400)
//!   and makes nothing; `apply` reports the first refusal after making the rest;
//! - a batch whose client goes away while its ports are bound and held for the claim closes
//!   them (the server's descriptors come back), and the store is left consistent.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The default organisation's id.
fn default_org(server: &Server) -> String {
    let orgs = server.api("GET", "/v2/organisations", None).ok_json();
    orgs[0]["id"].as_str().expect("org id").to_owned()
}

/// Creates applications `prefix-0`… through the API; their ids.
fn create_apps(server: &Server, org: &str, prefix: &str, count: usize, instance: &str) -> Vec<String> {
    (0..count)
        .map(|i| {
            let body = json!({"name": format!("{prefix}-{i}"), "instances": [{"address": instance}]});
            let created = server
                .api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body.to_string()))
                .ok_json();
            created["id"].as_str().expect("app id").to_owned()
        })
        .collect()
}

#[test]
fn apply_makes_hundreds_of_redirections_in_batches_and_every_port_forwards() {
    const APPS: usize = 200;
    let server = Server::start();
    let echo = TcpService::echo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.toml");
    let text = many_apps_manifest("svc", APPS, echo.addr(), "idle_timeout = 600\n");
    std::fs::write(&file, text).unwrap();
    let applied = server.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    let changes = applied["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), APPS * 3, "a creation and two additions per application");
    // The lines keep the order of the file: each application, then its two redirections.
    let mut made = BTreeSet::new();
    for (i, group) in changes.chunks(3).enumerate() {
        let name = format!("svc-{i}");
        assert_eq!(group[0], json!({"action": "create", "kind": "application", "application": name}));
        for (change, namespace) in group[1..].iter().zip(["default", "cleverapps"]) {
            assert_eq!(
                (&change["action"], &change["kind"], &change["application"], &change["namespace"]),
                (&json!("add"), &json!("redirection"), &json!(name), &json!(namespace)),
                "{change}"
            );
            assert!(made.insert((namespace, port_of(change))), "a port given twice: {change}");
        }
    }
    // Every port forwards, and the server lists exactly these.
    for &(_, port) in &made {
        let payload = random_bytes(64);
        assert_same_bytes(&send_and_read_back(port, &payload), &payload, "a port made by a batch");
    }
    let mut listed = BTreeSet::new();
    for i in [0, APPS / 2, APPS - 1] {
        for (namespace, port) in server.list(&format!("svc-{i}")) {
            listed.insert((namespace, port));
        }
    }
    assert!(listed.iter().all(|(ns, port)| made.contains(&(ns.as_str(), *port))), "{listed:?}");
    assert_eq!(listed.len(), 6);
    // The 400 redirections took one store write and one wait per batch, not one each.
    let batches = server.log().matches("redirections added").count();
    assert_eq!(batches, 1, "400 redirections fit one batch of 1000\n{}", server.log());
    let again = server.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    assert_eq!(again["changes"], json!([]), "a second apply changes nothing");
}

#[test]
fn a_batch_makes_what_it_can_and_says_why_not_for_the_rest() {
    let server = Server::start();
    let org = default_org(&server);
    let echo = TcpService::echo();
    let apps = create_apps(&server, &org, "b", 5, &echo.addr().to_string());
    let taken = server.add("b-0", "default");
    let path = format!("/v2/organisations/{org}/tcpRedirs");
    let batch = json!({"redirections": [
        {"application": apps[1], "namespace": "default"},
        {"application": "app_00000000-0000-0000-0000-000000000000", "namespace": "default"},
        {"application": apps[2], "namespace": "nowhere"},
        {"application": apps[2], "namespace": "default", "port": taken},
        {"application": apps[0], "namespace": "default"},
        {"application": apps[3], "namespace": "default", "port": 80},
        {"application": apps[3], "namespace": "cleverapps", "maxConnections": 5},
        {"application": apps[1], "namespace": "default"},
    ]});
    let answer = server.api("POST", &path, Some(&batch.to_string()));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let outcomes = answer.json()["redirections"].as_array().expect("outcomes").clone();
    assert_eq!(outcomes.len(), 8, "one outcome per redirection asked");
    let ids: Vec<Option<u64>> = outcomes.iter().map(|o| o["error"]["id"].as_u64()).collect();
    assert_eq!(ids, [None, Some(4042), Some(4043), Some(4095), Some(4090), Some(4221), None, Some(4090)]);
    for (outcome, item) in outcomes.iter().zip(batch["redirections"].as_array().unwrap()) {
        assert_eq!(
            (&outcome["application"], &outcome["namespace"]),
            (&item["application"], &item["namespace"])
        );
        let (made, error) = (outcome.get("redirection"), outcome.get("error"));
        assert!(made.is_some() != error.is_some(), "made or refused, not both: {outcome}");
        if let Some(error) = error {
            assert_eq!(error["type"], "error");
            assert!(!error["message"].as_str().unwrap_or_default().is_empty(), "{outcome}");
        }
    }
    assert!(
        outcomes[4]["error"]["message"].as_str().unwrap().contains(&taken.to_string()),
        "{:?}",
        outcomes[4]
    );
    // What was made forwards, with what was asked.
    let first = port_of(&outcomes[0]["redirection"]);
    let limited = &outcomes[6]["redirection"];
    assert_eq!(limited["maxConnections"], 5, "{limited}");
    for port in [first, port_of(limited)] {
        let payload = random_bytes(100);
        assert_same_bytes(&send_and_read_back(port, &payload), &payload, "a port of a batch");
    }
    assert_eq!(server.list("b-1"), vec![("default".to_owned(), first)]);
    assert!(server.list("b-2").is_empty(), "b-2's refused redirections were not made");

    // A batch that breaks the document is refused whole: nothing is made.
    for bad in [
        json!({"redirections": [{"application": apps[4], "namespace": "default"}, {"application": apps[2], "namespace": "Bad Name"}]}),
        json!({"redirections": [{"application": apps[4], "namespace": "default"}, {"application": apps[2], "namespace": "default", "idleTimeout": 0}]}),
        json!({"redirections": [{"application": apps[4], "namespace": "default", "allow": ["nonsense"]}]}),
        json!({"redirections": [{"application": apps[4], "namespace": "default", "colour": "blue"}]}),
        json!({"redirections": [{"application": apps[4], "namespace": "default", "port": 0}]}),
        json!({"redirections": (0..1001).map(|_| json!({"application": apps[4], "namespace": "default"})).collect::<Vec<_>>()}),
    ] {
        let message = server.api("POST", &path, Some(&bad.to_string())).assert_error(400);
        assert!(!message.is_empty());
    }
    assert!(server.list("b-4").is_empty(), "a refused batch made nothing");
    // An organisation the caller does not have: 404 for the whole batch.
    let unknown = "/v2/organisations/orga_00000000-0000-0000-0000-000000000000/tcpRedirs";
    server.api("POST", unknown, Some(r#"{"redirections":[]}"#)).assert_error(404);
    assert_eq!(
        server.api("POST", &path, Some(r#"{"redirections":[]}"#)).ok_json(),
        json!({"redirections": []})
    );
}

#[test]
fn apply_reports_a_refused_redirection_after_making_the_others() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("holder", echo.addr());
    let taken = server.add("holder", "default");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clash.toml");
    std::fs::write(
        &file,
        format!(
            "[[application]]\nname = \"wants-taken\"\ninstances = [{{ address = \"{0}\" }}]\n\n\
             [[application.redirection]]\nnamespace = \"default\"\nport = {taken}\n\n\
             [[application]]\nname = \"fine\"\ninstances = [{{ address = \"{0}\" }}]\n\n\
             [[application.redirection]]\nnamespace = \"default\"\n",
            echo.addr()
        ),
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    out.assert_error(1, &["wants-taken", &taken.to_string(), "taken", "apply it again"]);
    let fine = server.list("fine");
    assert_eq!(fine.len(), 1, "the other redirection was made: {fine:?}");
    let payload = random_bytes(100);
    assert_same_bytes(&send_and_read_back(fine[0].1, &payload), &payload, "the redirection made");
    assert!(server.list("wants-taken").is_empty());
}

#[test]
fn a_batch_whose_client_goes_away_closes_the_ports_it_held() {
    const PORTS: usize = 300;
    let server = Server::start();
    let org = default_org(&server);
    let apps = create_apps(&server, &org, "gone", PORTS, "127.0.0.1:9");
    let pid = server.process_id();
    let before = fd_count(pid);
    // Another connection holds the store's write lock: the batch binds and holds its
    // ports, then waits for the lock (the server's busy timeout is 5 s).
    let mut blocker =
        rusqlite::Connection::open(server.data_path().join("tcp-redirs.db")).expect("open the store");
    let lock = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("take the write lock");
    let items: Vec<Value> =
        apps.iter().map(|app| json!({"application": app, "namespace": "default"})).collect();
    let body = json!({"redirections": items}).to_string();
    let mut client = TcpStream::connect(server.addr).expect("connect to the API");
    write!(
        client,
        "POST /v2/organisations/{org}/tcpRedirs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.token,
        body.len()
    )
    .expect("send the batch");
    let holding =
        wait_for_fds_at_least(pid, before + PORTS, Duration::from_secs(10), "the batch binds its ports");
    // The client goes away: the request is dropped, and its listeners with it, well before
    // the store could have answered.
    drop(client);
    let after =
        wait_for_fds_at_most(pid, before + 5, Duration::from_secs(3), "the dropped batch's ports close");
    eprintln!("descriptors: {before} before, {holding} while held, {after} after the client left");
    lock.rollback().expect("release the write lock");
    drop(blocker);
    // The write that had reached the store may commit now, its ports then bound by the
    // reconciler. Either way the server goes on: the same batch again makes each
    // redirection, or finds it made by the first one after all.
    let answer = server.api("POST", &format!("/v2/organisations/{org}/tcpRedirs"), Some(&body)).ok_json();
    let outcomes = answer["redirections"].as_array().expect("outcomes");
    assert!(
        outcomes.iter().all(|o| o["redirection"].is_object() || o["error"]["id"] == 4090),
        "each made now, or made by the first batch after all: {answer}"
    );
    // Every redirection of the table is served, once.
    for i in (0..PORTS).step_by(30) {
        let listed = server.list(&format!("gone-{i}"));
        assert_eq!(listed.len(), 1, "gone-{i}: {listed:?}");
        assert_eq!(listeners_on(listed[0].1), 1, "gone-{i}'s port {} is listened on once", listed[0].1);
    }
}

#[test]
fn a_batch_past_the_quota_closes_the_ports_it_could_not_claim() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "max_redirections_per_org = 2\n").unwrap();
    let server = Server::builder().config(&config).start();
    let org = default_org(&server);
    let apps = create_apps(&server, &org, "q", 40, "127.0.0.1:9");
    let pid = server.process_id();
    let before = fd_count(pid);
    let items: Vec<Value> =
        apps.iter().map(|app| json!({"application": app, "namespace": "default"})).collect();
    let body = json!({"redirections": items}).to_string();
    let answer = server.api("POST", &format!("/v2/organisations/{org}/tcpRedirs"), Some(&body)).ok_json();
    let ids: Vec<Option<u64>> =
        answer["redirections"].as_array().unwrap().iter().map(|o| o["error"]["id"].as_u64()).collect();
    assert_eq!(ids[..2], [None, None], "{answer}");
    assert!(ids[2..].iter().all(|id| *id == Some(4094)), "the rest hit the quota: {answer}");
    // Two ports listen; the 38 bound for the refused claims are closed.
    wait_for_fds_at_most(pid, before + 2, Duration::from_secs(3), "the refused claims' ports close");
}

/// A node out of descriptors says so: the redirections it cannot listen on are refused
/// with 503 naming the node and its limit, the log names the setting to raise, nothing is
/// half made, and every port it has keeps forwarding once descriptors are back.
#[test]
fn a_node_out_of_descriptors_says_so_and_keeps_its_ports() {
    let server = Server::start();
    let org = default_org(&server);
    let echo = TcpService::echo();
    let apps = create_apps(&server, &org, "fd", 40, &echo.addr().to_string());
    let first = server.add("fd-0", "default");
    let pid = server.process_id();
    let baseline = fd_count(pid) as u64;
    set_soft_fd_limit(pid, baseline + 10);
    let items: Vec<_> = apps[1..].iter().map(|a| json!({"application": a, "namespace": "default"})).collect();
    let answer = server.api(
        "POST",
        &format!("/v2/organisations/{org}/tcpRedirs"),
        Some(&json!({"redirections": items}).to_string()),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let outcomes = answer.json()["redirections"].as_array().expect("outcomes").clone();
    let made = outcomes.iter().filter(|o| o["redirection"]["port"].is_u64()).count();
    let refused: Vec<_> = outcomes.iter().filter(|o| o["error"]["id"] == 5031).collect();
    assert!(made > 0 && made <= 10, "{made} made under a limit of 10 more descriptors: {outcomes:?}");
    assert_eq!(made + refused.len(), 39, "every other item is refused for want of descriptors: {outcomes:?}");
    let message = refused[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("open-file limit") && message.contains(&format!("({} descriptors)", baseline + 10)),
        "{message}"
    );
    assert!(message.contains("node `"), "the answer names the node: {message}");
    let log = server.wait_for_log("LimitNOFILE", 0, Duration::from_secs(5));
    assert!(log.contains("open-file limit"), "the log says why: {log}");

    set_soft_fd_limit(pid, 20_000);
    assert_same_bytes(&send_and_read_back(first, b"kept"), b"kept", "a port made before the limit");
    for outcome in outcomes.iter().filter(|o| o["redirection"]["port"].is_u64()) {
        let port = outcome["redirection"]["port"].as_u64().unwrap() as u16;
        assert_same_bytes(&send_and_read_back(port, b"made"), b"made", "a port made at the limit");
    }
    // Nothing half made: the refused applications have no redirection, and can have one now.
    let app = refused[0]["application"].as_str().unwrap();
    let list =
        server.api("GET", &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"), None).ok_json();
    assert_eq!(list, json!([]), "a refused item left a redirection behind");
    let added = server
        .api(
            "POST",
            &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"),
            Some(r#"{"namespace":"default"}"#),
        )
        .ok_json();
    assert_same_bytes(
        &send_and_read_back(port_of(&added), b"now"),
        b"now",
        "a port added once descriptors are back",
    );
}
