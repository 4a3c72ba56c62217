//! One redirection's settings: its time limits, connection quotas, access list and PROXY
//! protocol, as one type that every surface reads and writes.
//!
//! [`RedirSettings`] is the whole list, and each surface takes it as it is rather than
//! spelling the settings again:
//! - the API: the bodies of `POST …/tcpRedirs` and of a batch flatten it (the keys are
//!   lowerCamelCase, `idleTimeout`), and so does the answer, `TcpRedir`;
//! - the CLI: `tcp-redirs add` flattens it as its flags (`--idle-timeout`), with their
//!   bounds checked by clap before a request is sent;
//! - the TOML files, the manifest of `apply` and the config file's `[[namespace]]`, spell
//!   its fields snake_case (`idle_timeout = 600`) through [`Toml`], a serde `remote`
//!   definition: the compiler checks that it names every field of the type, no more and no
//!   fewer, so that a setting added here cannot be forgotten there;
//! - the store keeps it with the redirection (etcd as the API's JSON, SQLite one column a
//!   setting), and a namespace's defaults are the same type (its limits only, see
//!   [`RedirSettings::access_is_set`]).
//!
//! The server checks it in one place, the redirection spec (`server::spec::check`), for
//! the API, a batch and the config file alike: a time limit from 1 s to [`MAX_LIMIT_SECS`], a quota
//! from 1 to [`MAX_QUOTA`], a bandwidth limit from [`MIN_BANDWIDTH`] to [`MAX_BANDWIDTH`] bytes
//! per second, at most [`crate::wire::MAX_RANGES`] ranges a list, each one an address or a
//! CIDR range.

use serde::{Deserialize, Serialize};

use super::{integral, MAX_BANDWIDTH, MAX_LIMIT_SECS, MAX_QUOTA, MIN_BANDWIDTH};

/// A redirection's settings; unset ones take the namespace's, then the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RedirSettings {
    /// How long an instance may take to accept before the next one is tried, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::seconds))]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS),
        help = "Seconds an instance may take to accept before the next is tried [default: the namespace's, 5]")]
    pub connect_timeout: Option<u64>,
    /// How long a connection may go without a byte in either direction, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::seconds))]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS),
        help = "Seconds a connection may go without a byte before it is closed [default: the namespace's, 3600]")]
    pub idle_timeout: Option<u64>,
    /// How long a connection may stay half-closed (one direction ended), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::seconds))]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS),
        help = "Seconds a connection may stay half-closed [default: the namespace's, 60]")]
    pub half_close_timeout: Option<u64>,
    /// The most connections open at once; more are refused. The namespace's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64),
        help = "The most connections open at once; more are refused [default: unlimited]")]
    pub max_connections: Option<u32>,
    /// The most new connections per second (a burst of one second is allowed); more are
    /// refused. The namespace's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64),
        help = "The most new connections per second; more are refused [default: unlimited]")]
    pub max_connections_per_second: Option<u32>,
    /// UDP only: the most datagrams per second from one client address (a burst of one
    /// second is allowed); more are dropped. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64),
        help = "UDP: the most datagrams per second from one client address; more are dropped [default: unlimited]")]
    pub max_datagrams_per_second: Option<u32>,
    /// The most connections (UDP: flows) open at once from one client address, an IPv6
    /// client counted with its /64; more are refused. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64),
        help = "The most connections (UDP: flows) open at once from one client address (IPv6: its /64); more are refused [default: unlimited]")]
    pub max_connections_per_client: Option<u32>,
    /// The most new connections (UDP: flows) per second from one client address, an IPv6
    /// client counted with its /64 (a burst of one second); more are refused. Unlimited
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64),
        help = "The most new connections (UDP: flows) per second from one client address (IPv6: its /64); more are refused [default: unlimited]")]
    pub max_connections_per_second_per_client: Option<u32>,
    /// TCP only: the most bytes per second in each direction, for the redirection as a
    /// whole (all its connections share it; a burst of one second). Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::bandwidth))]
    #[arg(long, value_name = "BYTES", value_parser = parse_bandwidth,
        help = "TCP: the most bytes per second each way, shared by all the redirection's connections (512k, 10M, 1G: powers of 1000; 64Ki, 10Mi: of 1024) [default: unlimited]")]
    pub bandwidth_limit: Option<u64>,
    /// Send the PROXY protocol header (`v1` text or `v2` binary) to the instance before the
    /// first byte, so the application learns the client's real address; off when absent.
    /// UDP takes `v2` (in front of a flow's first datagram) or `v2-every` (every datagram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "VERSION", value_parser = ProxyProtocol::parse,
        help = "Send the PROXY protocol header (v1 or v2; UDP: v2, or v2-every for every datagram) to the instance, so it sees the client's address")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// When not empty, only clients in these ranges (CIDR, or a single address) may connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::ranges))]
    #[arg(
        long,
        value_name = "CIDR",
        help = "Only clients in this range may connect (CIDR or address; repeat for several)"
    )]
    pub allow: Vec<String>,
    /// Clients in these ranges are refused, even when `allow` admits them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::ranges))]
    #[arg(
        long,
        value_name = "CIDR",
        help = "Refuse clients in this range, even when allowed (CIDR or address; repeat for several)"
    )]
    pub deny: Vec<String>,
}

