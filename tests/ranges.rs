//! Port ranges (issue 34), end to end on one node: the real binary, real sockets. A range's
//! public port `first + i` goes to each instance's port `+ i`; it is created, listed,
//! exported and removed as one redirection, survives a restart and `kill -9`, and is never
//! given in part when part of it is taken.
//!
//! Run in both port modes: `cargo test --all-features --test ranges`, and steered, in a
//! network namespace of its own:
//! `unshare -n bash -c 'ip link set lo up; TEST_PORT_MODE=steered cargo test --all-features --test ranges'`.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `add --ports N -F json` for `app`: the JSON answer.
fn add_range(server: &Server, app: &str, args: &[&str]) -> Value {
    let mut all = vec!["add", "--app", app, "--namespace", "default", "-F", "json"];
    all.extend_from_slice(args);
    server.cli_json(&all)
}

/// A range of 100 ports: each forwards to the matching instance port; listed as one (human
/// `FIRST-LAST on default`, JSON `port` and `lastPort`), exported with `ports = 100` and
/// applied back unchanged; it survives `kill -9` on the same ports; removed whole.
#[test]
fn a_range_of_100_ports_forwards_each_to_the_matching_instance_port_and_survives_a_crash() {
    let instances = Numbered::start(100);
    let server = Server::start();
    server.create_app("media", instances.addr());
    let added = add_range(&server, "media", &["--ports", "100"]);
    let first = port_of(&added);
    assert_eq!(added["lastPort"], json!(first + 99), "{added}");
    assert_eq!(added["namespace"], "default");
    assert_each_port_matches(first, 100, instances.first, "just added");

    // Listed as one redirection: `FIRST-LAST on default`, and JSON with the first and last.
    let human = server.cli_ok(&["--app", "media"]);
    assert!(human.contains(&format!("{first}-{} on default", first + 99)), "{human}");
    let listed = server.cli_json(&["list", "--app", "media", "-F", "json"]);
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((port_of(&listed[0]), &listed[0]["lastPort"]), (first, &json!(first + 99)));

    // Exported as one redirection of 100 ports; applying the export changes nothing.
    let exported = server.cli_ok(&["export"]);
    assert!(exported.contains(&format!("port = {first}\nports = 100\n")), "{exported}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.toml");
    std::fs::write(&file, &exported).unwrap();
    let applied = server.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    assert_eq!(applied["changes"], json!([]), "applying the export changes nothing");

    // kill -9, then the same ports forward the same way.
    let server = server.crash_and_restart();
    wait_until(Duration::from_secs(10), "the range listens again after kill -9", || {
        answer(first + 99).map(drop)
    });
    assert_each_port_matches(first, 100, instances.first, "after kill -9");

    // Removed whole, by its first port; every port refuses before `remove` returns.
    let inner = server.cli(&[
        "remove",
        &(first + 50).to_string(),
        "--namespace",
        "default",
        "--app",
        "media",
        "--yes",
    ]);
    inner.assert_error(
        3,
        &[&format!("part of this application's range {first}-{}", first + 99), &format!("use {first}")],
    );
    server.cli_ok(&["remove", &first.to_string(), "--namespace", "default", "--app", "media", "--yes"]);
    for i in 0..100 {
        assert_refuses(first + i);
    }
    assert!(server.list("media").is_empty());
}

