//! Changing a live redirection's settings in place (issue 33): `tcp-redirs update`, `PATCH
//! …/tcpRedirs/{port}` and `…/udpRedirs/{port}`, and `apply` of a changed setting. The port,
//! its application and its open connections stay, each connection with the settings it
//! started with; the next connection gets the new ones as soon as the call answers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// `add` with extra flags; the new redirection's port.
fn add_with(server: &Server, app: &str, extra: &[&str]) -> u16 {
    let mut args = vec!["add", "--app", app, "--namespace", "default", "-F", "json"];
    args.extend_from_slice(extra);
    port_of(&server.cli_json(&args))
}

/// `update PORT --namespace default --app APP ARGS… -F json`: the redirection as it now is.
fn update(server: &Server, app: &str, port: u16, extra: &[&str]) -> serde_json::Value {
    let port = port.to_string();
    let mut args = vec!["update", &port, "--namespace", "default", "--app", app, "-F", "json"];
    args.extend_from_slice(extra);
    server.cli_json(&args)
}

/// A connection to the port, or `None` when the gateway reset it at once.
fn open(port: u16) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&SocketAddr::from((LOCALHOST, port)), Duration::from_secs(5)) {
        Ok(stream) => {
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            Some(stream)
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect to port {port}: {e}"),
    }
}

/// Sends `bytes` and reads back exactly as many (plus `extra` before them): what came.
fn round_trip(stream: &mut TcpStream, bytes: &[u8], extra: usize) -> std::io::Result<Vec<u8>> {
    stream.write_all(bytes)?;
    let mut got = vec![0; bytes.len() + extra];
    stream.read_exact(&mut got)?;
    Ok(got)
}

/// Whether a new connection is served (a byte goes there and back).
fn served(port: u16) -> bool {
    open(port).is_some_and(|mut s| round_trip(&mut s, b"?", 0).is_ok_and(|got| got == b"?"))
}

/// Waits for the gateway to end an idle connection; how long it took.
fn ended_when_idle(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the idle connection was not ended within {IO_TIMEOUT:?}: {other:?}"),
    }
    started.elapsed()
}

#[test]
fn an_update_leaves_open_connections_as_they_were_and_the_next_one_gets_it() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("mqtt", echo.addr());
    let port = add_with(&server, "mqtt", &[]);
    let mut before = open(port).expect("a connection before the update");
    assert_eq!(round_trip(&mut before, b"hello", 0).unwrap(), b"hello");
    let mut second = open(port).expect("a second connection before the update");

    // Idle timeout, quota and PROXY header at once; the answer shows them in force.
    let updated = update(
        &server,
        "mqtt",
        port,
        &["--idle-timeout", "1", "--max-connections", "3", "--proxy-protocol", "v1"],
    );
    assert_eq!(port_of(&updated), port, "{updated}");
    assert_eq!(updated["idleTimeout"], 1, "{updated}");
    assert_eq!(updated["maxConnections"], 3, "{updated}");
    assert_eq!(updated["proxyProtocol"], "v1", "{updated}");
    assert_eq!(server.list("mqtt"), vec![("default".to_owned(), port)], "the same port");

    // The next connection: a PROXY header first, and ended after 1 s without a byte.
    let mut after = open(port).expect("a connection after the update");
    let local = after.local_addr().unwrap();
    let header = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\n", local.port());
    let got = round_trip(&mut after, b"x", header.len()).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), format!("{header}x"));
    // Three open now (two from before count too): a fourth is refused at once.
    assert!(!served(port), "a fourth connection is over --max-connections 3");
    let idle = ended_when_idle(&mut after);
    assert!(idle < Duration::from_secs(4), "ended after {idle:?}, the idle timeout is 1 s");

    // The connections from before were idle longer than 1 s, and still carry bytes with
    // no header: they keep what they started with.
    assert_eq!(round_trip(&mut before, b"still", 0).unwrap(), b"still");
    assert_eq!(round_trip(&mut second, b"here", 0).unwrap(), b"here");
    let listed = wait_until(IO_TIMEOUT, "the idle connection was never counted closed", || {
        let listed = server.cli_json(&["list", "--app", "mqtt", "-F", "json"]);
        match listed[0]["activeConnections"].as_u64() {
            Some(2) => Ok(listed),
            _ => Err(format!("{listed}")),
        }
    });
    let connections = listed[0]["connections"].as_u64().unwrap();
    assert!(connections >= 3, "the port was never replaced: its counters go on: {listed}");
}

