//! The store: the one interface that the API and the gateway depend on, and its two
//! backends, SQLite (embedded, the default) and etcd (a fleet of nodes, feature `etcd`).
//!
//! The store is the only source of truth. Every write is one atomic operation of the
//! backend (an SQLite transaction, an etcd transaction that compares the keys it depends
//! on), and answers the revision at which it was committed. Compound decisions, such as
//! "the port is free, the application has none in this namespace and the organisation is
//! under its quota", are taken inside that one operation, never by a read followed by a
//! write, so two nodes can never hand out the same port.
//!
//! Nothing reads the store directly to serve a call: each node keeps a copy of the whole
//! table ([`super::table::Table`]), loaded from a [`Snapshot`] and then kept fresh by
//! [`Store::watch`], which yields every change after a revision, in revision order. That
//! same stream drives the live ports ([`super::sync`]), so a stored change reaches the bound
//! ports one way only, whichever node made it. Both backends keep the same contract, which
//! the tests at the bottom of this file run against each.

pub mod audit;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod sqlite;
pub mod webhook;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::RedirSettings;
use crate::wire::{Application, AuditEvent, HealthCheck, Instance, Organisation, Protocol, TokenInfo};

/// A store revision: every committed write has a higher one than the writes before it.
pub type Revision = i64;

/// Which redirection: a namespace's port of one protocol. Sorted by namespace, then
/// protocol, then port, so that a namespace's redirections, and each protocol's within it,
/// are ranges of a map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedirKey {
    /// The namespace the port belongs to: the table's one copy of the name for the keys of
    /// its rows ([`super::table::Table`] interns it), so that a key costs no string.
    pub namespace: Arc<str>,
    /// TCP or UDP: each has its own ports.
    pub protocol: Protocol,
    /// The public port.
    pub port: u16,
}

impl RedirKey {
    /// The key of `namespace`'s `protocol` port `port`.
    pub fn new(namespace: &str, protocol: Protocol, port: u16) -> RedirKey {
        RedirKey { namespace: namespace.into(), protocol, port }
    }
}

impl fmt::Display for RedirKey {
    /// `namespace/port` for TCP (as nodes have always named their unbound ports),
    /// `namespace/udp/port` for UDP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Protocol::Tcp => write!(f, "{}/{}", self.namespace, self.port),
            Protocol::Udp => write!(f, "{}/udp/{}", self.namespace, self.port),
        }
    }
}

/// A redirection: which application a namespace's port leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirRow {
    /// The namespace the port belongs to (interned by the table, as [`RedirKey::namespace`]).
    pub namespace: Arc<str>,
    /// The public port: the first of a range.
    pub port: u16,
    /// How many consecutive ports it holds, `port` to `port + ports - 1` (issue 34): 1,
    /// absent from the stored value, for every redirection of one port (and all those stored
    /// before ranges). A `u16` beside `port` and `protocol`, in what was padding: a
    /// single-port redirection costs no more memory.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ports: u16,
    /// TCP or UDP; absent from a stored TCP record (which predates UDP).
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// The application it leads to (interned by the table: one copy per application).
    pub app_id: Arc<str>,
    /// Its own settings, over the namespace's.
    #[serde(flatten)]
    pub settings: Settings,
    /// The revision that created it (set by the store, not stored in the value).
    #[serde(skip)]
    pub revision: Revision,
}

/// A redirection's own settings, shared: most redirections set none, and all of those hold
/// one record, so that a row costs a pointer for them rather than the 160 bytes of a
/// [`RedirSettings`] (issue 32's memory per redirection). Read through `Deref`; written
/// through `DerefMut`, which copies a shared record first.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings(Arc<RedirSettings>);

/// The one record of every redirection that sets nothing of its own.
static NO_SETTINGS: LazyLock<Arc<RedirSettings>> = LazyLock::new(Arc::default);

impl Default for Settings {
    fn default() -> Settings {
        Settings(NO_SETTINGS.clone())
    }
}

impl From<RedirSettings> for Settings {
    fn from(settings: RedirSettings) -> Settings {
        if settings == RedirSettings::default() {
            Settings::default()
        } else {
            Settings(Arc::new(settings))
        }
    }
}

impl Deref for Settings {
    type Target = RedirSettings;
    fn deref(&self) -> &RedirSettings {
        &self.0
    }
}

impl DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut RedirSettings {
        Arc::make_mut(&mut self.0)
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Settings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Settings, D::Error> {
        RedirSettings::deserialize(deserializer).map(Settings::from)
    }
}

/// serde's default of [`RedirRow::ports`].
fn one() -> u16 {
    1
}

