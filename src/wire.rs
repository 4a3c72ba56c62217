//! The JSON contract between the CLI and the control server.
//!
//! The shapes of the Clever Cloud API v2 subset (`namespaces`, `tcpRedirs`) are copied
//! exactly so that clever-tools and scripts written for it keep working; keys are
//! lowerCamelCase. Fields may be added to these types, never renamed or removed.

use serde::{Deserialize, Serialize};

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

/// A TCP redirection: a public port of a namespace forwarded to an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TcpRedir {
    /// The namespace the port belongs to.
    pub namespace: String,
    /// The public port.
    pub port: u16,
    /// Where clients connect: `tcp://HOST:PORT/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether the gateway is accepting connections on the port right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RedirState>,
    /// The connection time limits in force on this port.
    #[serde(flatten)]
    pub limits: RedirLimits,
    /// Who may connect, and what the application is told about them.
    #[serde(flatten)]
    pub access: RedirAccess,
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

/// Who may connect to a redirection, and what the application is told about them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RedirAccess {
    /// Send the PROXY protocol header (`v1` text or `v2` binary) to the instance before the
    /// first byte, so the application learns the client's real address; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// When not empty, only clients in these ranges (CIDR, or a single address) may connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Clients in these ranges are refused, even when `allow` admits them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
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

/// The longest time limit a redirection accepts, in seconds (a year).
pub const MAX_LIMIT_SECS: u64 = 366 * 86400;

/// A redirection's connection time limits, in seconds; unset means the namespace's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RedirLimits {
    /// How long an instance may take to accept before the next one is tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    /// How long a connection may go without a byte in either direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// How long a connection may stay half-closed (one direction ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_close_timeout: Option<u64>,
    /// The most connections open at once; more are refused. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// The most new connections per second (a burst of one second is allowed); more are
    /// refused. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_second: Option<u32>,
}

/// The largest `maxConnections` or `maxConnectionsPerSecond` accepted.
pub const MAX_QUOTA: u32 = 1_000_000;

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

/// The body of `POST …/tcpRedirs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewTcpRedir {
    /// The namespace to take a port in.
    pub namespace: String,
    /// A precise port of the namespace's range, for declarative set-ups; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Time limits for this redirection's connections, overriding the namespace's.
    #[serde(flatten)]
    pub limits: RedirLimits,
    /// Access list and PROXY protocol.
    #[serde(flatten)]
    pub access: RedirAccess,
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

/// The body of `POST /v2/organisations` (admin only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewOrganisation {
    /// A human name, unique on the server.
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

/// The body of `POST /v2/organisations/{orgId}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewToken {
    /// What the credential is for, for example `ci`.
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
}

/// Whether an instance is taking connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Its last connect or check succeeded.
    Up,
    /// Its last connect failed; it is checked every few seconds.
    Down,
}

/// The most weight an instance may have.
pub const MAX_WEIGHT: u32 = 1000;

/// The body of `POST /v2/organisations/{orgId}/applications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewApplication {
    /// The application's name, unique within the organisation.
    pub name: String,
    /// Where its traffic goes.
    #[serde(default)]
    pub instances: Vec<Instance>,
}

/// The body of every error answer: `{"type":"error","id":N,"message":"…"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Checks an instance address: `HOST:PORT` with a port in 1..=65535.
pub fn check_instance_address(address: &str) -> Result<(), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| {
        format!("instance address `{address}` has no port: write it HOST:PORT, for example 127.0.0.1:4040")
    })?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "instance address `{address}` has no valid host: write it HOST:PORT, for example 127.0.0.1:4040"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("instance address `{address}` has an invalid port: use a number from 1 to 65535")),
    }
}
