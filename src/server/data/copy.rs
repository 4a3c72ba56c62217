//! Moving bytes between the two sockets of a forwarded connection, at the kernel's speed.
//!
//! Each direction is a pump that waits for its source to be readable, moves what is there,
//! and goes back to waiting. Three choices make it fast and small:
//!
//! - **No buffer while idle.** A pump takes a 64 KiB buffer from a per-thread pool only
//!   when its source has data, and gives it back as soon as the source is drained, so an
//!   idle connection holds no buffer at all (HAProxy frees empty buffers the same way;
//!   tokio's `copy_bidirectional` keeps two buffers per connection for its whole life).
//! - **splice(2) for bulk.** When a read fills the whole buffer, more data is waiting: the
//!   direction is moving bulk, and it switches to splice through a pipe (sized to 1 MiB
//!   with `F_SETPIPE_SZ`), which moves pages between the sockets without copying them
//!   through user space. Small request/response exchanges never fill the buffer and stay
//!   on the cheap path: forcing splice on them costs latency. Pipes, too, come from a
//!   per-thread pool for the length of a burst and go back empty, so an idle connection
//!   holds no pipe either. If the kernel refuses to splice, or grants only a small pipe,
//!   the pump copies, and bytes already in a pipe are copied out, never dropped.
//! - **No lock, no allocation per read.** The pool is thread-local; the activity clock is
//!   one relaxed atomic store per read.
//!
//! A redirection with a bandwidth limit ([`super::bandwidth`]) gives its pumps the shared
//! buckets: before each read or splice a pump is granted a number of bytes and moves no
//! more (a splice's length is the grant), gives back what it did not move, and when the
//! bucket is empty sleeps, holding no buffer and no pipe, until it holds enough. A read
//! that fills what it was granted counts as a full read: a limited bulk transfer still
//! moves by splice. A pump without a limit asks nothing.
//!
//! Ends are passed on faithfully: a FIN (end of stream) becomes `shutdown(Write)` on the
//! other socket while the opposite direction keeps flowing; an error such as a reset
//! becomes a reset on the other socket too (`SO_LINGER` 0 then close), so that a truncated
//! answer never looks complete to the other side.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFuture;

use super::bandwidth::{Bandwidth, Direction, Grant};

/// The size of a copy buffer.
const BUFFER: usize = 64 * 1024;
/// How many free buffers, and free pipes, a thread keeps for reuse.
const POOL: usize = 32;
/// The capacity asked of a splice pipe (the kernel's default maximum, `fs.pipe-max-size`).
const PIPE_SIZE: i32 = 1 << 20;

/// How long a connection may live in each of its states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No byte in either direction for this long closes the connection.
    pub idle: Duration,
    /// Once one direction has ended, the other must end within this.
    pub half_closed: Duration,
}

/// What happened to a forwarded connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Bytes from the client to the instance.
    pub up: u64,
    /// Bytes from the instance to the client.
    pub down: u64,
    /// Why it ended, when it was not both sides finishing cleanly.
    pub cut: Option<Cut>,
    /// Whether the client's direction ended first (it sent its FIN before the application).
    pub client_ended_first: bool,
}

/// Why a connection was cut rather than finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A side reset or failed; the other side was reset too.
    Error,
    /// No byte moved for the idle timeout.
    Idle,
    /// A half-closed connection outlived the half-close timeout.
    HalfClosed,
    /// The redirection was removed, or the server's drain timeout ran out.
    Closed,
}