/// Whether [`RedirRow::ports`] is the default, left out of the stored value.
fn is_one(n: &u16) -> bool {
    *n == 1
}

impl RedirRow {
    /// Its key (a range's first port).
    pub fn key(&self) -> RedirKey {
        RedirKey { namespace: self.namespace.clone(), protocol: self.protocol, port: self.port }
    }

    /// Its last public port (its only one, for a single port).
    pub fn last_port(&self) -> u16 {
        self.port.saturating_add(self.ports.max(1) - 1)
    }

    /// Whether it holds `port` (of its namespace and protocol).
    pub fn covers(&self, port: u16) -> bool {
        (self.port..=self.last_port()).contains(&port)
    }

    /// Whether it holds a port of `first..=last`.
    pub fn overlaps(&self, first: u16, last: u16) -> bool {
        self.port <= last && first <= self.last_port()
    }

    /// Whether the two say the same of the port (the revision that created them aside).
    pub fn same_settings(&self, other: &RedirRow) -> bool {
        RedirRow { revision: other.revision, ..self.clone() } == *other
    }
}

/// A credential as stored: hashes only, never the token or secret themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Its id, name, organisation and date.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
}

/// How a node proves who it is to a shared store, and checks the store's own identity: TLS
/// files and a user (`serve --store-ca`, `--store-cert`, `--store-key`, `--store-user`,
/// `--store-password-file`, or the config file's `store_*` keys). The password itself is
/// never here, nor on a command line: it is read from its file, or from
/// `TCP_REDIRS_STORE_PASSWORD`, when the store is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreAccess {
    /// The CA that signed the store's certificate (PEM); TLS is on when it is set.
    pub ca: Option<std::path::PathBuf>,
    /// This node's client certificate (PEM), for a store that asks for one.
    pub cert: Option<std::path::PathBuf>,
    /// The private key of `cert` (PEM).
    pub key: Option<std::path::PathBuf>,
    /// The store user this node logs in as.
    pub user: Option<String>,
    /// The file that holds the user's password.
    pub password_file: Option<std::path::PathBuf>,
}

impl StoreAccess {
    /// These settings, each filled from `other` where unset (the command line over the
    /// config file).
    pub fn or(self, other: StoreAccess) -> StoreAccess {
        StoreAccess {
            ca: self.ca.or(other.ca),
            cert: self.cert.or(other.cert),
            key: self.key.or(other.key),
            user: self.user.or(other.user),
            password_file: self.password_file.or(other.password_file),
        }
    }

    /// Whether any is set (they mean nothing to SQLite).
    pub fn is_set(&self) -> bool {
        *self != StoreAccess::default()
    }
}

/// A namespace's definition, the same on every node of a fleet (the bind address is each
/// node's own and is not part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceDef {
    /// Its name.
    pub name: String,
    /// The host name shown to users.
    pub public_host: String,
    /// The lowest port it hands out.
    pub min_port: u16,
    /// The highest port it hands out.
    pub max_port: u16,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The organisations it is reserved to (names or ids); `None` for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orgs: Option<Vec<String>>,
    /// Its default connection limits (a namespace has no access list nor PROXY protocol).
    pub limits: RedirSettings,
    /// Whether its connections are logged when they end (see [`crate::server`]'s conn_log).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub access_log: bool,
    /// No longer in the config file: its redirections run until removed, none can be added.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// Whether `public_host` is this node's default rather than the operator's choice: in
    /// a fleet, such a namespace takes the host name the store already has.
    #[serde(skip)]
    pub default_host: bool,
}

impl NamespaceDef {
    /// Whether the organisation may see and use the namespace: reserved namespaces exist
    /// only for the organisations they name.
    pub fn admits(&self, org: &Organisation) -> bool {
        self.orgs.as_ref().is_none_or(|orgs| orgs.iter().any(|o| *o == org.id || *o == org.name))
    }
}

/// What a gateway node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's name (`serve --node`).
    pub name: String,
    /// The address its public ports bind.
    pub public_address: String,
    /// The namespaces it serves.
    pub namespaces: Vec<String>,
    /// When it last wrote this record (Unix seconds).
    pub last_seen: i64,
    /// The store revision its live ports had caught up with when it wrote this record.
    pub revision: Revision,
    /// How many public ports it listens on.
    pub listening: u64,
    /// The ports it could not bind (another program holds them there), `namespace/port`.
    #[serde(default)]
    pub unbound: Vec<String>,
    /// How its public TCP ports listen.
    #[serde(default)]
    pub port_mode: Option<crate::wire::PortMode>,
}

