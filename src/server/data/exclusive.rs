//! One forwarding thread woken per new connection on a busy port, not all of them.
//!
//! A port's one listening socket is in every forwarding thread's epoll set
//! ([`super::workers`]), and by default a new connection wakes every thread that sleeps on
//! it: one takes the connection, the others call `accept4`, find the queue empty and sleep
//! again, a context switch and a failed system call each, on a machine that is busy with
//! exactly those connections. `EPOLLEXCLUSIVE` makes the kernel wake only the first
//! waiting epoll set instead, but tokio registers every descriptor with `EPOLLET` and no
//! way to add the flag, and through an epoll set of our own nested in tokio's the flag
//! wakes every set anyway (the kernel counts an exclusive wake-up only for a thread blocked
//! in `epoll_wait` on the set that holds the listener itself).
//!
//! So the listener is moved, in place, to an exclusive registration in tokio's own set:
//! each forwarding thread finds its runtime's epoll descriptor once at start (the set that
//! lists a probe registered with that runtime alone, read from `/proc/self/fdinfo`), and
//! an accept loop that keeps losing races for its listener ([`LOSSES`] failed accepts) reads
//! the listener's registration (its events and the token tokio gave it) from the same
//! place, then deletes it and adds it again with the same token and `EPOLLIN | EPOLLET |
//! EPOLLEXCLUSIVE` (`EPOLL_CTL_MOD` refuses the flag). tokio sees the same token and the
//! same readiness, so nothing else changes: the registration is removed the usual way when
//! the loop drops the listener, and a connection queued during the swap is reported by the
//! new registration (adding polls the socket). Only busy ports move, so that a node with
//! thousands of idle ports reads no `fdinfo` for them (reading one costs a line per
//! descriptor in the thread's set), and a reading serves every port that turns busy within
//! the next second ([`registration_read_once`]). Where anything is missing (no `/proc`, an unknown
//! format), the registration stays as tokio made it: every thread is woken, as before.
//!
//! The kernel still hands the connection to every thread that is busy at that moment (an
//! exclusive registration of a set with no thread blocked on it takes the event and lets
//! the wake-up go on to the next set), so a busy thread may still try an empty queue; what
//! goes is waking a sleeping thread for a connection that another thread takes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How many failed accepts make an accept loop move its listener to an exclusive
/// registration: a port that has connections arriving at once on several threads.
pub const LOSSES: u32 = 16;

thread_local! {
    /// This thread's runtime's epoll descriptor; negative when unknown.
    static EPOLL: Cell<RawFd> = const { Cell::new(-1) };
}

/// Finds the epoll set of the runtime this thread runs; called once by each forwarding
/// thread, inside its runtime. Without it, [`make_exclusive`] does nothing.
pub fn find_epoll() {
    match probe() {
        Ok(Some(fd)) => EPOLL.with(|e| e.set(fd)),
        Ok(None) => tracing::debug!(
            "the forwarding thread's epoll set was not found; every thread is woken per connection"
        ),
        Err(err) => {
            tracing::debug!(error = %err, "cannot look for the forwarding thread's epoll set; every thread is woken per connection")
        }
    }
}

/// The epoll descriptor that lists an eventfd registered with this thread's runtime.
fn probe() -> io::Result<Option<RawFd>> {
    // SAFETY: eventfd makes a new descriptor, owned here.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let ino = inode(efd.as_raw_fd())?;
    // SAFETY: the AsyncFd owns the eventfd and keeps it open while registered.
    let registered =
        unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
    let fd = registered.as_raw_fd();
    for entry in fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Some(epfd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else { continue };
        let is_epoll = fs::read_link(entry.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventpoll]");
        if is_epoll && registration(epfd, fd, ino).is_some() {
            return Ok(Some(epfd));
        }
    }
    Ok(None)
}

/// The inode of a descriptor's file, which tells it from a descriptor that reused its number.
fn inode(fd: RawFd) -> io::Result<u64> {
    // SAFETY: fstat writes only into the struct passed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

/// `fd`'s registration in the epoll set `epfd` (its events and data), from the set's
/// `fdinfo` lines: `tfd: FD events: HEX data: HEX pos:N ino:HEX sdev:HEX`.
fn registration(epfd: RawFd, fd: RawFd, ino: u64) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")).ok()?;
    let found = registrations(&text).find(|&(f, _, _, i)| f == fd && i == ino);
    found.map(|(_, events, data, _)| (events, data))
}

