//! The redirection spec: what a redirection's settings mean, from the request to the limits
//! its port enforces.
//!
//! A setting is written by a caller (the API, a batch, `apply`'s manifest, the config
//! file's namespace defaults) as a [`RedirSettings`], kept that way in the store, and read
//! by a running port as limits. This module is the one place that knows how the first
//! becomes the last:
//!
//! - **defaults**: [`TCP_DEFAULTS`] and [`UDP_DEFAULTS`], the server's built-in limits;
//! - **resolution**: each setting is the redirection's own, else its namespace's, else the
//!   built-in one, setting by setting ([`resolve`]); the result is [`Limits`], TCP's or
//!   UDP's, the only thing the data plane reads, with the same names as the API's fields
//!   (`max_connections_per_second` stays that from the wire to the accept loop);
//! - **bounds and checks**: [`check`] is the whole check of a new redirection's settings
//!   for its namespace and protocol, [`check_settings`] the part that needs neither (a
//!   batch refuses a malformed item before it looks anything up) and
//!   [`check_namespace_defaults`] that of the config file's namespaces. Each refusal is a
//!   [`Refusal`] that the control plane turns into its API error;
//! - **who may connect**: the access list parsed once ([`access::Access`]).
//!
//! It is pure: no I/O, no runtime, no lock, nothing of the store or the API. Everything
//! else in the server may use it, and it uses nothing of the server (the rule is in
//! `server/mod.rs`), so the data plane receives resolved limits without knowing where they
//! came from.

pub mod access;

use std::time::Duration;

use crate::wire::{
    self, Protocol, ProxyProtocol, RedirSettings, MAX_BANDWIDTH, MAX_LIMIT_SECS, MAX_QUOTA, MIN_BANDWIDTH,
};

pub use access::Access;

/// The limits of a TCP redirection's new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// How long an instance may take to accept before the next one is tried.
    pub connect_timeout: Duration,
    /// How long a connection may go without a byte either way before it is reset.
    pub idle_timeout: Duration,
    /// How long a connection may stay half-closed (one direction ended).
    pub half_close_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: Option<u32>,
    /// The most new connections per second (a burst of one second).
    pub max_connections_per_second: Option<u32>,
    /// The most connections open at once from one client address (IPv6: its /64).
    pub max_connections_per_client: Option<u32>,
    /// The most new connections per second from one client address (a burst of one second).
    pub max_connections_per_second_per_client: Option<u32>,
    /// The most bytes per second each way, shared by all the redirection's connections.
    pub bandwidth_limit: Option<u64>,
}

/// The limits of a UDP redirection's flows (a flow: one client address and its socket to
/// an instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLimits {
    /// A flow ends when nothing has moved either way for this long.
    pub idle_timeout: Duration,
    /// The most flows open at once; a datagram that would start one more is dropped.
    pub max_connections: u32,
    /// The most new flows per second (a burst of one second); more are dropped.
    pub max_connections_per_second: Option<u32>,
    /// The most datagrams per second from one client (a burst of one second); more are
    /// dropped, counted `rate_limited`.
    pub max_datagrams_per_second: Option<u32>,
    /// The most flows open at once from one client address (IPv6: its /64).
    pub max_connections_per_client: Option<u32>,
    /// The most new flows per second from one client address (a burst of one second).
    pub max_connections_per_second_per_client: Option<u32>,
    /// Whether the instance gets a PROXY v2 header in front of a flow's first datagram
    /// (`v2`) or of every datagram (`v2-every`).
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// The limits in force on a redirection, of its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    /// A TCP redirection's.
    Tcp(TcpLimits),
    /// A UDP redirection's.
    Udp(UdpLimits),
}

/// The two quotas that admission enforces, on connections or on flows alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quotas {
    /// The most open at once.
    pub max_connections: Option<u32>,
    /// The most new ones per second.
    pub max_connections_per_second: Option<u32>,
    /// The most open at once from one client address (IPv6: its /64).
    pub max_connections_per_client: Option<u32>,
    /// The most new ones per second from one client address.
    pub max_connections_per_second_per_client: Option<u32>,
    /// TCP: the most bytes per second each way, for the redirection as a whole.
    pub bandwidth_limit: Option<u64>,
}

impl Quotas {
    /// Whether a limit per client address is set: only then does a port keep a table of
    /// addresses.
    pub fn per_client(&self) -> bool {
        self.max_connections_per_client.is_some() || self.max_connections_per_second_per_client.is_some()
    }
}

