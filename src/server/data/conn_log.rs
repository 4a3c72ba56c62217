//! The connection log: one line per connection when it ends, as HAProxy's `option tcplog`
//! writes, because it is what an operator reads first when a client says "the port does
//! not answer".
//!
//! Off by default; on for every port with `serve --access-log`, or for a namespace's with
//! `access_log = true` in its `[[namespace]]`. A line is logged at INFO with the target
//! `tcp_redirs::connection` and these fields: `client` (address and port), `namespace`,
//! `port`, `app`, `instance` (`-` when none was reached), `bytes_in` (client to
//! application), `bytes_out`, `duration_ms`, and `end`, how it ended:
//!
//! | `end` | meaning |
//! | --- | --- |
//! | `client_closed` | both sides finished; the client finished first |
//! | `app_closed` | both sides finished; the application finished first |
//! | `reset` | a side reset or failed; the other was reset too |
//! | `idle_timeout` | nothing moved for the idle timeout |
//! | `half_close_timeout` | one side finished and the other did not within the half-close timeout |
//! | `removed` | the redirection was removed, or the server's drain timeout ran out |
//! | `denied` | refused by the access list |
//! | `max_connections`, `rate_limited` | refused: over the redirection's limits |
//! | `max_connections_per_client`, `rate_limited_per_client` | refused: the client's address over its limits (`maxConnectionsPerClient`, `maxConnectionsPerSecondPerClient`) |
//! | `client_table_full` | refused: the redirection's table of client addresses is full of addresses with connections open |
//! | `no_instance` | no instance of the application accepted the connection |
//!
//! With `TCP_REDIRS_LOG_FORMAT=json`, every log line, these included, is one JSON object.
//! Nothing here runs unless the port logs: a port without it pays one `Option` check.
//!
//! The line is formatted here, in the same shape as the server's other lines (tracing's
//! `fmt` text or JSON format, without colours), and handed to [`super::log_writer`]
//! directly: through tracing's `fmt` layer it cost 14,600 instructions per connection,
//! more than half of what forwarding the connection costs in user space
//! (`bench/conn_log_cost.py`). The `TCP_REDIRS_LOG` filter still applies to the target.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::copy::{Cut, Outcome};

/// What a port's connection lines name.
#[derive(Debug, Clone)]
pub struct ConnLog {
    /// The redirection's namespace.
    pub namespace: String,
    /// Its public port.
    pub port: u16,
    /// The application it leads to.
    pub app: String,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides finished; the client first.
    ClientClosed,
    /// Both sides finished; the application first.
    AppClosed,
    /// A side reset or failed.
    Reset,
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// Half-closed for longer than the half-close timeout.
    HalfCloseTimeout,
    /// The redirection was removed, or the drain timeout ran out.
    Removed,
    /// Refused by the access list.
    Denied,
    /// Refused: the redirection is at its `maxConnections`.
    MaxConnections,
    /// Refused: over `maxConnectionsPerSecond`.
    RateLimited,
    /// Refused: the client's address is at `maxConnectionsPerClient`.
    MaxConnectionsPerClient,
    /// Refused: the client's address is over `maxConnectionsPerSecondPerClient`.
    RateLimitedPerClient,
    /// Refused: the table of client addresses is full of addresses with connections open.
    ClientTableFull,
    /// No instance accepted the connection.
    NoInstance,
}

impl End {
    /// How a forwarded connection ended.
    pub fn of(outcome: &Outcome) -> End {
        match outcome.cut {
            None if outcome.client_ended_first => End::ClientClosed,
            None => End::AppClosed,
            Some(Cut::Error) => End::Reset,
            Some(Cut::Idle) => End::IdleTimeout,
            Some(Cut::HalfClosed) => End::HalfCloseTimeout,
            Some(Cut::Closed) => End::Removed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::AppClosed => "app_closed",
            End::Reset => "reset",
            End::IdleTimeout => "idle_timeout",
            End::HalfCloseTimeout => "half_close_timeout",
            End::Removed => "removed",
            End::Denied => "denied",
            End::MaxConnections => "max_connections",
            End::RateLimited => "rate_limited",
            End::MaxConnectionsPerClient => "max_connections_per_client",
            End::RateLimitedPerClient => "rate_limited_per_client",
            End::ClientTableFull => "client_table_full",
            End::NoInstance => "no_instance",
        }
    }
}

/// Whether lines are JSON objects (`TCP_REDIRS_LOG_FORMAT=json`); set once at start.
static JSON: AtomicBool = AtomicBool::new(false);

/// Makes the connection lines JSON objects, as the other log lines are.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

thread_local! {
    /// The thread's line buffer, reused from one line to the next.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A line in tracing's JSON shape.
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "rfc3339")]
    timestamp: SystemTime,
    level: &'static str,
    fields: Fields<'a>,
    target: &'static str,
}

