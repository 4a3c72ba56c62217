//! A soak: a bounded stretch of mixed load on one server (API calls, short and long forwarded
//! connections, clients that vanish mid-transfer). Nothing that should succeed fails, and the
//! server's descriptors and memory come back to their baseline afterwards.
//!
//! `TCP_REDIRS_SOAK_SECS` sets the length (45 s by default, about a minute with set-up).

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn mixed_load_fails_nothing_and_leaks_nothing() {
    let secs: u64 = std::env::var("TCP_REDIRS_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let server = Arc::new(Server::start());
    let echo = TcpService::echo();
    server.create_app("steady", echo.addr());
    let port = server.add("steady", "default");
    for i in 0..4 {
        server.create_app(&format!("churn{i}"), echo.addr());
    }
    // Warm up every path once, then take the baseline.
    assert_same_bytes(&send_and_read_back(port, b"warm"), b"warm", "warm-up");
    let pid = server.process_id();
    let (fd_base, rss_base) = (fd_count(pid), rss_kib(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    // API churn: add, list, remove, on four applications in turn.
    {
        let (server, stop, done) = (server.clone(), stop.clone(), done.clone());
        workers.push(thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let app = format!("churn{}", i % 4);
                let p = server.add(&app, "cleverapps");
                assert!(server.list(&app).contains(&("cleverapps".to_owned(), p)));
                server.cli_ok(&["remove", &p.to_string(), "--app", &app, "--namespace", "cleverapps"]);
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Short connections.
    for _ in 0..3 {
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(thread::spawn(move || {
            let payload = random_bytes(2048);
            while !stop.load(Ordering::Relaxed) {
                assert_same_bytes(&send_and_read_back(port, &payload), &payload, "short connection");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Long transfers.
    {
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(thread::spawn(move || {
            let payload = random_bytes(4 << 20);
            while !stop.load(Ordering::Relaxed) {
                assert_same_bytes(&send_and_read_back(port, &payload), &payload, "long transfer");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Clients that vanish mid-transfer.
    {
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(thread::spawn(move || {
            let payload = random_bytes(256 << 10);
            while !stop.load(Ordering::Relaxed) {
                let mut s = connect(port);
                let _ = s.write_all(&payload[..64 << 10]);
                let mut some = [0u8; 1024];
                let _ = s.read(&mut some);
                drop(s);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The load runs for `secs`, or until a worker ends (it failed: its panic shows at the join).
    let _ = hold(Duration::from_secs(secs), || match workers.iter().position(|w| w.is_finished()) {
        Some(w) => Err(format!("soak worker {w} ended")),
        None => Ok(()),
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a soak worker failed: see its panic above");
    }
    let operations = done.load(Ordering::Relaxed);
    assert!(operations > 100, "only {operations} operations in {secs}s");

    // Back to the baseline, within a bounded wait for closes to be seen.
    wait_for_fds_at_most(
        pid,
        fd_base + 2,
        Duration::from_secs(15),
        &format!("{fd_base} descriptors before the soak"),
    );
    let rss = rss_kib(pid);
    // The allocator keeps some freed memory for reuse; a leak grows with the load instead.
    assert!(rss < rss_base + 64 * 1024, "RSS {rss} KiB after {operations} operations, {rss_base} KiB before");
    eprintln!(
        "soak: {operations} operations in {secs}s; fds {fd_base} -> {}; RSS {rss_base} -> {rss} KiB",
        fd_count(pid)
    );
}