/// A change to one redirection's settings, the body of `PATCH …/tcpRedirs/{port}` and
/// `PATCH …/udpRedirs/{port}` (`tcp-redirs update`): a key absent keeps its setting, `null`
/// unsets it (the namespace's, then the server's default, are in force again), a value sets
/// it; `allow` and `deny` replace the list (`[]`: none). The port, its application and its
/// open connections stay; new connections get the result on every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsPatch {
    /// Seconds an instance may take to accept; `null`: the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::seconds))]
    pub connect_timeout: Option<Option<u64>>,
    /// Seconds a connection may go without a byte; `null`: the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::seconds))]
    pub idle_timeout: Option<Option<u64>>,
    /// Seconds a connection may stay half-closed; `null`: the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::seconds))]
    pub half_close_timeout: Option<Option<u64>>,
    /// The most connections open at once; `null`: the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    pub max_connections: Option<Option<u32>>,
    /// The most new connections per second; `null`: the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    pub max_connections_per_second: Option<Option<u32>>,
    /// UDP only: the most datagrams per second from one client address; `null`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    pub max_datagrams_per_second: Option<Option<u32>>,
    /// The most connections (UDP: flows) open at once from one client address; `null`: the
    /// namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    pub max_connections_per_client: Option<Option<u32>>,
    /// The most new connections (UDP: flows) per second from one client address; `null`:
    /// the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::quota))]
    pub max_connections_per_second_per_client: Option<Option<u32>>,
    /// TCP only: the most bytes per second each way, for the whole redirection; `null`: the
    /// namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::bandwidth))]
    pub bandwidth_limit: Option<Option<u64>>,
    /// The PROXY protocol header sent to the instance; `null`: none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::value")]
    #[cfg_attr(feature = "server", schema(value_type = Option<ProxyProtocol>))]
    pub proxy_protocol: Option<Option<ProxyProtocol>>,
    /// The new access list (replaces the old one; `[]`: everyone may connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::ranges))]
    pub allow: Option<Vec<String>>,
    /// The new list of refused ranges (replaces the old one; `[]`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::ranges))]
    pub deny: Option<Vec<String>>,
}

