//! Port ranges (issue 34), end to end on one node: the real binary, real sockets. A range's
//! public port `first + i` goes to each instance's port `+ i`; it is created, listed,
//! exported and removed as one redirection, survives a restart and `kill -9`, and is never
//! given in part when part of it is taken.
//!
//! Run in both port modes: `cargo test --all-features --test ranges`, and steered, in a
//! network namespace of its own:
//! `unshare -n bash -c 'ip link set lo up; TEST_PORT_MODE=steered cargo test --all-features --test ranges'`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The instances of a range's application: `n` consecutive loopback ports, each answering
/// every connection with its own port number, then closing it.
struct Numbered {
    first: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Numbered {
    /// Listens on `n` consecutive free ports of 127.0.0.1 in 33000..60000 (found by binding
    /// every one of them).
    fn start(n: u16) -> Numbered {
        for _ in 0..200 {
            let first = rand::random_range(33000..60000 - n);
            let bound: Result<Vec<TcpListener>, _> =
                (first..first + n).map(|p| TcpListener::bind((LOCALHOST, p))).collect();
            let Ok(listeners) = bound else { continue };
            let stop = Arc::new(AtomicBool::new(false));
            let threads = listeners
                .into_iter()
                .map(|listener| {
                    let stop = stop.clone();
                    thread::spawn(move || {
                        let port = listener.local_addr().unwrap().port();
                        for conn in listener.incoming() {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            if let Ok(mut conn) = conn {
                                let _ = conn.write_all(port.to_string().as_bytes());
                            }
                        }
                    })
                })
                .collect();
            return Numbered { first, stop, threads };
        }
        panic!("found no {n} consecutive free ports in 33000..60000 after 200 tries");
    }

    /// The first instance port: the application's instance address.
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((LOCALHOST, self.first))
    }
}

impl Drop for Numbered {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Each accept loop wakes on a connection of its own, sees the flag, and ends.
        for i in 0..self.threads.len() as u16 {
            let _ = TcpStream::connect((LOCALHOST, self.first + i));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a connection to public port `port` reads before the instance closes it: the
/// instance's port number, as text.
fn answer(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from((LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut back = String::new();
    stream.read_to_string(&mut back).map_err(|e| format!("{addr}: {e}"))?;
    Ok(back)
}

/// Every port of `first..first + n` answers the matching instance port: `instance + i`.
fn assert_each_port_matches(first: u16, n: u16, instance: u16, when: &str) {
    for i in 0..n {
        let got = answer(first + i)
            .unwrap_or_else(|e| panic!("{when}: public port {} did not answer: {e}", first + i));
        assert_eq!(
            got,
            (instance + i).to_string(),
            "{when}: public port {} reached the wrong instance port",
            first + i
        );
    }
}

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
