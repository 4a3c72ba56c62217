//! Active health checks (issue 33): every instance address is checked on a schedule, with
//! no client traffic; a dead one is down within one interval, and up again within `rise`
//! intervals of coming back; the state and the time of the last check are in the API, the
//! list and /metrics; an address that many applications share is checked once per interval.
//! An application's own settings (kind, interval, timeout, rise, fall; payload checks)
//! override the node's, are changed in place without a restart, and go through `apps`,
//! the API and `apply`/`export`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
    // Through prometheus-client, with the names and labels they always had.
    assert!(metrics.contains("# TYPE tcp_redirs_instance_up gauge"), "{metrics}");
    assert!(metrics.contains("# TYPE tcp_redirs_health_checks counter"), "{metrics}");
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tcp_redirs_health_checks_total{result=\"failed\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count of failed checks: {metrics}"));
    assert!(failed >= 1, "{metrics}");
    assert!(metrics.contains("tcp_redirs_health_checks_total{result=\"ok\"} "), "{metrics}");

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

/// A backend that counts the connections it accepts, answers each with `answer` (`None`:
/// reads and never answers, until the peer goes) after reading `read` bytes, and records
/// what it read.
fn answering_backend(
    read: usize,
    answer: Option<&'static [u8]>,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            thread::spawn(move || serve_check(stream, read, answer, &record));
        }
    });
    (addr, seen)
}

