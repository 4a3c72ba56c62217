//! Metrics, in the Prometheus text format at `GET /metrics` (admin credential required).
//!
//! Every series is labelled by redirection (namespace, port, application), never by client
//! address: a label per client would let any client grow the server's memory without bound
//! (sozu makes the same choice). The forwarding path holds its own handles on its series,
//! so counting costs one atomic add per read, with no lookup and no lock.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The labels of a redirection's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Redir {
    namespace: String,
    port: u16,
    app: String,
}

/// Why a connection was refused or cut.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    /// No instance of the application accepted the connection.
    no_instance,
    /// The access list refused the client.
    denied,
    /// The redirection had `maxConnections` open.
    max_connections,
    /// The client came over `maxConnectionsPerSecond`.
    rate_limited,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    namespace: String,
    port: u16,
    app: String,
    reason: Reason,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Direction {
    /// From the client to the application.
    In,
    /// From the application to the client.
    Out,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Bytes {
    namespace: String,
    port: u16,
    app: String,
    direction: Direction,
}

fn connect_buckets() -> Histogram {
    // 100 µs to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    accepted: Family<Redir, Counter>,
    active: Family<Redir, Gauge>,
    refused: Family<Refused, Counter>,
    bytes: Family<Bytes, Counter>,
    connect_failures: Family<Redir, Counter>,
    connect_seconds: Family<Redir, Histogram, fn() -> Histogram>,
}

/// One redirection's handles on its series, used by its forwarding loop.
#[derive(Clone, Debug, Default)]
pub struct RedirMetrics {
    /// Connections accepted on the public port.
    pub accepted: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Connections closed because no instance accepted them.
    pub no_instance: Counter,
    /// Connections refused by the access list.
    pub denied: Counter,
    /// Connections refused at `maxConnections`.
    pub over_capacity: Counter,
    /// Connections refused over `maxConnectionsPerSecond`.
    pub rate_limited: Counter,
    /// Bytes from clients to the application.
    pub bytes_in: Counter,
    /// Bytes from the application to clients.
    pub bytes_out: Counter,
    /// Connection attempts to an instance that failed or timed out.
    pub connect_failures: Counter,
    /// How long instances took to accept.
    pub connect_seconds: Option<Histogram>,
}

impl Metrics {
    /// An empty registry with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tcp_redirs");
        let accepted = Family::<Redir, Counter>::default();
        let active = Family::<Redir, Gauge>::default();
        let refused = Family::<Refused, Counter>::default();
        let bytes = Family::<Bytes, Counter>::default();
        let connect_failures = Family::<Redir, Counter>::default();
        let connect_seconds =
            Family::<Redir, Histogram, fn() -> Histogram>::new_with_constructor(connect_buckets);
        registry.register(
            "connections_accepted",
            "Connections accepted on a redirection's port",
            accepted.clone(),
        );
        registry.register("connections_active", "Connections open on a redirection", active.clone());
        registry.register("connections_refused", "Connections closed at once, by reason", refused.clone());
        registry.register(
            "bytes",
            "Bytes forwarded, by direction (in: client to application)",
            bytes.clone(),
        );
        registry.register(
            "instance_connect_failures",
            "Connection attempts to an instance that failed or timed out",
            connect_failures.clone(),
        );
        registry.register(
            "instance_connect_seconds",
            "Time for an instance to accept a connection",
            connect_seconds.clone(),
        );
        Metrics { registry, accepted, active, refused, bytes, connect_failures, connect_seconds }
    }

    /// The handles of one redirection's series, creating them.
    pub fn redirection(&self, namespace: &str, port: u16, app: &str) -> RedirMetrics {
        let redir = Redir { namespace: namespace.to_owned(), port, app: app.to_owned() };
        let bytes =
            |direction| Bytes { namespace: namespace.to_owned(), port, app: app.to_owned(), direction };
        let refused = |reason| Refused { namespace: namespace.to_owned(), port, app: app.to_owned(), reason };
        // One statement each: `get_or_create` returns a read guard, and a second call on the
        // same family while the first guard lives would deadlock when it needs to insert.
        let bytes_in = self.bytes.get_or_create(&bytes(Direction::In)).clone();
        let bytes_out = self.bytes.get_or_create(&bytes(Direction::Out)).clone();
        let accepted = self.accepted.get_or_create(&redir).clone();
        let active = self.active.get_or_create(&redir).clone();
        let no_instance = self.refused.get_or_create(&refused(Reason::no_instance)).clone();
        let denied = self.refused.get_or_create(&refused(Reason::denied)).clone();
        let over_capacity = self.refused.get_or_create(&refused(Reason::max_connections)).clone();
        let rate_limited = self.refused.get_or_create(&refused(Reason::rate_limited)).clone();
        let connect_failures = self.connect_failures.get_or_create(&redir).clone();
        let connect_seconds = Some(self.connect_seconds.get_or_create(&redir).clone());
        RedirMetrics {
            accepted,
            active,
            no_instance,
            denied,
            over_capacity,
            rate_limited,
            bytes_in,
            bytes_out,
            connect_failures,
            connect_seconds,
        }
    }

    /// Drops a removed redirection's series.
    pub fn forget(&self, namespace: &str, port: u16, app: &str) {
        let redir = Redir { namespace: namespace.to_owned(), port, app: app.to_owned() };
        self.accepted.remove(&redir);
        self.active.remove(&redir);
        self.connect_failures.remove(&redir);
        self.connect_seconds.remove(&redir);
        for direction in [Direction::In, Direction::Out] {
            self.bytes.remove(&Bytes {
                namespace: namespace.to_owned(),
                port,
                app: app.to_owned(),
                direction,
            });
        }
        for reason in [Reason::no_instance, Reason::denied, Reason::max_connections, Reason::rate_limited] {
            self.refused.remove(&Refused {
                namespace: namespace.to_owned(),
                port,
                app: app.to_owned(),
                reason,
            });
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
