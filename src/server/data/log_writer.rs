//! The server's log lines, written to stderr in batches by a thread of their own.
//!
//! With the connection log on, every connection ends with a log line, thousands a second.
//! Handing each line to a writer thread one at a time (tracing-appender's `non_blocking`)
//! wakes that thread for nearly every line: a futex wake, a context switch and a `write(2)`
//! per connection, which measured about 20 µs of CPU per connection, a fifth of what
//! forwarding the connection costs. Here each thread appends its lines to a buffer of its
//! own (a lock only that thread and the writer ever take, so uncontended), and the writer
//! wakes at most once per [`BATCH`] to write every buffer at once.
//!
//! What that costs the reader of the log: a line may appear up to [`BATCH`] after it was
//! logged, and lines of different threads within one batch appear grouped by thread, not
//! interleaved by time (each line carries its own timestamp). Lines of one thread keep
//! their order. Nothing is dropped: a thread whose buffer grows past [`MAX_BUFFER`] (the
//! writer cannot keep up) writes it out itself, and [`Flushed`] writes what is left when
//! the server returns. A process killed with SIGKILL loses at most the last batch.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How long the writer waits after the first line of a batch before writing it.
pub const BATCH: Duration = Duration::from_millis(20);
/// A thread's buffer that grows past this is written by the thread itself.
const MAX_BUFFER: usize = 1 << 20;

type Buffer = Arc<Mutex<Vec<u8>>>;

/// What the threads and the writer share.
struct Shared {
    /// Every thread's buffer, registered at its first line.
    buffers: Mutex<Vec<Buffer>>,
    /// Set by the first line after a batch was written; the writer clears it.
    dirty: AtomicBool,
    /// Set while the writer thread runs; without it, lines are written at once.
    running: AtomicBool,
    /// Wakes the writer: a first line, or the stop.
    wake: Condvar,
    stop: Mutex<bool>,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// The bytes a buffer keeps once written out.
const KEEP: usize = 64 * 1024;

thread_local! {
    static MINE: Buffer = {
        let buffer = Buffer::default();
        if let Some(shared) = SHARED.get() {
            lock(&shared.buffers).push(buffer.clone());
        }
        buffer
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_stderr(bytes: &[u8]) {
    // Nowhere to report a failure to write the log.
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Starts the writer thread; lines go through it until the returned guard is dropped.
pub fn start() -> std::io::Result<Flushed> {
    let shared = SHARED
        .get_or_init(|| {
            Arc::new(Shared {
                buffers: Mutex::default(),
                dirty: AtomicBool::new(false),
                running: AtomicBool::new(false),
                wake: Condvar::new(),
                stop: Mutex::new(false),
            })
        })
        .clone();
    *lock(&shared.stop) = false;
    shared.running.store(true, Ordering::SeqCst);
    let writer = shared.clone();
    let thread = std::thread::Builder::new().name("log-writer".into()).spawn(move || run(&writer))?;
    Ok(Flushed { shared, thread: Some(thread) })
}

fn run(shared: &Shared) {
    let mut spare = Vec::new();
    loop {
        let stopping = {
            let mut stop = lock(&shared.stop);
            while !*stop && !shared.dirty.load(Ordering::Acquire) {
                stop = shared.wake.wait(stop).unwrap_or_else(|p| p.into_inner());
            }
            *stop
        };
        if !stopping {
            // Let the batch fill; a stop cuts the wait short.
            let stop = lock(&shared.stop);
            let _ = shared.wake.wait_timeout_while(stop, BATCH, |stop| !*stop);
        }
        // Cleared before the buffers are taken: a line appended after its buffer was taken
        // sets it again and is written with the next batch.
        shared.dirty.store(false, Ordering::Release);
        let buffers = lock(&shared.buffers).clone();
        for buffer in &buffers {
            std::mem::swap(&mut *lock(buffer), &mut spare);
            if !spare.is_empty() {
                write_stderr(&spare);
                spare.clear();
                // A burst (100,000 ports starting) grows a buffer to megabytes: keep what
                // an ordinary batch needs, not the burst's size, in every buffer it visits.
                spare.shrink_to(KEEP);
            }
        }
        if stopping {
            return;
        }
    }
}

/// Writes every line still buffered, and stops the writer, when dropped.
pub struct Flushed {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flushed {
    fn drop(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Lines logged from now on are written at once.
        self.shared.running.store(false, Ordering::SeqCst);
        for buffer in lock(&self.shared.buffers).iter() {
            let rest = std::mem::take(&mut *lock(buffer));
            write_stderr(&rest);
        }
    }
}

/// The `MakeWriter` of the server's log: each formatted line goes to the thread's buffer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lines;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        Lines
    }
}

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes whole lines to the log: to this thread's buffer while the writer runs.
pub fn write(bytes: &[u8]) {
    let Some(shared) = SHARED.get().filter(|s| s.running.load(Ordering::Relaxed)) else {
        return write_stderr(bytes);
    };
    let full = MINE.with(|mine| {
        let mut buffer = lock(mine);
        buffer.extend_from_slice(bytes);
        (buffer.len() > MAX_BUFFER).then(|| std::mem::take(&mut *buffer))
    });
    if let Some(full) = full {
        return write_stderr(&full);
    }
    // A read of a flag that stays set through the batch: no write to a shared line per
    // log line, only for the first line of a batch.
    if !shared.dirty.load(Ordering::Relaxed) && !shared.dirty.swap(true, Ordering::AcqRel) {
        let _stop = lock(&shared.stop);
        shared.wake.notify_one();
    }
}
