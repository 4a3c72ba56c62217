//! The connection log: one line per connection when it ends, off by default, on with
//! `serve --access-log` or a namespace's `access_log = true`, in JSON with
//! `TCP_REDIRS_LOG_FORMAT=json`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LOGGED: Duration = Duration::from_secs(10);

/// The instance answers `bye` and closes first.
fn says_bye(mut conn: TcpStream) {
    let _ = conn.write_all(b"bye");
}

/// Sends `hello`, reads the echo, then closes: the client ends first.
fn exchange(port: u16) {
    let mut conn = connect(port);
    conn.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
}

#[test]
fn every_connection_is_logged_when_it_ends_with_how() {
    let server = Server::builder().args(&["--access-log"]).start();
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let port = server.add("db", "default");
    exchange(port);
    let log = server.wait_for_log("end=client_closed", 0, LOGGED);
    let line = log.lines().last().unwrap();
    for field in [
        "tcp_redirs::connection".to_owned(),
        "client=127.0.0.1:".to_owned(),
        "namespace=default".to_owned(),
        format!("port={port}"),
        "app=app_".to_owned(),
        format!("instance={}", echo.addr()),
        "bytes_in=5".to_owned(),
        "bytes_out=5".to_owned(),
        "duration_ms=".to_owned(),
    ] {
        assert!(line.contains(&field), "`{field}` missing from {line}");
    }

    // The application closing first, and a refusal by the access list.
    let bye = TcpService::start(says_bye);
    server.create_app("bye", bye.addr());
    let bye_port = server.add("bye", "default");
    let mut conn = connect(bye_port);
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    drop(conn);
    let skip = log.len();
    server.wait_for_log("end=app_closed", skip, LOGGED);
    server.create_app("shut", echo.addr());
    let added = server.cli_json(&[
        "add",
        "--app",
        "shut",
        "--namespace",
        "cleverapps",
        "--deny",
        "127.0.0.1",
        "-F",
        "json",
    ]);
    let shut = port_of(&added);
    let _ = TcpStream::connect(("127.0.0.1", shut)).map(|mut c| c.read(&mut [0u8; 1]));
    let log = server.wait_for_log("end=denied", 0, LOGGED);
    let line = log.lines().last().unwrap();
    assert!(line.contains(&format!("port={shut}")) && line.contains("instance=-"), "{line}");
}

#[test]
fn connections_are_not_logged_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[namespace]]\nname = \"cleverapps\"\naccess_log = true\n").unwrap();
    let server = Server::builder().config(&config).start();
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let quiet = server.add("db", "default");
    let logged = server.add("db", "cleverapps");
    exchange(quiet);
    exchange(logged);
    // The namespace that asks is logged; once its line is there, the other's would be too.
    server.wait_for_log("end=client_closed", 0, LOGGED);
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("tcp_redirs::connection")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&format!("port={logged} ")) && !lines[0].contains(&format!("port={quiet} ")),
        "{log}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::builder().args(&["--access-log"]).env("TCP_REDIRS_LOG_FORMAT", "json").start();
    let echo = TcpService::echo();
    server.create_app("db", echo.addr());
    let port = server.add("db", "default");
    exchange(port);
    let log = server.wait_for_log("client_closed", 0, LOGGED);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let conn = lines.iter().find(|l| l["target"] == "tcp_redirs::connection").expect("the connection line");
    let fields = &conn["fields"];
    assert_eq!(fields["end"], "client_closed", "{conn}");
    assert_eq!(fields["port"], port, "{conn}");
    assert_eq!((fields["bytes_in"].as_u64(), fields["bytes_out"].as_u64()), (Some(5), Some(5)), "{conn}");
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = std::process::Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TCP_REDIRS_LOG_FORMAT", "xml")
        .env("TCP_REDIRS_CONFIG_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TCP_REDIRS_LOG_FORMAT=xml"), "{stderr}");
}
