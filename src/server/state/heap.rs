//! The server's use of glibc's allocator: how many arenas its threads share, and when the
//! free pages of a large change go back to the system.
//!
//! A node's memory is mostly its table and its ports, long-lived records made in bursts:
//! an `apply` of thousands of redirections parses, checks, stores and starts each batch,
//! and the transient buffers of each burst (request bodies, JSON, the store's statements,
//! the diffs) are freed between the records that stay. glibc keeps that free space, so
//! the resident size after a large change is well above what the records hold (issue 32's
//! memory per redirection). Two remedies, both measured with `bench/capacity.sh`:
//! - fewer arenas ([`limit_malloc_arenas`]): each arena keeps the free space of the bursts
//!   it served, so fewer arenas keep less;
//! - a trim after a large change ([`changed`]): once 1,000 ports or more started or stopped
//!   and nothing changed for a second, `malloc_trim` hands every arena's free pages back.
//!   It holds each arena's lock while it walks it, so the forwarding threads' allocations
//!   (a task per connection) may wait that long; it runs after large changes only, never
//!   on the forwarding path, and logs what it took and what it gave back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

/// How many malloc arenas the server's threads share (glibc's default: 8 per core).
///
/// With an arena per thread, each arena keeps the free space of the bursts it served
/// beside the table's long-lived records, so a table of 20,000 redirections held 2.45 KiB
/// of RSS each with the default against 2.16 with two arenas and 2.10 with one
/// (`bench/capacity.sh`, issue 32). Two, not one: the forwarding threads' allocations
/// (a task per connection) then contend less. `MALLOC_ARENA_MAX` in the environment wins.
const MALLOC_ARENAS: i32 = 2;

/// The size from which an allocation is a mapping of its own, given back whole when freed
/// (glibc's first value, which it raises to the largest block freed so far: after an
/// `apply`'s large buffers, they and the next ones come from the heap, between the table's
/// records, and stay there as free space). Fixed, so that a request's body, its parsed
/// items and its answers are mapped and unmapped. The forwarding threads' buffers (64 KiB)
/// are below it either way. `MALLOC_MMAP_THRESHOLD_` in the environment wins.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// How many ports a change (or the changes of one quiet second) must start or stop before
/// the heap is trimmed after it.
pub const TRIM_AFTER: u64 = 1_000;

/// How long nothing must change before the trim: a large `apply` is many changes in a row.
const QUIET: Duration = Duration::from_secs(1);

/// What [`limit_malloc_arenas`] told the allocator, for the start's log line: each setting
/// as a value, or the environment's variable that decides it instead.
struct Tuned {
    arenas: String,
    mmap_threshold: String,
}

/// Set once, by [`limit_malloc_arenas`].
static TUNED: std::sync::OnceLock<Tuned> = std::sync::OnceLock::new();

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] and fixes its mmap threshold at
/// [`MMAP_THRESHOLD`], each unless the environment sets it; called before any thread starts.
pub fn limit_malloc_arenas() {
    TUNED.get_or_init(|| Tuned {
        arenas: tune("MALLOC_ARENA_MAX", Tunable::Arenas, MALLOC_ARENAS),
        mmap_threshold: tune("MALLOC_MMAP_THRESHOLD_", Tunable::MmapThreshold, MMAP_THRESHOLD),
    });
}

/// Logs what [`limit_malloc_arenas`] set, once the server's start is past the errors that
/// end it with one line (its configuration, its data directory, its store).
pub fn log_settings() {
    if let Some(tuned) = TUNED.get() {
        info!(arenas = %tuned.arenas, mmap_threshold = %tuned.mmap_threshold, "malloc settings");
    }
}

/// The allocator's settings that the server sets.
enum Tunable {
    Arenas,
    MmapThreshold,
}

/// Sets `tunable` to `value` unless the environment's `variable` decides it; says which.
fn tune(variable: &str, tunable: Tunable, value: i32) -> String {
    if let Ok(theirs) = std::env::var(variable) {
        return format!("{variable}={theirs}");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let param = match tunable {
            Tunable::Arenas => libc::M_ARENA_MAX,
            Tunable::MmapThreshold => libc::M_MMAP_THRESHOLD,
        };
        // SAFETY: mallopt only sets a tunable of the allocator; no thread but this one runs.
        unsafe { libc::mallopt(param, value) };
        value.to_string()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (tunable, value);
        "the allocator's own (not glibc)".to_owned()
    }
}

/// Ports started or stopped since the last trim.
static CHANGED: AtomicU64 = AtomicU64::new(0);
/// Raised at each change, so that the waiting trim sees whether a second went by quietly.
static LAST_CHANGE: AtomicU64 = AtomicU64::new(0);
/// Whether a trim waits for its quiet second.
static WAITING: AtomicBool = AtomicBool::new(false);

/// Counts `ports` started or stopped; once [`TRIM_AFTER`] are, the heap is trimmed after a
/// quiet second. Call from a Tokio runtime.
pub fn changed(ports: usize) {
    // Only glibc has the trim.
    if ports == 0 || !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    LAST_CHANGE.fetch_add(1, Ordering::Relaxed);
    if CHANGED.fetch_add(ports as u64, Ordering::Relaxed) + (ports as u64) < TRIM_AFTER
        || WAITING.swap(true, Ordering::Relaxed)
    {
        return;
    }
    tokio::spawn(async {
        loop {
            let seen = LAST_CHANGE.load(Ordering::Relaxed);
            tokio::time::sleep(QUIET).await;
            if LAST_CHANGE.load(Ordering::Relaxed) == seen {
                break;
            }
        }
        let changed = CHANGED.swap(0, Ordering::Relaxed);
        WAITING.store(false, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || trim(changed)).await;
    });
}

/// Hands the free pages of every arena back to the system, and says what that gave.
fn trim(changed: u64) {
    let before = resident_kib();
    let began = Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
    let took = began.elapsed();
    let after = resident_kib();
    let (in_use, free) = heap_kib();
    info!(
        ports_changed = changed,
        took_ms = took.as_secs_f64() * 1e3,
        rss_kib_before = before,
        rss_kib_after = after,
        heap_in_use_kib = in_use,
        heap_free_kib = free,
        "gave the heap's free pages back to the system after a large change"
    );
}

/// The heap's bytes in use and free (kept by the allocator: what fragmentation costs), in
/// KiB, over every arena; zeros where glibc cannot tell.
fn heap_kib() -> (u64, u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters; it is thread-safe.
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks as u64 / 1024, info.fordblks as u64 / 1024)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    (0, 0)
}

/// The process's resident size in KiB (0 where `/proc` cannot tell).
fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096) / 1024
}