/// TCP's built-in limits. Idle connections are reset after an hour, as Envoy does: without
/// an idle timeout, peers that vanish without a FIN or a reset leak connections. A
/// half-closed connection gets a minute to finish (HAProxy's `timeout client-fin`).
pub const TCP_DEFAULTS: TcpLimits = TcpLimits {
    connect_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(3600),
    half_close_timeout: Duration::from_secs(60),
    max_connections: None,
    max_connections_per_second: None,
    max_connections_per_client: None,
    max_connections_per_second_per_client: None,
    bandwidth_limit: None,
};

/// UDP's built-in limits: a minute of idleness (Envoy's UDP proxy and nginx's
/// `proxy_timeout` are 1 and 10 minutes; a minute frees the sockets of vanished clients
/// sooner, and TCP's hour would hold them far too long), and 10,000 flows per redirection.
pub const UDP_DEFAULTS: UdpLimits = UdpLimits {
    idle_timeout: Duration::from_secs(60),
    max_connections: 10_000,
    max_connections_per_second: None,
    max_datagrams_per_second: None,
    max_connections_per_client: None,
    max_connections_per_second_per_client: None,
    proxy_protocol: None,
};

/// Why settings were refused: the control plane answers it as its API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A value out of its bounds or malformed: the message says which and what to write.
    Invalid(String),
    /// A setting the protocol does not have (`setting` as the API names it, and why).
    NotFor { protocol: Protocol, setting: &'static str, why: &'static str },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(message) => f.write_str(message),
            Refusal::NotFor { protocol, setting, why } => write!(
                f,
                "`{setting}` is not a setting of a {} redirection ({why}): leave it out",
                protocol.name().to_uppercase()
            ),
        }
    }
}

/// The whole check of a new redirection's settings over its namespace's defaults, for its
/// protocol; the limits it will run with.
pub fn check(namespace: &RedirSettings, own: &RedirSettings, protocol: Protocol) -> Result<Limits, Refusal> {
    check_settings(namespace)?;
    check_settings(own)?;
    let not_for = |setting, why| Err(Refusal::NotFor { protocol, setting, why });
    match protocol {
        Protocol::Udp if own.connect_timeout.is_some() => {
            not_for("connectTimeout", "a flow's socket connects at once, without a handshake")
        }
        Protocol::Udp if own.half_close_timeout.is_some() => {
            not_for("halfCloseTimeout", "a flow has no half-close; idleTimeout ends it")
        }
        Protocol::Udp if own.proxy_protocol == Some(ProxyProtocol::V1) => not_for(
            "proxyProtocol: v1",
            "the text header has no datagram form; use v2, or v2-every for every datagram",
        ),
        Protocol::Tcp if own.proxy_protocol == Some(ProxyProtocol::V2Every) => {
            not_for("proxyProtocol: v2-every", "a stream has one header; use v2")
        }
        Protocol::Tcp if own.max_datagrams_per_second.is_some() => not_for(
            "maxDatagramsPerSecond",
            "a stream has no datagrams; maxConnectionsPerSecond limits new connections",
        ),
        Protocol::Udp if own.bandwidth_limit.is_some() => not_for(
            "bandwidthLimit",
            "UDP's bandwidth is not limited; maxDatagramsPerSecond limits each client address",
        ),
        _ => Ok(resolve(namespace, own, protocol)),
    }
}

