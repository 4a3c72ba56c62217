//! Steered mode (`serve --port-mode steered`, BPF `sk_lookup`): what it promises beyond
//! what the forwarding, UDP, upgrade and fleet suites check in it (`scripts/test` runs them
//! again with every server steered). Each test runs in a network namespace of its own
//! ([`common::enter_network_namespace`]): a steered server attaches its program to the
//! namespace it runs in, never to the machine's.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// Applications of the manifest, each with a redirection in `default` and in `cleverapps`.
const APPS: usize = 1_000;
/// The open-file limit the server gets once started: far below one descriptor per port.
const NOFILE: u64 = 300;

/// Sets a running process's open-file limit, soft and hard.
fn limit_descriptors(pid: u32, most: u64) {
    let limit = libc::rlimit { rlim_cur: most, rlim_max: most };
    // SAFETY: prlimit reads the struct passed and writes nothing (no old limit asked).
    let done = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(done, 0, "prlimit on the server: {}", std::io::Error::last_os_error());
}

/// 2,000 redirections, made through `apply`, on a server held to 300 descriptors: a port is
/// a key in the kernel's table and a slot in the server's, never a socket. Every sampled
/// port forwards, none has a listening socket of its own, and a removed one refuses at once.
#[test]
fn steered_ports_cost_no_descriptor() {
    enter_network_namespace();
    let echo = TcpService::echo();
    let server = Server::builder().args(&["--port-mode", "steered"]).start();
    assert!(server.log().contains("mode=\"steered\""), "the start says which mode runs\n{}", server.log());
    let pid = server.process_id();
    limit_descriptors(pid, NOFILE);

    let manifest = many_apps_manifest("steered", APPS, echo.addr(), "");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.toml");
    std::fs::write(&file, manifest).unwrap();
    let applied = run_cli_within(
        &server,
        &["apply", "-f", file.to_str().unwrap(), "-F", "json"],
        Duration::from_secs(120),
    );
    assert_eq!(
        applied.code,
        0,
        "apply of {} redirections under {NOFILE} descriptors\n{applied}\n{}",
        APPS * 2,
        server.log()
    );
    let report: serde_json::Value = serde_json::from_str(&applied.stdout).unwrap();
    let ports: Vec<u16> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "add" && c["kind"] == "redirection")
        .map(|c| c["port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(ports.len(), APPS * 2, "{report}");

    let fds = fd_count(pid);
    assert!(fds < 100, "{} steered ports hold {fds} descriptors", ports.len());
    for &port in ports.iter().step_by(10) {
        let data = format!("through {port}").into_bytes();
        assert_same_bytes(&send_and_read_back(port, &data), &data, &format!("steered port {port}"));
        assert_eq!(listeners_on(port), 0, "port {port} has a listening socket of its own");
    }
    let nodes = server.cli_json(&["nodes", "-F", "json"]);
    assert_eq!(nodes[0]["portMode"], json!("steered"), "{nodes}");

    let list = server.cli_json(&["list", "--app", "steered-7", "-F", "json"]);
    let port = list[0]["port"].as_u64().unwrap() as u16;
    server.cli_ok(&[
        "remove",
        &port.to_string(),
        "--app",
        "steered-7",
        "--namespace",
        list[0]["namespace"].as_str().unwrap(),
    ]);
    assert_refuses(port);
    eprintln!("[steered] {} ports on {fds} descriptors", ports.len());
}

/// A port another program listens on when a redirection is allocated is never taken: asked
/// for, it is refused as taken; picked at random, it is skipped; once free, it is given.
#[test]
fn a_port_another_program_holds_is_never_steered() {
    enter_network_namespace();
    let echo = TcpService::echo();
    let (low, high) = free_port_pair();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[[namespace]]\nname = \"tight\"\nbind = \"127.0.0.1\"\nports = \"{low}-{high}\"\n"),
    )
    .unwrap();
    let server = Server::builder().config(&config).args(&["--port-mode", "steered"]).start();
    let other = TcpListener::bind(SocketAddr::from((LOCALHOST, low))).expect("another program's listener");
    for app in ["one", "two", "three"] {
        server.create_app(app, echo.addr());
    }
    let asked = server.cli(&["add", "--app", "one", "--namespace", "tight", "--port", &low.to_string()]);
    asked.assert_error(1, &[&low.to_string(), "tight"]);
    let picked = server.add("one", "tight");
    assert_eq!(picked, high, "the only port nobody holds");
    let full = server.cli(&["add", "--app", "two", "--namespace", "tight"]);
    full.assert_error(1, &["tight"]);
    drop(other);
    assert_eq!(server.add("two", "tight"), low, "the port once its program let it go");
    let data = b"steered, not stolen".to_vec();
    assert_same_bytes(&send_and_read_back(low, &data), &data, "the port given once free");
    let _ = server.add("three", "default");
}