#[test]
fn an_access_list_set_in_place_refuses_new_clients_only_and_unset_lets_them_in() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("pg", echo.addr());
    let port = add_with(&server, "pg", &["--idle-timeout", "600"]);
    let mut before = open(port).expect("a connection before the update");
    assert_eq!(round_trip(&mut before, b"a", 0).unwrap(), b"a");

    let updated = update(&server, "pg", port, &["--deny", "127.0.0.0/8"]);
    assert_eq!(updated["deny"], serde_json::json!(["127.0.0.0/8"]), "{updated}");
    assert_eq!(updated["idleTimeout"], 600, "settings not named stay: {updated}");
    assert!(!served(port), "a client denied after the update is refused");
    assert_eq!(round_trip(&mut before, b"b", 0).unwrap(), b"b", "the open connection stays");

    // --unset takes a setting back to the namespace's; human output names what is in force.
    let out = server.cli_ok(&[
        "update",
        &port.to_string(),
        "--namespace",
        "default",
        "--app",
        "pg",
        "--unset",
        "deny",
        "--unset",
        "idle-timeout",
    ]);
    assert!(out.starts_with(&format!("Successfully updated tcp redirection on port {port}: ")), "{out}");
    assert!(out.contains("idle 3600 s"), "the namespace's idle timeout is in force again: {out}");
    assert!(!out.contains("deny"), "{out}");
    assert!(served(port), "no deny list any more");
    assert_eq!(round_trip(&mut before, b"c", 0).unwrap(), b"c");
}

#[test]
fn update_refuses_what_cannot_be_and_says_what_to_do() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let port = add_with(&server, "db", &[]);
    let p = port.to_string();
    let base = ["update", p.as_str(), "--namespace", "default", "--app", "db"];
    fn join<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    let with = |extra: &[&'static str]| join(&base, extra);
    server.cli(&base).assert_error(2, &["nothing to change", "--unset"]);
    server
        .cli(&with(&["--idle-timeout", "5", "--unset", "idle-timeout"]))
        .assert_error(2, &["--idle-timeout and --unset idle-timeout"]);
    assert_eq!(server.cli(&with(&["--idle-timeout", "0"])).code, 2, "clap's bounds, as for add");
    server.cli(&with(&["--max-datagrams-per-second", "5"])).assert_error(1, &["maxDatagramsPerSecond"]);
    server.cli(&with(&["--allow", "10.0.0.0/33"])).assert_error(1, &["10.0.0.0/33"]);
    let other = (port % 20000 + 5001).to_string();
    server
        .cli(&["update", &other, "--namespace", "default", "--app", "db", "--idle-timeout", "5"])
        .assert_error(3, &[&other]);
    // Nothing changed on the way.
    let listed = server.cli_json(&["list", "--app", "db", "-F", "json"]);
    assert_eq!(listed[0]["idleTimeout"], 3600, "{listed}");
    assert!(listed[0].get("allow").is_none(), "{listed}");
}