/// The checks that need neither a namespace nor a protocol: each time limit from 1 s to
/// [`MAX_LIMIT_SECS`], each quota from 1 to [`MAX_QUOTA`], the access lists well formed.
pub fn check_settings(settings: &RedirSettings) -> Result<(), Refusal> {
    let secs = [
        (settings.connect_timeout, "connect timeout"),
        (settings.idle_timeout, "idle timeout"),
        (settings.half_close_timeout, "half-close timeout"),
    ];
    for (value, what) in secs {
        if let Some(s) = value.filter(|s| !(1..=MAX_LIMIT_SECS).contains(s)) {
            return Err(Refusal::Invalid(format!(
                "the {what} must be from 1 to {MAX_LIMIT_SECS} seconds, not {s}"
            )));
        }
    }
    let quotas = [
        (settings.max_connections, "maxConnections"),
        (settings.max_connections_per_second, "maxConnectionsPerSecond"),
        (settings.max_datagrams_per_second, "maxDatagramsPerSecond"),
        (settings.max_connections_per_client, "maxConnectionsPerClient"),
        (settings.max_connections_per_second_per_client, "maxConnectionsPerSecondPerClient"),
    ];
    for (value, what) in quotas {
        if let Some(n) = value.filter(|n| !(1..=MAX_QUOTA).contains(n)) {
            return Err(Refusal::Invalid(format!("{what} must be from 1 to {MAX_QUOTA}, not {n}")));
        }
    }
    if let Some(n) = settings.bandwidth_limit.filter(|n| !(MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(n)) {
        return Err(Refusal::Invalid(format!(
            "bandwidthLimit is in bytes per second, from {MIN_BANDWIDTH} to {MAX_BANDWIDTH}, not {n}"
        )));
    }
    for (what, list) in [("allow", &settings.allow), ("deny", &settings.deny)] {
        if list.len() > wire::MAX_RANGES {
            return Err(Refusal::Invalid(format!(
                "`{what}` holds {} ranges; the most is {}",
                list.len(),
                wire::MAX_RANGES
            )));
        }
        if let Some(bad) = list.iter().find(|text| !wire::matches(wire::RANGE_PATTERN, text)) {
            return Err(Refusal::Invalid(format!(
                "`{what}`: `{bad}` is not an address range: write it like 203.0.113.0/24, 2001:db8::/32 or 198.51.100.7"
            )));
        }
    }
    Access::parse(settings).map_err(Refusal::Invalid)?;
    Ok(())
}

/// The check of a namespace's defaults (the config file's `[[namespace]]`): limits only,
/// since an access list or a PROXY header belongs to each redirection.
pub fn check_namespace_defaults(defaults: &RedirSettings) -> Result<(), Refusal> {
    if let Some(key) = defaults.access_is_set() {
        return Err(Refusal::Invalid(format!(
            "`{key}` is a redirection's setting, not a namespace's: set it on each redirection (`tcp-redirs add --{}`, or the manifest of `apply`)",
            key.replace('_', "-")
        )));
    }
    check_settings(defaults)
}

/// The limits in force on a redirection of `protocol`: each setting its own, else its
/// namespace's, else the built-in one. A value out of its bounds counts as unset (stored
/// settings were checked when written; one that is not is skipped rather than enforced).
pub fn resolve(namespace: &RedirSettings, own: &RedirSettings, protocol: Protocol) -> Limits {
    let secs = |pick: fn(&RedirSettings) -> Option<u64>, base: Duration| {
        [pick(own), pick(namespace)]
            .into_iter()
            .flatten()
            .find(|s| (1..=MAX_LIMIT_SECS).contains(s))
            .map_or(base, Duration::from_secs)
    };
    let quota = |pick: fn(&RedirSettings) -> Option<u32>| {
        [pick(own), pick(namespace)].into_iter().flatten().find(|n| (1..=MAX_QUOTA).contains(n))
    };
    match protocol {
        Protocol::Tcp => Limits::Tcp(TcpLimits {
            connect_timeout: secs(|s| s.connect_timeout, TCP_DEFAULTS.connect_timeout),
            idle_timeout: secs(|s| s.idle_timeout, TCP_DEFAULTS.idle_timeout),
            half_close_timeout: secs(|s| s.half_close_timeout, TCP_DEFAULTS.half_close_timeout),
            max_connections: quota(|s| s.max_connections),
            max_connections_per_second: quota(|s| s.max_connections_per_second),
            max_connections_per_client: quota(|s| s.max_connections_per_client),
            max_connections_per_second_per_client: quota(|s| s.max_connections_per_second_per_client),
            bandwidth_limit: [own.bandwidth_limit, namespace.bandwidth_limit]
                .into_iter()
                .flatten()
                .find(|n| (MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(n)),
        }),
        Protocol::Udp => Limits::Udp(UdpLimits {
            idle_timeout: secs(|s| s.idle_timeout, UDP_DEFAULTS.idle_timeout),
            max_connections: quota(|s| s.max_connections).unwrap_or(UDP_DEFAULTS.max_connections),
            max_connections_per_second: quota(|s| s.max_connections_per_second),
            max_datagrams_per_second: quota(|s| s.max_datagrams_per_second),
            max_connections_per_client: quota(|s| s.max_connections_per_client),
            max_connections_per_second_per_client: quota(|s| s.max_connections_per_second_per_client),
            // The text header has no datagram form (refused when added).
            proxy_protocol: own.proxy_protocol.filter(|p| *p != ProxyProtocol::V1),
        }),
    }
}

impl Limits {
    /// A redirection's own settings with the limits in force filled in, as the API shows
    /// them (a UDP flow has no connect or half-close timeout).
    pub fn in_force(&self, own: &RedirSettings) -> RedirSettings {
        match self {
            Limits::Tcp(l) => RedirSettings {
                connect_timeout: Some(l.connect_timeout.as_secs()),
                idle_timeout: Some(l.idle_timeout.as_secs()),
                half_close_timeout: Some(l.half_close_timeout.as_secs()),
                max_connections: l.max_connections,
                max_connections_per_second: l.max_connections_per_second,
                max_connections_per_client: l.max_connections_per_client,
                max_connections_per_second_per_client: l.max_connections_per_second_per_client,
                bandwidth_limit: l.bandwidth_limit,
                ..own.clone()
            },
            Limits::Udp(l) => RedirSettings {
                idle_timeout: Some(l.idle_timeout.as_secs()),
                max_connections: Some(l.max_connections),
                max_connections_per_second: l.max_connections_per_second,
                max_datagrams_per_second: l.max_datagrams_per_second,
                max_connections_per_client: l.max_connections_per_client,
                max_connections_per_second_per_client: l.max_connections_per_second_per_client,
                ..own.clone()
            },
        }
    }
}

impl TcpLimits {
    /// What admission enforces on the redirection's connections.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_connections: self.max_connections,
            max_connections_per_second: self.max_connections_per_second,
            max_connections_per_client: self.max_connections_per_client,
            max_connections_per_second_per_client: self.max_connections_per_second_per_client,
            bandwidth_limit: self.bandwidth_limit,
        }
    }
}

