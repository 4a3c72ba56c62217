//! The JSON contract between the CLI and the control server.
//!
//! The shapes of the Clever Cloud API v2 subset (`namespaces`, `tcpRedirs`, `udpRedirs`)
//! are copied exactly so that clever-tools and scripts written for it keep working; keys
//! are lowerCamelCase. Fields may be added to these types, never renamed or removed.
//!
//! A UDP redirection has the TCP one's shapes ([`TcpRedir`], [`NewTcpRedir`]): Clever's API
//! answers both collections alike, and a field means the same in both (`activeConnections`
//! counts a UDP redirection's open flows). Its answer says `"protocol":"udp"`; a TCP answer
//! has no `protocol`, as Clever's has none.

use serde::{Deserialize, Serialize};

pub mod events;
pub mod health;
#[cfg(feature = "server")]
mod patterns;
pub mod settings;

pub use events::{
    Actor, AuditEvent, CreatedWebhook, DeliveryState, EventKind, EventPage, FailedDelivery, NewWebhook,
    PendingDelivery, Webhook,
};
pub use health::{ApplicationPatch, CheckKind, HealthCheck, HealthCheckPatch};
#[cfg(feature = "server")]
pub use patterns::matches;
pub use settings::{ProxyProtocol, RedirSettings, SettingsPatch};

/// A namespace the caller's organisation may use, as listed by `list-namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// The namespace's name, for example `default`.
    pub namespace: String,
    /// What the namespace is for, when the operator said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The host name users connect to on this namespace's ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_host: Option<String>,
    /// The lowest port the namespace hands out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_port: Option<u16>,
    /// The highest port the namespace hands out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_port: Option<u16>,
}

/// A redirection's transport. TCP and UDP ports are separate spaces: TCP 5123 and UDP
/// 5123 of one namespace may lead to different applications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `tcpRedirs`: connections.
    #[default]
    Tcp,
    /// `udpRedirs`: datagrams, grouped in flows by client address.
    Udp,
}

impl Protocol {
    /// Whether it is TCP (the default, left out of answers and stored records).
    pub fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }

    /// Its name in URLs, keys and messages: `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The API's collection of its redirections: `tcpRedirs` or `udpRedirs`.
    pub fn collection(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcpRedirs",
            Protocol::Udp => "udpRedirs",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A redirection: a public port of a namespace forwarded to an application, over TCP or UDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TcpRedir {
    /// The namespace the port belongs to.
    pub namespace: String,
    /// The public port: the first of a range.
    pub port: u16,
    /// A range's last public port (`port` to `lastPort`, public port `port + i` going to
    /// each instance's port `+ i`); absent for a redirection of one port, as Clever's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_port: Option<u16>,
    /// `udp` for a UDP redirection; absent for TCP.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// Where clients connect: `tcp://HOST:PORT/` or `udp://HOST:PORT/` (a range's first port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether the gateway is accepting connections on the port right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RedirState>,
    /// Its settings: the time limits and quotas in force on this port (its own, or its
    /// namespace's), who may connect, and what the application is told about them.
    #[serde(flatten)]
    pub settings: RedirSettings,
    /// Connections and bytes since the answering node started, when it forwards the port
    /// (the figures are that node's own, not the fleet's).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<RedirTraffic>,
    /// Each live node serving the namespace, and whether it listens on the port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodePort>,
}

/// One gateway node's state for one redirection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodePort {
    /// The node's name (`serve --node`).
    pub node: String,
    /// Whether it listens on the port.
    pub state: NodePortState,
}

/// Whether a node listens on a redirection's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum NodePortState {
    /// The node accepts connections on the port.
    Listening,
    /// The node could not bind the port (another program holds it there); it retries.
    Unbound,
    /// The node has not yet said that it applied the redirection.
    Pending,
}

/// A gateway node, as `GET /v2/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Its name (`serve --node`).
    pub name: String,
    /// The address its public ports bind.
    pub public_address: String,
    /// The namespaces it serves.
    pub namespaces: Vec<String>,
    /// `up` while its liveness lease in the store holds, `down` after.
    pub state: NodeLiveness,
    /// When it last published its state (Unix seconds).
    pub last_seen: i64,
    /// How many public ports it listens on.
    pub ports: u64,
    /// How many of its redirections' ports it could not bind.
    pub unbound: u64,
    /// How its public TCP ports listen (absent from a node of a version before the modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mode: Option<PortMode>,
}

