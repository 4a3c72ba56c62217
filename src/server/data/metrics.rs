//! Metrics, in the Prometheus text format at `GET /metrics` (admin credential required).
//!
//! Every series is labelled by redirection (namespace, port, protocol, application), never by client
//! address: a label per client would let any client grow the server's memory without bound
//! (sozu makes the same choice).
//!
//! The figures that move with every connection and every read (connections accepted and
//! open, bytes each way, the connect-time histogram) are kept per forwarding thread: each
//! redirection has one cache line per thread ([`Slot`]), written only by that thread, and
//! summed when the metrics or the list are read. Counting then costs an add on a line no
//! other core writes, with no lookup and no lock; a counter shared by the threads would
//! move its cache line between cores at every read, and prometheus_client's histogram
//! takes a lock per observation. The price is 64 bytes per redirection per forwarding
//! thread, plus the histogram's 144 bytes on each thread that connected for it. The rare
//! figures (refusals, failed connects) stay plain shared counters, made at the first.

use once_cell::race::OnceBox;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::wire::Protocol;

use super::bandwidth;
use super::limited::Limited;
use super::per_client::Refused;

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.name())
    }
}

/// The labels of a redirection's series.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct Redir {
    namespace: Arc<str>,
    port: u16,
    protocol: Protocol,
    /// The application's id: stable, what a series is kept by.
    app: Arc<str>,
    /// The application's name, which dashboards show (issue 33); no label when unknown.
    app_name: Arc<str>,
}

impl EncodeLabelSet for Redir {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("namespace", &*self.namespace).encode(encoder.encode_label())?;
        ("port", self.port).encode(encoder.encode_label())?;
        ("protocol", self.protocol).encode(encoder.encode_label())?;
        ("app", &*self.app).encode(encoder.encode_label())?;
        if !self.app_name.is_empty() {
            ("app_name", &*self.app_name).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The names a redirection's series are labelled with, shared (not copied) by every
/// series and port that names them: the caller interns them, so that 100,000 ports of
/// one namespace hold one copy of its name.
#[derive(Clone, Debug)]
pub struct Labels {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The application's id.
    pub app: Arc<str>,
    /// The application's name; empty when unknown.
    pub app_name: Arc<str>,
}

impl Labels {
    fn redir(&self, protocol: Protocol, port: u16) -> Redir {
        Redir {
            namespace: self.namespace.clone(),
            port,
            protocol,
            app: self.app.clone(),
            app_name: self.app_name.clone(),
        }
    }
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
    /// The client's address had `maxConnectionsPerClient` open (UDP: flows).
    max_connections_per_client,
    /// The client's address came over `maxConnectionsPerSecondPerClient`.
    rate_limited_per_client,
    /// The redirection's table of client addresses was full of addresses with connections open.
    client_table_full,
}

impl Reason {
    /// The reasons of the limits per client, in the order of [`Refused`].
    const PER_CLIENT: [(Reason, Refused); 3] = [
        (Reason::max_connections_per_client, Refused::Open),
        (Reason::rate_limited_per_client, Refused::Rate),
        (Reason::client_table_full, Refused::TableFull),
    ];
}

/// Why a datagram of a UDP redirection was not forwarded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Dropped {
    /// Its source is refused by the access list.
    denied,
    /// It would have started a flow over the redirection's new-flow rate, or its client sent
    /// over `maxDatagramsPerSecond`.
    rate_limited,
    /// It would have started a flow over the redirection's flow cap.
    flow_cap,
    /// It would have started a flow over the node's flow cap.
    node_flow_cap,
    /// No instance could be given a flow (none, or the flow's socket could not be made).
    no_instance,
    /// The socket would not take it (its send buffer was full) or refused it.
    send_failed,
    /// The instance's host said nothing listens there (ICMP port unreachable).
    unreachable,
}

impl Dropped {
    /// Every reason, in the order of [`UdpCounts::dropped`].
    pub const ALL: [Dropped; 7] = [
        Dropped::denied,
        Dropped::rate_limited,
        Dropped::flow_cap,
        Dropped::node_flow_cap,
        Dropped::no_instance,
        Dropped::send_failed,
        Dropped::unreachable,
    ];
}

/// A reason a UDP datagram was dropped: the data plane's own, or a limit per client's
/// (named as the TCP refusal is).
#[derive(Clone, Copy, Debug)]
enum DropLabel {
    Flow(Dropped),
    Client(Reason),
}

impl EncodeLabelValue for DropLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        match self {
            DropLabel::Flow(d) => d.encode(encoder),
            DropLabel::Client(r) => r.encode(encoder),
        }
    }
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

