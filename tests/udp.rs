//! UDP redirections end to end: `tcp-redirs serve` and the CLI as real processes,
//! datagrams through real public ports on 127.0.0.1 to a UDP echo instance.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The application's redirections as (protocol, namespace, port), in the printed order.
fn listed(server: &Server, app: &str) -> Vec<(String, String, u16)> {
    let list = server.cli_json(&["list", "--app", app, "-F", "json"]);
    list.as_array()
        .unwrap_or_else(|| panic!("`list -F json` is not an array: {list}"))
        .iter()
        .map(|r| {
            let protocol = r["protocol"].as_str().unwrap_or("tcp").to_owned();
            (protocol, r["namespace"].as_str().unwrap_or_default().to_owned(), port_of(r))
        })
        .collect()
}

/// A datagram of each size comes back whole, as one datagram.
fn assert_echoes(port: u16, what: &str) {
    let client = udp_client(LOCALHOST.into(), port);
    for size in [1, 512, 1500, 9000, 65_000] {
        let data = random_bytes(size);
        let back = udp_round_trip(&client, &data).unwrap_or_else(|e| panic!("{what}: {size} B: {e}"));
        assert_same_bytes(&back, &data, &format!("{what}: a {size}-byte datagram"));
    }
}

/// Until the port answers nothing but ICMP port unreachable (the socket is closed).
fn assert_closed(port: u16) {
    let client = udp_client(LOCALHOST.into(), port);
    let err = udp_round_trip(&client, b"anyone?").expect_err("a removed UDP port must not answer");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// The whole life of a UDP redirection through the CLI, beside a TCP one on the same port
/// number: `add --udp` (asking for the TCP one's port, which UDP does not hold), datagrams of
/// up to 65,000 bytes echoed whole, the list showing both, one UDP redirection per namespace,
/// `kill -9` and a restart keeping both ports, then `remove --udp` closing the UDP port only.
#[test]
fn a_udp_redirection_lives_beside_a_tcp_one_on_the_same_port() {
    let tcp = TcpService::echo();
    // One instance address for both protocols: the UDP echo on the TCP service's port.
    let udp = UdpEcho::on(tcp.addr()).expect("a UDP echo on the TCP echo's port");
    let server = Server::start();
    server.create_app("game", tcp.addr());
    let port = server.add("game", "default");
    let port_arg = port.to_string();

    let added = server.cli_json(&["add", "--udp", "--app", "game", "--port", &port_arg, "-F", "json"]);
    assert_eq!(port_of(&added), port, "UDP takes the port TCP holds: {added}");
    assert_eq!(added["protocol"], "udp", "{added}");
    assert_eq!(added["address"], format!("udp://127.0.0.1:{port}/"), "{added}");
    assert_eq!(added["idleTimeout"], 60, "a flow's idle timeout is 60 s by default: {added}");
    assert_eq!(added["maxConnections"], 10_000, "the flow cap: {added}");
    assert_eq!(added.get("connectTimeout"), None, "UDP has no connect timeout: {added}");
    assert_echoes(port, "through the UDP redirection");
    let data = random_bytes(64 * 1024);
    assert_same_bytes(&send_and_read_back(port, &data), &data, "TCP on the same port number");
    drop(udp);
    // Another test's socket may take the freed port for a moment (each binds port 0 in the
    // same range, in steered mode in the same namespace): try again until it is free.
    let (udp, _) = poll(Duration::from_secs(5), || UdpEcho::on(tcp.addr()).map_err(|e| e.to_string()))
        .expect("the UDP echo again");

    assert_eq!(
        listed(&server, "game"),
        vec![("tcp".into(), "default".into(), port), ("udp".into(), "default".into(), port)]
    );
    let human = server.cli_ok(&["list", "--app", "game"]);
    assert!(human.contains("Enabled TCP redirections:"), "{human}");
    assert!(human.contains("Enabled UDP redirections:"), "{human}");
    assert!(human.contains(&format!("udp://127.0.0.1:{port}/")), "{human}");

    server
        .cli(&["add", "--udp", "--app", "game", "-F", "json"])
        .assert_error(1, &["already has a UDP redirection", &port_arg]);

    let server = server.crash_and_restart();
    assert_eq!(listed(&server, "game").len(), 2, "both redirections come back after kill -9");
    assert_echoes(port, "the UDP redirection after a restart");
    assert_same_bytes(&send_and_read_back(port, b"tcp too"), b"tcp too", "TCP after a restart");

    let removed = server.cli_json(&[
        "remove",
        &port_arg,
        "--udp",
        "--app",
        "game",
        "--namespace",
        "default",
        "-F",
        "json",
    ]);
    assert_eq!(removed["protocol"], "udp", "{removed}");
    assert_closed(port);
    assert_same_bytes(
        &send_and_read_back(port, b"still here"),
        b"still here",
        "TCP outlives the UDP removal",
    );
    assert_eq!(listed(&server, "game"), vec![("tcp".into(), "default".into(), port)]);
    server
        .cli(&["remove", &port_arg, "--udp", "--app", "game", "--namespace", "default"])
        .assert_error(3, &["no UDP redirection on port"]);
    drop(udp);
}

/// The API's shapes: `udpRedirs` answers in the TCP shape with `protocol`, Clever's
/// `minPort`/`maxPort` narrow the pick (on both protocols), settings UDP lacks are refused
/// with 422 and what to do, `v2-every` is UDP's alone, and the metrics count datagrams
/// under the redirection's labels.
#[test]
fn the_udp_api_takes_clevers_shapes_and_refuses_what_udp_lacks() {
    let udp = UdpEcho::start();
    let server = Server::start();
    let app = server.create_app("dns", udp.addr());
    let (org, app) = (app["ownerId"].as_str().unwrap().to_owned(), app["id"].as_str().unwrap().to_owned());
    let path = |protocol: &str| format!("/v2/organisations/{org}/applications/{app}/{protocol}Redirs");
    let namespaces = server.api("GET", &format!("/v2/organisations/{org}/namespaces"), None).json();
    let min = namespaces[0]["minPort"].as_u64().unwrap();
    let (low, high) = (min + 100, min + 102);

    let body = format!(
        r#"{{"namespace":"default","minPort":{low},"maxPort":{high},"idleTimeout":5,"maxConnections":3}}"#
    );
    let added: Value = server.api("POST", &path("udp"), Some(&body)).json();
    let port = port_of(&added);
    assert!((low..=high).contains(&u64::from(port)), "minPort-maxPort: {added}");
    assert_eq!(
        (added["idleTimeout"].as_u64(), added["maxConnections"].as_u64()),
        (Some(5), Some(3)),
        "{added}"
    );
    let tcp: Value = server
        .api(
            "POST",
            &path("tcp"),
            Some(&format!(r#"{{"namespace":"default","minPort":{low},"maxPort":{low}}}"#)),
        )
        .json();
    assert_eq!(tcp["port"], low, "tcpRedirs takes minPort/maxPort too: {tcp}");
    assert_eq!(tcp.get("protocol"), None, "a TCP answer has no protocol, as Clever's: {tcp}");

    let listed = server.api("GET", &path("udp"), None).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["port"], port);
    assert_eq!(server.api("GET", &path("tcp"), None).json().as_array().map(Vec::len), Some(1));

    let client = udp_client(LOCALHOST.into(), port);
    for i in 0..4u8 {
        assert_eq!(udp_round_trip(&client, &[i; 100]).unwrap(), vec![i; 100]);
    }
    let text = server.api("GET", "/metrics", None).text();
    let series = format!(
        "tcp_redirs_udp_datagrams_total{{namespace=\"default\",port=\"{port}\",protocol=\"udp\",app=\"{app}\",app_name=\"dns\",direction=\"in\"}} 4"
    );
    assert!(text.lines().any(|l| l == series), "no `{series}` in:\n{text}");
    let listed = server.api("GET", &path("udp"), None).json();
    assert_eq!(listed[0]["activeConnections"], 1, "one flow open: {listed}");
    assert_eq!(listed[0]["bytesIn"], 400, "{listed}");

    server.api("DELETE", &format!("{}/{port}?namespace=default", path("udp")), None).json();
    let other = UdpEcho::start();
    let app2 = server.create_app("dns2", other.addr());
    let path2 = format!("/v2/organisations/{org}/applications/{}/udpRedirs", app2["id"].as_str().unwrap());
    for (body, id, needle) in [
        (r#"{"namespace":"default","connectTimeout":3}"#, 4222, "connectTimeout"),
        (r#"{"namespace":"default","halfCloseTimeout":3}"#, 4222, "halfCloseTimeout"),
        (r#"{"namespace":"default","proxyProtocol":"v1"}"#, 4222, "v2-every"),
        (&format!(r#"{{"namespace":"default","minPort":{high},"maxPort":{low}}}"#), 4223, "minPort"),
        (r#"{"namespace":"default","maxPort":1}"#, 4223, "maxPort"),
    ] {
        let answer = server.api("POST", &path2, Some(body));
        let message = answer.assert_error(422);
        assert_eq!(answer.json()["id"], id, "{body}: {message}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let answer = server.api(
        "POST",
        &path2.replace("udpRedirs", "tcpRedirs"),
        Some(r#"{"namespace":"default","proxyProtocol":"v2-every"}"#),
    );
    assert!(answer.assert_error(422).contains("use v2"), "{}", answer.text());
    let answer = server.api(
        "POST",
        &path2.replace("udpRedirs", "tcpRedirs"),
        Some(r#"{"namespace":"default","maxDatagramsPerSecond":5}"#),
    );
    assert!(answer.assert_error(422).contains("maxDatagramsPerSecond"), "{}", answer.text());
    let answer = server.api("POST", &path2, Some(r#"{"namespace":"default","proxyProtocol":"v2-every"}"#));
    assert_eq!(answer.status, 201, "{}", answer.text());
}

/// `apply` makes the UDP redirections a file declares (`protocol = "udp"`), beside a TCP
/// one in the same namespace, idempotently; `export` writes them back, and the export
/// applied to a fresh server rebuilds both on the same ports.
#[test]
fn apply_and_export_carry_udp_redirections() {
    let tcp = TcpService::echo();
    let udp = UdpEcho::on(tcp.addr()).expect("a UDP echo on the TCP echo's port");
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let text = format!(
        "[[application]]\nname = \"game\"\ninstances = [{{ address = \"{}\" }}]\n\n\
         [[application.redirection]]\nnamespace = \"default\"\n\n\
         [[application.redirection]]\nnamespace = \"default\"\nprotocol = \"udp\"\nidle_timeout = 30\n",
        tcp.addr()
    );
    std::fs::write(&file, text).unwrap();
    let applied = server.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    let changes = applied["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{applied}");
    assert_eq!(changes[2]["protocol"], "udp", "{applied}");
    assert!(changes[2]["port"].is_u64(), "the UDP line gets its port: {applied}");
    assert_eq!(changes[1].get("protocol"), None, "{applied}");
    let human = server.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(human.starts_with("Nothing to change"), "a second apply changes nothing: {human}");

    let before = listed(&server, "game");
    assert_eq!(
        before.iter().map(|(p, ns, _)| (p.as_str(), ns.as_str())).collect::<Vec<_>>(),
        [("tcp", "default"), ("udp", "default")]
    );
    let udp_port = before[1].2;
    assert_echoes(udp_port, "a UDP redirection made by apply");

    let exported = server.cli_ok(&["export"]);
    assert!(exported.contains("protocol = \"udp\""), "{exported}");
    drop(server);
    let fresh = Server::start();
    std::fs::write(&file, exported).unwrap();
    fresh.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(listed(&fresh, "game"), before, "the export rebuilds both, on the same ports");
    assert_echoes(udp_port, "the rebuilt UDP redirection");
    drop(udp);
}

/// A batch (`POST /v2/organisations/{org}/tcpRedirs`) makes UDP redirections too, one
/// item each with `"protocol":"udp"`: beside a TCP one of the same application and
/// namespace, and a second UDP one there refused on its own (4090) while the others are made.
#[test]
fn a_batch_makes_udp_redirections_beside_tcp_ones() {
    let udp = UdpEcho::start();
    let server = Server::start();
    let app = server.create_app("dns", udp.addr());
    let (org, app) = (app["ownerId"].as_str().unwrap().to_owned(), app["id"].as_str().unwrap().to_owned());
    let body = format!(
        r#"{{"redirections":[
            {{"application":"{app}","namespace":"default","protocol":"udp"}},
            {{"application":"{app}","namespace":"default"}},
            {{"application":"{app}","namespace":"default","protocol":"udp"}}]}}"#
    );
    let answer = server.api("POST", &format!("/v2/organisations/{org}/tcpRedirs"), Some(&body)).ok_json();
    let outcomes = answer["redirections"].as_array().unwrap();
    assert_eq!(outcomes[0]["redirection"]["protocol"], "udp", "{answer}");
    assert_eq!(outcomes[1]["redirection"].get("protocol"), None, "{answer}");
    assert_eq!(outcomes[2]["error"]["id"], 4090, "one UDP redirection per namespace: {answer}");
    assert!(outcomes[2]["error"]["message"].as_str().unwrap().contains("UDP redirection"), "{answer}");
    let port = port_of(&outcomes[0]["redirection"]);
    assert_echoes(port, "a UDP redirection made by a batch");
}
