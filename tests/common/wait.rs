//! Bounded waits on a condition: a probe run every [`POLL`] up to a time limit. Every wait
//! of the tests goes through these (or `poll_async` of `mod.rs` in a tokio test); none
//! sleeps for readiness.
//!
//! Only std is used, so that `etcd.rs`, which unit tests include on its own, includes this
//! file too (`#[path = "wait.rs"] mod wait;`).

#![allow(dead_code)]

use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// Interval between two probes of a [`poll`].
pub const POLL: Duration = Duration::from_millis(20);

/// How many probes a wait of `limit` makes at most, one every `every` (at least two, so
/// that a probe runs after the limit has passed): a bound in count on top of the bound in time.
pub fn max_probes(every: Duration, limit: Duration) -> usize {
    (limit.as_millis() / every.as_millis().max(1)).saturating_add(2).try_into().unwrap_or(usize::MAX)
}

/// Runs `probe` every [`POLL`] until it answers `Ok` or `limit` has passed (then the last
/// error); the value and how long it took. An error that starts with `FATAL` ends it at once.
pub fn poll<T>(limit: Duration, probe: impl FnMut() -> Result<T, String>) -> Result<(T, Duration), String> {
    poll_every(POLL, limit, probe)
}

/// [`poll`] with `every` between two probes instead of [`POLL`]: for a wait whose probes
/// are rounds of load, paced.
pub fn poll_every<T>(
    every: Duration,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<(T, Duration), String> {
    let start = Instant::now();
    let mut last = String::from("never probed");
    for _ in 0..max_probes(every, limit) {
        match probe() {
            Ok(value) => return Ok((value, start.elapsed())),
            Err(e) if e.starts_with("FATAL") => return Err(e),
            Err(e) => last = e,
        }
        if start.elapsed() >= limit {
            break;
        }
        thread::sleep(every);
    }
    Err(format!("still not the case after {:?}: {last}", start.elapsed()))
}

/// [`poll`] that panics with `what` and the last error when `limit` passes; the value.
pub fn wait_until<T>(limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    match poll(limit, probe) {
        Ok((value, _)) => value,
        Err(e) => panic!("{what} (bound {limit:?}): {e}"),
    }
}

/// Runs `probe` every [`POLL`] for all of `window`: `Ok` once the window has passed with
/// every probe `Ok` (the last probe runs after it), else the first error, at once.
pub fn hold(window: Duration, mut probe: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let start = Instant::now();
    for _ in 0..max_probes(POLL, window) {
        probe().map_err(|e| format!("after {:?}: {e}", start.elapsed()))?;
        if start.elapsed() >= window {
            return Ok(());
        }
        thread::sleep(POLL.min(window.saturating_sub(start.elapsed())));
    }
    // The count bound: the window has passed by now (each round sleeps up to the window's end).
    probe().map_err(|e| format!("after {:?}: {e}", start.elapsed()))
}

/// Waits up to `limit` for `child` to exit: its status, or `None` when it still runs then.
pub fn wait_for_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let waited = poll(limit, || match child.try_wait() {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err("still running".to_owned()),
        Err(e) => Err(format!("FATAL: cannot wait for the child process: {e}")),
    });
    match waited {
        Ok((status, _)) => Some(status),
        Err(e) if e.starts_with("FATAL") => panic!("{e}"),
        Err(_) => None,
    }
}
