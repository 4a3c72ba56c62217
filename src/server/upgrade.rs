//! Upgrades that drop nothing: the listening sockets pass from the old process to the new.
//!
//! On SIGUSR2 the server starts the binary now installed at the path it was started from,
//! with the same arguments, and hands it every listening socket it has (the control API's
//! and each public port's, UDP ones included) and its lock on the data directory, as inherited descriptors
//! named in the environment (`TCP_REDIRS_HANDOVER`). The new process takes them instead of
//! binding: a socket is never closed, so no connection is ever refused, and the connections
//! already queued on a socket are accepted by whichever process polls it next. Once the new
//! process says it is ready (one byte on a pipe, after its `control API listening` line),
//! the old one stops accepting and lets its open connections finish within the drain
//! timeout, as on SIGTERM. A UDP port's socket is read by both processes until the old one
//! stops it; the old one's flows end then, and a client's next datagram starts a flow in
//! the new process (from another gateway address: the instance sees a new peer). If the new process exits or does not become ready in time, the
//! old one kills it, logs why, and goes on serving as if nothing happened.
//!
//! While the new process starts, the old one stops taking API calls (they wait in the
//! control socket's queue and are answered by the new process): no write can then slip
//! between the new process's load of the store and the old one's exit. Public ports keep
//! forwarding throughout. This is how HAProxy's master-worker reload and Envoy's hot
//! restart keep their sockets; frp, rathole and bore close theirs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::server::data::ports::inheritable;
use crate::server::state::live::PortSockets;

/// The environment variable that names the inherited descriptors.
pub const ENV: &str = "TCP_REDIRS_HANDOVER";
/// How long a new process may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the old process hands over, as descriptor numbers valid in the new one.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Handover {
    /// The control API's listening socket.
    api: RawFd,
    /// The data directory's lock file (its `flock` goes with it).
    lock: RawFd,
    /// Where to write one byte once ready.
    ready: RawFd,
    /// Each public port's listening sockets.
    ports: Vec<(SocketAddr, Vec<RawFd>)>,
    /// Each public UDP port's socket (absent from an old process that had none).
    #[serde(default)]
    udp: Vec<(SocketAddr, RawFd)>,
    /// In steered mode, the program's link, the program, its two tables (in
    /// `steer::Fds::into_array`'s order) and the steered sockets (TCP listeners, then the
    /// forwarding threads' UDP sockets).
    #[serde(default)]
    steering: Option<([RawFd; 4], Vec<RawFd>)>,
}

/// What a new process received from the one it replaces.
pub struct Inherited {
    /// The control API's listening socket.
    pub api: TcpListener,
    /// The data directory's lock, already held.
    pub lock: File,
    /// Each public port's listening sockets.
    pub ports: HashMap<SocketAddr, Vec<TcpListener>>,
    /// Each public UDP port's socket.
    pub udp: HashMap<SocketAddr, UdpSocket>,
    /// In steered mode, the steering's descriptors and the steered sockets (TCP and UDP).
    pub steering: Option<([OwnedFd; 4], Vec<OwnedFd>)>,
    ready: File,
}

impl Inherited {
    /// The sockets handed over by the old process, when this process is an upgrade.
    pub fn take() -> Result<Option<Inherited>> {
        let Some(text) = std::env::var_os(ENV) else { return Ok(None) };
        let handover: Handover = serde_json::from_str(&text.to_string_lossy())
            .with_context(|| format!("{ENV} is not what an old tcp-redirs process writes"))?;
        // SAFETY: the old process opened these descriptors for this one and passed their
        // numbers; nothing else in this process owns them.
        let owned = |fd: RawFd| -> Result<OwnedFd> {
            if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                bail!("{ENV} names descriptor {fd}, which this process does not have");
            }
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let listener = |fd: RawFd| -> Result<TcpListener> {
            let listener = TcpListener::from(owned(fd)?);
            listener.set_nonblocking(true)?;
            listener.local_addr().with_context(|| format!("descriptor {fd} is not a listening socket"))?;
            Ok(listener)
        };
        let mut ports = HashMap::new();
        for (addr, fds) in handover.ports {
            ports.insert(addr, fds.into_iter().map(listener).collect::<Result<_>>()?);
        }
        let mut udp = HashMap::new();
        for (addr, fd) in handover.udp {
            let socket = UdpSocket::from(owned(fd)?);
            socket.set_nonblocking(true)?;
            socket.local_addr().with_context(|| format!("descriptor {fd} is not a bound socket"))?;
            udp.insert(addr, socket);
        }
        let steering = match handover.steering {
            Some(([a, b, c, d], listeners)) => Some((
                [owned(a)?, owned(b)?, owned(c)?, owned(d)?],
                listeners.into_iter().map(owned).collect::<Result<_>>()?,
            )),
            None => None,
        };
        Ok(Some(Inherited {
            steering,
            api: listener(handover.api)?,
            lock: File::from(owned(handover.lock)?),
            ready: File::from(owned(handover.ready)?),
            ports,
            udp,
        }))
    }

    /// Tells the old process that this one serves: it stops accepting and drains.
    pub fn ready(&mut self) {
        let _ = self.ready.write_all(b"R");
    }
}

/// Starts `exe` with the sockets and waits until it says it is ready; its process id.
///
/// On failure the new process is killed and the error says why; the caller's sockets are
/// untouched (only duplicates were passed).
pub async fn hand_over(exe: &Path, api: &TcpListener, lock: &File, ports: PortSockets) -> Result<u32> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors it creates; both are ours.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make the readiness pipe");
    }
    let (mut ready_read, ready_write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let api_fd = inheritable(api.as_raw_fd())?;
    let lock_fd = inheritable(lock.as_raw_fd())?;
    let ready_fd = inheritable(ready_write.as_raw_fd())?;
    drop(ready_write);
    let handover = Handover {
        api: api_fd.as_raw_fd(),
        lock: lock_fd.as_raw_fd(),
        ready: ready_fd.as_raw_fd(),
        ports: ports
            .tcp
            .iter()
            .map(|(addr, fds)| (*addr, fds.iter().map(AsRawFd::as_raw_fd).collect()))
            .collect(),
        udp: ports.udp.iter().map(|(addr, fd)| (*addr, fd.as_raw_fd())).collect(),
        steering: ports.steering.as_ref().map(|(fds, listeners)| {
            (fds.each_ref().map(AsRawFd::as_raw_fd), listeners.iter().map(AsRawFd::as_raw_fd).collect())
        }),
    };
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV, serde_json::to_string(&handover)?)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    // The new process has its copies; ours close here, and the pipe's write end with them,
    // so that the read below ends if the new process dies.
    drop((api_fd, lock_fd, ready_fd, ports));
    let waited = tokio::task::spawn_blocking(move || {
        let mut byte = [0u8; 1];
        ready_read.read(&mut byte)
    });
    match tokio::time::timeout(READY_TIMEOUT, waited).await {
        Ok(Ok(Ok(1))) => Ok(child.id()),
        Ok(Ok(Ok(_) | Err(_))) | Ok(Err(_)) => Err(failed(&mut child, "exited before it was ready")),
        Err(_) => Err(failed(&mut child, &format!("was not ready within {}s", READY_TIMEOUT.as_secs()))),
    }
}

/// Kills and reaps a new process that failed; the error that says how it ended.
fn failed(child: &mut Child, what: &str) -> anyhow::Error {
    let _ = child.kill();
    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
    anyhow::anyhow!("the new process (pid {}) {what} ({status}); see its log lines above", child.id())
}
