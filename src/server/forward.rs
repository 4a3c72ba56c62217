//! The forwarding loop: accept on a public port, connect to an instance, copy both ways.
//!
//! Each redirection owns one accept task; each accepted connection gets its own task that
//! connects to one of the application's instances (round robin, moving on to the next
//! instance when one refuses or does not answer in time) and then copies bytes both ways
//! until both directions have ended. The copy passes a half-close on: when one side shuts
//! its write half, the other side's write half is shut and the opposite direction keeps
//! flowing, so a request/response protocol that signals the end of its request with FIN
//! still gets its answer (bore and frp once lost these answers).
//!
//! The bytes themselves are moved by [`super::copy`]. Nothing here takes a lock or
//! allocates per byte: the instance list is read once per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::access::Access;
use super::balance::{Open, Pool};
use super::copy::{self, Timeouts};
use super::metrics::RedirMetrics;
use crate::wire::{RedirLimits, MAX_LIMIT_SECS, MAX_QUOTA};
use prometheus_client::metrics::gauge::Gauge;

/// How long to wait before accepting again after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often a redirection whose port could not be bound tries again.
const REBIND_EVERY: Duration = Duration::from_secs(5);

/// One redirection's public side: what the accept task needs.
pub struct Port {
    /// The namespace, for logs.
    pub namespace: String,
    /// Where to bind when no listener is handed over.
    pub addr: SocketAddr,
    /// The application's instances.
    pub targets: Arc<Pool>,
    /// Cancelled to stop accepting: the redirection is removed or the server stops.
    pub stop_accepting: CancellationToken,
    /// Cancelled to close the open connections: the redirection is removed or the drain ended.
    pub close_connections: CancellationToken,
    /// Whether the port is bound right now.
    pub bound: Arc<AtomicBool>,
    /// Tracks the connection tasks, so the server can wait for them at exit.
    pub connections: TaskTracker,
    /// How long connections may take and last.
    pub limits: Limits,
    /// The redirection's metrics.
    pub metrics: Arc<RedirMetrics>,
    /// Who may connect, and whether to send the PROXY header.
    pub access: Arc<Access>,
}

/// The time limits of a redirection's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long an instance may take to accept before the next one is tried.
    pub connect: Duration,
    /// The idle and half-close timeouts of an established connection.
    pub established: Timeouts,
    /// The most connections open at once.
    pub max_connections: Option<u32>,
    /// The most new connections per second.
    pub max_rate: Option<u32>,
}

impl Limits {
    /// These limits with the ones `overrides` sets, each checked to be from 1 s to a year.
    pub fn with(self, overrides: &RedirLimits) -> Result<Limits, String> {
        let secs = |value: Option<u64>, base: Duration, what: &str| match value {
            Some(s) if !(1..=MAX_LIMIT_SECS).contains(&s) => {
                Err(format!("the {what} must be from 1 to {MAX_LIMIT_SECS} seconds, not {s}"))
            }
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(base),
        };
        let quota = |value: Option<u32>, base: Option<u32>, what: &str| match value {
            Some(n) if !(1..=MAX_QUOTA).contains(&n) => {
                Err(format!("{what} must be from 1 to {MAX_QUOTA}, not {n}"))
            }
            Some(n) => Ok(Some(n)),
            None => Ok(base),
        };
        Ok(Limits {
            max_connections: quota(overrides.max_connections, self.max_connections, "maxConnections")?,
            max_rate: quota(overrides.max_connections_per_second, self.max_rate, "maxConnectionsPerSecond")?,
            connect: secs(overrides.connect_timeout, self.connect, "connect timeout")?,
            established: Timeouts {
                idle: secs(overrides.idle_timeout, self.established.idle, "idle timeout")?,
                half_closed: secs(
                    overrides.half_close_timeout,
                    self.established.half_closed,
                    "half-close timeout",
                )?,
            },
        })
    }

    /// The limits as the API shows them, in seconds.
    pub fn to_wire(self) -> RedirLimits {
        RedirLimits {
            connect_timeout: Some(self.connect.as_secs()),
            idle_timeout: Some(self.established.idle.as_secs()),
            half_close_timeout: Some(self.established.half_closed.as_secs()),
            max_connections: self.max_connections,
            max_connections_per_second: self.max_rate,
        }
    }
}

/// Runs a redirection's public port until cancelled, binding it first if `listener` is `None`.
///
/// Returning drops the listener, which is what closes the port at once on removal.
pub async fn run(port: Port, mut listener: Option<TcpListener>) {
    loop {
        let current = match listener.take() {
            Some(l) => l,
            None => match super::ports::bind(port.addr) {
                Ok(l) => l,
                Err(err) => {
                    warn!(namespace = %port.namespace, addr = %port.addr, error = %err,
                        "cannot bind the redirection's port (is another program using it?); retrying every {}s", REBIND_EVERY.as_secs());
                    tokio::select! {
                        _ = port.stop_accepting.cancelled() => return,
                        _ = tokio::time::sleep(REBIND_EVERY) => continue,
                    }
                }
            },
        };
        port.bound.store(true, Ordering::Relaxed);
        debug!(namespace = %port.namespace, addr = %port.addr, "accepting");
        accept_loop(&port, current).await;
        port.bound.store(false, Ordering::Relaxed);
        return;
    }
}