/// A range is never given in part: a port of it held by another program, or by another
/// redirection, refuses the whole range (409 naming that port), leaves nothing made and no
/// socket open; a single port inside a range is refused; UDP ranges and sizes past the cap
/// are refused with what to do.
#[test]
fn a_range_is_never_given_in_part_when_part_of_it_is_taken() {
    let instances = Numbered::start(10);
    let server = Server::start();
    server.create_app("media", instances.addr());
    server.create_app("other", instances.addr());
    // A free block, found by the server, then freed for the test to ask for by number.
    let first = port_of(&add_range(&server, "media", &["--ports", "10"]));
    server.cli_ok(&["remove", &first.to_string(), "--namespace", "default", "--app", "media", "--yes"]);
    let descriptors = fd_count(server.process_id());

    // Another program holds the 6th port: the range is refused whole, naming it.
    let squatter = TcpListener::bind((LOCALHOST, first + 5)).expect("hold a port of the block");
    let refused = server.cli(&[
        "add",
        "--app",
        "media",
        "--namespace",
        "default",
        "--port",
        &first.to_string(),
        "--ports",
        "10",
    ]);
    refused.assert_error(
        1,
        &[&format!("port {} of the range {first}-{}", first + 5, first + 9), "none of the range was taken"],
    );
    assert!(server.list("media").is_empty(), "nothing of the range was made");
    for i in [0, 4, 6, 9] {
        assert_refuses(first + i);
    }
    wait_for_fds_at_most(
        server.process_id(),
        descriptors,
        Duration::from_secs(5),
        "the refused range's sockets are closed",
    );
    // The same through --last-port, and the API's error id.
    let org = server.cli_json(&["apps", "list", "-F", "json"])[0]["ownerId"].as_str().unwrap().to_owned();
    let apps = server.cli_json(&["apps", "list", "-F", "json"]);
    let media = apps.as_array().unwrap().iter().find(|a| a["name"] == "media").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v2/organisations/{org}/applications/{media}/tcpRedirs");
    let body = json!({"namespace": "default", "port": first, "ports": 10}).to_string();
    let message = server.api("POST", &path, Some(&body)).assert_error(409);
    assert!(message.contains(&(first + 5).to_string()), "{message}");
    drop(squatter);

    // Another redirection holds a port inside: refused the same way, at the store's claim.
    let single = server.cli_json(&[
        "add",
        "--app",
        "other",
        "--namespace",
        "default",
        "--port",
        &(first + 7).to_string(),
        "-F",
        "json",
    ]);
    assert_eq!(port_of(&single), first + 7);
    let refused = server.cli(&[
        "add",
        "--app",
        "media",
        "--namespace",
        "default",
        "--port",
        &first.to_string(),
        "--last-port",
        &(first + 9).to_string(),
    ]);
    refused.assert_error(1, &[&format!("port {} of the range", first + 7)]);
    assert!(server.list("media").is_empty());
    server.cli_ok(&["remove", &(first + 7).to_string(), "--namespace", "default", "--app", "other", "--yes"]);

    // Once free, the range is made; a single port inside it is then refused.
    let made =
        add_range(&server, "media", &["--port", &first.to_string(), "--last-port", &(first + 9).to_string()]);
    assert_eq!((port_of(&made), &made["lastPort"]), (first, &json!(first + 9)));
    assert_each_port_matches(first, 10, instances.first, "made once free");
    let inside =
        server.cli(&["add", "--app", "other", "--namespace", "default", "--port", &(first + 3).to_string()]);
    inside.assert_error(1, &[&format!("port {} of namespace `default` is taken", first + 3)]);

    // UDP ranges, a range past the cap, a last port below the first: refused, saying why.
    server
        .cli(&["add", "--app", "other", "--namespace", "default", "--udp", "--ports", "2"])
        .assert_error(1, &["UDP redirection takes one port"]);
    let too_many = json!({"namespace": "cleverapps", "ports": 1001}).to_string();
    server.api("POST", &path, Some(&too_many)).assert_error(400);
    server
        .cli(&["add", "--app", "other", "--namespace", "default", "--port", "6000", "--last-port", "5999"])
        .assert_error(2, &["below --port"]);
    assert_eq!(server.list("other"), Vec::<(String, u16)>::new());
}

/// Bound mode: a range costs a socket per port; one that does not fit in the node's
/// descriptors is refused with the node's descriptor error (503, 5031), and the sockets it
/// had bound are closed; with room, the same range is made. (Steered mode: a range costs
/// table entries, no descriptor, and the same range is made under the same limit.)
#[test]
fn a_range_that_does_not_fit_in_the_descriptors_is_refused_whole_in_bound_mode() {
    let instances = Numbered::start(40);
    let server = Server::start();
    server.create_app("media", instances.addr());
    let pid = server.process_id();
    let baseline = fd_count(pid);
    set_soft_fd_limit(pid, baseline as u64 + 20);
    let out = server.cli(&["add", "--app", "media", "--namespace", "default", "--ports", "40"]);
    let first = if port_mode() == "steered" {
        assert_eq!(out.code, 0, "a steered range takes no descriptor\n{out}");
        server.list("media")[0].1
    } else {
        out.assert_error(1, &["open-file limit", &format!("({} descriptors)", baseline + 20)]);
        assert!(server.list("media").is_empty(), "nothing of the range was made");
        wait_for_fds_at_most(pid, baseline, Duration::from_secs(5), "the refused range's sockets are closed");
        set_soft_fd_limit(pid, 20_000);
        port_of(&add_range(&server, "media", &["--ports", "40"]))
    };
    set_soft_fd_limit(pid, 20_000);
    assert_each_port_matches(first, 40, instances.first, "with room for its sockets");
}

/// `apply` of a file whose range has another size replaces it (removed, then made again on
/// the same first port), and every port of the new size forwards; the node never keeps the
/// old extent running under the new row.
#[test]
fn apply_gives_a_range_another_size_by_replacing_it() {
    let instances = Numbered::start(12);
    let server = Server::start();
    server.create_app("media", instances.addr());
    let first = port_of(&add_range(&server, "media", &["--ports", "10"]));
    let exported = server.cli_ok(&["export"]);
    let grown = exported.replace("ports = 10\n", "ports = 12\n");
    assert_ne!(grown, exported, "{exported}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grown.toml");
    std::fs::write(&file, &grown).unwrap();
    let applied = server.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    let actions: Vec<&str> =
        applied["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["remove", "add"], "{applied}");
    let listed = server.cli_json(&["list", "--app", "media", "-F", "json"]);
    assert_eq!((port_of(&listed[0]), &listed[0]["lastPort"]), (first, &json!(first + 11)), "{listed}");
    assert_each_port_matches(first, 12, instances.first, "after growing to 12");
    // And back to 10: the two ports past it close.
    std::fs::write(&file, &exported).unwrap();
    server.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    assert_each_port_matches(first, 10, instances.first, "after shrinking to 10");
    assert_refuses(first + 10);
    assert_refuses(first + 11);
}