#[derive(Serialize)]
struct Fields<'a> {
    message: &'static str,
    #[serde(serialize_with = "display")]
    client: SocketAddr,
    namespace: &'a str,
    port: u16,
    app: &'a str,
    instance: &'a str,
    bytes_in: u64,
    bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    datagrams_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datagrams_out: Option<u64>,
    duration_ms: u64,
    end: &'static str,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

fn display<S: serde::Serializer>(v: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl ConnLog {
    /// Logs the line of a connection that ended.
    pub fn log(
        &self,
        client: SocketAddr,
        instance: Option<&str>,
        bytes: (u64, u64),
        started: Instant,
        end: End,
    ) {
        self.line("connection", client, instance, bytes, None, started, end);
    }

    /// Logs the line of a UDP flow that ended: the connection's fields with the message
    /// `flow` and the datagrams each way (`datagrams_in`, `datagrams_out`) after the bytes.
    pub fn log_flow(
        &self,
        client: SocketAddr,
        instance: Option<&str>,
        bytes: (u64, u64),
        datagrams: (u64, u64),
        started: Instant,
        end: End,
    ) {
        self.line("flow", client, instance, bytes, Some(datagrams), started, end);
    }

    #[allow(clippy::too_many_arguments)]
    fn line(
        &self,
        message: &'static str,
        client: SocketAddr,
        instance: Option<&str>,
        bytes: (u64, u64),
        datagrams: Option<(u64, u64)>,
        started: Instant,
        end: End,
    ) {
        if !tracing::enabled!(target: "tcp_redirs::connection", tracing::Level::INFO) {
            return;
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            self.format(&mut line, message, client, instance, bytes, datagrams, started, end);
            super::log_writer::write(&line);
        });
    }

    /// Writes a line into `line`, its end of line included.
    #[allow(clippy::too_many_arguments)]
    fn format(
        &self,
        line: &mut Vec<u8>,
        message: &'static str,
        client: SocketAddr,
        instance: Option<&str>,
        bytes: (u64, u64),
        datagrams: Option<(u64, u64)>,
        started: Instant,
        end: End,
    ) {
        let now = SystemTime::now();
        let instance = instance.unwrap_or("-");
        let duration_ms = started.elapsed().as_millis() as u64;
        let end = end.as_str();
        if JSON.load(Ordering::Relaxed) {
            let fields = Fields {
                message,
                client,
                namespace: &self.namespace,
                port: self.port,
                app: &self.app,
                instance,
                bytes_in: bytes.0,
                bytes_out: bytes.1,
                datagrams_in: datagrams.map(|d| d.0),
                datagrams_out: datagrams.map(|d| d.1),
                duration_ms,
                end,
            };
            let json = JsonLine { timestamp: now, level: "INFO", fields, target: "tcp_redirs::connection" };
            // Serializing plain fields into memory cannot fail.
            let _ = serde_json::to_writer(&mut *line, &json);
        } else {
            // Writing into memory cannot fail.
            let _ = write!(
                line,
                "{}  INFO tcp_redirs::connection: {message} client={client} namespace={} port={} app={} \
                 instance={instance} bytes_in={} bytes_out={}",
                humantime::format_rfc3339_micros(now),
                self.namespace,
                self.port,
                self.app,
                bytes.0,
                bytes.1,
            );
            if let Some((d_in, d_out)) = datagrams {
                let _ = write!(line, " datagrams_in={d_in} datagrams_out={d_out}");
            }
            let _ = write!(line, " duration_ms={duration_ms} end={end}");
        }
        line.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP flow's line is a connection's with the message `flow` and the datagrams each
    /// way; a TCP connection's line has no datagram field.
    #[test]
    fn a_flow_line_counts_datagrams_each_way() {
        let log = ConnLog { namespace: "default".into(), port: 4000, app: "app_1".into() };
        let client: SocketAddr = "192.0.2.7:5353".parse().unwrap();
        let started = Instant::now();
        let mut line = Vec::new();
        log.format(
            &mut line,
            "flow",
            client,
            Some("10.0.0.2:53"),
            (120, 900),
            Some((3, 4)),
            started,
            End::IdleTimeout,
        );
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.contains(
                "INFO tcp_redirs::connection: flow client=192.0.2.7:5353 namespace=default port=4000 app=app_1 \
                 instance=10.0.0.2:53 bytes_in=120 bytes_out=900 datagrams_in=3 datagrams_out=4 duration_ms="
            ),
            "{text}"
        );
        assert!(text.ends_with(" end=idle_timeout\n"), "{text}");
        let mut line = Vec::new();
        log.format(&mut line, "connection", client, None, (1, 2), None, started, End::NoInstance);
        let text = String::from_utf8(line).unwrap();
        assert!(text.contains(": connection client=") && !text.contains("datagrams"), "{text}");
        assert!(text.contains("instance=- bytes_in=1 bytes_out=2 duration_ms="), "{text}");
    }
}
