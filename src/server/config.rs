//! The optional configuration file (`serve --config FILE`, TOML) and the built-in defaults.
//!
//! ```toml
//! store = "etcd://10.0.0.9:2379"  # a fleet's shared store; default: SQLite in the data dir
//! store_ca = "/etc/tcp-redirs/etcd-ca.pem"     # TLS to etcd, checking its certificate
//! store_cert = "/etc/tcp-redirs/gw-a.pem"      # this node's client certificate
//! store_key = "/etc/tcp-redirs/gw-a-key.pem"
//! store_user = "tcp-redirs"                    # etcd's auth; the password is in
//! store_password_file = "/etc/tcp-redirs/etcd-password"  # (or TCP_REDIRS_STORE_PASSWORD)
//! node = "gw-a"                 # this node's name in the fleet; default: the host name
//! serve_namespaces = ["default"]  # the namespaces this node listens for; default: all
//! max_redirections_per_org = 100
//!
//! [[namespace]]
//! name = "dedicated"            # [a-z0-9-], 1 to 64 characters
//! bind = "0.0.0.0"              # default: `serve --public-bind`
//! public_host = "tcp.example.com"  # shown to users as tcp://HOST:PORT/
//! ports = "6000-6999"           # inclusive; default: above 5000, below the ephemeral range
//! description = "for the database team"
//! connect_timeout = 5           # seconds an instance may take to accept (then the next is tried)
//! idle_timeout = 3600           # seconds without a byte either way before a connection is closed
//! half_close_timeout = 60       # seconds a connection may stay half-closed
//! max_connections = 1000       # per redirection; default: unlimited
//! max_connections_per_second = 100  # per redirection; default: unlimited
//! orgs = ["acme"]               # reserved to these organisations (names or ids); default: all
//! access_log = true             # one log line per connection when it ends; default: off
//!
//! [events]                      # the audit trail (issue 35)
//! max_age_days = 90             # events older than this are deleted; default 90
//! max_count = 1000000           # at most this many are kept, the newest; default 1,000,000
//!
//! [webhooks]                    # delivery of the audit trail's events (docs/events.md)
//! timeout = 10                  # seconds one post may take (1 to 60)
//! give_up_after = 86400         # seconds an event is retried before it is listed as failed (1 to 604800)
//!
//! [[application]]
//! name = "my-db"
//! instances = ["127.0.0.1:4040"]
//! ```
//!
//! `default` and `cleverapps` always exist; a `[[namespace]]` with one of those names
//! overrides their settings. In a fleet, every node's definition of a namespace must agree
//! with the store's (all but `bind`); see [`crate::server::state::store::Store::agree`]. Applications listed here are created in the default
//! organisation at start, and their instances are set to the file's.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::server::control::delivery::DeliverySettings;
use crate::server::data::balance::CheckSettings;
use crate::server::spec;
use crate::server::state::store::audit::Retention;
use crate::server::state::store::{NamespaceDef, StoreAccess};
use crate::wire::RedirSettings;

/// The file as written by the operator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The shared store: `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]`; SQLite in the data
    /// directory when absent (`serve --store` wins).
    pub store: Option<String>,
    /// The CA that signed etcd's certificate (`serve --store-ca` wins).
    pub store_ca: Option<std::path::PathBuf>,
    /// This node's client certificate for etcd (`serve --store-cert` wins).
    pub store_cert: Option<std::path::PathBuf>,
    /// The key of `store_cert` (`serve --store-key` wins).
    pub store_key: Option<std::path::PathBuf>,
    /// The etcd user (`serve --store-user` wins).
    pub store_user: Option<String>,
    /// The file holding the etcd user's password (`serve --store-password-file` wins).
    pub store_password_file: Option<std::path::PathBuf>,
    /// This node's name in a fleet (`serve --node` wins).
    pub node: Option<String>,
    /// The namespaces this node serves; all of them when absent (`serve --namespaces` wins).
    pub serve_namespaces: Option<Vec<String>>,
    /// The most redirections one organisation may hold, all namespaces together.
    pub max_redirections_per_org: Option<u32>,
    /// Namespaces to declare or override.
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<NamespaceConfig>,
    /// Applications to create in the default organisation.
    #[serde(default, rename = "application")]
    pub applications: Vec<AppConfig>,
    /// The node's health checks of every instance.
    #[serde(default)]
    pub health_checks: HealthChecksConfig,
    /// The audit trail's retention.
    #[serde(default)]
    pub events: EventsConfig,
    /// How webhooks are delivered.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
}

/// The `[webhooks]` table: how this node delivers webhooks (issue 35).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Seconds one post may take (1 to 60).
    pub timeout: u64,
    /// Seconds an event is retried before it is listed as failed (1 to 604,800).
    pub give_up_after: u64,
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        let d = DeliverySettings::default();
        WebhooksConfig { timeout: d.timeout.as_secs(), give_up_after: d.give_up_after.as_secs() }
    }
}