impl UdpLimits {
    /// What admission enforces on the redirection's flows.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_connections: Some(self.max_connections),
            max_connections_per_second: self.max_connections_per_second,
            max_connections_per_client: self.max_connections_per_client,
            max_connections_per_second_per_client: self.max_connections_per_second_per_client,
            bandwidth_limit: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(limits: Limits) -> TcpLimits {
        match limits {
            Limits::Tcp(l) => l,
            Limits::Udp(_) => panic!("a TCP redirection resolved to UDP limits"),
        }
    }

    fn udp(limits: Limits) -> UdpLimits {
        match limits {
            Limits::Udp(l) => l,
            Limits::Tcp(_) => panic!("a UDP redirection resolved to TCP limits"),
        }
    }

    /// Each setting is taken on its own: the redirection's, else the namespace's, else the
    /// built-in one.
    #[test]
    fn each_setting_resolves_own_then_namespace_then_default() {
        let ns = RedirSettings { idle_timeout: Some(600), max_connections: Some(50), ..Default::default() };
        let own = RedirSettings { connect_timeout: Some(2), max_connections: Some(7), ..Default::default() };
        let l = tcp(resolve(&ns, &own, Protocol::Tcp));
        assert_eq!(l.connect_timeout, Duration::from_secs(2), "its own");
        assert_eq!(l.idle_timeout, Duration::from_secs(600), "the namespace's");
        assert_eq!(l.half_close_timeout, TCP_DEFAULTS.half_close_timeout, "the built-in one");
        assert_eq!(l.max_connections, Some(7));
        assert_eq!(l.max_connections_per_second, None);

        let u = udp(resolve(&RedirSettings::default(), &RedirSettings::default(), Protocol::Udp));
        assert_eq!(u, UDP_DEFAULTS, "UDP's own defaults, not TCP's hour of idleness");
        let u = udp(resolve(&ns, &RedirSettings::default(), Protocol::Udp));
        assert_eq!(u.idle_timeout, Duration::from_secs(600), "a namespace's idle timeout that was set");
        assert_eq!(u.max_connections, 50);
    }

    /// A stored value out of bounds is skipped, not enforced, and the next level holds.
    #[test]
    fn a_stored_value_out_of_bounds_falls_back() {
        let ns = RedirSettings { idle_timeout: Some(900), ..Default::default() };
        let own = RedirSettings { idle_timeout: Some(0), max_connections: Some(0), ..Default::default() };
        let l = tcp(resolve(&ns, &own, Protocol::Tcp));
        assert_eq!(l.idle_timeout, Duration::from_secs(900));
        assert_eq!(l.max_connections, None);
    }