/// How a node's public TCP ports listen (`serve --port-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// One listening socket per port.
    Bound,
    /// Every port on one socket per address family, steered by the kernel (BPF `sk_lookup`).
    Steered,
}

/// Whether a node is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NodeLiveness {
    /// Its lease holds.
    Up,
    /// Its lease expired: it stopped, crashed or lost the store.
    Down,
}

/// A redirection's traffic since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RedirTraffic {
    /// Connections open now.
    pub active_connections: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Bytes from clients to the application.
    pub bytes_in: u64,
    /// Bytes from the application to clients.
    pub bytes_out: u64,
}

/// Whether a redirection's public port is accepting connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RedirState {
    /// The port is bound and accepting connections.
    Listening,
    /// The port could not be bound (another program holds it); the server keeps retrying.
    Unbound,
}

/// The body of `POST …/tcpRedirs`; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTcpRedir {
    /// The namespace to take a port in (`GET …/namespaces` lists them).
    #[cfg_attr(feature = "server", schema(schema_with = schema::namespace))]
    pub namespace: String,
    /// A precise port of the namespace's range, for declarative set-ups; random when absent.
    /// A port outside the namespace's range is refused with 422.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = schema::port))]
    pub port: Option<u16>,
    /// The lowest port to pick from (Clever's `minPort`): a sub-range of the namespace's;
    /// one outside it, or above `maxPort`, is refused with 422.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = schema::port))]
    pub min_port: Option<u16>,
    /// The highest port to pick from (Clever's `maxPort`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = schema::port))]
    pub max_port: Option<u16>,
    /// How many consecutive public ports to take (1 when absent, up to
    /// [`MAX_RANGE_PORTS`]): `port` (or a random first port) to `port + ports - 1`, public
    /// port `port + i` going to each instance's port `+ i`. TCP only: a UDP range is refused
    /// with 422.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = schema::range_ports))]
    pub ports: Option<u16>,
    /// Its settings, over the namespace's.
    #[serde(flatten)]
    pub settings: RedirSettings,
}

impl NewTcpRedir {
    /// How many consecutive ports it asks for (1 when it says nothing).
    pub fn port_count(&self) -> u16 {
        self.ports.unwrap_or(1)
    }
}

impl TcpRedir {
    /// How many consecutive public ports it holds: 1, or a range's `lastPort - port + 1`.
    pub fn port_count(&self) -> u16 {
        self.last_port.map_or(1, |last| last.saturating_sub(self.port) + 1)
    }

    /// Its ports as people read them: `5000`, or `5000-5099` for a range.
    pub fn ports_text(&self) -> String {
        match self.last_port {
            Some(last) => format!("{}-{last}", self.port),
            None => self.port.to_string(),
        }
    }
}

/// The most consecutive ports one redirection may take. A fleet's store takes fewer
/// (etcd claims and releases a range in one transaction of at most 128 operations, two
/// per port: 60), and refuses a larger range with 422.
pub const MAX_RANGE_PORTS: u16 = 1000;

/// The most redirections one batch (`POST /v2/organisations/{orgId}/tcpRedirs`) may ask for.
pub const MAX_BATCH: usize = 1000;

/// The largest body of a batch, in bytes: a thousand redirections with room for their
/// access lists (every other call takes 64 KiB at most).
pub const MAX_BATCH_BODY: usize = 1024 * 1024;

/// The body of `POST /v2/organisations/{orgId}/tcpRedirs`: many redirections of one
/// organisation's applications at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTcpRedirBatch {
    /// The redirections to make, each on its own: one refused does not stop the others.
    #[cfg_attr(feature = "server", schema(schema_with = schema::batch))]
    pub redirections: Vec<NewTcpRedirItem>,
}

/// One redirection of a batch: which application, and what `POST
/// …/applications/{appId}/tcpRedirs` takes (whose unknown fields are refused here too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewTcpRedirItem {
    /// The application's id, `app_…`; one the organisation does not have is refused on its
    /// own outcome (4042).
    pub application: String,
    /// `udp` for a UDP redirection (as `POST …/udpRedirs` makes it); TCP when absent.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// The redirection, as a single `POST …/tcpRedirs` takes it.
    #[serde(flatten)]
    pub redirection: NewTcpRedir,
}

/// What a batch did: one outcome per redirection asked, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TcpRedirBatch {
    /// The outcomes, in the order of the request's `redirections`.
    pub redirections: Vec<TcpRedirOutcome>,
}