/// The connect-time histogram's buckets: 100 µs to about 3 s, doubling.
const BUCKETS: usize = 16;

fn bucket_bound(i: usize) -> f64 {
    0.0001 * f64::from(1u32 << i)
}

thread_local! {
    /// Which slot of every redirection this thread writes: its forwarding thread's number.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread write slot `i` of every redirection's [`Traffic`]; called by each
/// forwarding thread as it starts (other threads write slot 0, with the same atomic adds).
pub fn set_thread_slot(i: usize) {
    SLOT.with(|s| s.set(i));
}

/// How many slots each redirection has: the number of forwarding threads.
static SLOTS: OnceLock<usize> = OnceLock::new();

/// Sets the number of forwarding threads, before the first redirection is counted.
pub fn set_thread_count(n: usize) {
    let _ = SLOTS.set(n.max(1));
}

/// One redirection's busy figures, one [`Slot`] per forwarding thread, made at its first
/// connection: a cache line per thread is 4 KiB a redirection on a 64-thread node, which a
/// port nobody connects to should not pay. Until then it is one pointer (a `OnceBox`, not
/// the three words of a `OnceLock` of a slice: issue 32's memory per redirection).
#[derive(Debug, Default)]
pub struct Traffic {
    slots: OnceBox<Box<[Slot]>>,
}

/// What one thread counted for one redirection, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Slot {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open (opened minus closed on this thread).
    active: AtomicI64,
    /// Bytes from clients to the application.
    pub bytes_in: AtomicU64,
    /// Bytes from the application to clients.
    pub bytes_out: AtomicU64,
    /// How long instances took to accept, made at this thread's first connect.
    connect: OnceLock<Box<ConnectTimes>>,
}

