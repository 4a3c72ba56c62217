//! Bad input never hurts: every malformed request answers a 4xx with the JSON error shape,
//! never a 5xx, a panic or a hang. Property-based: proptest generates the requests and
//! shrinks any failure to a minimal one; the server is a real one on loopback.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::json;

/// Bodies: arbitrary bytes, arbitrary JSON-ish text, and near-misses of the real shapes.
fn bodies() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[\\[\\]{}\":,0-9a-z\\- ]{0,40}",
        (any::<i64>(), "[a-z]{0,8}").prop_map(|(n, s)| format!(r#"{{"namespace":{n},"port":"{s}"}}"#)),
        any::<u64>().prop_map(|n| format!(r#"{{"namespace":"default","idleTimeout":{n}}}"#)),
        "[ -~]{0,30}".prop_map(|s| json!({"namespace": s}).to_string()),
        "[ -~]{0,30}".prop_map(|s| json!({"name": s, "instances": [{"address": s}]}).to_string()),
        "[ -~]{0,30}".prop_map(|s| json!({"namespace": "default", "allow": [s]}).to_string()),
        (any::<u32>(), "[ -~]{0,20}").prop_map(|(w, a)| json!([{"address": a, "weight": w}]).to_string()),
    ]
}

/// Path segments with odd characters (percent-encoded so the request line stays valid).
fn segments() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_0-9-]{0,12}",
        "[ -~]{1,12}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn malformed_requests_answer_4xx_with_the_error_shape(
        body in bodies(),
        org in segments(),
        app in segments(),
        port in segments(),
        route in 0..6usize,
    ) {
        let server = shared_server();
        let (method, path) = match route {
            0 => ("POST", format!("/v2/organisations/{org}/applications/{app}/tcpRedirs")),
            1 => ("DELETE", format!("/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}?namespace={app}")),
            2 => ("POST", format!("/v2/organisations/{org}/applications")),
            3 => ("PUT", format!("/v2/organisations/{org}/applications/{app}/instances")),
            4 => ("POST", "/v2/organisations".to_owned()),
            _ => ("GET", format!("/v2/organisations/{org}/{app}/{port}")),
        };
        let answer = server.api(method, &path, Some(&body));
        prop_assert!((400..500).contains(&answer.status) || (200..300).contains(&answer.status),
            "{method} {path} {body:?} answered {} {}", answer.status, answer.text());
        if answer.status >= 400 {
            let err = answer.json();
            prop_assert_eq!(&err["type"], "error");
            prop_assert!(err["id"].is_u64() && err["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", err);
        }
    }

    #[test]
    fn real_ids_with_bad_bodies_answer_4xx(body in bodies(), route in 0..3usize) {
        let server = shared_server();
        let (org, app) = shared_ids();
        let (method, path) = match route {
            0 => ("POST", format!("/v2/organisations/{org}/applications/{app}/tcpRedirs")),
            1 => ("PUT", format!("/v2/organisations/{org}/applications/{app}/instances")),
            _ => ("POST", format!("/v2/organisations/{org}/applications")),
        };
        let answer = server.api(method, &path, Some(&body));
        prop_assert!(answer.status < 500, "{method} {path} {body:?} answered {} {}", answer.status, answer.text());
        // Whatever was accepted, clean it up so the next case starts from the same state.
        if (200..300).contains(&answer.status) && route == 0 {
            let port = answer.json()["port"].as_u64().unwrap();
            let ns = answer.json()["namespace"].as_str().unwrap().to_owned();
            server.api("DELETE", &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}?namespace={ns}"), None);
        }
    }
}

#[test]
fn a_huge_body_is_refused_with_413_and_the_error_shape() {
    let server = shared_server();
    let (org, app) = shared_ids();
    let body = format!(r#"{{"namespace":"{}"}}"#, "x".repeat(200_000));
    let answer =
        server.api("POST", &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"), Some(&body));
    assert_eq!(answer.status, 413, "{}", answer.text());
    answer.assert_error(413);
}

/// One server for every case of this file. A static is never dropped, so the server is
/// killed at process exit instead (its guard's drop never runs), leaving no orphan behind.
fn shared_server() -> &'static Server {
    static SERVER: std::sync::OnceLock<Server> = std::sync::OnceLock::new();
    static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    extern "C" fn kill_shared_server() {
        let pid = PID.load(std::sync::atomic::Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill(2) on the server we spawned; at exit nothing else uses it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    SERVER.get_or_init(|| {
        let server = Server::start();
        PID.store(server.process_id() as i32, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: registering a plain function to run at exit.
        unsafe { libc::atexit(kill_shared_server) };
        server
    })
}

fn shared_ids() -> (String, String) {
    static IDS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        let server = shared_server();
        let org =
            server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
        let body = json!({"name": "target", "instances": [{"address": "127.0.0.1:9"}]}).to_string();
        let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
        (org, app["id"].as_str().unwrap().to_owned())
    })
    .clone()
}