/// One redirection of a batch: made, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TcpRedirOutcome {
    /// The application, as asked.
    pub application: String,
    /// The namespace, as asked.
    pub namespace: String,
    /// The redirection made, as `POST …/applications/{appId}/tcpRedirs` answers it; absent
    /// when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirection: Option<TcpRedir>,
    /// Why it was refused: the error `POST …/applications/{appId}/tcpRedirs` would have
    /// answered (4042, 4043, 4090, 4092, 4094, 4095, 4096, 4221, 4222, 4223, 4240, 4241, 4242, 4243, 5030); absent when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// An organisation: it owns applications, and its credentials reach nothing outside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Organisation {
    /// `orga_…`
    pub id: String,
    /// A human name, unique on the server.
    pub name: String,
}

/// The body of `POST /v2/organisations` (admin only); unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrganisation {
    /// A human name, unique on the server.
    #[cfg_attr(feature = "server", schema(schema_with = schema::name))]
    pub name: String,
}

/// A credential as listed: never its token or secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// `tok_…`, what `DELETE …/tokens/{id}` takes.
    pub id: String,
    /// What it is for, as its creator said.
    pub name: String,
    /// The organisation it is scoped to; absent for the server's admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// When it was issued (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

/// The body of `POST /v2/organisations/{orgId}/tokens`; unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    /// What the credential is for, for example `ci`.
    #[cfg_attr(feature = "server", schema(schema_with = schema::name))]
    pub name: String,
}

/// A credential just issued: the only time its token and secret are shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    /// The credential's description.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Send as `Authorization: Bearer TOKEN`, or as `oauth_token` in the OAuth form.
    pub token: String,
    /// The OAuth form's token secret (after `%26` in `oauth_signature`).
    pub secret: String,
}

/// An application: where a redirection's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// `app_…`
    pub id: String,
    /// A human name, unique within its organisation.
    pub name: String,
    /// The id of the organisation that owns it (Clever's `ownerId`).
    pub owner_id: String,
    /// The addresses the application listens on.
    pub instances: Vec<Instance>,
    /// Its own health-check settings (absent: the node's for every one).
    #[serde(default, skip_serializing_if = "HealthCheck::is_default")]
    pub health_check: HealthCheck,
}

/// One address where an application accepts TCP connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `HOST:PORT`, for example `127.0.0.1:4040`.
    pub address: String,
    /// Its share of new connections (1 when absent); 0 takes no new connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Whether the gateway can reach it, once a redirection has used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
    /// Connections open to it now, once a redirection has used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_connections: Option<u64>,
    /// When the health checks last checked it (Unix seconds), once they have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<i64>,
}

/// Whether an instance is taking connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Its health checks (`rise` in a row) or its last connection succeeded.
    Up,
    /// Its health checks (`fall` in a row) or a connection found nobody listening; the
    /// checks go on and bring it back.
    Down,
}

/// The body of `POST /v2/organisations/{orgId}/applications`; unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApplication {
    /// The application's name, unique within the organisation.
    #[cfg_attr(feature = "server", schema(schema_with = schema::app_name))]
    pub name: String,
    /// Where its traffic goes.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(schema_with = schema::instances))]
    pub instances: Vec<NewInstance>,
    /// How its instances are checked (absent: the node's settings).
    #[serde(default, skip_serializing_if = "HealthCheck::is_default")]
    pub health_check: HealthCheck,
}

/// An instance as a request gives it (`POST …/applications`, `PUT …/instances`): its address
/// and weight only; the state and connection count an answer adds are not part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewInstance {
    /// `HOST:PORT`, for example `127.0.0.1:4040` or `[2001:db8::1]:4040`.
    #[cfg_attr(feature = "server", schema(schema_with = schema::instance_address))]
    pub address: String,
    /// Its share of new connections (1 when absent); 0 takes no new connection.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = schema::weight))]
    pub weight: Option<u32>,
}

impl From<NewInstance> for Instance {
    fn from(new: NewInstance) -> Instance {
        Instance { address: new.address, weight: new.weight, ..Instance::default() }
    }
}

impl From<&Instance> for NewInstance {
    fn from(instance: &Instance) -> NewInstance {
        NewInstance { address: instance.address.clone(), weight: instance.weight }
    }
}

