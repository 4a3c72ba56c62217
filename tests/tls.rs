//! The control API over TLS, and its patience with slow clients.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Starts `serve` with `extra` arguments; returns the child and the URL it logged.
fn serve(extra: &[&str], data: &std::path::Path, config: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0", "--public-bind", "127.0.0.1", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("TCP_REDIRS_ADMIN_TOKEN", "tls-token")
        .env("TCP_REDIRS_CONFIG_DIR", config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {extra:?} did not log that it listens");
        };
        if let Some(rest) = line.split("listening on ").nth(1) {
            return (child, rest.split_whitespace().next().unwrap().to_owned());
        }
    }
}

#[test]
fn the_api_is_served_over_tls_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let (data, config) = (dir.path().join("data"), dir.path().join("cfg"));
    let tls_args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let (child, url) = serve(&tls_args, &data, &config);
    let _guard = KillOnDrop(child);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let cli = |ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["list-namespaces", "-F", "json", "--server", &url])
            .env("TCP_REDIRS_TOKEN", "tls-token")
            .env("TCP_REDIRS_CONFIG_DIR", &config);
        if let Some(ca) = ca {
            cmd.env("TCP_REDIRS_CA_CERT", ca);
        }
        cmd.output().unwrap()
    };
    let trusted = cli(Some(&cert));
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let names: serde_json::Value = serde_json::from_slice(&trusted.stdout).unwrap();
    assert_eq!(namespace_names(&names), vec!["cleverapps", "default"]);

    let untrusted = cli(None);
    assert!(!untrusted.status.success(), "an unknown certificate must be refused");
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.starts_with("error: ") && stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    plain.write_all(b"GET /v2/organisations HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

/// Kills and reaps the server however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_dropped() {
    let server = Server::start();
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    slow.write_all(b"GET /v2/organisations HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(25), "the server held a slow client for {waited:?}");
    // And the server still serves everyone else.
    assert_eq!(server.api("GET", "/v2/organisations", None).status, 200);
}
