//! Limits per client address and bandwidth limits (issue 34), end to end: the real binary,
//! clients on real sockets from chosen 127.x source addresses, the bytes, the metrics and
//! the connection log.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// `add` with extra flags, the JSON answer.
fn add_with(server: &Server, app: &str, extra: &[&str]) -> Value {
    let mut args = vec!["add", "--app", app, "--namespace", "default", "-F", "json"];
    args.extend_from_slice(extra);
    server.cli_json(&args)
}

/// A connection to `port` on 127.0.0.1 from the source address `from`.
fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&SocketAddr::from((LOCALHOST, port)).into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// What became of one connection: forwarded (its echo came back) or reset by the gateway.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Echoed,
    Reset,
}

/// Sends a few bytes on a new connection from `from` and reads the echo; the stream when
/// it was forwarded (kept open), or that it was reset.
fn try_echo(from: Ipv4Addr, port: u16) -> (Fate, Option<TcpStream>) {
    let mut stream = match connect_from(from, port) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => return (Fate::Reset, None),
        Err(e) => panic!("connect from {from} to {port}: {e}"),
    };
    let message = b"ping";
    if let Err(e) = stream.write_all(message) {
        assert!(matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe), "{e}");
        return (Fate::Reset, None);
    }
    let mut got = [0u8; 4];
    match stream.read_exact(&mut got) {
        Ok(()) => {
            assert_eq!(&got, message);
            (Fate::Echoed, Some(stream))
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => (Fate::Reset, None),
        Err(e) => panic!("a refused connection is reset at once, not `{e}`"),
    }
}

/// The value of the series of `/metrics` whose line starts with `name{` and holds `label`.
fn metric(server: &Server, name: &str, label: &str) -> Option<u64> {
    metric_of(server, name, &[label])
}