/// Forwards between `client` and `upstream` until both directions end, or a cut.
/// `counted` receives the bytes of each direction as they move (up, then down);
/// `bandwidth`, when the redirection has a limit, is the buckets its connections share.
pub async fn bidirectional(
    client: &TcpStream,
    upstream: &TcpStream,
    timeouts: Timeouts,
    counted: [&AtomicU64; 2],
    bandwidth: Option<&Bandwidth>,
    mut close: Pin<&mut WaitForCancellationFuture<'_>>,
) -> Outcome {
    let clock = Clock::new();
    // One timer for the connection's whole life, moved as its deadline moves.
    let timer = tokio::time::sleep(timeouts.idle);
    tokio::pin!(timer);
    let up = Pump::new(client, upstream, &clock, counted[0], bandwidth.map(|b| (b, Direction::In)));
    let down = Pump::new(upstream, client, &clock, counted[1], bandwidth.map(|b| (b, Direction::Out)));
    let up = up.run();
    let down = down.run();
    tokio::pin!(up, down);

    let mut outcome = Outcome::default();
    // Phase 1: both directions flowing.
    let first = tokio::select! {
        r = &mut up => Some((r, true)),
        r = &mut down => Some((r, false)),
        _ = clock.expiry(timeouts.idle, None, timer.as_mut()) => None,
        () = &mut close => return cut(client, upstream, outcome, Cut::Closed),
    };
    let Some((result, up_done)) = first else {
        return cut(client, upstream, outcome, Cut::Idle);
    };
    outcome.client_ended_first = up_done;
    match result {
        Ok(n) if up_done => outcome.up = n,
        Ok(n) => outcome.down = n,
        Err(_) => return cut(client, upstream, outcome, Cut::Error),
    }
    // Phase 2: one direction has ended; the other gets the half-close timeout.
    let rest = async {
        if up_done {
            (&mut down).await
        } else {
            (&mut up).await
        }
    };
    let half_closed = Instant::now().checked_add(timeouts.half_closed);
    let second = tokio::select! {
        r = rest => Ok(r),
        why = clock.expiry(timeouts.idle, half_closed, timer.as_mut()) => Err(why),
        () = &mut close => Err(Cut::Closed),
    };
    match second {
        Ok(Ok(n)) if up_done => outcome.down = n,
        Ok(Ok(n)) => outcome.up = n,
        Ok(Err(_)) => return cut(client, upstream, outcome, Cut::Error),
        Err(why) => return cut(client, upstream, outcome, why),
    }
    outcome
}

/// Resets both sockets: the peers see a reset, not a clean end of stream.
fn cut(a: &TcpStream, b: &TcpStream, outcome: Outcome, why: Cut) -> Outcome {
    reset(a);
    reset(b);
    Outcome { cut: Some(why), ..outcome }
}

/// Makes the socket's close a reset (`SO_LINGER` 0): its peer must not take a cut for an end.
pub fn reset(socket: &TcpStream) {
    let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// The last time a byte moved, and whether a direction has ended: shared by both pumps.
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
    one_ended: AtomicBool,
}

impl Clock {
    fn new() -> Clock {
        Clock { start: Instant::now(), last_ms: AtomicU64::new(0), one_ended: AtomicBool::new(false) }
    }