impl SettingsPatch {
    /// The settings `current` become with this change.
    pub fn apply(&self, current: &RedirSettings) -> RedirSettings {
        fn pick<T: Clone>(change: &Option<Option<T>>, current: &Option<T>) -> Option<T> {
            match change {
                Some(new) => new.clone(),
                None => current.clone(),
            }
        }
        RedirSettings {
            connect_timeout: pick(&self.connect_timeout, &current.connect_timeout),
            idle_timeout: pick(&self.idle_timeout, &current.idle_timeout),
            half_close_timeout: pick(&self.half_close_timeout, &current.half_close_timeout),
            max_connections: pick(&self.max_connections, &current.max_connections),
            max_connections_per_second: pick(
                &self.max_connections_per_second,
                &current.max_connections_per_second,
            ),
            max_datagrams_per_second: pick(&self.max_datagrams_per_second, &current.max_datagrams_per_second),
            max_connections_per_client: pick(
                &self.max_connections_per_client,
                &current.max_connections_per_client,
            ),
            max_connections_per_second_per_client: pick(
                &self.max_connections_per_second_per_client,
                &current.max_connections_per_second_per_client,
            ),
            bandwidth_limit: pick(&self.bandwidth_limit, &current.bandwidth_limit),
            proxy_protocol: pick(&self.proxy_protocol, &current.proxy_protocol),
            allow: self.allow.clone().unwrap_or_else(|| current.allow.clone()),
            deny: self.deny.clone().unwrap_or_else(|| current.deny.clone()),
        }
    }

    /// The settings it changes, as the files spell them (`idle_timeout`), in their order.
    pub fn names(&self) -> Vec<&'static str> {
        let changed = [
            (self.connect_timeout.is_some(), "connect_timeout"),
            (self.idle_timeout.is_some(), "idle_timeout"),
            (self.half_close_timeout.is_some(), "half_close_timeout"),
            (self.max_connections.is_some(), "max_connections"),
            (self.max_connections_per_second.is_some(), "max_connections_per_second"),
            (self.max_datagrams_per_second.is_some(), "max_datagrams_per_second"),
            (self.max_connections_per_client.is_some(), "max_connections_per_client"),
            (self.max_connections_per_second_per_client.is_some(), "max_connections_per_second_per_client"),
            (self.bandwidth_limit.is_some(), "bandwidth_limit"),
            (self.proxy_protocol.is_some(), "proxy_protocol"),
            (self.allow.is_some(), "allow"),
            (self.deny.is_some(), "deny"),
        ];
        changed.into_iter().filter(|(c, _)| *c).map(|(_, name)| name).collect()
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == SettingsPatch::default()
    }
}

/// The deserializers of a patch's keys: present (a value or `null`) is `Some`, absent is
/// the `default`, `None`. Shared with the health checks' patch (`wire::health`).
pub(super) mod patch {
    use serde::{Deserialize, Deserializer};

    /// A whole number or `null`.
    pub fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        crate::wire::integral::option(d).map(Some)
    }

    /// A value or `null`.
    pub fn value<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The settings as the TOML files spell them: snake_case keys, the same fields (see the
/// module's documentation). Used as `#[serde(flatten, with = "crate::wire::settings::Toml")]`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "RedirSettings")]
pub struct Toml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    half_close_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_datagrams_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections_per_client: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections_per_second_per_client: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bandwidth_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy_protocol: Option<ProxyProtocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deny: Vec<String>,
}

/// A version of the PROXY protocol (HAProxy's specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// The human-readable header: `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// The binary header.
    V2,
    /// The binary header in front of every datagram (UDP only; `v2` heads a flow's first).
    #[serde(rename = "v2-every")]
    V2Every,
}

impl ProxyProtocol {
    /// Reads `v1`, `v2` (or `1`, `2`) or `v2-every`, as the CLI takes it.
    pub fn parse(text: &str) -> Result<ProxyProtocol, String> {
        match text {
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            "v2-every" => Ok(ProxyProtocol::V2Every),
            _ => Err("use v1 (text header) or v2 (binary header); for UDP, v2 or v2-every".into()),
        }
    }

    /// Its name in the API and the files.
    pub fn name(self) -> &'static str {
        match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
            ProxyProtocol::V2Every => "v2-every",
        }
    }
}