fn serve_check(
    mut stream: TcpStream,
    read: usize,
    answer: Option<&[u8]>,
    record: &std::sync::Mutex<Vec<Vec<u8>>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = vec![0u8; read];
    let mut n = 0;
    while n < read {
        match stream.read(&mut got[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    got.truncate(n);
    record.lock().unwrap().push(got);
    match answer {
        // Split in two writes: the check must gather an answer that comes in pieces.
        Some(answer) => {
            let (a, b) = answer.split_at(answer.len() / 2);
            let _ = stream.write_all(a);
            let _ = stream.flush();
            thread::sleep(Duration::from_millis(20));
            let _ = stream.write_all(b);
            // Held open until the check resets it: a check must not wait for the end.
            let _ = stream.read(&mut [0u8; 1]);
        }
        None => {
            let _ = stream.read(&mut [0u8; 1]);
        }
    }
}

/// A server whose own checks are slow (every 30 s), so that only an application's own
/// settings can check within a test.
fn server_with_slow_node_checks() -> (Server, tempfile::TempDir) {
    server_checking(30.0, 2, 3)
}

/// The organisation's id and the application's API path.
fn app_path(server: &Server, name: &str) -> String {
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let apps = server.api("GET", &format!("/v2/organisations/{org}/applications"), None).ok_json();
    let app = apps.as_array().unwrap().iter().find(|a| a["name"] == name).expect("the application").clone();
    format!("/v2/organisations/{org}/applications/{}", app["id"].as_str().unwrap())
}

/// Connections the backend accepts within `window`.
fn accepted_within(accepted: &AtomicUsize, window: Duration) -> usize {
    let before = accepted.load(Ordering::Relaxed);
    hold(window, || Ok(())).unwrap();
    accepted.load(Ordering::Relaxed) - before
}

#[test]
fn an_applications_own_settings_override_the_nodes_and_change_in_place_without_a_restart() {
    let (server, _dir) = server_with_slow_node_checks();
    let (backend, accepted) = counting_backend();
    let dead = SocketAddr::from((LOCALHOST, refused_port()));
    let (b, d) = (backend.to_string(), dead.to_string());
    let created = server.cli_json(&[
        "apps",
        "create",
        "fast",
        "--instance",
        &b,
        "--instance",
        &d,
        "--check-interval-ms",
        "200",
        "--check-timeout-ms",
        "150",
        "--check-rise",
        "1",
        "--check-fall",
        "1",
        "-F",
        "json",
    ]);
    assert_eq!(
        created["healthCheck"],
        json!({"intervalMs": 200, "timeoutMs": 150, "rise": 1, "fall": 1}),
        "{created}"
    );
    server.add("fast", "default");
    let app = app_path(&server, "fast");
    // The node checks every 30 s; the application's 200 ms finds the dead one at once.
    let took = until_state(&server, &app, dead, "down", Duration::from_secs(5));
    assert!(took < Duration::from_millis(1500), "down after {took:?} with the application's 200 ms");
    let checks = accepted_within(&accepted, Duration::from_millis(1500));
    assert!(checks >= 4, "{checks} checks in 1.5 s at 200 ms");

    // Shown in the list and its JSON.
    let human = server.cli_ok(&["apps", "list"]);
    assert!(human.contains("every 200 ms, timeout 150 ms, rise 1, fall 1; node's for the rest"), "{human}");
    let listed = server.cli_json(&["apps", "list", "-F", "json"]);
    assert_eq!(listed[0]["healthCheck"]["intervalMs"], 200, "{listed}");

    // In place, no restart: back to the node's 30 s, the checks almost stop.
    let pid = server.process_id();
    let out = server.cli_ok(&[
        "apps",
        "update",
        "fast",
        "--unset",
        "check-interval-ms",
        "--unset",
        "check-timeout-ms",
    ]);
    assert!(
        out.contains(
            "Successfully updated application fast: health checks rise 1, fall 1; node's for the rest"
        ),
        "{out}"
    );
    let checks = accepted_within(&accepted, Duration::from_millis(1500));
    assert!(checks <= 1, "{checks} checks in 1.5 s with the node's 30 s");
    // And faster again.
    server.cli_ok(&["apps", "update", "fast", "--check-interval-ms", "100", "--check-timeout-ms", "100"]);
    let checks = accepted_within(&accepted, Duration::from_millis(1500));
    assert!(checks >= 6, "{checks} checks in 1.5 s at 100 ms");
    assert_eq!(server.process_id(), pid);
    assert_eq!(instance(&server, &app, dead)["state"], "down");
    assert_eq!(instance(&server, &app, backend)["state"], "up");

    // Turned off for this application: no check at all, and the instances keep their ports.
    server.cli_ok(&["apps", "update", "fast", "--check", "none"]);
    assert_eq!(accepted_within(&accepted, Duration::from_millis(800)), 0, "checks with kind none");

    // Opposite flags and an empty update are usage errors (exit 2).
    server
        .cli(&["apps", "update", "fast", "--check-rise", "2", "--unset", "check-rise"])
        .assert_error(2, &["--check-rise and --unset check-rise"]);
    server.cli(&["apps", "update", "fast"]).assert_error(2, &["nothing to change"]);
}

#[test]
fn a_check_timeout_longer_than_its_interval_is_refused_in_the_api_and_the_config_file() {
    let (server, dir) = server_checking(1.0, 2, 3);
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let apps = format!("/v2/organisations/{org}/applications");
    let body = json!({"name": "slow", "healthCheck": {"intervalMs": 500, "timeoutMs": 1000}}).to_string();
    let refused = server.api("POST", &apps, Some(&body));
    let message = refused.assert_error(422);
    assert_eq!(refused.json()["id"], 4224);
    assert!(message.contains("the timeout, 1000 ms, is longer than the interval, 500 ms"), "{message}");
    // The node's timeout (0.5 s here) fills in: an interval of 200 ms alone is refused too.
    let body = json!({"name": "slow", "healthCheck": {"intervalMs": 200}}).to_string();
    let message = server.api("POST", &apps, Some(&body)).assert_error(422);
    assert!(message.contains("500 ms (the node's), is longer than the interval, 200 ms"), "{message}");
    // A payload needs the `expect` kind, and `send` needs `expect`.
    let body = json!({"name": "slow", "healthCheck": {"kind": "connect", "expect": "2b"}}).to_string();
    let message = server.api("POST", &apps, Some(&body)).assert_error(422);
    assert!(message.contains("kind `expect`"), "{message}");
    let body = json!({"name": "slow", "healthCheck": {"send": "50"}}).to_string();
    server.api("POST", &apps, Some(&body)).assert_error(422);
    let body = json!({"name": "slow", "healthCheck": {"expect": "xyz"}}).to_string();
    server.api("POST", &apps, Some(&body)).assert_error(400);
    // Nothing was made.
    assert_eq!(server.api("GET", &apps, None).ok_json(), json!([]));
    // The same through an update, which leaves the application as it was.
    let made = server.api("POST", &apps, Some(r#"{"name":"slow"}"#)).ok_json();
    let path = format!("{apps}/{}", made["id"].as_str().unwrap());
    let message = server.api("PATCH", &path, Some(r#"{"healthCheck":{"timeoutMs":2000}}"#)).assert_error(422);
    assert!(
        message.contains("the timeout, 2000 ms, is longer than the interval, 1000 ms (the node's)"),
        "{message}"
    );
    assert!(server.api("GET", &path, None).ok_json().get("healthCheck").is_none());
    let patched = server.api("PATCH", &path, Some(r#"{"healthCheck":{"timeoutMs":800,"rise":1}}"#)).ok_json();
    assert_eq!(patched["healthCheck"], json!({"timeoutMs": 800, "rise": 1}));
    let patched = server.api("PATCH", &path, Some(r#"{"healthCheck":{"rise":null}}"#)).ok_json();
    assert_eq!(patched["healthCheck"], json!({"timeoutMs": 800}));

    // The config file: refused at start with one line that says what to do.
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[health_checks]\ninterval = 2\ntimeout = 3\n").unwrap();
    let out = std::process::Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.path().join("data-bad"))
        .env("TCP_REDIRS_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("timeout = 3 is longer than interval = 2")
            && stderr.contains("make timeout at most interval"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_payload_check_sends_its_bytes_and_finds_an_instance_that_answers_wrong_or_not_at_all_down() {
    let (server, _dir) = server_with_slow_node_checks();
    let (right, right_read) = answering_backend(6, Some(b"+PONG\r\n"));
    let (wrong, _) = answering_backend(6, Some(b"-ERR no\r\n"));
    let (silent, _) = answering_backend(6, None);
    let (r, w, s) = (right.to_string(), wrong.to_string(), silent.to_string());
    server.cli_ok(&[
        "apps",
        "create",
        "redis",
        "--instance",
        &r,
        "--instance",
        &w,
        "--instance",
        &s,
        "--check-expect",
        "2B504F4E47",
        "--check-send",
        "50494e470d0a",
        "--check-interval-ms",
        "300",
        "--check-timeout-ms",
        "250",
        "--check-rise",
        "1",
        "--check-fall",
        "1",
    ]);
    server.add("redis", "default");
    let app = app_path(&server, "redis");
    assert_eq!(
        server.api("GET", &app, None).ok_json()["healthCheck"],
        json!({"intervalMs": 300, "timeoutMs": 250, "rise": 1, "fall": 1, "send": "50494e470d0a", "expect": "2b504f4e47"})
    );
    until_state(&server, &app, wrong, "down", Duration::from_secs(5));
    until_state(&server, &app, silent, "down", Duration::from_secs(5));
    // The right one stays up through several checks, and got the bytes sent.
    wait_until(Duration::from_secs(5), "three checks of the right instance", || {
        match right_read.lock().unwrap().len() {
            n if n >= 3 => Ok(()),
            n => Err(format!("{n} checks")),
        }
    });
    assert_eq!(instance(&server, &app, right)["state"], "up");
    assert!(
        right_read.lock().unwrap().iter().all(|got| got == b"PING\r\n"),
        "{:?}",
        right_read.lock().unwrap()
    );

    // A client goes to the right one only.
    let port = server.list("redis")[0].1;
    for _ in 0..5 {
        let mut client = connect(port);
        client.write_all(b"PING\r\n").unwrap();
        let mut answer = [0u8; 7];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"+PONG\r\n");
    }

    // Changed in place to a plain connect: the wrong one answers a connect, and is up again.
    server.cli_ok(&["apps", "update", "redis", "--unset", "check-send", "--unset", "check-expect"]);
    until_state(&server, &app, wrong, "up", Duration::from_secs(5));
    let human = server.cli_ok(&["apps", "list"]);
    assert!(human.contains("every 300 ms"), "{human}");
}

#[test]
fn apply_and_export_carry_an_applications_health_checks_and_apply_updates_them_in_place() {
    let (server, dir) = server_with_slow_node_checks();
    let (backend, _) = counting_backend();
    let file = dir.path().join("apps.toml");
    let write = |interval: u32| {
        std::fs::write(
            &file,
            format!(
                "[[application]]\nname = \"mqtt\"\ninstances = [{{ address = \"{backend}\" }}]\n\n[application.health_check]\ninterval_ms = {interval}\nkind = \"expect\"\nexpect = \"20\"\n\n[[application.redirection]]\nnamespace = \"default\"\n"
            ),
        )
        .unwrap();
    };
    write(1000);
    server.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    let app = app_path(&server, "mqtt");
    assert_eq!(
        server.api("GET", &app, None).ok_json()["healthCheck"],
        json!({"kind": "expect", "intervalMs": 1000, "expect": "20"})
    );
    let port = server.list("mqtt")[0].1;
    let mut open = connect(port);
    write(2000);
    let out = server.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("~ health checks mqtt (interval_ms)"), "{out}");
    assert!(!out.contains("- redirection"), "{out}");
    assert_eq!(server.api("GET", &app, None).ok_json()["healthCheck"]["intervalMs"], 2000);
    assert_eq!(server.list("mqtt")[0].1, port, "the port stays");
    // The open connection was not touched.
    open.write_all(b"x").unwrap();
    let again = server.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!again.contains("health checks"), "a second apply changes nothing: {again}");
    let exported = server.cli_ok(&["export"]);
    assert!(
        exported.contains("[application.health_check]")
            && exported.contains("interval_ms = 2000")
            && exported.contains("expect = \"20\""),
        "{exported}"
    );
    // Misspelt: refused at its line.
    std::fs::write(
        &file,
        "[[application]]\nname = \"mqtt\"\n\n[application.health_check]\nintervall_ms = 5\n",
    )
    .unwrap();
    server.cli(&["apply", "-f", file.to_str().unwrap()]).assert_error(1, &["apps.toml:5:1", "intervall_ms"]);
}

/// In a fleet (two nodes on one etcd), an application's new check settings are in force on
/// the other node too when the update answers: its checks there take the new interval at
/// once (the node's own every 30 s would not have checked yet).
#[test]
fn an_applications_new_checks_hold_on_every_node_of_a_fleet_when_the_update_answers() {
    let etcd = common::etcd::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[health_checks]\ninterval = 30\ntimeout = 0.5\n").unwrap();
    let token = random_token();
    let url = etcd.url();
    let node = |name: &str, ip: &str| {
        Server::builder()
            .ip(ip)
            .token(&token)
            .config(&config)
            .args(&["--store", &url, "--node", name])
            .start()
    };
    let (a, b) = (node("a", "127.0.41.2"), node("b", "127.0.41.3"));
    let dead = SocketAddr::from((LOCALHOST, refused_port()));
    let app = app_with(&a, "fleet-app", &[dead]);
    // b serves the port too: its pool, and its own view of the instance (not checked yet).
    wait_until(Duration::from_secs(10), "b to serve the application's port", || {
        match b.api("GET", &app, None) {
            r if r.status == 200 && r.json()["instances"][0].get("state").is_some() => Ok(()),
            r => Err(r.text()),
        }
    });
    assert!(
        instance(&b, &app, dead).get("lastCheck").is_none(),
        "checked before the update: {}",
        instance(&b, &app, dead)
    );

    let body = r#"{"healthCheck":{"intervalMs":200,"timeoutMs":150,"rise":1,"fall":1}}"#;
    let patched = a.api("PATCH", &app, Some(body)).ok_json();
    assert_eq!(patched["healthCheck"]["intervalMs"], 200, "{patched}");
    assert_eq!(
        b.api("GET", &app, None).ok_json()["healthCheck"]["intervalMs"],
        200,
        "b's table has it when a answers"
    );
    let took = until_state(&b, &app, dead, "down", Duration::from_secs(5));
    assert!(took < Duration::from_millis(1500), "down on b after {took:?} with the application's 200 ms");
}