    /// Records that a direction ended; true when it is the first to.
    fn first_to_end(&self) -> bool {
        !self.one_ended.swap(true, Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle` ([`Cut::Idle`]), or at `end` if that
    /// comes first ([`Cut::HalfClosed`]), waiting on `timer`.
    async fn expiry(&self, idle: Duration, end: Option<Instant>, mut timer: Pin<&mut Sleep>) -> Cut {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let (deadline, why) = match (last.checked_add(idle), end) {
                (Some(idle_at), Some(end)) if end < idle_at => (end, Cut::HalfClosed),
                (Some(idle_at), _) => (idle_at, Cut::Idle),
                (None, Some(end)) => (end, Cut::HalfClosed),
                (None, None) => return std::future::pending().await,
            };
            if Instant::now() >= deadline {
                return why;
            }
            timer.as_mut().reset(deadline.into());
            timer.as_mut().await;
        }
    }
}

/// One direction of a connection.
struct Pump<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    clock: &'a Clock,
    counted: &'a AtomicU64,
    moved: u64,
    /// The redirection's bandwidth buckets and this pump's direction, when it is limited.
    limit: Option<(&'a Bandwidth, Direction)>,
}

impl<'a> Pump<'a> {
    fn new(
        src: &'a TcpStream,
        dst: &'a TcpStream,
        clock: &'a Clock,
        counted: &'a AtomicU64,
        limit: Option<(&'a Bandwidth, Direction)>,
    ) -> Pump<'a> {
        Pump { src, dst, clock, counted, moved: 0, limit }
    }

    /// How many of `want` bytes the bandwidth limit lets this pump move now, waiting for
    /// the bucket if it is empty; `want` when unlimited.
    async fn allowance(&self, want: usize) -> usize {
        let Some((bandwidth, direction)) = self.limit else { return want };
        loop {
            match bandwidth.grant(direction, want) {
                Grant::Bytes(n) => return n,
                // Boxed: the timer sizes the pump's future only on the limited path.
                Grant::Wait(wait) => Box::pin(tokio::time::sleep(wait)).await,
            }
        }
    }

    /// The same without waiting: `None` when the bucket is empty.
    fn allowance_now(&self, want: usize) -> Option<usize> {
        let Some((bandwidth, direction)) = self.limit else { return Some(want) };
        match bandwidth.grant(direction, want) {
            Grant::Bytes(n) => Some(n),
            Grant::Wait(_) => None,
        }
    }

    /// Gives back the part of a grant that was not moved.
    fn give_back(&self, unused: usize) {
        if let Some((bandwidth, direction)) = self.limit {
            bandwidth.give_back(direction, unused);
        }
    }

    /// Moves bytes until the source ends, then shuts the destination's write half.
    async fn run(mut self) -> io::Result<u64> {
        let mut bulk = false;
        // Once refused, splice is not tried again on this direction.
        let mut can_splice = true;
        loop {
            let ended = if bulk {
                match self.splice_burst().await? {
                    Burst::Ended => true,
                    Burst::Drained => false,
                    // This kernel, socket or pipe budget cannot splice: copy from now on
                    // (what was already in the pipe has been copied out).
                    Burst::Refused => {
                        bulk = false;
                        can_splice = false;
                        false
                    }
                }
            } else {
                let (ended, full) = self.copy_burst().await?;
                // A full buffer means bulk: move it with splice from now on.
                bulk = full && can_splice;
                ended
            };
            // The first direction to end passes its FIN on at once; the second needs no
            // shutdown: both sockets are closed right after, both receive queues drained,
            // and close sends the same FIN (one system call less per connection).
            if ended {
                if self.clock.first_to_end() {
                    // The peer may already be gone; the other direction reports that.
                    let _ = SockRef::from(self.dst).shutdown(Shutdown::Write);
                }
                return Ok(self.moved);
            }
        }
    }

    /// Waits for data, then copies until the source is drained; holds a buffer only meanwhile.
    /// Returns (source ended, a read filled the buffer).
    async fn copy_burst(&mut self) -> io::Result<(bool, bool)> {
        self.src.readable().await?;
        let allowed = self.allowance(BUFFER).await;
        let mut buf = Buffer::take();
        let want = allowed.min(buf.len());
        let fd = self.src.as_raw_fd();
        loop {
            // A short read means the socket's receive queue is empty: say so to tokio right
            // away (a WouldBlock from inside `try_io` clears the readiness it saw before the
            // read, and only that one), which saves the read that would only return EAGAIN:
            // one system call per request in request/response traffic.
            let mut short = 0;
            let read = self.src.try_io(Interest::READABLE, || {
                let n = recv(fd, &mut buf[..want])?;
                if n > 0 && n < want {
                    short = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let n = match read {
                Ok(0) => {
                    self.give_back(want);
                    return Ok((true, false));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => short,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.give_back(want);
                    return Ok((false, false));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.give_back(want);
                    return Err(e);
                }
            };
            self.give_back(want - n);
            self.clock.touch();
            write_all(self.dst, &buf[..n]).await?;
            self.moved += n as u64;
            self.counted.fetch_add(n as u64, Ordering::Relaxed);
            // Filled what it asked: bulk (under a bandwidth limit, what it was granted).
            if n == want {
                return Ok((false, true));
            }
            if short > 0 {
                return Ok((false, false));
            }
        }
    }

    /// Waits for data, then splices it through a pipe until the source is drained; holds a
    /// pipe (from the thread's pool) only meanwhile, so an idle connection holds none.
    async fn splice_burst(&mut self) -> io::Result<Burst> {
        self.src.readable().await?;
        let mut allowed = Some(self.allowance(PIPE_SIZE as usize).await);
        let Some(mut pipe) = Pipe::take() else {
            self.give_back(allowed.unwrap_or(0));
            return Ok(Burst::Refused);
        };
        let src_fd = self.src.as_raw_fd();
        loop {
            // The first grant was waited for; a later one is taken if the bucket holds it,
            // else the burst ends with its pipe empty and the next one waits, holding none.
            let Some(granted) = allowed.take().or_else(|| self.allowance_now(pipe.capacity)) else {
                return Ok(Burst::Drained);
            };
            let len = granted.min(pipe.capacity);
            let pipe_in = pipe.write.as_raw_fd();
            let spliced = self.src.try_io(Interest::READABLE, || splice(src_fd, pipe_in, len));
            self.give_back(granted - spliced.as_ref().map_or(0, |n| *n));
            let n = match spliced {
                Ok(0) => return Ok(Burst::Ended),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing entered the pipe: copying takes over with nothing lost.
                Err(e) if cannot_splice(&e) => return Ok(Burst::Refused),
                Err(e) => {
                    pipe.dirty = true;
                    return Err(e);
                }
            };
            self.clock.touch();
            pipe.dirty = true;
            let spliced = self.pipe_out(&pipe, n).await?;
            pipe.dirty = false;
            self.moved += n as u64;
            if !spliced {
                return Ok(Burst::Refused);
            }
        }
    }

    /// Moves the `n` bytes in `pipe` to the destination; false if the destination refused
    /// splice, in which case they were copied instead (never left behind in the pipe).
    async fn pipe_out(&mut self, pipe: &Pipe, n: usize) -> io::Result<bool> {
        let (pipe_out, dst_fd) = (pipe.read.as_raw_fd(), self.dst.as_raw_fd());
        let mut left = n;
        while left > 0 {
            self.dst.writable().await?;
            match self.dst.try_io(Interest::WRITABLE, || splice(pipe_out, dst_fd, left)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    left -= m;
                    self.counted.fetch_add(m as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                }
                Err(e) if cannot_splice(&e) => {
                    let mut buf = Buffer::take();
                    while left > 0 {
                        let want = left.min(buf.len());
                        let got = read(pipe_out, &mut buf[..want])?;
                        if got == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        write_all(self.dst, &buf[..got]).await?;
                        left -= got;
                        self.counted.fetch_add(got as u64, Ordering::Relaxed);
                    }
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// How a burst of splicing ended.
enum Burst {
    /// The source ended.
    Ended,
    /// The source has nothing more for now.
    Drained,
    /// Splice is refused here; the direction copies from now on.
    Refused,
}

/// Whether an error says splice cannot be used here (rather than that a socket failed).
fn cannot_splice(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

/// Writes all of `bytes` to `dst`.
pub async fn write_all(dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match dst.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is an open socket.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is an open pipe.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (owned by the caller's
    // sockets and pipe); null offsets are required for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking pipe that carries a burst of one direction's bytes in splice mode,
/// taken from the thread's pool for the burst and given back empty after it, as HAProxy's
/// `maxpipes` pool does: a connection that once moved bulk does not keep four descriptors
/// and their kernel buffers for the rest of its life.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// The pipe's capacity, as the kernel set it.
    capacity: usize,
}

impl Pipe {
    /// An empty pipe from the thread's pool, or a new one; `None` if no pipe worth
    /// splicing through can be had (out of descriptors, or the user's pipe budget spent).
    fn take() -> Option<Lent> {
        let reused = PIPES.with(|p| {
            let mut pool = p.borrow_mut();
            let pipe = pool.free.pop();
            pool.unused = pool.unused.min(pool.free.len());
            pipe
        });
        let pipe = reused.or_else(|| Pipe::new().ok().flatten())?;
        Some(Lent { pipe: Some(pipe), dirty: false })
    }

    fn new() -> io::Result<Option<Pipe>> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and now owned here alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per splice. The kernel may refuse (`fs.pipe-max-size`)
        // or, once the user's `fs.pipe-user-pages-soft` budget is spent, hand out pipes of
        // a page or two: the capacity actually granted is read back, and a pipe smaller
        // than a copy buffer is not worth a splice (copying is then cheaper).
        // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ on an open pipe descriptor.
        let capacity = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if capacity < BUFFER as i32 {
            return Ok(None);
        }
        Ok(Some(Pipe { read, write, capacity: capacity as usize }))
    }
}

/// A pipe lent by the thread's pool for one burst: given back on drop if it is empty.
struct Lent {
    pipe: Option<Pipe>,
    /// Bytes may be left inside: closed on drop rather than given back to the pool.
    dirty: bool,
}

impl std::ops::Deref for Lent {
    type Target = Pipe;
    fn deref(&self) -> &Pipe {
        self.pipe.as_ref().expect("a lent pipe is only taken back by its drop")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.dirty {
            return;
        }
        if let Some(pipe) = self.pipe.take() {
            PIPES.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.free.len() < POOL {
                    pool.free.push(pipe);
                }
            });
        }
    }
}

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static PIPES: RefCell<PipePool> = const { RefCell::new(PipePool { free: Vec::new(), unused: 0 }) };
}

/// A thread's free pipes, and how many of them went unused since the last trim.
struct PipePool {
    free: Vec<Pipe>,
    /// The fewest free pipes since the last trim: that many were not needed.
    unused: usize,
}

/// Closes the thread's free pipes that no burst needed since the last call; called by each
/// forwarding thread every tick, so that a pipe unused for two ticks is closed and a quiet
/// server holds no pipe at all.
pub fn trim_pipes() {
    PIPES.with(|p| {
        let mut pool = p.borrow_mut();
        let unused = pool.unused;
        // The oldest first: the pool is a stack, its bottom is what nothing took lately.
        pool.free.drain(..unused);
        pool.unused = pool.free.len();
    });
}

/// A copy buffer from the thread's pool, returned to it on drop.
struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    fn take() -> Buffer {
        let reused = FREE.with(|f| f.borrow_mut().pop());
        Buffer(Some(reused.unwrap_or_else(|| vec![0; BUFFER].into_boxed_slice())))
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            FREE.with(|f| {
                let mut free = f.borrow_mut();
                if free.len() < POOL {
                    free.push(buf);
                }
            });
        }
    }
}