impl WebhooksConfig {
    /// The settings deliveries use, or why the table is wrong.
    pub fn settings(&self) -> Result<DeliverySettings> {
        if !(1..=60).contains(&self.timeout) {
            bail!("[webhooks] timeout = {}: use from 1 to 60 seconds", self.timeout);
        }
        if !(1..=604_800).contains(&self.give_up_after) {
            bail!("[webhooks] give_up_after = {}: use from 1 to 604800 seconds (a week)", self.give_up_after);
        }
        Ok(DeliverySettings {
            timeout: std::time::Duration::from_secs(self.timeout),
            give_up_after: std::time::Duration::from_secs(self.give_up_after),
        })
    }
}

/// The `[events]` table: how long, and how many, events the audit trail keeps (issue 35).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Days an event is kept (1 to 36,500).
    pub max_age_days: u32,
    /// Events kept at most, the newest (1,000 to 100,000,000).
    pub max_count: u64,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        let d = Retention::default();
        EventsConfig { max_age_days: (d.max_age.as_secs() / 86_400) as u32, max_count: d.max_count }
    }
}

impl EventsConfig {
    /// The retention the store enforces, or why the table is wrong.
    pub fn retention(&self) -> Result<Retention> {
        if !(1..=36_500).contains(&self.max_age_days) {
            bail!("[events] max_age_days = {}: use from 1 to 36500 days", self.max_age_days);
        }
        if !(1_000..=100_000_000).contains(&self.max_count) {
            bail!("[events] max_count = {}: use from 1000 to 100000000 events", self.max_count);
        }
        Ok(Retention {
            max_age: std::time::Duration::from_secs(u64::from(self.max_age_days) * 86_400),
            max_count: self.max_count,
        })
    }
}

/// The `[health_checks]` table: how this node checks every instance address (issue 33).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthChecksConfig {
    /// Check every instance (else only those a failed connection marked down).
    pub enabled: bool,
    /// Seconds between two checks of an address (0.1 to 3600; fractions allowed).
    pub interval: f64,
    /// Seconds a check may take (0.1 to 60, and at most `interval`).
    pub timeout: f64,
    /// Successful checks in a row that bring a down instance up (1 to 100).
    pub rise: u32,
    /// Failed checks in a row that take an up instance down (1 to 100).
    pub fall: u32,
}

impl Default for HealthChecksConfig {
    fn default() -> HealthChecksConfig {
        let d = CheckSettings::default();
        HealthChecksConfig {
            enabled: d.enabled,
            interval: d.interval.as_secs_f64(),
            timeout: d.timeout.as_secs_f64(),
            rise: d.rise,
            fall: d.fall,
        }
    }
}

impl HealthChecksConfig {
    /// The settings the checks run with, or why the table is wrong.
    pub fn settings(&self) -> Result<CheckSettings> {
        let secs = |value: f64, what: &str, max: f64| {
            if !(0.1..=max).contains(&value) {
                bail!("[health_checks] {what} = {value}: use from 0.1 to {max} seconds");
            }
            Ok(std::time::Duration::from_secs_f64(value))
        };
        for (value, what) in [(self.rise, "rise"), (self.fall, "fall")] {
            if !(1..=100).contains(&value) {
                bail!("[health_checks] {what} = {value}: use a count of checks in a row from 1 to 100");
            }
        }
        let settings = CheckSettings {
            enabled: self.enabled,
            interval: secs(self.interval, "interval", 3600.0)?,
            timeout: secs(self.timeout, "timeout", 60.0)?,
            rise: self.rise,
            fall: self.fall,
        };
        if settings.timeout > settings.interval {
            bail!(
                "[health_checks] timeout = {} is longer than interval = {}: a check must end before the next begins; make timeout at most interval",
                self.timeout,
                self.interval
            );
        }
        Ok(settings)
    }
}

/// One `[[namespace]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// The namespace's name.
    pub name: String,
    /// The address its public listeners bind.
    pub bind: Option<IpAddr>,
    /// The host name users connect to.
    pub public_host: Option<String>,
    /// The port range, `"LOW-HIGH"`.
    pub ports: Option<String>,
    /// What it is for.
    pub description: Option<String>,
    /// The default limits of its redirections, spelled as in the manifest
    /// (`idle_timeout = 3600`); the access list and PROXY protocol are a redirection's own.
    #[serde(flatten, with = "crate::wire::settings::Toml")]
    pub defaults: RedirSettings,
    /// When set, only these organisations (names or ids) see and use the namespace.
    pub orgs: Option<Vec<String>>,
    /// Log one line per connection when it ends.
    #[serde(default)]
    pub access_log: bool,
}

