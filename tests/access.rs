//! Access lists and the PROXY protocol, end to end: the CLI sets them, the bytes show them.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// `add` with extra flags, returning the JSON answer.
fn add_with(server: &Server, app: &str, namespace: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["add", "--app", app, "--namespace", namespace, "-F", "json"];
    args.extend_from_slice(extra);
    server.cli_json(&args)
}

/// Connects to `addr`, writes `message`, half-closes, and reads to the end (or the error).
/// A reset can arrive so fast that the connect itself reports it: that is returned too.
fn exchange(addr: SocketAddr, message: &[u8]) -> (Vec<u8>, Option<std::io::Error>, SocketAddr) {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (Vec::new(), Some(e), addr),
        Err(e) => panic!("connect to {addr}: {e}"),
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let local = stream.local_addr().unwrap();
    let _ = stream.write_all(message);
    let _ = stream.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let err = stream.read_to_end(&mut got).err();
    (got, err, local)
}

#[test]
fn a_denied_client_is_reset_and_counted_and_never_reaches_the_application() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("guarded", echo.addr());
    let added = add_with(&server, "guarded", "default", &["--deny", "127.0.0.0/8", "--allow", "0.0.0.0/0"]);
    assert_eq!(added["deny"], serde_json::json!(["127.0.0.0/8"]), "{added}");
    let port = port_of(&added);

    let (got, err, _) = exchange(SocketAddr::from((LOCALHOST, port)), b"let me in");
    assert!(got.is_empty(), "a denied client must get no byte back, got {got:?}");
    let err = err.expect("a denied client must see a reset, not a clean end of stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

    let listed = server.cli_json(&["list", "--app", "guarded", "-F", "json"]);
    assert_eq!(listed[0]["connections"], 0, "a refused client is not an accepted connection: {listed}");
    let metrics = server.api("GET", "/metrics", None).text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tcp_redirs_connections_refused_total")
                && l.ends_with("reason=\"denied\"} 1")),
        "{metrics}"
    );
}

#[test]
fn an_allowed_client_goes_through_and_others_are_refused() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("open", echo.addr());
    server.create_app("closed", echo.addr());
    let open = port_of(&add_with(&server, "open", "default", &["--allow", "127.0.0.1"]));
    let closed = port_of(&add_with(&server, "closed", "default", &["--allow", "192.0.2.0/24"]));
    let payload = random_bytes(4096);
    assert_same_bytes(&send_and_read_back(open, &payload), &payload, "allowed client");
    let (got, err, _) = exchange(SocketAddr::from((LOCALHOST, closed)), b"x");
    assert!(got.is_empty() && err.is_some(), "a client outside the allow list is reset: {got:?} {err:?}");
}

#[test]
fn a_bad_range_is_refused_before_anything_is_created() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("typo", echo.addr());
    server
        .cli(&["add", "--app", "typo", "--namespace", "default", "--allow", "10.0.0.0/33"])
        .assert_error(1, &["10.0.0.0/33", "203.0.113.0/24"]);
    assert_eq!(server.list("typo"), vec![]);
}

#[test]
fn the_proxy_protocol_v1_header_tells_the_application_the_real_client() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("pp1", echo.addr());
    let port = port_of(&add_with(&server, "pp1", "default", &["--proxy-protocol", "v1"]));
    // The echo backend sends back everything it receives: the header, then the bytes.
    let (got, err, local) = exchange(SocketAddr::from((LOCALHOST, port)), b"hello");
    assert!(err.is_none(), "{err:?}");
    let want = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\nhello", local.port());
    assert_eq!(String::from_utf8_lossy(&got), want);
}

#[test]
fn the_proxy_protocol_v2_header_carries_an_ipv6_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[namespace]]\nname = \"six\"\nbind = \"::1\"\n").unwrap();
    let server = Server::builder().config(&config).start();
    let echo = TcpService::echo();
    server.create_app("pp2", echo.addr());
    let port = port_of(&add_with(&server, "pp2", "six", &["--proxy-protocol", "v2"]));
    let (got, err, local) = exchange(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), b"hello");
    assert!(err.is_none(), "{err:?}");
    assert!(got.len() >= 16 + 36, "header too short: {got:?}");
    assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n", "v2 signature");
    assert_eq!(got[12], 0x21, "version 2, PROXY command");
    assert_eq!(got[13], 0x21, "AF_INET6, STREAM");
    assert_eq!(u16::from_be_bytes([got[14], got[15]]), 36, "address block length");
    assert_eq!(&got[16..32], &std::net::Ipv6Addr::LOCALHOST.octets(), "source address");
    assert_eq!(u16::from_be_bytes([got[48], got[49]]), local.port(), "source port");
    assert_eq!(u16::from_be_bytes([got[50], got[51]]), port, "destination port");
    assert_eq!(&got[52..], b"hello");
}

/// Whether a connection through `port` carries a byte both ways (the backend echoes).
fn echoes(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut byte = [0u8; 1];
    stream.write_all(b"?").is_ok() && matches!(stream.read(&mut byte), Ok(1))
}

/// A connection to the redirection; `None` when the gateway reset it during the connect.
fn open(port: u16) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&SocketAddr::from((LOCALHOST, port)), Duration::from_secs(5)) {
        Ok(stream) => Some(stream),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect to port {port}: {e}"),
    }
}

fn served(stream: Option<TcpStream>) -> bool {
    stream.is_some_and(|mut s| echoes(&mut s))
}

#[test]
fn connections_over_max_connections_are_refused_until_one_closes() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("capped", echo.addr());
    let added = add_with(&server, "capped", "default", &["--max-connections", "2"]);
    assert_eq!(added["maxConnections"], 2, "{added}");
    let port = port_of(&added);
    let (mut first, mut second) = (open(port).expect("first"), open(port).expect("second"));
    assert!(echoes(&mut first) && echoes(&mut second), "the first two connections are served");
    assert!(!served(open(port)), "a third one is refused while two are open");
    drop(first);
    // The slot frees when the gateway sees the close; wait for it by retrying, bounded.
    wait_until(Duration::from_secs(10), "the freed slot was never given back", || {
        if served(open(port)) {
            Ok(())
        } else {
            Err("a new connection is still refused".to_owned())
        }
    });
    assert!(echoes(&mut second));
    let metrics = server.api("GET", "/metrics", None).text();
    assert!(
        metrics.lines().any(|l| l.contains("reason=\"max_connections\"") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn connections_over_max_connections_per_second_are_refused() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("throttled", echo.addr());
    let port = port_of(&add_with(&server, "throttled", "default", &["--max-connections-per-second", "3"]));
    let started = std::time::Instant::now();
    let held: Vec<Option<TcpStream>> = (0..12).map(|_| open(port)).collect();
    let served = held.into_iter().map(served).filter(|&ok| ok).count();
    let elapsed = started.elapsed().as_secs_f64();
    // A burst of 3, then 3 more per second of the test's own duration.
    let most = 3 + (elapsed * 3.0).ceil() as usize;
    assert!((3..=most).contains(&served), "served {served} of 12 in {elapsed:.2}s; expected 3..={most}");
}
