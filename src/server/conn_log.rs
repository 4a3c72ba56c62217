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
//! | `no_instance` | no instance of the application accepted the connection |
//!
//! With `TCP_REDIRS_LOG_FORMAT=json`, every log line, these included, is one JSON object.
//! Nothing here runs unless the port logs: a port without it pays one `Option` check.

use std::net::SocketAddr;
use std::time::Instant;

use super::copy::{Cut, Outcome};

/// What a port's connection lines name.
#[derive(Debug)]
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
            End::NoInstance => "no_instance",
        }
    }
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
        tracing::info!(
            target: "tcp_redirs::connection",
            %client,
            namespace = %self.namespace,
            port = self.port,
            app = %self.app,
            instance = %instance.unwrap_or("-"),
            bytes_in = bytes.0,
            bytes_out = bytes.1,
            duration_ms = started.elapsed().as_millis() as u64,
            end = %end.as_str(),
            "connection"
        );
    }
}