/// One `[[application]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The application's name.
    pub name: String,
    /// Its instances, `HOST:PORT`.
    #[serde(default)]
    pub instances: Vec<String>,
}

/// A namespace as this node runs it: the definition shared by every node, and where its
/// ports bind here.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The definition, the same on every node of a fleet.
    pub def: NamespaceDef,
    /// The address its public listeners bind on this node.
    pub bind: IpAddr,
}

impl Config {
    /// The file's `store_*` settings.
    pub fn store_access(&self) -> StoreAccess {
        StoreAccess {
            ca: self.store_ca.clone(),
            cert: self.store_cert.clone(),
            key: self.store_key.clone(),
            user: self.store_user.clone(),
            password_file: self.store_password_file.clone(),
        }
    }

    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config: Config = crate::toml_file::parse(&text, path).context("invalid config file")?;
        config.health_checks.settings().with_context(|| format!("invalid config file {}", path.display()))?;
        config.events.retention().with_context(|| format!("invalid config file {}", path.display()))?;
        config.webhooks.settings().with_context(|| format!("invalid config file {}", path.display()))?;
        for app in &config.applications {
            for address in &app.instances {
                crate::wire::check_instance_address(address)
                    .map_err(|e| anyhow::anyhow!("{}: application `{}`: {e}", path.display(), app.name))?;
            }
        }
        Ok(config)
    }

    /// The namespaces the server runs: the built-ins, overridden and extended by the file.
    pub fn namespaces(&self, public_bind: IpAddr) -> Result<Vec<Namespace>> {
        let ports = default_port_range();
        let host = default_public_host(public_bind);
        let builtin = |name: &str, description: &str| Namespace {
            def: NamespaceDef {
                name: name.into(),
                public_host: host.clone(),
                min_port: *ports.start(),
                max_port: *ports.end(),
                description: Some(description.into()),
                orgs: None,
                limits: RedirSettings::default(),
                default_host: true,
                retired: false,
                access_log: false,
            },
            bind: public_bind,
        };
        let mut list = vec![
            builtin("cleverapps", "for redirections used with 'cleverapps.io' domain"),
            builtin("default", "for redirections used with custom domains"),
        ];
        for ns in &self.namespaces {
            check_namespace_name(&ns.name)?;
            let ports = match &ns.ports {
                Some(text) => parse_range(text)
                    .with_context(|| format!("namespace `{}`: invalid ports `{text}`", ns.name))?,
                None => ports.clone(),
            };
            let bind = ns.bind.unwrap_or(public_bind);
            spec::check_namespace_defaults(&ns.defaults)
                .map_err(|e| anyhow::anyhow!("namespace `{}`: {e}", ns.name))?;
            let mut entry = Namespace {
                def: NamespaceDef {
                    name: ns.name.clone(),
                    public_host: ns.public_host.clone().unwrap_or_else(|| default_public_host(bind)),
                    min_port: *ports.start(),
                    max_port: *ports.end(),
                    description: ns.description.clone(),
                    orgs: ns.orgs.clone(),
                    limits: ns.defaults.clone(),
                    default_host: ns.public_host.is_none(),
                    retired: false,
                    access_log: ns.access_log,
                },
                bind,
            };
            match list.iter_mut().find(|n| n.def.name == ns.name) {
                Some(existing) => {
                    entry.def.description = entry.def.description.or(existing.def.description.take());
                    *existing = entry;
                }
                None => list.push(entry),
            }
        }
        list.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        Ok(list)
    }
}

fn check_namespace_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("invalid namespace name `{name}`: use 1 to 64 characters among a-z, 0-9 and -");
    }
    Ok(())
}

/// Parses `"LOW-HIGH"` (inclusive) into a port range.
pub fn parse_range(text: &str) -> Result<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').context("write it LOW-HIGH, for example 6000-6999")?;
    let low: u16 = low.trim().parse().context("LOW must be a port from 1 to 65535")?;
    let high: u16 = high.trim().parse().context("HIGH must be a port from 1 to 65535")?;
    if low == 0 || low > high {
        bail!("LOW must be at least 1 and no more than HIGH");
    }
    Ok(low..=high)
}

/// Above 5000 (as on Clever Cloud) and clear of the kernel's ephemeral range, where the
/// machine's own outgoing connections take their ports: a listener there could collide
/// with them at any time.
pub fn default_port_range() -> RangeInclusive<u16> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    match ephemeral {
        (low, _) if low > 6001 => 5001..=low - 1,
        (_, high) if high < 64535 => high + 1..=65535,
        _ => 5001..=9999,
    }
}

fn default_public_host(bind: IpAddr) -> String {
    match bind {
        ip if ip.is_unspecified() => "localhost".into(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}
