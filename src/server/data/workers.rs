//! The forwarding threads: one single-threaded runtime per core, sharing nothing per byte.
//!
//! Forwarded connections do not run on the runtime that serves the control API. Each
//! forwarding thread runs its own current-thread tokio runtime, with its own epoll set and
//! timer wheel, and every public port's one listening socket is in every thread's epoll
//! set: a new connection wakes the threads, the first to call `accept` takes it (a busy
//! thread takes several in a row), and a connection then lives its whole life on the
//! thread that accepted it. Once a port is busy its listener is registered exclusive in
//! each thread's set ([`super::exclusive`]), so that a new connection wakes one sleeping
//! thread, not all of them. This measured 0.85x the CPU per new connection of one
//! `SO_REUSEPORT` listener per thread, which spread connections evenly and so left each
//! thread half the events per wake-up, and it makes a port cost one descriptor whatever
//! the number of threads. Nothing wakes another thread on the way (a work-stealing
//! runtime hands readiness from the thread that polled it to whichever worker runs the
//! task, and parks and unparks workers on futexes), the copy buffers come from that
//! thread's own pool, and every thread stays busy under load the way HAProxy's threads
//! are, instead of one thread polling for all. The control API, the health checks and the
//! store stay on the main runtime, where a slow disk cannot delay a byte.

use std::io;
use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// How often an idle forwarding thread wakes up (see [`keep_timer_awake`]).
const TICK: Duration = Duration::from_millis(500);

/// The forwarding threads; they stop when this is dropped.
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` forwarding threads, or one per available core when `None`.
    pub fn start(count: Option<NonZeroUsize>) -> io::Result<Workers> {
        let count = count.or_else(|| std::thread::available_parallelism().ok()).map_or(1, NonZeroUsize::get);
        // Built in place, so that an error half-way stops the threads already started.
        let mut workers = Workers { handles: Vec::with_capacity(count), stop: CancellationToken::new() };
        super::metrics::set_thread_count(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = workers.stop.clone();
            std::thread::Builder::new().name(format!("forward-{i}")).spawn(move || {
                super::metrics::set_thread_slot(i);
                // The runtime runs its tasks only inside `block_on`: until the server stops.
                runtime.block_on(async {
                    super::exclusive::find_epoll();
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = keep_timer_awake() => {}
                    }
                });
            })?;
        }
        Ok(workers)
    }

    /// The runtimes of the threads.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// Keeps the thread's next timer wake-up less than a second away.
///
/// tokio wakes its own driver, with an eventfd write and one more `epoll_wait`, whenever
/// a new timer is due before the driver's next planned wake-up. An idle thread plans none,
/// so every connection's first timer (its connect timeout) would cost that; with this
/// tick planned, the connections' timers (a second or more) never come first.
///
/// The tick also closes the thread's splice pipes that went unused ([`super::copy::trim_pipes`]).
async fn keep_timer_awake() {
    loop {
        tokio::time::sleep(TICK).await;
        super::copy::trim_pipes();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