/// Every registration of an epoll set's `fdinfo`: (descriptor, events, data, inode).
fn registrations(text: &str) -> impl Iterator<Item = (RawFd, u32, u64, u64)> + '_ {
    text.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "tfd:" {
            return None;
        }
        let fd = words.next()?.parse::<RawFd>().ok()?;
        let (_, events) = (words.next()?, u32::from_str_radix(words.next()?, 16).ok()?);
        let (_, data) = (words.next()?, u64::from_str_radix(words.next()?, 16).ok()?);
        let ino = u64::from_str_radix(words.find_map(|w| w.strip_prefix("ino:"))?, 16).ok()?;
        Some((fd, events, data, ino))
    })
}

/// How long a reading of this thread's epoll set answers for the listeners it lists.
const READING_LASTS: Duration = Duration::from_secs(1);

/// A reading of an epoll set, by descriptor: (events, data, inode).
type Reading = HashMap<RawFd, (u32, u64, u64)>;

thread_local! {
    /// The last reading of this thread's epoll set, and when it was made.
    static READING: RefCell<Option<(Instant, Reading)>> = const { RefCell::new(None) };
}

/// [`registration`] through the thread's last reading of its set, read again when it is
/// older than [`READING_LASTS`] or lacks `fd`: the set lists every port's listener (a line
/// each), and thousands of ports turning busy one after the other must not each read it
/// all (10,000 ports once cost 10,000 readings of 10,000 lines: 70 % of a node's CPU). A
/// reading holds for a listener as long as its inode matches: each listener is registered
/// once per thread, for as long as the thread accepts on it, so its token does not change.
fn registration_read_once(epfd: RawFd, fd: RawFd, ino: u64) -> Option<(u32, u64)> {
    READING.with(|reading| {
        let mut reading = reading.borrow_mut();
        let fresh = reading.as_ref().is_some_and(|(at, _)| at.elapsed() < READING_LASTS);
        let known =
            |r: &Reading| r.get(&fd).filter(|(_, _, i)| *i == ino).map(|&(events, data, _)| (events, data));
        if fresh {
            if let Some(found) = reading.as_ref().and_then(|(_, r)| known(r)) {
                return Some(found);
            }
        }
        let text = fs::read_to_string(format!("/proc/self/fdinfo/{epfd}")).ok()?;
        let read: Reading = registrations(&text).map(|(f, e, d, i)| (f, (e, d, i))).collect();
        let found = known(&read);
        *reading = Some((Instant::now(), read));
        found
    })
}