#[test]
fn the_api_patches_a_redirection_key_by_key() {
    let server = Server::start();
    let echo = TcpService::echo();
    let app = server.create_app("api", echo.addr());
    let (org, id) = (app["ownerId"].as_str().unwrap(), app["id"].as_str().unwrap());
    let port = add_with(&server, "api", &["--idle-timeout", "700", "--allow", "127.0.0.1"]);
    let path = format!("/v2/organisations/{org}/applications/{id}/tcpRedirs/{port}?namespace=default");
    // A value sets, null unsets, a list replaces, an absent key stays.
    let patched =
        server.api("PATCH", &path, Some(r#"{"maxConnections":9,"idleTimeout":null,"allow":[]}"#)).ok_json();
    assert_eq!(patched["maxConnections"], 9, "{patched}");
    assert_eq!(patched["idleTimeout"], 3600, "back to the namespace's: {patched}");
    assert!(patched.get("allow").is_none(), "{patched}");
    // An empty patch changes nothing and answers the redirection.
    assert_eq!(server.api("PATCH", &path, Some("{}")).ok_json()["maxConnections"], 9);
    server.api("PATCH", &path, Some(r#"{"idleTimout":5}"#)).assert_error(400);
    server.api("PATCH", &path, Some(r#"{"idleTimeout":0}"#)).assert_error(400);
    let message = server.api("PATCH", &path, Some(r#"{"proxyProtocol":"v2-every"}"#)).assert_error(422);
    assert!(message.contains("v2-every"), "{message}");
    let nowhere = path.replace("namespace=default", "namespace=cleverapps");
    assert_eq!(server.api("PATCH", &nowhere, Some("{}")).json()["id"], 4044);
    let no_ns = path.replace("?namespace=default", "");
    assert!(server.api("PATCH", &no_ns, Some("{}")).assert_error(400).contains("?namespace="));
}

#[test]
fn a_udp_redirection_changes_in_place_for_new_flows() {
    let server = Server::start();
    let echo = UdpEcho::start();
    server.create_app("dns", echo.addr());
    let added = server.cli_json(&["add", "--app", "dns", "--namespace", "default", "--udp", "-F", "json"]);
    let port = port_of(&added);
    let old = udp_client(LOCALHOST.into(), port);
    assert_eq!(udp_round_trip(&old, b"one").unwrap(), b"one");

    let p = port.to_string();
    let updated = server.cli_json(&[
        "update",
        &p,
        "--namespace",
        "default",
        "--app",
        "dns",
        "--udp",
        "--proxy-protocol",
        "v2",
        "-F",
        "json",
    ]);
    assert_eq!(updated["protocol"], "udp", "{updated}");
    assert_eq!(updated["proxyProtocol"], "v2", "{updated}");
    // The open flow keeps sending bare datagrams; a new flow's first one gets the header.
    assert_eq!(udp_round_trip(&old, b"two").unwrap(), b"two");
    let new = udp_client(LOCALHOST.into(), port);
    let got = udp_round_trip(&new, b"three").unwrap();
    assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n", "a PROXY v2 header first: {got:?}");
    assert!(got.ends_with(b"three"), "{got:?}");
    // TCP's own settings are refused on UDP, as at add.
    server
        .cli(&["update", &p, "--namespace", "default", "--app", "dns", "--udp", "--proxy-protocol", "v1"])
        .assert_error(1, &["v1"]);
}

#[test]
fn apply_of_a_changed_setting_updates_in_place_and_drops_nothing() {
    let server = Server::start();
    let echo = TcpService::echo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let addr = echo.addr();
    let manifest = |settings: &str| one_app_manifest("mqtt", addr, settings);
    std::fs::write(&file, manifest("idle_timeout = 3600\n")).unwrap();
    let f = file.to_str().unwrap();
    server.cli_ok(&["apply", "-f", f]);
    let port = server.list("mqtt")[0].1;
    let mut open_one = open(port).expect("a connection before the apply");
    assert_eq!(round_trip(&mut open_one, b"a", 0).unwrap(), b"a");

    std::fs::write(
        &file,
        manifest(&format!("port = {port}\nidle_timeout = 600\nallow = [\"127.0.0.0/8\"]\n")),
    )
    .unwrap();
    let dry = server.cli_ok(&["apply", "-f", f, "--dry-run"]);
    assert!(
        dry.starts_with(&format!("~ redirection mqtt {port} on default (idle_timeout, allow)\n")),
        "{dry}"
    );
    let out = server.cli_ok(&["apply", "-f", f]);
    assert!(
        out.starts_with(&format!("~ redirection mqtt {port} on default (idle_timeout, allow)\n")),
        "{out}"
    );
    assert!(!out.contains("\n- ") && !out.contains("\n+ "), "nothing removed nor added: {out}");
    assert_eq!(round_trip(&mut open_one, b"b", 0).unwrap(), b"b", "the open connection was not dropped");
    let listed = server.cli_json(&["list", "--app", "mqtt", "-F", "json"]);
    assert_eq!((port_of(&listed[0]), &listed[0]["idleTimeout"]), (port, &serde_json::json!(600)), "{listed}");
    assert_eq!(listed[0]["allow"], serde_json::json!(["127.0.0.0/8"]), "{listed}");
    // Applied again: nothing to change; JSON says `update` for the in-place line.
    assert!(server.cli_ok(&["apply", "-f", f]).starts_with("Nothing to change"));
    std::fs::write(&file, manifest("idle_timeout = 900\n")).unwrap();
    let report = server.cli_json(&["apply", "-f", f, "-F", "json"]);
    let change = &report["changes"][0];
    assert_eq!(change["action"], "update", "{report}");
    assert_eq!(change["kind"], "redirection", "{report}");
    assert_eq!(change["port"], port, "{report}");
    assert_eq!(change["settings"], serde_json::json!(["idle_timeout", "allow"]), "{report}");
    assert_eq!(round_trip(&mut open_one, b"c", 0).unwrap(), b"c");
}