/// A port freed by a removal, held back from other applications until every node of the
/// fleet has confirmed the removal (issue 31): a node cut off from the store keeps
/// forwarding the port to the application that freed it, so giving it to another would
/// lead that one's clients to the old application there. The application that freed it
/// may take it back at once (its clients are the ones a late node still leads to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantine {
    /// The namespace of the port.
    pub namespace: String,
    /// The port.
    pub port: u16,
    /// TCP or UDP.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// The application that held it.
    pub app_id: String,
    /// The revision of the removal (set by the store, not stored in the value): every node
    /// whose published revision ([`NodeRecord::revision`]) is at or past it has closed the port.
    #[serde(skip)]
    pub revision: Revision,
}

impl Quarantine {
    /// The key of the port it holds back.
    pub fn key(&self) -> RedirKey {
        RedirKey::new(&self.namespace, self.protocol, self.port)
    }

    /// The quarantine a removal of `row` at `revision` leaves on its first port.
    pub fn of(row: &RedirRow, revision: Revision) -> Quarantine {
        Quarantine {
            namespace: row.namespace.to_string(),
            port: row.port,
            protocol: row.protocol,
            app_id: row.app_id.to_string(),
            revision,
        }
    }

    /// The quarantines a removal of `row` at `revision` leaves: one per port it held (a
    /// range's every port, so that a claim of any one of them sees it).
    pub fn all_of(row: &RedirRow, revision: Revision) -> impl Iterator<Item = Quarantine> + '_ {
        (row.port..=row.last_port()).map(move |port| Quarantine { port, ..Quarantine::of(row, revision) })
    }

    /// The nodes of `nodes` that have not confirmed it yet (their published revision is
    /// below the removal's), sorted: none left means the port is free for anyone.
    pub fn waits_for<'a>(&self, nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Vec<String> {
        nodes.into_iter().filter(|n| n.revision < self.revision).map(|n| n.name.clone()).collect()
    }
}

/// One stored record, as a snapshot lists it and a change carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An organisation.
    Org(Organisation),
    /// An application with its instances.
    App(Application),
    /// A redirection.
    Redir(RedirRow),
    /// A credential.
    Token(TokenRecord),
    /// A namespace's shared definition.
    Namespace(NamespaceDef),
    /// A node's description.
    Node(NodeRecord),
    /// A node is alive (its lease holds).
    Alive(String),
    /// A port freed by a removal, not yet confirmed by every node.
    Quarantine(Quarantine),
}

/// Which record a deletion removed.
// SQLite never deletes organisations, namespaces or nodes; etcd can (an expired lease, an
// operator's hand), and the table must follow.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// An organisation, by id.
    Org(String),
    /// An application, by id.
    App(String),
    /// A redirection, by namespace, protocol and port.
    Redir(RedirKey),
    /// A credential, by id.
    Token(String),
    /// A namespace, by name.
    Namespace(String),
    /// A node's description, by name.
    Node(String),
    /// A node's liveness, by name.
    Alive(String),
    /// A port's quarantine, by namespace, protocol and port.
    Quarantine(RedirKey),
}

/// A change to one record.
// Almost every change is a `Put`, most of them of a redirection, whose settings make it
// the large variant: boxing it would allocate once more per change to save on the rare
// `Delete`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The record was created or replaced.
    Put(Record),
    /// The record was removed.
    Delete(Key),
}

/// A change and the revision that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The revision of the write.
    pub revision: Revision,
    /// What changed.
    pub change: Change,
}

/// The whole table at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The revision it was read at: changes after it come from [`Store::watch`].
    pub revision: Revision,
    /// Every record.
    pub records: Vec<Record>,
}

/// Why a write was not made: its preconditions did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// An organisation of that name exists.
    OrgName,
    /// The organisation has an application of that name.
    AppName,
    /// Another redirection holds the port in the namespace (for a range: one of its ports,
    /// the first such named).
    PortTaken,
    /// Another redirection holds this port of the range asked for (a range's claim names
    /// which; a single port's says [`Conflict::PortTaken`]).
    RangeTaken(u16),
    /// The application already has a redirection in the namespace, on this port.
    AppHasOne(u16),
    /// The organisation holds its quota of redirections.
    Quota(u32),
    /// The record the write depends on does not exist (any more).
    NotFound,
    /// The port was freed by another application's removal that these nodes have not
    /// confirmed yet ([`Quarantine`]).
    Quarantined(Vec<String>),
    /// The node is alive (its lease holds): it cannot be forgotten.
    Alive,
}

