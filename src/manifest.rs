//! The declarative format of `tcp-redirs apply -f FILE` and `tcp-redirs export`.
//!
//! ```toml
//! [[application]]
//! name = "my-db"
//! instances = [{ address = "127.0.0.1:4040" }, { address = "127.0.0.1:4041", weight = 2 }]
//!
//! [[application.redirection]]
//! namespace = "default"
//! port = 5123                  # optional: a random port when absent
//! ports = 100                  # optional: a range of 100 ports, 5123-5222, to each instance's port + i
//! idle_timeout = 600           # optional, like every setting of `add`
//! allow = ["203.0.113.0/24"]
//! proxy_protocol = "v2"
//!
//! [application.health_check]  # optional, like every flag of `apps create`: the node's otherwise
//! interval_ms = 1000
//! kind = "expect"
//! send = "50494e470d0a"        # hexadecimal: PING\r\n
//! expect = "2b504f4e47"        # the answer starts with +PONG
//! ```
//!
//! A file may hold several organisations (an admin's `export` of a whole server): each
//! application then names its own, and the top-level `organisations` lists every one, so
//! that one without applications is kept too:
//!
//! ```toml
//! organisations = ["acme", "default"]
//!
//! [[application]]
//! organisation = "acme"
//! name = "mqtt"
//! instances = [{ address = "10.0.0.5:1883" }]
//! ```
//!
//! An application without `organisation` goes to the one `apply --org` names (or the only
//! one the credential sees), as in a single-organisation file.
//!
//! `export` writes the current state in this format with every port fixed, so that applying
//! an export elsewhere rebuilds the same ports. Applying is idempotent: a second `apply` of
//! the same file changes nothing.

use serde::{Deserialize, Serialize};

use crate::wire::{HealthCheck, RedirSettings, SettingsPatch};
use crate::wire::{Instance, NewInstance, NewTcpRedir, Protocol, TcpRedir};

/// A whole file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Organisations that must exist, by name (created when missing; admin): an export of
    /// several lists them all, those without applications too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organisations: Vec<String>,
    /// The applications, each with its instances and redirections.
    #[serde(default, rename = "application")]
    pub applications: Vec<AppSpec>,
}

/// One application as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Its organisation, by name (created when missing; admin); absent: the one `apply
    /// --org` names, or the only one the credential sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// The application's name in its organisation.
    pub name: String,
    /// Where its traffic goes.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    /// How its instances are health-checked (absent settings: the node's); `apply` updates
    /// them in place.
    #[serde(default, skip_serializing_if = "HealthCheck::is_default", with = "crate::wire::health::Toml")]
    pub health_check: HealthCheck,
    /// Its redirections; any other redirection of the application is removed.
    #[serde(default, rename = "redirection")]
    pub redirections: Vec<RedirSpec>,
}

/// One instance as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// `HOST:PORT`.
    pub address: String,
    /// Its share of new connections (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// One redirection as declared; every setting is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirSpec {
    /// The namespace.
    pub namespace: String,
    /// A fixed port; a random one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How many consecutive ports, from `port` (issue 34); one when absent. Public port
    /// `port + i` goes to each instance's port `+ i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<u16>,
    /// `udp` for a UDP redirection; TCP when absent.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// Its settings, spelled as `add`'s flags without the dashes (`idle_timeout = 600`).
    #[serde(flatten, with = "crate::wire::settings::Toml")]
    pub settings: RedirSettings,
}

impl InstanceSpec {
    /// The instance as the API takes it.
    pub fn to_wire(&self) -> NewInstance {
        NewInstance { address: self.address.clone(), weight: self.weight }
    }

    /// The instance as declared, from the API's view (1 is the default weight).
    pub fn from_wire(instance: &Instance) -> InstanceSpec {
        InstanceSpec { address: instance.address.clone(), weight: instance.weight.filter(|&w| w != 1) }
    }
}

impl RedirSpec {
    /// The body of the `POST …/tcpRedirs` that creates it.
    pub fn to_wire(&self) -> NewTcpRedir {
        NewTcpRedir {
            namespace: self.namespace.clone(),
            port: self.port,
            min_port: None,
            max_port: None,
            ports: self.ports.filter(|&n| n > 1),
            settings: self.settings.clone(),
        }
    }

    /// The redirection as it runs, with its port fixed. Time limits are the ones in force,
    /// which the server reports whether set on the redirection or inherited.
    pub fn from_wire(redir: &TcpRedir) -> RedirSpec {
        RedirSpec {
            namespace: redir.namespace.clone(),
            port: Some(redir.port),
            ports: (redir.port_count() > 1).then(|| redir.port_count()),
            protocol: redir.protocol,
            settings: redir.settings.clone(),
        }
    }

    /// Whether a running redirection is this one's port (its settings aside): the same
    /// namespace and protocol, as many ports, and the first port declared if one is (a range
    /// of another size is replaced: removed, then added).
    pub fn same_port(&self, running: &TcpRedir) -> bool {
        self.namespace == running.namespace
            && self.protocol == running.protocol
            && self.ports.unwrap_or(1) == running.port_count()
            && self.port.is_none_or(|p| p == running.port)
    }

    /// The change that makes a running redirection of [`RedirSpec::same_port`] what this
    /// declares, in place (`None`: it already is): each limit stated that differs from the
    /// one in force, and the access list and PROXY protocol when they differ (unstated is
    /// off), as [`RedirSettings::satisfied_by`] judges.
    pub fn patch_for(&self, running: &TcpRedir) -> Option<SettingsPatch> {
        let (want, have) = (&self.settings, &running.settings);
        fn limit<T: Copy + PartialEq>(want: Option<T>, have: Option<T>) -> Option<Option<T>> {
            want.filter(|w| Some(*w) != have).map(Some)
        }
        let patch = SettingsPatch {
            connect_timeout: limit(want.connect_timeout, have.connect_timeout),
            idle_timeout: limit(want.idle_timeout, have.idle_timeout),
            half_close_timeout: limit(want.half_close_timeout, have.half_close_timeout),
            max_connections: limit(want.max_connections, have.max_connections),
            max_connections_per_second: limit(
                want.max_connections_per_second,
                have.max_connections_per_second,
            ),
            max_datagrams_per_second: limit(want.max_datagrams_per_second, have.max_datagrams_per_second),
            max_connections_per_client: limit(
                want.max_connections_per_client,
                have.max_connections_per_client,
            ),
            max_connections_per_second_per_client: limit(
                want.max_connections_per_second_per_client,
                have.max_connections_per_second_per_client,
            ),
            bandwidth_limit: limit(want.bandwidth_limit, have.bandwidth_limit),
            proxy_protocol: (want.proxy_protocol != have.proxy_protocol).then_some(want.proxy_protocol),
            allow: (want.allow != have.allow).then(|| want.allow.clone()),
            deny: (want.deny != have.deny).then(|| want.deny.clone()),
        };
        (!patch.is_empty()).then_some(patch)
    }
}
