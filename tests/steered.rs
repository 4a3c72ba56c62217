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

/// A steered server whose namespaces, each `(name, bind address)`, all have the range of
/// two free ports `low-high`: the server, the directory of its config file, `low`, `high`.
fn steered_with_two_ports(namespaces: &[(&str, &str)]) -> (Server, tempfile::TempDir, u16, u16) {
    let (low, high) = free_port_pair();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text: String = namespaces
        .iter()
        .map(|(name, bind)| {
            format!("[[namespace]]\nname = \"{name}\"\nbind = \"{bind}\"\nports = \"{low}-{high}\"\n")
        })
        .collect();
    std::fs::write(&config, text).unwrap();
    let server = Server::builder().config(&config).args(&["--port-mode", "steered"]).start();
    (server, dir, low, high)
}

/// A port another program listens on when a redirection is allocated is never taken: asked
/// for, it is refused as taken; picked at random, it is skipped; once free, it is given.
#[test]
fn a_port_another_program_holds_is_never_steered() {
    enter_network_namespace();
    let echo = TcpService::echo();
    let (server, _config, low, high) = steered_with_two_ports(&[("tight", "127.0.0.1")]);
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

/// A UDP instance that answers each datagram with its own tag in front: `[tag] ++ datagram`,
/// so that a client learns which instance its flow went to.
struct TaggedEcho {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TaggedEcho {
    fn start(tag: u8) -> TaggedEcho {
        use std::sync::atomic::Ordering;
        let socket = std::net::UdpSocket::bind((LOCALHOST, 0)).expect("bind a tagged UDP echo");
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf[1..]) {
                    buf[0] = tag;
                    let _ = socket.send_to(&buf[..n + 1], from);
                }
            }
        });
        TaggedEcho { addr, stop, thread: Some(thread) }
    }
}

impl Drop for TaggedEcho {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Adds a UDP redirection of `app` in `default`; its port.
fn add_udp(server: &Server, app: &str) -> u16 {
    add_udp_with(server, app, &[])
}

/// Adds a UDP redirection of `app` in `default` with the settings flags `extra`; its port.
fn add_udp_with(server: &Server, app: &str, extra: &[&str]) -> u16 {
    let add = ["add", "--udp", "--app", app, "--namespace", "default", "-F", "json"];
    port_of(&server.cli_json(&[&add[..], extra].concat()))
}

/// A steered UDP port carries exact datagrams both ways for several clients at once: each
/// client sends a burst from its very first datagram (some of them while its flow's socket is
/// being made), every answer comes back whole, from the address and port the client dialled
/// (read with `recv_from` on an unconnected socket), and all of a client's answers come from
/// one instance, both instances serving some client.
#[test]
fn steered_udp_echoes_exact_datagrams_from_the_dialled_port() {
    enter_network_namespace();
    let (one, two) = (TaggedEcho::start(1), TaggedEcho::start(2));
    let server = Server::builder().args(&["--port-mode", "steered"]).start();
    server.cli_json(&[
        "apps",
        "create",
        "game",
        "--instance",
        &one.addr.to_string(),
        "--instance",
        &two.addr.to_string(),
        "-F",
        "json",
    ]);
    let port = add_udp(&server, "game");
    let dialled = SocketAddr::from((LOCALHOST, port));
    assert_eq!(listeners_on(port), 0, "a steered UDP port has no socket of its own");
    const CLIENTS: usize = 8;
    const BURST: usize = 40;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
                socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20).unwrap();
                socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let sent: Vec<Vec<u8>> = (0..BURST)
                    .map(|i| {
                        // Small enough that a burst fits the flow sockets' default buffers.
                        let mut d = random_bytes(1 + (i * 997 + c * 131) % 1_200);
                        d[0] = i as u8;
                        d
                    })
                    .collect();
                for d in &sent {
                    socket.send_to(d, dialled).unwrap();
                }
                let mut tags = std::collections::HashSet::new();
                let mut got = vec![None; BURST];
                let mut buf = vec![0u8; 65_536];
                for _ in 0..BURST {
                    let (n, from) = match socket.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) => {
                            return Err(format!(
                                "client {c}: {} of {BURST} answers: {e}",
                                got.iter().flatten().count()
                            ))
                        }
                    };
                    assert_eq!(from, dialled, "client {c}: an answer from {from}, not from the port dialled");
                    tags.insert(buf[0]);
                    let i = usize::from(buf[1]);
                    got[i] = Some(buf[1..n].to_vec());
                }
                for (i, d) in sent.iter().enumerate() {
                    assert_same_bytes(
                        got[i].as_deref().unwrap_or_default(),
                        d,
                        &format!("client {c}, datagram {i}"),
                    );
                }
                // Then large ones, one at a time: up to the largest UDP payload over IPv4
                // but for the instance's tag.
                for size in [9_000, 65_000] {
                    let d = random_bytes(size);
                    socket.send_to(&d, dialled).unwrap();
                    let (n, from) =
                        socket.recv_from(&mut buf).map_err(|e| format!("client {c}: {size} B: {e}"))?;
                    assert_eq!(from, dialled);
                    tags.insert(buf[0]);
                    assert_same_bytes(&buf[1..n], &d, &format!("client {c}: a {size}-byte datagram"));
                }
                assert_eq!(tags.len(), 1, "client {c}: answers from instances {tags:?}");
                Ok(tags.into_iter().next().unwrap())
            })
        })
        .collect();
    let tags: std::collections::HashSet<u8> = clients
        .into_iter()
        .map(|t| {
            t.join().unwrap().unwrap_or_else(|e| {
                let metrics = server.api("GET", "/metrics", None).text();
                let udp: Vec<&str> = metrics.lines().filter(|l| l.contains("udp")).collect();
                panic!("{e}\n{}\n{}", udp.join("\n"), server.log())
            })
        })
        .collect();
    assert_eq!(tags.len(), 2, "both instances serve some of {CLIENTS} clients: {tags:?}");
    let metrics = server.api("GET", "/metrics", None).text();
    let dropped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tcp_redirs_udp_datagrams_dropped_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(dropped.is_empty(), "no datagram dropped: {dropped:?}");
}