/// The body of every error answer: `{"type":"error","id":N,"message":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// Always `"error"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A stable number for the kind of error (see the README's API section).
    pub id: u32,
    /// What went wrong and what to do about it.
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// The rules of what requests may hold
// ---------------------------------------------------------------------------------------
//
// Each rule is stated once, here: the server checks it (src/server/control/validate.rs compiles the
// patterns below and refuses what they do not match), and the OpenAPI document states it
// (the `schema` functions below put the same constants in it). tests/openapi.rs holds the two
// together: schemathesis sends what the document allows and what it forbids.

/// The longest time limit a redirection accepts, in seconds (a year).
pub const MAX_LIMIT_SECS: u64 = 366 * 86400;

/// The largest `maxConnections` or `maxConnectionsPerSecond` accepted.
pub const MAX_QUOTA: u32 = 1_000_000;

/// The smallest `bandwidthLimit` accepted, in bytes per second (1 kB/s: below it, one
/// segment a second).
pub const MIN_BANDWIDTH: u64 = 1_000;

/// The largest `bandwidthLimit` accepted, in bytes per second (100 GB/s: beyond any NIC).
pub const MAX_BANDWIDTH: u64 = 100_000_000_000;

/// The most weight an instance may have.
pub const MAX_WEIGHT: u32 = 1000;

/// The most instances an application may have.
pub const MAX_INSTANCES: usize = 64;

/// The most ranges an `allow` or `deny` list may hold.
pub const MAX_RANGES: usize = 256;

/// An organisation's or a credential's name: 1 to 128 ASCII letters, digits, `-`, `_`, `.`
/// (ASCII only, so that every regex engine reads the pattern alike and length means bytes).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

/// An application's name: like [`NAME_PATTERN`], but never starting with `app_`, so that it
/// is never taken for an id (spelled without look-ahead, which the server's regex engine has
/// not: not `a`; `a` then not `p`; `ap` then not `p`; `app` then not `_`).
pub const APP_NAME_PATTERN: &str = concat!(
    "^(?:[A-Zb-z0-9._-][A-Za-z0-9._-]{0,127}",
    "|a(?:[A-Za-oq-z0-9._-][A-Za-z0-9._-]{0,126})?",
    "|ap(?:[A-Za-oq-z0-9._-][A-Za-z0-9._-]{0,125})?",
    "|app(?:[A-Za-z0-9.-][A-Za-z0-9._-]{0,124})?)$"
);

/// A namespace's name: 1 to 64 of `a-z`, `0-9`, `-` (what the config file accepts).
pub const NAMESPACE_PATTERN: &str = "^[a-z0-9-]{1,64}$";

/// The ids the server issues: a prefix and a UUID.
macro_rules! uuid_tail {
    () => {
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    };
}
/// An organisation's id, as the server issues them.
pub const ORG_ID_PATTERN: &str = concat!("^orga_", uuid_tail!());
/// An application's id, as the server issues them.
pub const APP_ID_PATTERN: &str = concat!("^app_", uuid_tail!());
/// A credential's id, as the server issues them.
pub const TOKEN_ID_PATTERN: &str = concat!("^tok_", uuid_tail!());