/// Reads a bandwidth in bytes per second as the CLI takes it: a whole number, or one with
/// a suffix, `k`, `M`, `G` (powers of 1000, as network rates are written) or `Ki`, `Mi`,
/// `Gi` (powers of 1024); a trailing `B` or `B/s` is allowed (`10MB/s`). Bounds:
/// [`MIN_BANDWIDTH`] to [`MAX_BANDWIDTH`].
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let bare = text.trim();
    let bare = bare.strip_suffix("/s").unwrap_or(bare);
    let bare = bare.strip_suffix(['B', 'b']).filter(|b| !b.is_empty()).unwrap_or(bare);
    let split = bare.find(|c: char| !c.is_ascii_digit()).unwrap_or(bare.len());
    let (digits, suffix) = bare.split_at(split);
    let unit: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => 0,
    };
    let value = digits.parse::<u64>().ok().filter(|_| unit > 0).and_then(|n| n.checked_mul(unit));
    match value {
        Some(n) if (MIN_BANDWIDTH..=MAX_BANDWIDTH).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "{n} bytes per second is out of bounds: use {MIN_BANDWIDTH} (1k) to {MAX_BANDWIDTH} (100G)"
        )),
        None => Err(format!(
            "`{text}` is not a bandwidth: write bytes per second as a whole number, or with a suffix: 512k, 10M, 1G (powers of 1000) or 64Ki, 10Mi (powers of 1024)"
        )),
    }
}

