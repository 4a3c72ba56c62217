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
//! idle_timeout = 600           # optional, like every setting of `add`
//! allow = ["203.0.113.0/24"]
//! proxy_protocol = "v2"
//! ```
//!
//! `export` writes the current state in this format with every port fixed, so that applying
//! an export elsewhere rebuilds the same ports. Applying is idempotent: a second `apply` of
//! the same file changes nothing.

use serde::{Deserialize, Serialize};

use crate::wire::RedirSettings;
use crate::wire::{Instance, NewInstance, NewTcpRedir, Protocol, TcpRedir};

/// A whole file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The applications, each with its instances and redirections.
    #[serde(default, rename = "application")]
    pub applications: Vec<AppSpec>,
}

/// One application as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The application's name in its organisation.
    pub name: String,
    /// Where its traffic goes.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
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
            settings: self.settings.clone(),
        }
    }

    /// The redirection as it runs, with its port fixed. Time limits are the ones in force,
    /// which the server reports whether set on the redirection or inherited.
    pub fn from_wire(redir: &TcpRedir) -> RedirSpec {
        RedirSpec {
            namespace: redir.namespace.clone(),
            port: Some(redir.port),
            protocol: redir.protocol,
            settings: redir.settings.clone(),
        }
    }

    /// Whether a running redirection already is what this declares: every setting the
    /// declaration states matches (unstated ones are free).
    pub fn matches(&self, running: &TcpRedir) -> bool {
        self.namespace == running.namespace
            && self.protocol == running.protocol
            && self.port.is_none_or(|p| p == running.port)
            && self.settings.satisfied_by(&running.settings)
    }
}