macro_rules! h16 {
    () => {
        "[0-9A-Fa-f]{1,4}"
    };
}
macro_rules! ipv4 {
    () => {
        "(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}
macro_rules! ls32 {
    () => {
        concat!("(?:", h16!(), ":", h16!(), "|", ipv4!(), ")")
    };
}
/// RFC 3986's `IPv6address`, which is also what Rust's `Ipv6Addr` parser reads.
macro_rules! ipv6 {
    () => {
        concat!(
            "(?:(?:",
            h16!(),
            ":){6}",
            ls32!(),
            "|::(?:",
            h16!(),
            ":){5}",
            ls32!(),
            "|(?:",
            h16!(),
            ")?::(?:",
            h16!(),
            ":){4}",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,1}",
            h16!(),
            ")?::(?:",
            h16!(),
            ":){3}",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,2}",
            h16!(),
            ")?::(?:",
            h16!(),
            ":){2}",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,3}",
            h16!(),
            ")?::",
            h16!(),
            ":",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,4}",
            h16!(),
            ")?::",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,5}",
            h16!(),
            ")?::",
            h16!(),
            "|(?:(?:",
            h16!(),
            ":){0,6}",
            h16!(),
            ")?::)"
        )
    };
}
macro_rules! port_number {
    () => {
        "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}

/// An instance address, `HOST:PORT`: HOST a host name or IPv4 address (1 to 253 of
/// `A-Za-z0-9._-`, resolved when connecting) or an IPv6 address in brackets; PORT 1 to
/// 65535 without leading zeros.
pub const INSTANCE_ADDRESS_PATTERN: &str =
    concat!("^(?:[A-Za-z0-9._-]{1,253}|\\[", ipv6!(), "\\]):", port_number!(), "$");

/// An address range of `allow` or `deny`: an IPv4 or IPv6 address, with an optional prefix
/// length (`/0` to `/32`, `/0` to `/128`, no leading zeros).
pub const RANGE_PATTERN: &str = concat!(
    "^(?:",
    ipv4!(),
    "(?:/(?:3[0-2]|[12]?[0-9]))?|",
    ipv6!(),
    "(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
);

/// Reads an optional integer field of a request as JSON Schema reads an `integer`: a JSON
/// number with no fractional part, so `5` and `5.0` alike (serde alone refuses `5.0`, which
/// the document allows).
pub mod integral {
    use serde::de::{Deserializer, Error, Visitor};

    /// `null` or absent is `None`; a whole number in `T`'s range is `Some`.
    pub fn option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(OptionVisitor(std::marker::PhantomData))
    }

    struct OptionVisitor<T>(std::marker::PhantomData<T>);
    struct NumberVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: TryFrom<u64>> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number or null")
        }

        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            d.deserialize_any(NumberVisitor(std::marker::PhantomData)).map(Some)
        }
    }

    impl<T: TryFrom<u64>> Visitor<'_> for NumberVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_u64<E: Error>(self, n: u64) -> Result<T, E> {
            T::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))
        }

        fn visit_i64<E: Error>(self, n: i64) -> Result<T, E> {
            let n = u64::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))?;
            self.visit_u64(n)
        }

        fn visit_f64<E: Error>(self, n: f64) -> Result<T, E> {
            // Exactly representable as u64 and whole: 5.0 is 5; 5.5, -1.0 and 1e30 are not.
            if n.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&n) {
                self.visit_u64(n as u64)
            } else {
                Err(E::custom(format!("{n} is not a whole number in range")))
            }
        }
    }
}

/// Checks an application's name against [`APP_NAME_PATTERN`], without a regex engine (the
/// client checks before sending, so that a bad name is a usage error, exit 2).
pub fn check_app_name(name: &str) -> Result<String, String> {
    let ok = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with("app_");
    if ok {
        return Ok(name.to_owned());
    }
    Err(format!(
        "invalid application name `{name}`: use 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not starting with `app_` (for example {})",
        suggest_name(name)
    ))
}

/// A name like `name` that the rule admits: `my db` gives `my-db`.
fn suggest_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .take(128)
        .collect();
    if out.starts_with("app_") {
        out.replace_range(..4, "app-");
    }
    if out.is_empty() {
        out.push_str("my-db");
    }
    out
}

/// Checks an instance address against [`INSTANCE_ADDRESS_PATTERN`], without a regex engine
/// (the client checks before sending): `HOST:PORT` with a port in 1..=65535.
pub fn check_instance_address(address: &str) -> Result<(), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| {
        format!("instance address `{address}` has no port: write it HOST:PORT, for example 127.0.0.1:4040")
    })?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok() && !v6.contains('%'),
        None => {
            (1..=253).contains(&host.len())
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }
    };
    if !host_ok {
        return Err(format!(
            "instance address `{address}` has no valid host: write it HOST:PORT with a host name, an IPv4 address or an IPv6 address in brackets, for example 127.0.0.1:4040 or [::1]:4040"
        ));
    }
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0');
    match port.parse::<u16>() {
        Ok(p) if digits && p > 0 => Ok(()),
        _ => Err(format!(
            "instance address `{address}` has an invalid port: use a number from 1 to 65535, without leading zeros"
        )),
    }
}