impl RedirSettings {
    /// Whether any of the settings that only a redirection can have (access list, PROXY
    /// protocol) is set: a namespace's defaults hold limits only.
    pub fn access_is_set(&self) -> Option<&'static str> {
        if !self.allow.is_empty() {
            Some("allow")
        } else if !self.deny.is_empty() {
            Some("deny")
        } else if self.proxy_protocol.is_some() {
            Some("proxy_protocol")
        } else {
            None
        }
    }

    /// Whether a running redirection's settings are what these declare: each limit these
    /// set is the one in force (unset ones are free), and the access list and PROXY
    /// protocol are the same (unset is off).
    pub fn satisfied_by(&self, running: &RedirSettings) -> bool {
        fn same<T: PartialEq>(want: Option<T>, have: Option<T>) -> bool {
            want.is_none() || want == have
        }
        same(self.connect_timeout, running.connect_timeout)
            && same(self.idle_timeout, running.idle_timeout)
            && same(self.half_close_timeout, running.half_close_timeout)
            && same(self.max_connections, running.max_connections)
            && same(self.max_connections_per_second, running.max_connections_per_second)
            && same(self.max_datagrams_per_second, running.max_datagrams_per_second)
            && same(self.max_connections_per_client, running.max_connections_per_client)
            && same(self.max_connections_per_second_per_client, running.max_connections_per_second_per_client)
            && same(self.bandwidth_limit, running.bandwidth_limit)
            && self.proxy_protocol == running.proxy_protocol
            && self.allow == running.allow
            && self.deny == running.deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct InToml {
        #[serde(flatten, with = "Toml")]
        settings: RedirSettings,
    }

    fn every_setting() -> RedirSettings {
        RedirSettings {
            connect_timeout: Some(1),
            idle_timeout: Some(2),
            half_close_timeout: Some(3),
            max_connections: Some(4),
            max_connections_per_second: Some(5),
            max_datagrams_per_second: Some(6),
            max_connections_per_client: Some(7),
            max_connections_per_second_per_client: Some(8),
            bandwidth_limit: Some(9_000),
            proxy_protocol: Some(ProxyProtocol::V2),
            allow: vec!["10.0.0.0/8".into()],
            deny: vec!["10.0.0.7".into()],
        }
    }

    /// The TOML spelling is the JSON one in snake_case, key for key, both ways.
    #[test]
    fn the_files_and_the_api_spell_the_same_settings() {
        let settings = every_setting();
        let json = serde_json::to_value(&settings).unwrap();
        let toml_text = toml::to_string(&InToml { settings: settings.clone() }).unwrap();
        let table: toml::Table = toml_text.parse().unwrap();
        let camel = |snake: &str| {
            let mut out = String::new();
            let mut up = false;
            for c in snake.chars() {
                match c {
                    '_' => up = true,
                    c if up => {
                        out.push(c.to_ascii_uppercase());
                        up = false
                    }
                    c => out.push(c),
                }
            }
            out
        };
        let mut toml_keys: Vec<String> = table.keys().map(|k| camel(k)).collect();
        let mut json_keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        toml_keys.sort();
        json_keys.sort();
        assert_eq!(toml_keys, json_keys, "every setting is in both spellings");
        assert_eq!(toml_keys.len(), 12);
        let back: InToml = toml::from_str(&toml_text).unwrap();
        assert_eq!(back.settings, settings);
        let back: RedirSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, settings);
    }

    #[test]
    fn a_bandwidth_is_read_with_or_without_a_suffix() {
        assert_eq!(parse_bandwidth("2500"), Ok(2500));
        assert_eq!(parse_bandwidth("512k"), Ok(512_000));
        assert_eq!(parse_bandwidth("10M"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("10MB/s"), Ok(10_000_000));
        assert_eq!(parse_bandwidth("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bandwidth("64Ki"), Ok(65_536));
        assert_eq!(parse_bandwidth("1Mi"), Ok(1 << 20));
        assert!(parse_bandwidth("999").unwrap_err().contains("out of bounds"));
        assert!(parse_bandwidth("101G").unwrap_err().contains("out of bounds"));
        for bad in ["", "ten", "10 M", "1.5M", "10m", "-5", "M", "99999999999999999999"] {
            assert!(parse_bandwidth(bad).unwrap_err().contains("not a bandwidth"), "{bad}");
        }
    }

    /// A file with a misspelt setting is refused with the key's name, not read as unset.
    #[test]
    fn a_misspelt_setting_in_a_file_is_refused() {
        let err = toml::from_str::<InToml>("idle_timeot = 5").unwrap_err().to_string();
        assert!(err.contains("unknown field `idle_timeot`"), "{err}");
        let err = toml::from_str::<InToml>("idleTimeout = 5").unwrap_err().to_string();
        assert!(err.contains("unknown field `idleTimeout`"), "{err}");
    }

    /// A patch: absent keeps, `null` unsets, a value sets, a list replaces.
    #[test]
    fn a_patch_keeps_unsets_and_sets() {
        let patch: SettingsPatch =
            serde_json::from_str(r#"{"idleTimeout":600,"connectTimeout":null,"allow":[]}"#).unwrap();
        let after = patch.apply(&every_setting());
        assert_eq!(after.idle_timeout, Some(600));
        assert_eq!(after.connect_timeout, None);
        assert!(after.allow.is_empty());
        assert_eq!(after.deny, every_setting().deny, "absent: kept");
        assert_eq!(after.max_connections, Some(4));
        assert_eq!(
            serde_json::to_string(&patch).unwrap(),
            r#"{"connectTimeout":null,"idleTimeout":600,"allow":[]}"#
        );
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"idleTimeot":5}"#).is_err());
    }

    #[test]
    fn a_declaration_is_satisfied_by_what_it_states() {
        let running = every_setting();
        assert!(RedirSettings {
            allow: running.allow.clone(),
            deny: running.deny.clone(),
            proxy_protocol: running.proxy_protocol,
            ..RedirSettings::default()
        }
        .satisfied_by(&running));
        assert!(
            !RedirSettings::default().satisfied_by(&running),
            "the access list and PROXY protocol must match"
        );
        assert!(!RedirSettings { idle_timeout: Some(9), ..running.clone() }.satisfied_by(&running));
        assert!(every_setting().satisfied_by(&running));
    }
}