/// The same, for the series that holds every one of `labels`.
fn metric_of(server: &Server, name: &str, labels: &[&str]) -> Option<u64> {
    let text = server.api("GET", "/metrics", None).text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A usage error of the CLI (exit 2) whose message has every one of `needles`.
fn assert_usage_error(out: CliOutput, needles: &[&str]) {
    assert_eq!(out.code, 2, "{out}");
    for needle in needles {
        assert!(out.stderr.contains(needle), "no `{needle}` in\n{out}");
    }
}

/// A client past its cap is reset (with its own reason in the metrics and the connection
/// log) while another address still gets in; a connection that ends frees its place; the
/// cap set and unset in place by `update` and `PATCH`.
#[test]
fn a_client_past_its_cap_is_refused_while_another_address_still_gets_in() {
    let server = Server::builder().args(&["--access-log"]).start();
    let echo = TcpService::echo();
    let app = server.create_app("capped", echo.addr());
    let added = add_with(&server, "capped", &[]);
    let port = port_of(&added);
    assert!(added.get("maxConnectionsPerClient").is_none(), "unset by default: {added}");
    // Set in place, as an operator would on a running redirection.
    let updated = server.cli_json(&[
        "update",
        &port.to_string(),
        "--app",
        "capped",
        "--namespace",
        "default",
        "--max-connections-per-client",
        "2",
        "-F",
        "json",
    ]);
    assert_eq!(updated["maxConnectionsPerClient"], 2, "{updated}");

    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let (f1, first) = try_echo(a, port);
    let (f2, _second) = try_echo(a, port);
    assert_eq!((f1, f2), (Fate::Echoed, Fate::Echoed), "two connections of one address fit its cap");
    assert_eq!(try_echo(a, port).0, Fate::Reset, "a third one from the same address is reset");
    let (fb, _other) = try_echo(b, port);
    assert_eq!(fb, Fate::Echoed, "another address still gets in");
    assert_eq!(
        metric(&server, "tcp_redirs_connections_refused_total", "reason=\"max_connections_per_client\""),
        Some(1)
    );
    server.wait_for_log("end=max_connections_per_client", 0, Duration::from_secs(10));
    let listed = server.cli_ok(&["list", "--app", "capped"]);
    assert!(listed.contains("at most 2 open per client"), "{listed}");

    // A connection that ends gives its place back.
    drop(first);
    wait_until(Duration::from_secs(10), "a closed connection frees its place", || match try_echo(a, port) {
        (Fate::Echoed, _) => Ok(()),
        (fate, _) => Err(format!("{fate:?}")),
    });

    // Unset in place (PATCH with null): the address is no longer capped.
    let path = format!(
        "/v2/organisations/{}/applications/{}/tcpRedirs/{port}?namespace=default",
        app["ownerId"].as_str().unwrap(),
        app["id"].as_str().unwrap()
    );
    let patched = server.api("PATCH", &path, Some(r#"{"maxConnectionsPerClient":null}"#)).ok_json();
    assert!(patched.get("maxConnectionsPerClient").is_none(), "{patched}");
    let more: Vec<_> = (0..3).map(|_| try_echo(a, port)).collect();
    assert!(more.iter().all(|(f, _)| *f == Fate::Echoed), "unset: no cap any more");
}

/// The rate per client address: past its burst an address is refused, while another gets
/// in at once.
#[test]
fn a_client_past_its_rate_is_refused_while_another_address_still_gets_in() {
    let server = Server::builder().args(&["--access-log"]).start();
    let echo = TcpService::echo();
    server.create_app("paced", echo.addr());
    let port = port_of(&add_with(&server, "paced", &["--max-connections-per-second-per-client", "3"]));
    let a = Ipv4Addr::new(127, 0, 0, 4);
    let started = Instant::now();
    let mut admitted = 0;
    let refused_after = loop {
        match try_echo(a, port).0 {
            Fate::Echoed => admitted += 1,
            Fate::Reset => break admitted,
        }
        assert!(admitted < 50, "never refused");
    };
    // A burst of 3, plus what 3 per second refilled meanwhile.
    let most = 3 + (started.elapsed().as_secs_f64() * 3.0).ceil() as usize;
    assert!(refused_after >= 3 && refused_after <= most, "refused after {refused_after} (most {most})");
    assert_eq!(try_echo(Ipv4Addr::new(127, 0, 0, 5), port).0, Fate::Echoed, "another address gets in");
    assert_eq!(
        metric(&server, "tcp_redirs_connections_refused_total", "reason=\"rate_limited_per_client\""),
        Some(1)
    );
    server.wait_for_log("end=rate_limited_per_client", 0, Duration::from_secs(10));
    // The bucket refills: the address gets in again within a second or so.
    wait_until(Duration::from_secs(5), "the address's bucket refills", || match try_echo(a, port).0 {
        Fate::Echoed => Ok(()),
        Fate::Reset => Err("still refused".into()),
    });
}

/// A flood of connections from many new source addresses (127.1.x.y) cannot grow the
/// redirection's table of addresses past its size (14,320); an address with a connection
/// open is not forgotten (still at its cap), and a new address still gets in.
#[test]
fn a_flood_of_new_addresses_cannot_grow_the_table_past_its_size() {
    const FLOOD: u32 = 20_000;
    const CAPACITY: u64 = 14_320;
    raise_own_fd_limit();
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("flooded", echo.addr());
    let port = port_of(&add_with(&server, "flooded", &["--max-connections-per-client", "1"]));
    let held_by = Ipv4Addr::new(127, 0, 0, 6);
    let (fate, _held) = try_echo(held_by, port);
    assert_eq!(fate, Fate::Echoed);

    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let done = done.clone();
            thread::spawn(move || {
                for n in (t..FLOOD).step_by(4) {
                    let from = Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
                    // Connected then closed at once: the gateway admits it, and forgets it
                    // when the table needs room.
                    match connect_from(from, port) {
                        Ok(stream) => drop(stream),
                        Err(e) => panic!("connect from {from}: {e}"),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a flooding thread");
    }
    assert_eq!(done.load(Ordering::Relaxed), u64::from(FLOOD));
    // Every one of them seen by the gateway (admitted, or refused with the table full).
    wait_until(Duration::from_secs(60), "the gateway took every connection of the flood", || {
        let accepted = metric(&server, "tcp_redirs_connections_accepted_total", "port=").unwrap_or(0);
        let full = metric(&server, "tcp_redirs_connections_refused_total", "reason=\"client_table_full\"")
            .unwrap_or(0);
        if accepted + full > u64::from(FLOOD) {
            Ok(())
        } else {
            Err(format!("{accepted} accepted, {full} refused with the table full"))
        }
    });
    let held =
        metric(&server, "tcp_redirs_client_addresses", "port=").expect("the table's size in the metrics");
    assert!(held <= CAPACITY, "{held} addresses held, more than {CAPACITY}");
    assert!(held > CAPACITY / 2, "the flood did fill the table ({held})");
    assert_eq!(
        try_echo(held_by, port).0,
        Fate::Reset,
        "an address with a connection open is still at its cap"
    );
    assert_eq!(try_echo(Ipv4Addr::new(127, 0, 0, 7), port).0, Fate::Echoed, "a new address still gets in");
}

/// Settings out of bounds, or for the wrong protocol, are refused with what to do.
#[test]
fn limits_out_of_bounds_or_for_udp_are_refused_with_what_to_do() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("bad", echo.addr());
    assert_usage_error(
        server.cli(&["add", "--app", "bad", "--namespace", "default", "--bandwidth-limit", "12q"]),
        &["not a bandwidth", "10M"],
    );
    assert_usage_error(
        server.cli(&["add", "--app", "bad", "--namespace", "default", "--bandwidth-limit", "10"]),
        &["out of bounds", "1000"],
    );
    assert_usage_error(
        server.cli(&["add", "--app", "bad", "--namespace", "default", "--max-connections-per-client", "0"]),
        &["--max-connections-per-client"],
    );
    server
        .cli(&["add", "--app", "bad", "--namespace", "default", "--udp", "--bandwidth-limit", "1M"])
        .assert_error(1, &["bandwidthLimit", "UDP", "leave it out"]);
    let added = add_with(&server, "bad", &["--bandwidth-limit", "10M"]);
    assert_eq!(added["bandwidthLimit"], 10_000_000, "{added}");
}

// ---------------------------------------------------------------------------------------
// Bandwidth
// ---------------------------------------------------------------------------------------

/// The limit of the bulk tests, bytes per second each way, and what they move.
const RATE: u64 = 2_000_000;
const BULK: usize = 4_000_000;

/// An instance that reads everything, then answers how many bytes it got (8 bytes, big
/// endian) and closes.
fn sink(mut conn: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = conn.write_all(&total.to_be_bytes());
}

/// An instance that sends [`BULK`] bytes at once, then closes.
fn source(mut conn: TcpStream) {
    let block = vec![7u8; BULK];
    let _ = conn.write_all(&block);
}

/// Uploads `n` bytes to the sink through `port` (large writes: the gateway splices); the
/// seconds it took, once the sink confirmed the count.
fn upload(port: u16, n: usize) -> f64 {
    let started = Instant::now();
    let mut stream = connect(port);
    stream.write_all(&vec![1u8; n]).expect("upload");
    stream.shutdown(Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).expect("the sink's count");
    assert_eq!(u64::from_be_bytes(count), n as u64);
    started.elapsed().as_secs_f64()
}

/// Downloads [`BULK`] bytes from the source through `port`; the seconds it took.
fn download(port: u16) -> f64 {
    let started = Instant::now();
    let mut stream = connect(port);
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("download");
    assert_eq!(got.len(), BULK);
    started.elapsed().as_secs_f64()
}

fn at_least(took: f64, bytes: usize, rate: u64, what: &str) {
    let floor = 0.85 * bytes as f64 / rate as f64;
    // Shown with --nocapture: how close to the limit it ran is the benchmark's to judge.
    eprintln!(
        "{what}: {bytes} bytes in {took:.2} s at a limit of {rate} B/s (N/limit: {:.2} s)",
        floor / 0.85
    );
    assert!(
        took >= floor,
        "{what}: {bytes} bytes in {took:.2} s, under 0.85 x {bytes}/{rate} = {floor:.2} s"
    );
}

/// Bulk both ways at once on one redirection (the reads fill what they are granted: the
/// gateway splices): each direction at most its limit.
#[test]
fn a_bandwidth_limited_redirection_moves_bulk_no_faster_than_its_limit_each_way() {
    let server = Server::start();
    let sink_app = TcpService::start(sink);
    let source_app = TcpService::start(source);
    server.create_app("up", sink_app.addr());
    server.create_app("down", source_app.addr());
    let rate = RATE.to_string();
    let up = port_of(&add_with(&server, "up", &["--bandwidth-limit", &rate]));
    let down = port_of(&add_with(&server, "down", &["--bandwidth-limit", "2M"]));
    let uploading = thread::spawn(move || upload(up, BULK));
    let took_down = download(down);
    let took_up = uploading.join().expect("upload");
    at_least(took_up, BULK, RATE, "upload");
    at_least(took_down, BULK, RATE, "download");
    let throttled = |port: u16, direction: &str| {
        let (port, direction) = (format!("port=\"{port}\""), format!("direction=\"{direction}\""));
        metric_of(&server, "tcp_redirs_bandwidth_throttled_total", &[&port, &direction]).unwrap_or(0)
    };
    assert!(throttled(up, "in") > 0, "the limit counts when it throttles");
    assert!(throttled(down, "out") > 0, "the limit counts when it throttles");
}

/// Two connections of one redirection share its limit.
#[test]
fn two_connections_share_the_bandwidth_limit() {
    let server = Server::start();
    let sink_app = TcpService::start(sink);
    server.create_app("shared", sink_app.addr());
    let port = port_of(&add_with(&server, "shared", &["--bandwidth-limit", &RATE.to_string()]));
    let started = Instant::now();
    let both: Vec<_> = (0..2).map(|_| thread::spawn(move || upload(port, BULK / 2))).collect();
    for t in both {
        t.join().expect("an upload");
    }
    at_least(started.elapsed().as_secs_f64(), BULK, RATE, "two uploads of half each");
}

/// Small request/response exchanges (each read shorter than a grant: the gateway copies,
/// it never splices) are limited alike, both ways; and a limit set in place by `update`.
#[test]
fn small_exchanges_without_splice_are_limited_both_ways() {
    const LIMIT: u64 = 5_000;
    const MESSAGE: usize = 500;
    const ROUNDS: usize = 20;
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("chatty", echo.addr());
    let port = server.add("chatty", "default");
    let updated = server.cli_json(&[
        "update",
        &port.to_string(),
        "--app",
        "chatty",
        "--namespace",
        "default",
        "--bandwidth-limit",
        "5k",
        "-F",
        "json",
    ]);
    assert_eq!(updated["bandwidthLimit"], LIMIT, "{updated}");
    let mut stream = connect(port);
    stream.set_nodelay(true).unwrap();
    let started = Instant::now();
    let message = random_bytes(MESSAGE);
    let mut back = vec![0u8; MESSAGE];
    for _ in 0..ROUNDS {
        stream.write_all(&message).unwrap();
        stream.read_exact(&mut back).unwrap();
        assert_same_bytes(&back, &message, "echo");
    }
    at_least(started.elapsed().as_secs_f64(), MESSAGE * ROUNDS, LIMIT, "small exchanges");
    let listed = server.cli_ok(&["list", "--app", "chatty"]);
    assert!(listed.contains("at most 4.9 KiB/s each way"), "{listed}");
}

// ---------------------------------------------------------------------------------------
// UDP: flows per client address
// ---------------------------------------------------------------------------------------

/// A UDP socket bound to `from`, connected to the redirection's port on 127.0.0.1.
fn udp_from(from: Ipv4Addr, port: u16) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind((from, 0)).expect("bind a UDP client");
    socket.connect((LOCALHOST, port)).expect("connect the UDP client");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// On UDP the cap counts flows (one per client socket) from one address: past it, the
/// datagrams that would start another flow are dropped and counted with their own reason,
/// while another address still gets a flow; the new-flow rate per address likewise.
#[test]
fn a_udp_client_past_its_flows_is_dropped_while_another_address_still_gets_in() {
    let server = Server::start();
    let echo = UdpEcho::start();
    server.create_app("udp-capped", echo.addr());
    let added = add_with(
        &server,
        "udp-capped",
        &["--udp", "--max-connections-per-client", "2", "--max-connections-per-second-per-client", "1000"],
    );
    assert_eq!(added["maxConnectionsPerClient"], 2, "{added}");
    let port = port_of(&added);
    let a = Ipv4Addr::new(127, 0, 0, 8);
    let flows: Vec<_> = (0..2).map(|_| udp_from(a, port)).collect();
    for (i, flow) in flows.iter().enumerate() {
        assert_eq!(udp_round_trip(flow, b"hello").expect("a flow within the cap"), b"hello", "flow {i}");
    }
    let third = udp_from(a, port);
    third.send(b"one too many").unwrap();
    let dropped = |reason: &str| {
        metric_of(&server, "tcp_redirs_udp_datagrams_dropped_total", &[&format!("reason=\"{reason}\"")])
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(10),
        "the third flow's datagram is dropped and counted",
        || match dropped("max_connections_per_client") {
            1 => Ok(()),
            n => Err(format!("{n} counted")),
        },
    );
    third.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(third.recv(&mut buf).map_err(|e| e.kind()), Err(ErrorKind::WouldBlock), "no answer");
    let other = udp_from(Ipv4Addr::new(127, 0, 0, 9), port);
    assert_eq!(udp_round_trip(&other, b"me too").expect("another address"), b"me too");
    for flow in &flows {
        assert_eq!(udp_round_trip(flow, b"still").expect("the open flows go on"), b"still");
    }

    // The rate of new flows per address, set in place.
    server.cli_ok(&[
        "update",
        &port.to_string(),
        "--udp",
        "--app",
        "udp-capped",
        "--namespace",
        "default",
        "--max-connections-per-second-per-client",
        "1",
        "--unset",
        "max-connections-per-client",
    ]);
    let b = Ipv4Addr::new(127, 0, 0, 10);
    assert_eq!(udp_round_trip(&udp_from(b, port), b"first").expect("the burst of one"), b"first");
    udp_from(b, port).send(b"second").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the second new flow within the second is dropped",
        || match dropped("rate_limited_per_client") {
            0 => Err("none counted".into()),
            _ => Ok(()),
        },
    );
}

// ---------------------------------------------------------------------------------------
// Files: the manifest of `apply`, `export`, and a namespace's defaults
// ---------------------------------------------------------------------------------------

/// `apply` sets the limits in place from a manifest (snake_case keys), `export` writes them
/// back, and applying the export changes nothing.
#[test]
fn apply_and_export_carry_the_limits_per_client_and_the_bandwidth() {
    let server = Server::start();
    let echo = TcpService::echo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let addr = echo.addr();
    let manifest = |settings: &str| one_app_manifest("mqtt", addr, settings);
    std::fs::write(&file, manifest("")).unwrap();
    let f = file.to_str().unwrap();
    server.cli_ok(&["apply", "-f", f]);
    let port = server.list("mqtt")[0].1;
    std::fs::write(
        &file,
        manifest(&format!(
            "port = {port}\nmax_connections_per_client = 1\nmax_connections_per_second_per_client = 50\nbandwidth_limit = 2000000\n"
        )),
    )
    .unwrap();
    let out = server.cli_ok(&["apply", "-f", f]);
    assert!(
        out.starts_with(&format!(
            "~ redirection mqtt {port} on default (max_connections_per_client, max_connections_per_second_per_client, bandwidth_limit)\n"
        )),
        "{out}"
    );
    let listed = server.cli_json(&["list", "--app", "mqtt", "-F", "json"]);
    assert_eq!(
        (
            &listed[0]["maxConnectionsPerClient"],
            &listed[0]["maxConnectionsPerSecondPerClient"],
            &listed[0]["bandwidthLimit"]
        ),
        (&serde_json::json!(1), &serde_json::json!(50), &serde_json::json!(2_000_000)),
        "{listed}"
    );
    let a = Ipv4Addr::new(127, 0, 0, 11);
    let (fate, _held) = try_echo(a, port);
    assert_eq!(fate, Fate::Echoed);
    assert_eq!(try_echo(a, port).0, Fate::Reset, "the applied cap holds");

    let exported = server.cli_ok(&["export"]);
    for line in [
        "max_connections_per_client = 1",
        "max_connections_per_second_per_client = 50",
        "bandwidth_limit = 2000000",
    ] {
        assert!(exported.contains(line), "no `{line}` in the export:\n{exported}");
    }
    std::fs::write(&file, &exported).unwrap();
    assert!(
        server.cli_ok(&["apply", "-f", f]).starts_with("Nothing to change"),
        "the export applies as it is"
    );
}

/// A namespace's defaults in the config file hold for its redirections that do not set
/// their own; a redirection's own setting wins.
#[test]
fn a_namespaces_defaults_hold_unless_a_redirection_sets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[[namespace]]\nname = \"default\"\nmax_connections_per_client = 1\nbandwidth_limit = 3000000\n",
    )
    .unwrap();
    let server = Server::builder().config(&config).start();
    let echo = TcpService::echo();
    server.create_app("inherits", echo.addr());
    server.create_app("own", echo.addr());
    let inherits = add_with(&server, "inherits", &[]);
    assert_eq!(
        (&inherits["maxConnectionsPerClient"], &inherits["bandwidthLimit"]),
        (&serde_json::json!(1), &serde_json::json!(3_000_000)),
        "the namespace's, in force: {inherits}"
    );
    let own = add_with(&server, "own", &["--max-connections-per-client", "2"]);
    assert_eq!(own["maxConnectionsPerClient"], 2, "{own}");
    let a = Ipv4Addr::new(127, 0, 0, 12);
    let (fate, _held) = try_echo(a, port_of(&inherits));
    assert_eq!(fate, Fate::Echoed);
    assert_eq!(try_echo(a, port_of(&inherits)).0, Fate::Reset, "the namespace's cap of 1");
    let (f1, _one) = try_echo(a, port_of(&own));
    let (f2, _two) = try_echo(a, port_of(&own));
    assert_eq!((f1, f2), (Fate::Echoed, Fate::Echoed), "its own cap of 2");
    // A UDP redirection of the namespace takes the cap (flows) but not the bandwidth, TCP's.
    let udp = add_with(&server, "inherits", &["--udp"]);
    assert_eq!(udp["maxConnectionsPerClient"], 1, "{udp}");
    assert!(udp.get("bandwidthLimit").is_none(), "{udp}");
}