/// A store failure, typed so that callers can answer each kind properly.
#[derive(Debug)]
pub enum StoreError {
    /// The write's preconditions did not hold; nothing was changed.
    Conflict(Conflict),
    /// The store cannot be reached; nothing was changed.
    Unavailable(String),
    /// A watch started before the oldest revision the store still keeps: load a snapshot.
    Compacted,
    /// Anything else (a disk error, a damaged record).
    Other(anyhow::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict(c) => write!(f, "conflict: {c:?}"),
            StoreError::Unavailable(why) => write!(f, "{why}"),
            StoreError::Compacted => write!(f, "the store no longer keeps that revision"),
            StoreError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<anyhow::Error> for StoreError {
    fn from(e: anyhow::Error) -> Self {
        StoreError::Other(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Other(e.into())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Other(e.into())
    }
}

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A stream of changes: batches in revision order, or the error that ended it.
pub type Changes = mpsc::Receiver<StoreResult<Vec<Event>>>;

/// The interface the gateway needs from a store. Writes answer their revision.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// What the store is, for messages: `SQLite at PATH`, `etcd at HOST:PORT`.
    fn describe(&self) -> String;
    /// The most consecutive ports one redirection may hold in this store (issue 34): a
    /// range is claimed, and released, in one transaction.
    fn max_range_ports(&self) -> u16 {
        crate::wire::MAX_RANGE_PORTS
    }
    /// The whole table and the revision it was read at.
    async fn snapshot(&self) -> StoreResult<Snapshot>;
    /// The store's latest revision when it is known here without a round trip (a store
    /// that only this process writes); `None` for a store shared with other nodes.
    fn revision_here(&self) -> Option<Revision>;
    /// Every change after `after`, in revision order; [`StoreError::Compacted`] when the
    /// store no longer has them (as the call's answer, or as the stream's first item).
    async fn watch(&self, after: Revision) -> StoreResult<Changes>;
    /// Publishes this node's namespace definitions and shared settings, or refuses them
    /// when the store holds different ones.
    async fn agree(&self, namespaces: &[NamespaceDef], org_quota: Option<u32>) -> StoreResult<()>;
    /// Replaces the namespace definitions and shared settings with a reloaded config's
    /// (a namespace whose host this config does not set keeps the store's).
    async fn reconfigure(&self, namespaces: &[NamespaceDef], org_quota: Option<u32>) -> StoreResult<()>;
    /// The organisation named `name`, created with `id` when absent.
    async fn ensure_org(&self, name: &str, id: &str) -> StoreResult<Organisation>;
    /// Creates an organisation; [`Conflict::OrgName`] when the name is taken.
    async fn create_org(&self, org: &Organisation) -> StoreResult<Revision>;
    /// Creates an application; [`Conflict::AppName`] when its organisation has that name.
    async fn create_app(&self, app: &Application) -> StoreResult<Revision>;
    /// Replaces an application's instances.
    async fn set_instances(&self, app_id: &str, list: &[Instance]) -> StoreResult<Revision>;
    /// Replaces an application's health-check settings ([`Conflict::NotFound`] when it is
    /// gone); the change reaches every node's table as a put of the application.
    async fn set_health_check(&self, app_id: &str, check: &HealthCheck) -> StoreResult<Revision>;
    /// Deletes an application and its redirections.
    async fn remove_app(&self, app_id: &str) -> StoreResult<Revision>;
    /// Claims `row.port` of `row.protocol` in `row.namespace` for `row.app_id`, in one atomic
    /// step with the checks that the application has none of that protocol there, that
    /// `org_id` is under `quota` (which counts TCP and UDP redirections alike), and that the
    /// port is in no [`Quarantine`] of another application that a registered node has not
    /// confirmed ([`Conflict::Quarantined`] names them; a claim lifts the quarantine): a
    /// [`Store::claim_many`] of one row (the gateway claims through `claim_many` alone, a
    /// single `add` as a batch of one; the contract tests claim row by row).
    #[cfg(test)]
    async fn claim(&self, row: &RedirRow, org_id: &str, quota: Option<u32>) -> StoreResult<Revision> {
        let mut outcomes = self.claim_many(std::slice::from_ref(row), org_id, quota).await?;
        outcomes.pop().unwrap_or(Err(StoreError::Conflict(Conflict::NotFound)))
    }
    /// Claims many redirections of `org_id` at once, each as [`Store::claim`] describes, in
    /// order (a row sees the rows before it, and counts against the quota after them): one
    /// SQLite transaction, or one etcd transaction per few dozen rows (etcd takes at most
    /// 128 comparisons in one). The answer has one outcome per row, its revision or why
    /// not; an `Err` of the whole call means that no row was claimed.
    async fn claim_many(
        &self,
        rows: &[RedirRow],
        org_id: &str,
        quota: Option<u32>,
    ) -> StoreResult<Vec<StoreResult<Revision>>>;
    /// Replaces the settings of the redirection at `row`'s key with `row.settings`, in one
    /// atomic step that checks it is still `row.app_id`'s: its port, protocol and
    /// application stay, and so do the organisation's quota and the previous ports.
    /// [`Conflict::NotFound`] when that application holds no redirection there (any more).
    /// The change reaches every node's table as a put of the row, and the live ports apply
    /// it in place, for new connections.
    async fn update_redir(&self, row: &RedirRow) -> StoreResult<Revision>;
    /// Releases a redirection of `row.app_id`, remembering its port as the application's
    /// previous one of that protocol in the namespace, and putting the port in [`Quarantine`]
    /// (as [`Store::remove_app`] does each port of the application it removes).
    async fn release(&self, row: &RedirRow, org_id: &str) -> StoreResult<Revision>;
    /// The port of `protocol` the application last released in the namespace (tests; the
    /// gateway asks [`Store::previous_ports`]).
    #[cfg(test)]
    async fn previous_port(
        &self,
        app_id: &str,
        namespace: &str,
        protocol: Protocol,
    ) -> StoreResult<Option<u16>> {
        let asked = [(app_id.to_owned(), namespace.to_owned(), protocol)];
        Ok(self.previous_ports(&asked).await?.pop().flatten())
    }
    /// [`Store::previous_port`] of many (application, namespace, protocol), in their order,
    /// in one round trip (SQLite: none; etcd: one per 128).
    async fn previous_ports(&self, asked: &[(String, String, Protocol)]) -> StoreResult<Vec<Option<u16>>>;
    /// Records a credential.
    async fn put_token(&self, token: &TokenRecord) -> StoreResult<Revision>;
    /// Forgets the credential `id` of `org_id` (`None`: the admin's).
    async fn revoke_token(&self, org_id: Option<&str>, id: &str) -> StoreResult<Revision>;
    /// Writes this node's description; its revision is what the quarantines compare.
    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()>;
    /// Removes the description of a node that is gone for good, so that no quarantine waits
    /// for it any more: [`Conflict::Alive`] while its liveness holds, [`Conflict::NotFound`]
    /// when there is none.
    async fn forget_node(&self, name: &str) -> StoreResult<Revision>;
    /// Deletes the quarantines of `done` (each as of its revision) that every registered
    /// node has confirmed; one that is not, or that changed since, is left.
    async fn sweep_quarantines(&self, done: &[Quarantine]) -> StoreResult<()>;
    /// Marks this node alive and keeps it so, in the background, until `stop`: a store that
    /// cannot be reached is tried again until it answers, and a mark that lapsed meanwhile
    /// is made again; the mark disappears `ttl` after the node stops renewing it.
    async fn keep_alive(&self, node: &str, ttl: std::time::Duration, stop: CancellationToken);
    /// Sets how long, and how many, events the audit trail keeps ([`audit::Retention`]).
    fn set_retention(&self, retention: audit::Retention);
    /// The audit trail's events that `query` asks for: newest first, or oldest first after
    /// `query.after` ([`audit`]).
    async fn events(&self, query: &audit::EventQuery) -> StoreResult<Vec<AuditEvent>>;
    /// Registers a webhook ([`webhook`]).
    async fn create_webhook(&self, hook: &webhook::WebhookRecord) -> StoreResult<()>;
    /// Removes the webhook `id` of `org_id`: the record as it was, or [`Conflict::NotFound`].
    async fn remove_webhook(&self, org_id: &str, id: &str) -> StoreResult<webhook::WebhookRecord>;
    /// Every webhook of every organisation, with its delivery state.
    async fn webhooks(&self) -> StoreResult<Vec<webhook::WebhookRecord>>;
    /// Saves where the webhook `id`'s deliveries stand; [`Conflict::NotFound`] when it is gone.
    async fn save_delivery(&self, id: &str, delivery: &crate::wire::DeliveryState) -> StoreResult<()>;
    /// Takes the role `role` for `node` until `ttl` from now when it is free, expired or
    /// already `node`'s; whether `node` holds it (SQLite: always, it is the only node).
    async fn hold_role(&self, role: &str, node: &str, ttl: std::time::Duration) -> StoreResult<bool>;
}

#[cfg(test)]
mod audit_contract;
#[cfg(test)]
mod contract;