#[derive(Debug, Default)]
struct ConnectTimes {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Slot {
    /// Counts a connection as open.
    pub fn open(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a connection as closed.
    pub fn close(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records how long an instance took to accept.
    pub fn connected_in(&self, took: std::time::Duration) {
        let times = self.connect.get_or_init(Box::default);
        let secs = took.as_secs_f64();
        let bucket = (0..BUCKETS).find(|&i| secs <= bucket_bound(i)).unwrap_or(BUCKETS);
        if let Some(b) = times.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        times.count.fetch_add(1, Ordering::Relaxed);
        times.sum_ns.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A redirection's figures, summed over the threads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: i64,
    /// Bytes from clients to the application.
    pub bytes_in: u64,
    /// Bytes from the application to clients.
    pub bytes_out: u64,
}

impl Traffic {
    /// This thread's slot: the connection tasks of a thread keep it for their whole life.
    pub fn mine(&self) -> &Slot {
        let slots = self.slots.get_or_init(|| {
            let n = *SLOTS.get().unwrap_or(&1);
            Box::new((0..n).map(|_| Slot::default()).collect())
        });
        &slots[SLOT.with(Cell::get) % slots.len()]
    }

    /// The slots made so far (none before the first connection).
    fn slots(&self) -> &[Slot] {
        self.slots.get().map_or(&[], |s| &**s)
    }

    /// The figures summed over the threads.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.slots() {
            t.accepted += s.accepted.load(Ordering::Relaxed);
            t.active += s.active.load(Ordering::Relaxed);
            t.bytes_in += s.bytes_in.load(Ordering::Relaxed);
            t.bytes_out += s.bytes_out.load(Ordering::Relaxed);
        }
        t.active = t.active.max(0);
        t
    }

    /// Connections open now on every thread, as seen right after [`Slot::open`] on this one.
    ///
    /// Both the add and these loads are sequentially consistent: of two threads admitting
    /// at once, at least one sees the other's connection, so a limit is never overrun.
    pub fn active_now(&self) -> i64 {
        self.slots().iter().map(|s| s.active.load(Ordering::SeqCst)).sum()
    }

    /// The connect-time histogram summed over the threads: sum (s), count, count per bucket.
    fn connect_times(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let (mut sum_ns, mut count, mut buckets) = (0u64, 0u64, [0u64; BUCKETS]);
        for times in self.slots().iter().filter_map(|s| s.connect.get()) {
            sum_ns += times.sum_ns.load(Ordering::Relaxed);
            count += times.count.load(Ordering::Relaxed);
            for (b, n) in buckets.iter_mut().zip(&times.buckets) {
                *b += n.load(Ordering::Relaxed);
            }
        }
        // Per bucket, not cumulative: the encoder adds them up; past the last bound, the rest.
        let mut bounds: Vec<(f64, u64)> = (0..BUCKETS).map(|i| (bucket_bound(i), buckets[i])).collect();
        bounds.push((f64::INFINITY, count.saturating_sub(buckets.iter().sum())));
        (sum_ns as f64 / 1e9, count, bounds)
    }
}

/// The live redirections' figures, encoded at each scrape: the busy ones per thread
/// ([`Traffic`]), the rare ones ([`Rare`]) as plain atomics made at the first, so that a
/// redirection's series cost one entry here and no label set per family.
///
/// A set of the figures themselves, each holding its labels: no map entry of labels beside
/// them, and the port that counts into them reads its labels there too (issue 32's memory).
#[derive(Debug, Default)]
struct Live(Mutex<BTreeSet<Series>>);

/// A redirection's figures in [`Live`], ordered by their labels.
#[derive(Debug)]
struct Series(Arc<RedirMetrics>);

impl PartialEq for Series {
    fn eq(&self, other: &Series) -> bool {
        self.0.series == other.0.series
    }
}

impl Eq for Series {}

impl PartialOrd for Series {
    fn partial_cmp(&self, other: &Series) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Series {
    fn cmp(&self, other: &Series) -> std::cmp::Ordering {
        self.0.series.cmp(&other.0.series)
    }
}

impl std::borrow::Borrow<Redir> for Series {
    fn borrow(&self) -> &Redir {
        &self.0.series
    }
}

/// A redirection's labels, borrowed from the live map: no copy per series.
struct Just<'a>(&'a Redir);

impl EncodeLabelSet for Just<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// A redirection's labels and one more (`reason`, `direction`), borrowed likewise.
struct And<'a, V> {
    redir: &'a Redir,
    key: &'static str,
    value: V,
}

impl<V: EncodeLabelValue + Copy> EncodeLabelSet for And<'_, V> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.redir.encode(encoder)?;
        (self.key, self.value).encode(encoder.encode_label())
    }
}