/// Without CAP_BPF and CAP_NET_ADMIN, `--port-mode steered` exits at once with one `error:`
/// line that says what to grant, and `auto` serves in bound mode, saying why.
#[test]
fn without_privileges_steered_mode_says_what_to_grant() {
    enter_network_namespace();
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    for dir in [data.path(), config.path()] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let serve = |mode: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_tcp-redirs"))
        .args(["serve", "--listen", "127.0.0.1:0", "--port-mode", mode, "--data-dir"])
        .arg(data.path())
        .env_clear()
        .env("TCP_REDIRS_CONFIG_DIR", config.path())
        .env("HOME", config.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    };
    let forced = serve("steered").output().expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(!forced.status.success(), "a forced steered mode without privileges started\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line\n{stderr}");
    for needle in ["CAP_BPF", "CAP_NET_ADMIN", "--port-mode bound"] {
        assert!(errors[0].contains(needle), "the error names {needle}: {}", errors[0]);
    }

    let mut auto = serve("auto").spawn().expect("run setpriv (util-linux)");
    let stderr = auto.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let bound = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("control API listening") => {
                break seen.iter().any(|l: &String| l.contains("mode=\"bound\"") && l.contains("CAP_BPF"))
            }
            Ok(line) => seen.push(line),
            Err(e) => panic!("auto mode did not start within 20 s ({e})\n{}", seen.join("\n")),
        }
    };
    let _ = auto.kill();
    let _ = auto.wait();
    assert!(bound, "auto mode without privileges logs that it binds, and why\n{}", seen.join("\n"));
}

/// A port whose last connection the gateway closed first (its side then waits in TIME_WAIT
/// for a minute) is free again for the same redirection at once, as in bound mode: `remove`
/// then `add --port` of that port succeeds and forwards.
#[test]
fn a_port_in_time_wait_is_free_again_at_once() {
    enter_network_namespace();
    // The instance speaks first and closes: the gateway passes the close on, so its side of
    // the client's connection closes first.
    let says_bye = TcpService::start(|mut conn| {
        use std::io::Write;
        let _ = conn.write_all(b"bye");
    });
    let server = Server::builder().args(&["--port-mode", "steered"]).start();
    server.create_app("brief", says_bye.addr());
    let port = server.add("brief", "default");
    let mut client = connect(port);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut got).expect("read until the gateway closes");
    assert_eq!(got, b"bye");
    drop(client);
    wait_until(Duration::from_secs(5), "the gateway's side of the connection in TIME_WAIT", || {
        let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap();
        let local = format!("0100007F:{port:04X}");
        // Column 4 is the state; 06 is TIME_WAIT.
        match table
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&local) && l.split_whitespace().nth(3) == Some("06"))
        {
            true => Ok(()),
            false => Err(table),
        }
    });
    server.cli_ok(&["remove", &port.to_string(), "--app", "brief", "--namespace", "default"]);
    let again = server.cli(&[
        "add",
        "--app",
        "brief",
        "--namespace",
        "default",
        "--port",
        &port.to_string(),
        "-F",
        "json",
    ]);
    assert_eq!(again.code, 0, "the same port again, at once\n{again}\n{}", server.log());
    let mut client = connect(port);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut got).unwrap();
    assert_eq!(got, b"bye", "the port forwards again");
}