/// The schemas of constrained fields, built from the constants above (utoipa's attributes
/// take literals only, which would be a second copy of each rule).
#[cfg(feature = "server")]
pub mod schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    use utoipa::openapi::{RefOr, Schema};

    fn integer(min: u64, max: u64, nullable: bool) -> Schema {
        let kind = if nullable {
            SchemaType::from_iter([Type::Integer, Type::Null])
        } else {
            SchemaType::Type(Type::Integer)
        };
        ObjectBuilder::new().schema_type(kind).minimum(Some(min as f64)).maximum(Some(max as f64)).into()
    }

    /// A string matching `pattern`.
    pub fn string(pattern: &str, description: &str) -> Schema {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .description(Some(description))
            .into()
    }

    /// A port, 1 to 65535, or null.
    pub fn port() -> Schema {
        integer(1, 65535, true)
    }

    /// A range's number of ports, 1 to [`super::MAX_RANGE_PORTS`], or null for 1.
    pub fn range_ports() -> Schema {
        integer(1, u64::from(super::MAX_RANGE_PORTS), true)
    }

    /// A time limit in seconds, or null for the namespace's.
    pub fn seconds() -> Schema {
        integer(1, super::MAX_LIMIT_SECS, true)
    }

    /// A quota, or null for the namespace's.
    pub fn quota() -> Schema {
        integer(1, u64::from(super::MAX_QUOTA), true)
    }

    /// A bandwidth limit in bytes per second, or null for the namespace's.
    pub fn bandwidth() -> Schema {
        integer(super::MIN_BANDWIDTH, super::MAX_BANDWIDTH, true)
    }

    /// A health check's interval in milliseconds, or null for the node's.
    pub fn check_interval() -> Schema {
        integer(u64::from(super::health::MIN_CHECK_MS), u64::from(super::health::MAX_INTERVAL_MS), true)
    }

    /// A health check's timeout in milliseconds, or null for the node's.
    pub fn check_timeout() -> Schema {
        integer(u64::from(super::health::MIN_CHECK_MS), u64::from(super::health::MAX_TIMEOUT_MS), true)
    }

    /// A health check's `rise` or `fall`, or null for the node's.
    pub fn rise_fall() -> Schema {
        integer(1, u64::from(super::health::MAX_RISE_FALL), true)
    }

    /// A health check's payload in hexadecimal, or null for none.
    pub fn payload() -> Schema {
        let mut schema = string(
            super::health::PAYLOAD_PATTERN,
            "bytes in hexadecimal, two digits each, 1 to 1024 bytes: 50494e470d0a is PING\\r\\n",
        );
        if let Schema::Object(object) = &mut schema {
            object.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
        }
        schema
    }

    /// An instance's weight, or null for 1.
    pub fn weight() -> Schema {
        integer(0, u64::from(super::MAX_WEIGHT), true)
    }

    /// An organisation's or a credential's name.
    pub fn name() -> Schema {
        string(super::NAME_PATTERN, "1 to 128 ASCII letters, digits, `-`, `_` or `.`")
    }

    /// An application's name.
    pub fn app_name() -> Schema {
        string(
            super::APP_NAME_PATTERN,
            "1 to 128 ASCII letters, digits, `-`, `_` or `.`, not starting with `app_`",
        )
    }

    /// A namespace's name.
    pub fn namespace() -> Schema {
        string(super::NAMESPACE_PATTERN, "1 to 64 of a-z, 0-9 and -")
    }

    /// An instance address.
    pub fn instance_address() -> Schema {
        string(
            super::INSTANCE_ADDRESS_PATTERN,
            "HOST:PORT: a host name or IPv4 address, or an IPv6 address in brackets; a port from 1 to 65535",
        )
    }

    /// An instance list: at most [`super::MAX_INSTANCES`], each address once. Not stated
    /// as `uniqueItems`, which compares whole items (`{"address":"a"}` and
    /// `{"address":"a","weight":null}` differ there): the server answers any repeated
    /// address 422.
    pub fn instances() -> Schema {
        ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("NewInstance")))
            .max_items(Some(super::MAX_INSTANCES))
            .description(Some(
                "each address at most once: a list that names one address twice (even with other weights) is refused with 422",
            ))
            .into()
    }

    /// The redirections of a batch: at most [`super::MAX_BATCH`].
    pub fn batch() -> Schema {
        ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("NewTcpRedirItem")))
            .max_items(Some(super::MAX_BATCH))
            .into()
    }

    /// An `allow` or `deny` list.
    pub fn ranges() -> Schema {
        ArrayBuilder::new()
            .items(RefOr::T(string(
                super::RANGE_PATTERN,
                "an IPv4 or IPv6 address, with an optional prefix length: 203.0.113.0/24, 2001:db8::/32, 198.51.100.7",
            )))
            .max_items(Some(super::MAX_RANGES))
            .into()
    }
}