/// Writes one family of counters (or, with `kind`, gauges): its descriptor, then a series
/// per item.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, n) in series {
        match kind {
            MetricType::Gauge => ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?,
            _ => ConstCounter::new(n).encode(family.encode_family(&labels)?)?,
        }
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<(&Redir, &RedirMetrics)> = guard.iter().map(|s| (&s.0.series, &*s.0)).collect();
        let totals: Vec<(&Redir, Totals)> =
            live.iter().copied().map(|(r, m)| (r, m.traffic.totals())).collect();
        let counter = |name, help| (name, help, MetricType::Counter);
        let and = |redir, key, value| And { redir, key, value };
        family(
            &mut encoder,
            counter("connections_accepted", "Connections accepted on a redirection's port"),
            totals.iter().map(|(r, t)| (Just(r), t.accepted)),
        )?;
        family(
            &mut encoder,
            ("connections_active", "Connections open on a redirection", MetricType::Gauge),
            totals.iter().map(|(r, t)| (Just(r), t.active as u64)),
        )?;
        family(
            &mut encoder,
            counter("bytes", "Bytes forwarded, by direction (in: client to application)"),
            totals.iter().flat_map(|(r, t)| {
                [(Direction::In, t.bytes_in), (Direction::Out, t.bytes_out)]
                    .map(|(d, n)| (and(r, "direction", d), n))
            }),
        )?;
        let mut histograms = encoder.encode_descriptor(
            "instance_connect_seconds",
            "Time for an instance to accept a connection",
            None,
            MetricType::Histogram,
        )?;
        for (redir, m) in live.iter().copied() {
            let (sum, count, buckets) = m.traffic.connect_times();
            histograms
                .encode_family(redir)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        }
        // The limits per client and the bandwidth: only redirections that ever used them.
        let limited: Vec<(&Redir, Arc<Limited>)> =
            live.iter().copied().filter_map(|(r, m)| Limited::made(&m.limited).map(|l| (r, l))).collect();
        let per_client = |protocol: Protocol| {
            limited
                .iter()
                .filter(move |(r, _)| r.protocol == protocol)
                .flat_map(|(r, l)| Reason::PER_CLIENT.map(|(reason, why)| (*r, reason, l.refusals(why))))
        };
        family(
            &mut encoder,
            counter("connections_refused", "Connections closed at once, by reason"),
            live.iter()
                .copied()
                .flat_map(|(r, m)| {
                    let m = m.rare_read();
                    [
                        (Reason::no_instance, &m.no_instance),
                        (Reason::denied, &m.denied),
                        (Reason::max_connections, &m.over_capacity),
                        (Reason::rate_limited, &m.rate_limited),
                    ]
                    .map(|(reason, n)| (r, reason, n.get()))
                })
                .chain(per_client(Protocol::Tcp))
                .map(|(r, reason, n)| (And { redir: r, key: "reason", value: reason }, n)),
        )?;
        family(
            &mut encoder,
            (
                "client_addresses",
                "Client addresses a redirection's table of limits per client holds (at most 14320)",
                MetricType::Gauge,
            ),
            limited.iter().map(|(r, l)| (Just(r), l.addresses() as u64)),
        )?;
        family(
            &mut encoder,
            counter(
                "bandwidth_throttled",
                "Times a connection waited for its redirection's bandwidth limit, by direction (in: client to application)",
            ),
            limited.iter().filter_map(|(r, l)| l.buckets().map(|b| (r, b.clone()))).flat_map(|(r, b)| {
                [(Direction::In, bandwidth::Direction::In), (Direction::Out, bandwidth::Direction::Out)]
                    .map(|(d, bd)| (and(r, "direction", d), b.throttled(bd)))
            }),
        )?;
        let udp: Vec<(&Redir, &UdpCounts)> =
            live.iter().copied().filter_map(|(r, m)| m.udp.get().map(|u| (r, u))).collect();
        family(
            &mut encoder,
            counter(
                "udp_datagrams",
                "Datagrams forwarded on a UDP redirection, by direction (in: client to application)",
            ),
            udp.iter().flat_map(|(r, u)| {
                [(Direction::In, &u.datagrams_in), (Direction::Out, &u.datagrams_out)]
                    .map(|(d, n)| (and(r, "direction", d), n.get()))
            }),
        )?;
        family(
            &mut encoder,
            counter("udp_datagrams_dropped", "Datagrams of a UDP redirection not forwarded, by reason"),
            udp.iter()
                .flat_map(|(r, u)| {
                    Dropped::ALL
                        .iter()
                        .zip(&u.dropped)
                        .map(|(reason, n)| (*r, DropLabel::Flow(*reason), n.get()))
                })
                .chain(per_client(Protocol::Udp).map(|(r, reason, n)| (r, DropLabel::Client(reason), n)))
                .map(|(r, reason, n)| (And { redir: r, key: "reason", value: reason }, n)),
        )?;
        family(
            &mut encoder,
            counter(
                "instance_connect_failures",
                "Connection attempts to an instance that failed or timed out",
            ),
            live.iter().copied().map(|(r, m)| (Just(r), m.rare_read().connect_failures.get())),
        )
    }
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    live: Arc<Live>,
    reconcile_repairs: Counter,
}

/// A counter of rare events of one redirection: a plain atomic, read at each scrape.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Counts one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One redirection's figures, used by its forwarding loop (one allocation, shared).
#[derive(Debug, Default)]
pub struct RedirMetrics {
    /// The labels of its series.
    series: Redir,
    /// Connections accepted and open, bytes, connect times: per thread.
    pub traffic: Traffic,
    /// The counts of what goes wrong: made at the first ([`Self::rare`]), so that the many
    /// redirections that never refuse a connection carry a pointer (issue 32's memory;
    /// a `OnceBox` is that pointer alone, where a `OnceLock` adds a word).
    rare: OnceBox<Rare>,
    /// A UDP redirection's datagram counts, set when its data plane starts; for a UDP
    /// redirection, `traffic` counts flows as connections.
    pub udp: OnceBox<UdpCounts>,
    /// The state and counters of the limits per client address and of the bandwidth
    /// limit ([`Limited`]): null until a connection needs them.
    pub limited: arc_swap::ArcSwapOption<Limited>,
}