    #[test]
    fn check_refuses_bounds_ranges_and_settings_of_the_other_protocol() {
        let none = RedirSettings::default();
        let bad = |s: RedirSettings, p| check(&none, &s, p).unwrap_err().to_string();
        assert!(bad(RedirSettings { idle_timeout: Some(0), ..none.clone() }, Protocol::Tcp)
            .contains("idle timeout must be from 1"));
        assert!(bad(RedirSettings { max_datagrams_per_second: Some(0), ..none.clone() }, Protocol::Udp)
            .contains("maxDatagramsPerSecond must be from 1"));
        assert!(bad(RedirSettings { allow: vec!["10.0.0.0/33".into()], ..none.clone() }, Protocol::Tcp)
            .contains("203.0.113.0/24"));
        assert!(bad(RedirSettings { deny: vec!["x".into(); 300], ..none.clone() }, Protocol::Tcp)
            .contains("`deny` holds 300 ranges; the most is 256"));
        let not_for =
            check(&none, &RedirSettings { connect_timeout: Some(3), ..none.clone() }, Protocol::Udp);
        assert!(matches!(not_for, Err(Refusal::NotFor { setting: "connectTimeout", .. })));
        let not_for =
            check(&none, &RedirSettings { max_datagrams_per_second: Some(3), ..none.clone() }, Protocol::Tcp);
        assert!(matches!(not_for, Err(Refusal::NotFor { setting: "maxDatagramsPerSecond", .. })));
        let not_for =
            check(&none, &RedirSettings { bandwidth_limit: Some(5000), ..none.clone() }, Protocol::Udp);
        assert!(matches!(not_for, Err(Refusal::NotFor { setting: "bandwidthLimit", .. })));
        assert!(bad(RedirSettings { bandwidth_limit: Some(999), ..none.clone() }, Protocol::Tcp)
            .contains("bandwidthLimit is in bytes per second, from 1000"));
        assert!(bad(RedirSettings { max_connections_per_client: Some(0), ..none.clone() }, Protocol::Tcp)
            .contains("maxConnectionsPerClient must be from 1"));
        let ns = RedirSettings {
            max_connections_per_client: Some(4),
            bandwidth_limit: Some(8000),
            ..none.clone()
        };
        let l =
            tcp(check(&ns, &RedirSettings { bandwidth_limit: Some(2000), ..none.clone() }, Protocol::Tcp)
                .unwrap());
        assert_eq!(
            (l.max_connections_per_client, l.bandwidth_limit),
            (Some(4), Some(2000)),
            "namespace, then own"
        );
        let ns_bad = RedirSettings { half_close_timeout: Some(0), ..none.clone() };
        assert!(check(&ns_bad, &none, Protocol::Tcp).is_err(), "a namespace's defaults are checked too");
        let ok = RedirSettings { max_connections: Some(3), ..none.clone() };
        assert_eq!(tcp(check(&none, &ok, Protocol::Tcp).unwrap()).max_connections, Some(3));
    }

    #[test]
    fn a_namespace_holds_limits_only() {
        let err = check_namespace_defaults(&RedirSettings {
            allow: vec!["10.0.0.0/8".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`allow` is a redirection's setting") && err.contains("--allow"), "{err}");
        assert!(
            check_namespace_defaults(&RedirSettings { idle_timeout: Some(5), ..Default::default() }).is_ok()
        );
    }

    /// What the API shows is what resolution enforces, in the API's own names.
    #[test]
    fn in_force_shows_the_resolved_limits() {
        let own = RedirSettings { max_connections_per_second: Some(9), ..Default::default() };
        let shown = resolve(&Default::default(), &own, Protocol::Tcp).in_force(&own);
        assert_eq!(shown.connect_timeout, Some(5));
        assert_eq!(shown.idle_timeout, Some(3600));
        assert_eq!(shown.max_connections_per_second, Some(9));
        let shown =
            resolve(&Default::default(), &Default::default(), Protocol::Udp).in_force(&Default::default());
        assert_eq!(
            (shown.idle_timeout, shown.max_connections, shown.connect_timeout),
            (Some(60), Some(10_000), None)
        );
    }
}