/// Moves a listener that this thread's runtime polls to an exclusive registration with the
/// same token; true when it is exclusive now. Must run on the thread whose runtime
/// registered it (its driver is not polling then).
pub fn make_exclusive(listener: &impl AsRawFd) -> io::Result<bool> {
    let epfd = EPOLL.with(Cell::get);
    if epfd < 0 {
        return Ok(false);
    }
    let fd = listener.as_raw_fd();
    let Some((events, data)) = registration_read_once(epfd, fd, inode(fd)?) else {
        return Ok(false);
    };
    if events & libc::EPOLLEXCLUSIVE as u32 != 0 {
        return Ok(true);
    }
    let ctl = |op, events: u32| {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: epoll_ctl reads the event passed; both descriptors are open.
        if unsafe { libc::epoll_ctl(epfd, op, fd, &mut event) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    ctl(libc::EPOLL_CTL_DEL, 0)?;
    let exclusive = (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32;
    match ctl(libc::EPOLL_CTL_ADD, exclusive) {
        Ok(()) => Ok(true),
        Err(err) => {
            // The registration tokio made, back as it was (the kernel took it a moment ago).
            ctl(libc::EPOLL_CTL_ADD, events)?;
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    /// A shared listener as each thread's AsyncFd holds it.
    struct Shared(Arc<TcpListener>);

    impl AsRawFd for Shared {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    /// Whether a thread sleeps in epoll_wait (state S, in one of the epoll_wait calls).
    fn sleeps_in_epoll(tid: i32) -> bool {
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        let call = fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        let nr = call.split_whitespace().next().and_then(|n| n.parse::<i64>().ok());
        state == Some('S')
            && matches!(nr, Some(n) if [libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441].contains(&n))
    }

    fn until_both_sleep(tids: &[i32]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tids.iter().all(|&t| sleeps_in_epoll(t)) {
            assert!(Instant::now() < deadline, "the accepting threads never went back to epoll_wait");
            std::thread::yield_now();
        }
    }

    /// How many times the threads went to sleep (their voluntary context switches): once
    /// after each wake-up, whether or not it found a connection.
    fn sleeps(tids: &[i32]) -> u64 {
        tids.iter()
            .map(|tid| {
                let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
                let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
                line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
            })
            .sum()
    }

    /// Two threads poll one listener, both asleep when each connection arrives: the failed
    /// accepts it costs, in total over `CONNECTIONS`, and the threads' wake-ups.
    fn failed_accepts(exclusive: bool) -> (u32, u64) {
        const CONNECTIONS: u32 = 20;
        let listener = Arc::new(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let failed = Arc::new(AtomicU32::new(0));
        let (accepted_tx, accepted) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (listener, failed, accepted_tx, tid_tx, stop) =
                    (listener.clone(), failed.clone(), accepted_tx.clone(), tid_tx.clone(), stop.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async move {
                        find_epoll();
                        // SAFETY: the AsyncFd holds the listener through the Arc.
                        let polled =
                            unsafe { AsyncFd::register_with_interest(Shared(listener), Interest::READABLE) }
                                .map_err(|e| e.into_parts().1)
                                .unwrap();
                        if exclusive {
                            assert!(make_exclusive(&polled).unwrap());
                        }
                        tid_tx.send(unsafe { libc::gettid() }).unwrap();
                        loop {
                            let mut ready = tokio::select! {
                                () = stop.cancelled() => return,
                                ready = polled.readable() => ready.unwrap(),
                            };
                            match ready.try_io(|l| l.get_ref().0.accept()) {
                                Ok(got) => accepted_tx.send(got.unwrap().0).unwrap(),
                                Err(_would_block) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    });
                })
            })
            .collect();
        let tids = [tid_rx.recv().unwrap(), tid_rx.recv().unwrap()];
        until_both_sleep(&tids);
        let slept_before = sleeps(&tids);
        for _ in 0..CONNECTIONS {
            until_both_sleep(&tids);
            let _client = TcpStream::connect(addr).unwrap();
            accepted.recv_timeout(Duration::from_secs(10)).expect("the connection was not accepted");
            // The wake-ups were made when the connection was queued: a woken thread has
            // counted its failed accept once it sleeps again.
            until_both_sleep(&tids);
        }
        let woken = sleeps(&tids) - slept_before;
        stop.cancel();
        for t in threads {
            t.join().unwrap();
        }
        (failed.load(Ordering::Relaxed), woken)
    }

    #[test]
    fn an_exclusive_listener_wakes_one_sleeping_thread_per_connection() {
        // The thread that takes a connection fails once, finding the queue empty after it;
        // a thread woken for nothing would fail once more, or, when the other one took the
        // connection before it ran (a busy machine), find nothing and sleep again: either
        // way it is woken, which its context switches count.
        let (failed, woken) = failed_accepts(true);
        assert_eq!(failed, 20, "a second thread was woken and tried to accept");
        // Without the flag both threads are woken for each connection.
        let (_, woken_shared) = failed_accepts(false);
        eprintln!("[exclusive] 20 connections woke the threads {woken} times with EPOLLEXCLUSIVE, {woken_shared} without");
        assert!(
            woken + 10 <= woken_shared,
            "20 connections woke the threads {woken} times with EPOLLEXCLUSIVE, {woken_shared} without"
        );
    }

    #[test]
    fn a_listener_moves_to_an_exclusive_registration_and_still_accepts() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            find_epoll();
            let epfd = EPOLL.with(Cell::get);
            assert!(epfd >= 0, "the runtime's epoll set was not found");
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            // SAFETY: the AsyncFd owns the listener.
            let polled = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
                .unwrap();
            let fd = polled.as_raw_fd();
            let (events, data) = registration(epfd, fd, inode(fd).unwrap()).expect("registered by tokio");
            assert_eq!(events & libc::EPOLLEXCLUSIVE as u32, 0);
            assert!(make_exclusive(&polled).unwrap());
            let (now, same_data) = registration(epfd, fd, inode(fd).unwrap()).expect("still registered");
            assert_ne!(now & libc::EPOLLEXCLUSIVE as u32, 0, "not exclusive: {now:x}");
            assert_eq!(same_data, data, "tokio's token changed");
            // tokio still wakes the listener's task for a connection, with the same token.
            let client = TcpStream::connect(addr).unwrap();
            let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                loop {
                    let mut ready = polled.readable().await.unwrap();
                    if let Ok(got) = ready.try_io(|l| l.get_ref().accept()) {
                        return got.unwrap();
                    }
                }
            })
            .await
            .expect("no wake-up for a connection after the move");
            assert_eq!(accepted.1, client.local_addr().unwrap());
            // Dropping it removes the registration the usual way.
            let ino = inode(fd).unwrap();
            drop(polled);
            assert!(registration(epfd, fd, ino).is_none());
        });
    }
}