/// A redirection's counts of what goes wrong.
#[derive(Debug, Default)]
pub struct Rare {
    /// Connections closed because no instance accepted them.
    pub no_instance: Count,
    /// Connections refused by the access list.
    pub denied: Count,
    /// Connections refused at `maxConnections`.
    pub over_capacity: Count,
    /// Connections refused over `maxConnectionsPerSecond`.
    pub rate_limited: Count,
    /// Connection attempts to an instance that failed or timed out.
    pub connect_failures: Count,
}

/// A UDP redirection's datagram figures: plain atomics, since one forwarding thread serves
/// a UDP port and alone writes them (see `udp`'s design).
#[derive(Debug, Default)]
pub struct UdpCounts {
    /// Datagrams from clients forwarded to instances.
    pub datagrams_in: Count,
    /// Datagrams from instances forwarded to clients.
    pub datagrams_out: Count,
    /// Datagrams not forwarded, by [`Dropped`] reason (indexed as [`Dropped::ALL`]).
    pub dropped: [Count; Dropped::ALL.len()],
}

impl UdpCounts {
    /// Counts `n` datagrams dropped for `reason`.
    pub fn lost(&self, reason: Dropped, n: u64) {
        self.dropped[reason as usize].add(n);
    }

    /// How many datagrams were dropped for `reason`.
    // The UDP tests read it; stage 2's API will.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped[reason as usize].get()
    }
}

impl RedirMetrics {
    /// Its counts of what goes wrong, made at the first call.
    pub fn rare(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }

    /// Its counts of what goes wrong, as read (zeros when nothing went wrong yet).
    fn rare_read(&self) -> &Rare {
        static NONE: Rare = Rare {
            no_instance: Count(AtomicU64::new(0)),
            denied: Count(AtomicU64::new(0)),
            over_capacity: Count(AtomicU64::new(0)),
            rate_limited: Count(AtomicU64::new(0)),
            connect_failures: Count(AtomicU64::new(0)),
        };
        self.rare.get().map_or(&NONE, |r| r)
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.series.namespace
    }

    /// The names its series are labelled with.
    pub fn labels(&self) -> Labels {
        let s = &self.series;
        Labels { namespace: s.namespace.clone(), app: s.app.clone(), app_name: s.app_name.clone() }
    }
}

impl Metrics {
    /// An empty registry with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tcp_redirs");
        let live = Arc::new(Live::default());
        registry.register_collector(Box::new(live.clone()));
        let reconcile_repairs = Counter::default();
        registry.register(
            "reconcile_repairs",
            "Ports and instance pools the periodic full reconcile found out of step with the table, and fixed",
            reconcile_repairs.clone(),
        );
        Metrics { registry, live, reconcile_repairs }
    }

    /// Registers more families, encoded at each scrape (the health checks').
    pub fn add_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The handles of one redirection's series, creating them, for an application known by
    /// its id alone (no `app_name` label).
    #[cfg(test)]
    pub fn redirection(
        &self,
        namespace: &str,
        protocol: Protocol,
        port: u16,
        app: &str,
    ) -> Arc<RedirMetrics> {
        let labels = Labels { namespace: namespace.into(), app: app.into(), app_name: "".into() };
        self.named_redirection(&labels, protocol, port)
    }

    /// The handles of one redirection's series, creating them: labelled with the
    /// application's id (`app`, stable) and its name (`app_name`, which dashboards show).
    pub fn named_redirection(&self, labels: &Labels, protocol: Protocol, port: u16) -> Arc<RedirMetrics> {
        let series = labels.redir(protocol, port);
        let mut live = self.live.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Series(m)) = live.get(&series) {
            return m.clone();
        }
        let m = Arc::new(RedirMetrics { series, ..RedirMetrics::default() });
        live.insert(Series(m.clone()));
        m
    }

    /// Counts what a periodic full reconcile had to repair.
    pub fn repaired(&self, n: u64) {
        self.reconcile_repairs.inc_by(n);
    }

    /// Drops a removed redirection's series.
    pub fn forget(&self, labels: &Labels, protocol: Protocol, port: u16) {
        self.live.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&labels.redir(protocol, port));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
