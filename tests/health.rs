//! Active health checks (issue 33): every instance address is checked on a schedule, with
//! no client traffic; a dead one is down within one interval, and up again within `rise`
//! intervals of coming back; the state and the time of the last check are in the API, the
//! list and /metrics; an address that many applications share is checked once per interval.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A server whose health checks run every `interval` seconds with `rise` and `fall`.
fn server_checking(interval: f64, rise: u32, fall: u32) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[health_checks]\ninterval = {interval}\ntimeout = 0.5\nrise = {rise}\nfall = {fall}\n"),
    )
    .unwrap();
    (Server::builder().config(&config).start(), dir)
}

/// A backend that counts the connections it accepts (and closes them).
fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    (addr, count)
}

/// The application `name` with these instances, and a redirection (a port uses its pool).
fn app_with(server: &Server, name: &str, instances: &[SocketAddr]) -> String {
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let list: Vec<Value> = instances.iter().map(|a| json!({"address": a.to_string()})).collect();
    let body = json!({"name": name, "instances": list}).to_string();
    let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
    let path = format!("/v2/organisations/{org}/applications/{}", app["id"].as_str().unwrap());
    server.api("POST", &format!("{path}/tcpRedirs"), Some(r#"{"namespace":"default"}"#)).ok_json();
    path
}

/// The instance's state and last check as the API shows them.
fn instance(server: &Server, app: &str, address: SocketAddr) -> Value {
    let app = server.api("GET", app, None).ok_json();
    app["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == address.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("no instance {address} in {app}"))
}

/// Waits until the instance is in `state`; how long it took.
fn until_state(server: &Server, app: &str, address: SocketAddr, state: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    wait_until(limit, &format!("{address} never became {state}"), || {
        let i = instance(server, app, address);
        if i["state"] == state {
            Ok(())
        } else {
            Err(format!("{i}"))
        }
    });
    started.elapsed()
}

#[test]
fn a_dead_instance_is_down_within_one_interval_with_no_traffic_and_up_again_within_rise_intervals() {
    let (server, _dir) = server_checking(1.0, 2, 3);
    let (live, _) = counting_backend();
    let dead = SocketAddr::from((LOCALHOST, refused_port()));
    let app = app_with(&server, "checked", &[live, dead]);
    // No client connects: the checks alone find it, within one interval (and a margin
    // for a loaded machine).
    let took = until_state(&server, &app, dead, "down", Duration::from_secs(5));
    assert!(took < Duration::from_millis(2500), "down after {took:?}, the interval is 1 s");
    let seen = instance(&server, &app, dead);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let checked = seen["lastCheck"].as_i64().unwrap_or_else(|| panic!("no lastCheck: {seen}"));
    assert!((now - 3..=now).contains(&checked), "checked at {checked}, now {now}");
    assert_eq!(instance(&server, &app, live)["state"], "up");
    // The list says so, with the time of the check; /metrics too.
    let human = server.cli_ok(&["list", "--app", "checked"]);
    assert!(human.contains(&format!("{dead} down, 0 open, weight 1, checked ")), "{human}");
    let metrics = server.api("GET", "/metrics", None).text();
    assert!(metrics.contains(&format!("tcp_redirs_instance_up{{instance=\"{dead}\"}} 0")), "{metrics}");
    assert!(metrics.contains(&format!("tcp_redirs_instance_up{{instance=\"{live}\"}} 1")), "{metrics}");
    assert!(metrics.contains("tcp_redirs_instance_last_check_timestamp_seconds{instance="), "{metrics}");
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");

    // Back: up within rise (2) intervals, plus the phase and a margin.
    let _back = TcpListener::bind(dead).expect("rebind the dead instance's port");
    let took = until_state(&server, &app, dead, "up", Duration::from_secs(8));
    assert!(took < Duration::from_millis(3500), "up after {took:?}: rise 2 at 1 s");
}

#[test]
fn an_instance_that_dies_goes_down_after_fall_checks_without_traffic() {
    let (server, _dir) = server_checking(0.5, 1, 2);
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app_with(&server, "dies", &[addr]);
    wait_until(Duration::from_secs(5), "never checked", || {
        match instance(&server, &app, addr)["lastCheck"] {
            Value::Null => Err("not checked yet".to_owned()),
            _ => Ok(()),
        }
    });
    assert_eq!(instance(&server, &app, addr)["state"], "up");
    drop(listener);
    let took = until_state(&server, &app, addr, "down", Duration::from_secs(6));
    assert!(took < Duration::from_millis(2500), "down after {took:?}: fall 2 at 0.5 s");
}

#[test]
fn an_address_many_applications_share_is_checked_once_per_interval() {
    let (server, _dir) = server_checking(1.0, 2, 3);
    let (shared, accepted) = counting_backend();
    for n in 0..20 {
        app_with(&server, &format!("tenant-{n}"), &[shared]);
    }
    let before = accepted.load(Ordering::Relaxed);
    let started = Instant::now();
    // Three intervals; no client traffic, so every connection the backend sees is a check.
    hold(Duration::from_secs(3), || Ok(())).unwrap();
    let checks = accepted.load(Ordering::Relaxed) - before;
    let intervals = started.elapsed().as_secs_f64();
    assert!(
        checks as f64 <= intervals + 2.0,
        "{checks} checks in {intervals:.1} s for one address shared by 20 applications"
    );
    assert!(checks >= 2, "the shared address is checked: {checks}");
}

#[test]
fn health_checks_can_be_turned_off_and_a_bad_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[health_checks]\nenabled = false\n").unwrap();
    let server = Server::builder().config(&config).start();
    let (backend, accepted) = counting_backend();
    let app = app_with(&server, "quiet", &[backend]);
    hold(Duration::from_millis(1500), || Ok(())).unwrap();
    assert_eq!(accepted.load(Ordering::Relaxed), 0, "no check with the checks off");
    assert!(instance(&server, &app, backend).get("lastCheck").is_none());

    std::fs::write(&config, "[health_checks]\nintervall = 5\n").unwrap();
    let out = std::process::Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .env("TCP_REDIRS_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.toml:2:1") && stderr.contains("intervall"), "{stderr}");
    std::fs::write(&config, "[health_checks]\nrise = 0\n").unwrap();
    let out = std::process::Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("data3"))
        .env("TCP_REDIRS_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rise = 0") && stderr.lines().count() == 1, "{stderr}");
}

/// A TCP connect tells nothing of a UDP service: an application with only UDP redirections
/// is not checked (a failed datagram exchange is not seen as a connection either).
#[test]
fn an_application_with_udp_redirections_only_is_not_checked_by_tcp() {
    let (server, _dir) = server_checking(0.5, 1, 1);
    let echo = UdpEcho::start();
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let body = json!({"name": "dns", "instances": [{"address": echo.addr().to_string()}]}).to_string();
    let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
    let path = format!("/v2/organisations/{org}/applications/{}", app["id"].as_str().unwrap());
    let added =
        server.api("POST", &format!("{path}/udpRedirs"), Some(r#"{"namespace":"default"}"#)).ok_json();
    let client = udp_client(LOCALHOST.into(), port_of(&added));
    assert_eq!(udp_round_trip(&client, b"q").unwrap(), b"q");
    hold(Duration::from_millis(1500), || match instance(&server, &path, echo.addr()) {
        i if i["state"] == "down" || i.get("lastCheck").is_some() => Err(format!("checked by TCP: {i}")),
        _ => Ok(()),
    })
    .unwrap();
}