async fn accept_loop(port: &Port, listener: TcpListener) {
    let mut rate = RateLimit::new(port.limits.max_rate);
    loop {
        let accepted = tokio::select! {
            _ = port.stop_accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                let refused = if !port.access.admits(peer.ip()) {
                    Some((&port.metrics.denied, "refused by the access list"))
                } else if port
                    .limits
                    .max_connections
                    .is_some_and(|max| port.metrics.active.get() >= i64::from(max))
                {
                    Some((&port.metrics.over_capacity, "refused: the redirection is at its maxConnections"))
                } else if !rate.admit() {
                    Some((&port.metrics.rate_limited, "refused: over maxConnectionsPerSecond"))
                } else {
                    None
                };
                if let Some((counter, why)) = refused {
                    counter.inc();
                    debug!(%peer, addr = %port.addr, "{why}");
                    // A reset, at once: the client learns nothing and costs nothing.
                    copy::reset(&client);
                    continue;
                }
                // Counted here, not in the task, so that a burst of accepts sees its own count.
                port.metrics.accepted.inc();
                let active = Active::new(&port.metrics.active);
                let access = port.access.clone();
                let targets = port.targets.clone();
                let close = port.close_connections.clone();
                let limits = port.limits;
                let metrics = port.metrics.clone();
                port.connections.spawn(async move {
                    connection(client, peer, targets, limits, metrics, access, close).await;
                    drop(active);
                });
            }
            // Out of descriptors or memory: the listener is fine, wait for connections to
            // end instead of dying (frp's listeners died here until its PR #2467).
            Err(err) if is_resource_exhaustion(&err) => {
                warn!(addr = %port.addr, error = %err, "cannot accept: out of resources; backing off");
                tokio::select! {
                    _ = port.stop_accepting.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
            // Errors that belong to one connection (it was reset before we took it).
            Err(err) => debug!(addr = %port.addr, error = %err, "accept failed"),
        }
    }
}

fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    targets: Arc<Pool>,
    limits: Limits,
    metrics: Arc<RedirMetrics>,
    access: Arc<Access>,
    close: CancellationToken,
) {
    let connected = tokio::select! {
        connected = connect(&targets, limits.connect, &metrics) => connected,
        // Removed or drained while connecting: the client sees a reset, not a clean end.
        _ = close.cancelled() => return copy::reset(&client),
    };
    let Some((upstream, _open, instance)) = connected else {
        metrics.no_instance.inc();
        info!(%peer, "no instance of the application accepted the connection; closing it");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let header = access.wants_proxy_header().then(|| client.local_addr().ok()).flatten();
    if let Some(header) = header.and_then(|local| access.proxy_header(peer, local)) {
        if let Err(err) = copy::write_all(&upstream, &header).await {
            debug!(%peer, %instance, error = %err, "could not send the PROXY header");
            return;
        }
    }
    let counted = [&metrics.bytes_in, &metrics.bytes_out];
    let outcome = copy::bidirectional(&client, &upstream, limits.established, counted, &close).await;
    debug!(%peer, %instance, up = outcome.up, down = outcome.down, cut = ?outcome.cut, "connection closed");
}

/// Counts a connection as active for as long as it lives, however it ends.
struct Active(Gauge);

impl Active {
    fn new(gauge: &Gauge) -> Active {
        gauge.inc();
        Active(gauge.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A token bucket over new connections: `rate` per second, with a burst of one second.
/// It lives in the accept task, the only place that takes tokens, so it needs no lock.
struct RateLimit {
    rate: Option<f64>,
    tokens: f64,
    last: std::time::Instant,
}

impl RateLimit {
    fn new(rate: Option<u32>) -> RateLimit {
        let rate = rate.map(f64::from);
        RateLimit { rate, tokens: rate.unwrap_or(0.0), last: std::time::Instant::now() }
    }

    fn admit(&mut self) -> bool {
        let Some(rate) = self.rate else { return true };
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connects to the first instance that accepts, starting from the round-robin position.
async fn connect(
    targets: &Pool,
    timeout: Duration,
    metrics: &RedirMetrics,
) -> Option<(TcpStream, Open, String)> {
    for member in targets.candidates() {
        let address = &member.address;
        let began = std::time::Instant::now();
        let attempt = tokio::time::timeout(timeout, TcpStream::connect(address.as_str())).await;
        if !matches!(attempt, Ok(Ok(_))) {
            metrics.connect_failures.inc();
        }
        match attempt {
            Ok(Ok(stream)) => {
                if let Some(h) = &metrics.connect_seconds {
                    h.observe(began.elapsed().as_secs_f64());
                }
                return Some((stream, member.enter(), address.clone()));
            }
            Ok(Err(err)) => debug!(instance = %address, error = %err, "instance refused the connection"),
            Err(_) => debug!(instance = %address, "instance did not answer within {timeout:?}"),
        }
        member.failed();
    }
    None
}