/// 1,000 UDP redirections, made through `apply`, add no descriptor to a steered server (each
/// is a key in the kernel's table), and sampled ones forward. A change of 1,000 ports is a
/// large one: a second after it, the server gives its heap's free pages back to the system
/// (`server/state/heap.rs`) and says so.
#[test]
fn steered_udp_ports_cost_no_descriptor() {
    enter_network_namespace();
    let echo = UdpEcho::start();
    let server = Server::builder().args(&["--port-mode", "steered"]).start();
    let pid = server.process_id();
    const PORTS: usize = 1_000;
    let mut manifest = String::new();
    for i in 0..PORTS {
        manifest.push_str(&format!(
            "[[application]]\nname = \"u-{i}\"\ninstances = [{{ address = \"{}\" }}]\n\n\
             [[application.redirection]]\nnamespace = \"default\"\nprotocol = \"udp\"\n\n",
            echo.addr()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("udp.toml");
    std::fs::write(&file, manifest).unwrap();
    let before = fd_count(pid);
    let applied = run_cli_within(
        &server,
        &["apply", "-f", file.to_str().unwrap(), "-F", "json"],
        Duration::from_secs(120),
    );
    assert_eq!(applied.code, 0, "apply of {PORTS} UDP redirections\n{applied}\n{}", server.log());
    let report: serde_json::Value = serde_json::from_str(&applied.stdout).unwrap();
    let ports: Vec<u16> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "add" && c["kind"] == "redirection")
        .map(|c| c["port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(ports.len(), PORTS, "{report}");
    let after = fd_count(pid);
    eprintln!("[steered] {PORTS} UDP ports: {before} descriptors before, {after} after");
    assert!(after <= before + 5, "{PORTS} steered UDP ports took {} descriptors", after - before);
    for &port in ports.iter().step_by(50) {
        let client = udp_client(LOCALHOST.into(), port);
        let data = format!("through {port}").into_bytes();
        let back = udp_round_trip(&client, &data).unwrap_or_else(|e| panic!("UDP port {port}: {e}"));
        assert_same_bytes(&back, &data, &format!("steered UDP port {port}"));
    }
    let trimmed = server.wait_for_log("gave the heap's free pages back", 0, Duration::from_secs(20));
    eprintln!("[steered] {}", trimmed.lines().last().unwrap_or_default());
}

/// Whether a removed UDP port refuses `client` (its connected socket gets ECONNREFUSED from
/// the ICMP port unreachable) and never answers. Up to 5 datagrams, a second apart: the
/// kernel's ICMP rate limit is machine-wide (1,000 a second, bursts of 50), and other tests
/// running at once may spend it, so one ICMP may not be sent.
fn refused(client: &std::net::UdpSocket, what: &str) {
    client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        let _ = client.send(b"still there?");
        match client.recv(&mut buf) {
            Ok(n) => panic!("{what}: a removed UDP port answered {:?}", &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            Err(_) => continue,
        }
    }
    panic!("{what}: neither answered nor refused (no ICMP port unreachable) in 5 tries");
}

/// `remove --udp` refuses the port before it answers: a client whose flow was open gets
/// ICMP port unreachable for its very next datagram (its connected socket: ECONNREFUSED),
/// and so does a new client; the flows' sockets are gone from the server.
#[test]
fn a_removed_steered_udp_port_refuses_the_next_datagram() {
    enter_network_namespace();
    let echo = UdpEcho::start();
    let server = Server::builder().args(&["--port-mode", "steered"]).start();
    server.create_app("game", echo.addr());
    let port = add_udp(&server, "game");
    let pid = server.process_id();
    let idle = fd_count(pid);
    let clients: Vec<_> = (0..5).map(|_| udp_client(LOCALHOST.into(), port)).collect();
    for (i, c) in clients.iter().enumerate() {
        let data = format!("flow {i}").into_bytes();
        assert_eq!(udp_round_trip(c, &data).unwrap(), data);
    }
    let open = fd_count(pid);
    assert!(open >= idle + 10, "5 steered flows hold two descriptors each: {idle} -> {open}");
    server.cli_ok(&["remove", &port.to_string(), "--udp", "--app", "game", "--namespace", "default"]);
    for (i, c) in clients.iter().enumerate() {
        refused(c, &format!("client {i}, whose flow was open"));
    }
    refused(&udp_client(LOCALHOST.into(), port), "a new client");
    assert!(fd_count(pid) <= idle, "the flows' sockets closed with the port");
}

/// A steered UDP port's idle flows end, swept by their forwarding thread's sweeper (a port
/// has no task of its own): a flow's two sockets close after its 1 s idle timeout, and not
/// before it; a shorter timeout set by `update` ends a flow already open at once, not after
/// the 60 s it was planned at.
#[test]
fn steered_udp_flows_end_when_idle_and_at_once_at_a_shorter_timeout() {
    enter_network_namespace();
    let echo = UdpEcho::start();
    let server = Server::builder().args(&["--port-mode", "steered"]).start();
    server.create_app("game", echo.addr());
    let port = add_udp_with(&server, "game", &["--idle-timeout", "1"]);
    let pid = server.process_id();
    let idle = fd_count(pid);
    let client = udp_client(LOCALHOST.into(), port);
    let sent = std::time::Instant::now();
    assert_eq!(udp_round_trip(&client, b"one").unwrap(), b"one");
    assert!(fd_count(pid) >= idle + 2, "a steered flow holds two descriptors");
    wait_for_fds_at_most(pid, idle, Duration::from_secs(10), "a flow idle for its 1 s timeout ends");
    let ended = sent.elapsed();
    assert!(ended >= Duration::from_millis(900), "the flow ended after {ended:?}, before its idle timeout");
    eprintln!("[steered] a flow with a 1 s idle timeout ended {ended:?} after its datagram");

    let port = port.to_string();
    let update = ["update", &port, "--udp", "--namespace", "default", "--app", "game", "-F", "json"];
    server.cli_json(&[&update[..], &["--idle-timeout", "60"]].concat());
    assert_eq!(udp_round_trip(&client, b"two").unwrap(), b"two");
    let open = wait_for_fds_at_least(pid, idle + 2, Duration::from_secs(5), "a new flow opens");
    assert!(open >= idle + 2);
    let shortened = std::time::Instant::now();
    server.cli_json(&[&update[..], &["--idle-timeout", "1"]].concat());
    wait_for_fds_at_most(
        pid,
        idle,
        Duration::from_secs(10),
        "a flow whose timeout went from 60 s to 1 s ends",
    );
    eprintln!(
        "[steered] after the timeout went from 60 s to 1 s, the flow ended in {:?}",
        shortened.elapsed()
    );
}

/// An upgrade (SIGUSR2) keeps UDP ports steered: the new process takes the steered sockets
/// over, its ports hold no socket of their own, a port echoes from the dialled port through
/// it, and it steers what changes next (a port removed after the upgrade is refused).
#[test]
fn an_upgrade_keeps_udp_ports_steered() {
    enter_network_namespace();
    let echo = UdpEcho::start();
    let mut server = Server::builder().args(&["--port-mode", "steered"]).start();
    let ports: Vec<u16> = (0..20)
        .map(|i| {
            server.create_app(&format!("game-{i}"), echo.addr());
            add_udp(&server, &format!("game-{i}"))
        })
        .collect();
    for &port in &ports {
        assert_eq!(udp_round_trip(&udp_client(LOCALHOST.into(), port), b"before").unwrap(), b"before");
    }
    let skip = server.log().len();
    server.send_signal(libc::SIGUSR2);
    let log =
        server.wait_for_log("upgrade: the new process serves every socket", skip, Duration::from_secs(60));
    let line = log.lines().last().unwrap_or_default();
    let new_pid: u32 = line
        .split("new_pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no new_pid in `{line}`"));
    let status = server.wait_for_exit(Duration::from_secs(40)).expect("the old process exits");
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(
        server.log()[skip..].contains("every public TCP and UDP port steered by the kernel, taken over"),
        "{}",
        &server.log()[skip..]
    );
    let fds = fd_count(new_pid);
    assert!(fds < 100, "the new process holds {fds} descriptors for {} UDP ports", ports.len());
    for &port in &ports {
        let socket = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        socket.send_to(b"after", (LOCALHOST, port)).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) =
            socket.recv_from(&mut buf).unwrap_or_else(|e| panic!("UDP port {port} after the upgrade: {e}"));
        assert_eq!(&buf[..n], b"after");
        assert_eq!(from, SocketAddr::from((LOCALHOST, port)), "the answer's source");
    }
    server.cli_ok(&["remove", &ports[0].to_string(), "--udp", "--app", "game-0", "--namespace", "default"]);
    refused(&udp_client(LOCALHOST.into(), ports[0]), "a port removed after the upgrade");
    // SAFETY: kill sends a signal; the new process is ours to end.
    unsafe { libc::kill(new_pid as i32, libc::SIGTERM) };
}

/// A UDP port another program holds when a UDP redirection is allocated is never taken:
/// asked for, it is refused as taken; picked at random, it is skipped; once free, it is
/// given and forwards.
#[test]
fn a_udp_port_another_program_holds_is_never_steered() {
    enter_network_namespace();
    let echo = UdpEcho::start();
    let (server, _config, low, high) = steered_with_two_ports(&[("tight", "127.0.0.1")]);
    let other = std::net::UdpSocket::bind((LOCALHOST, low)).expect("another program's UDP socket");
    for app in ["one", "two"] {
        server.create_app(app, echo.addr());
    }
    let asked =
        server.cli(&["add", "--udp", "--app", "one", "--namespace", "tight", "--port", &low.to_string()]);
    asked.assert_error(1, &[&low.to_string(), "tight"]);
    let picked =
        port_of(&server.cli_json(&["add", "--udp", "--app", "one", "--namespace", "tight", "-F", "json"]));
    assert_eq!(picked, high, "the only UDP port nobody holds");
    server.cli(&["add", "--udp", "--app", "two", "--namespace", "tight"]).assert_error(1, &["tight"]);
    drop(other);
    let given =
        port_of(&server.cli_json(&["add", "--udp", "--app", "two", "--namespace", "tight", "-F", "json"]));
    assert_eq!(given, low, "the port once its program let it go");
    let back = udp_round_trip(&udp_client(LOCALHOST.into(), low), b"steered, not stolen").unwrap();
    assert_eq!(back, b"steered, not stolen");
}

/// Namespaces whose addresses overlap (two on 127.0.0.1, one on the wildcard address) never
/// share a UDP port: the one given in the first is refused in the others as taken, while
/// TCP takes that port number beside it; once removed, the port is given again.
#[test]
fn namespaces_on_overlapping_addresses_never_share_a_steered_udp_port() {
    enter_network_namespace();
    let echo = UdpEcho::start();
    let (server, _config, low, _) =
        steered_with_two_ports(&[("first", "127.0.0.1"), ("second", "127.0.0.1"), ("everywhere", "0.0.0.0")]);
    for app in ["one", "two"] {
        server.create_app(app, echo.addr());
    }
    let port = low.to_string();
    let add = |app: &'static str, namespace: &'static str, udp: bool| -> Vec<&str> {
        let args = vec!["add", "--app", app, "--namespace", namespace, "--port", &port, "-F", "json"];
        [args, if udp { vec!["--udp"] } else { vec![] }].concat()
    };
    assert_eq!(port_of(&server.cli_json(&add("one", "first", true))), low);
    for namespace in ["second", "everywhere"] {
        server.cli(&add("two", namespace, true)).assert_error(1, &[&port, namespace]);
    }
    assert_eq!(port_of(&server.cli_json(&add("two", "second", false))), low, "TCP beside UDP");
    let back = udp_round_trip(&udp_client(LOCALHOST.into(), low), b"first come").unwrap();
    assert_eq!(back, b"first come");
    server.cli_ok(&["remove", "--udp", "--app", "one", "--namespace", "first", &port]);
    assert_eq!(port_of(&server.cli_json(&add("two", "everywhere", true))), low, "the port once removed");
}
