//! The fleet store: etcd (v3 API), shared by every gateway node (cargo feature `etcd`).
//!
//! Keys, under a prefix (`tcp-redirs/` unless the URL names another), hold JSON values:
//!
//! | key | value |
//! | --- | --- |
//! | `orgs/{id}`, `orgnames/{name}` | an organisation; its id (the name's claim) |
//! | `apps/{id}`, `appnames/{org}/{name}` | an application with its instances and health-check settings; its id |
//! | `redirs/{namespace}/{port}` | a TCP redirection: the port's claim; a range's first port holds the redirection, each other port a member, `{"rangeOf":FIRST}` (issue 34) |
//! | `appns/{app}/{namespace}` | its port: the application's one TCP redirection in the namespace |
//! | `prev/{app}/{namespace}` | the TCP port it last released there |
//! | `udpredirs/…`, `udpappns/…`, `udpprev/…` | the same three for UDP, whose ports are a space of their own |
//! | `quota/{org}` | how many redirections the organisation holds, TCP and UDP |
//! | `tokens/{id}` | a credential (hashes only) |
//! | `namespaces/{name}`, `settings` | the definitions every node must agree on |
//! | `nodes/{name}`, `alive/{name}` | a node's state; its liveness, bound to its lease |
//! | `applied/{name}` | the revision of `nodes/{name}`, 20 digits, so that etcd compares it |
//! | `quarantine/{ns}/{port}`, `udpquarantine/…` | a port a removal freed: the application that held it |
//! | `events/new/{ms}-{random}-{place}` | the audit trail's inbox: events not indexed yet (see below) |
//! | `events/org/{org}/{id}`, `events/all/{id}` | an organisation's events (empty `{org}`: the admin's credentials'); every event's time and organisation |
//! | `webhooks/{id}` | a webhook with its secret and delivery state ([`super::webhook`]) |
//! | `roles/{role}` | which node holds a role (`webhooks`: the one that delivers), and until when |
//!
//! Every write is one transaction whose comparisons carry its preconditions: a port is
//! claimed only if `redirs/{ns}/{port}` and `appns/{app}/{ns}` have create revision 0 and
//! the organisation's counter is still the one read, so two nodes can never hand out the
//! same port, nor give an application two redirections, nor pass a quota together. A
//! failed comparison is retried with fresh reads when it was only the counter that moved.
//!
//! **Ranges** (issue 34). A range claims every port's key in its one transaction (each
//! compared absent, each port's quarantine compared as read), so that it is never taken in
//! part, and a single port's claim, which compares its one key, sees a range's member there
//! as it sees another redirection. A range's release deletes every key and puts a
//! quarantine on every port, in one transaction too: hence [`MAX_RANGE_PORTS`], which keeps
//! both under etcd's 128 comparisons and operations. Members are not records: the snapshot
//! and the watch skip their puts (a member's delete names a key the table does not hold,
//! which changes nothing). An application's removal releases its ranges first, each in its
//! own transaction, then removes the application with the rest.
//!
//! **Quarantine** (issue 31). A release (or an application's removal) puts the port in
//! `quarantine/…` in the same transaction, whose mod revision is the removal's. A claim of
//! that port by another application compares, in its one transaction, that the quarantine
//! is still the one read and that every `applied/` key is past the removal's revision (one
//! comparison over the prefix: etcd checks every key of the range, and a value comparison
//! is a byte comparison, which the fixed width makes numeric); it deletes the quarantine.
//! The application that freed the port compares the quarantine alone and takes it back.
//! A node cut off from etcd cannot publish `applied/`, so no port it may still forward to
//! an application is given to another until it is back, or forgotten (`forget_node`).
//!
//! **Audit trail** (issue 35). Each change's transaction also puts its events in the
//! inbox, `events/new/{milliseconds, 13 digits}-{random}-{place}`: an event's id is its
//! mod revision (the transaction's) times [`audit::ETCD_ID_SCALE`] plus its place in the
//! transaction, so ids grow across every node, but it is not known before the commit.
//! Once committed, the node's mover (rung by the write, then 200 ms for a burst of changes to
//! gather; and every 5 s for what a killed node left, by any node) indexes each event by its id, zero-padded so that key order is
//! id order: `events/org/{org}/{id}` holds the event, `events/all/{id}` its time and
//! organisation only (one copy of each event: a second would double the trail's share of
//! etcd's space, 2 GiB by default, for a million events kept), in one transaction that deletes the inbox key and
//! holds only if it is still the one read. A read of the trail reads the inbox first: every
//! event with an id below its revision's was, then, in the inbox or the index, and stays
//! in the index; it then reads the index below that bound by key-ordered ranges with a
//! limit (etcd sorts any other order, or filters by revision, only after loading the whole
//! range): from the cursor up, or in windows down from it, so that a read touches about
//! the keys it returns, not the trail. The snapshot skips the `events/` range; each node's
//! lease loop sweeps the index by the retention, from its start (ids grow with time),
//! deleting both keys by ranges (idempotent: several nodes deleting the same keys agree),
//! and the keys of the first layout (`events/{ms}-…`), which nothing reads.
//!
//! Leases only mark nodes alive: no redirection is bound to one, so a lease that expires
//! (a node dies, or loses etcd for longer than its TTL) never removes a redirection.
//!
//! Watches do not use progress notifications (unreliable before etcd 3.4.25, and Debian
//! ships 3.4.23): a watch resumes from the revision its node applied, and a node whose
//! revision was compacted away reloads a snapshot.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::audit::{self, Entry, EventQuery, Retention};
use super::webhook::{RoleHolder, WebhookRecord};
use super::{
    Change, Changes, Conflict, Event, Key, NamespaceDef, NodeRecord, Quarantine, Record, RedirKey, RedirRow,
    Revision, Snapshot, Store, StoreAccess, StoreError, StoreResult, TokenRecord,
};
use crate::wire::{
    Application, AuditEvent, DeliveryState, EventKind, HealthCheck, Instance, Organisation, Protocol,
    TokenInfo,
};

/// The most ports of one range (issue 34): its release deletes a key and puts a quarantine
/// per port, with its application's keys, the counter and its event, in one transaction
/// of at most [`MAX_TXN_OPS`] operations.
const MAX_RANGE_PORTS: u16 = 50;
/// The start of the value of a range's other ports' keys (a member): `{"rangeOf":FIRST}`.
const MEMBER: &[u8] = b"{\"rangeOf\":";
/// How many times a write whose only failed comparison was a counter is tried again.
const RETRIES: usize = 32;
/// The most rows one transaction of [`Store::claim_many`] claims: each row compares its
/// port's, its application's and its quarantine's keys and, at most, its application's
/// record (4 per row, and the organisation's counter and the nodes' revisions once), and
/// etcd refuses a transaction of more than 128 comparisons or operations (its default
/// `--max-txn-ops`).
const CLAIM_CHUNK: usize = 30;
/// The width of an `applied/` value: every revision, zero-padded, so that etcd's byte
/// comparison of two values is their numeric comparison.
const REVISION_DIGITS: usize = 20;
/// The most reads in one transaction (etcd's default `--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;
/// Keys per page of a snapshot: about 1 MiB of this gateway's usual records, in few
/// requests (etcd pays per request too).
const SNAPSHOT_PAGE: i64 = 10_000;
/// The largest answer this node decodes (a snapshot's page, a watch's batch of events):
/// gRPC's default of 4 MiB would refuse a page of records that carry long access lists.
const MAX_ANSWER: usize = 256 << 20;
/// How often each node deletes the audit trail's events past the retention.
const EVENT_SWEEP: Duration = Duration::from_secs(60);
/// The audit trail's inbox under `events/`: each change's transaction puts its events
/// there, as their ids are not known before it commits; they are then indexed by id.
const INBOX: &str = "new";
/// The width of an event id in the trail's keys: every i64, so that key order is id order.
const ID_DIGITS: usize = 20;
/// The fewest keys one read of the trail's index asks for: more than one transaction's
/// events, so that a window one revision wide is always read whole.
const EVENT_PAGE: usize = 160;
/// The most windows one newest-first read of the trail goes through (each halves or
/// doubles: about 64 would cover every id).
const WINDOWS: usize = 256;
/// The most inbox keys a read of the trail takes (the inbox holds the events in flight and
/// those a crashed node left, until a sweep moves them).
const INBOX_READ: i64 = 10_000;
/// Inbox keys moved in one transaction (three operations each, under [`MAX_TXN_OPS`]).
const MOVE_BATCH: i64 = 40;
/// The most batches one call of [`Etcd::move_inbox`] moves.
const MOVE_ROUNDS: usize = 10_000;
/// The index keys one page of the sweep reads.
const SWEEP_PAGE: i64 = 1000;
/// The most pages one sweep deletes (the next sweep goes on).
const SWEEP_PAGES: usize = 1000;
/// How often each node moves the inbox when not told to (what a crashed node left).
const INBOX_SWEEP: Duration = Duration::from_secs(5);
/// How long this node's mover lets its changes gather once rung.
const INBOX_GATHER: Duration = Duration::from_millis(200);
/// How many times a snapshot overtaken by a compaction is read again.
const SNAPSHOT_TRIES: usize = 3;

/// How long the calls of an API request wait for etcd to have a leader again: about two
/// elections (etcd's default election timeout is 1 s). A leader lost and replaced costs a
/// call that long at most, and no 503; etcd without a leader for longer (no quorum) answers
/// 503 at once from then on, not after a request timeout each.
const ELECTION_GRACE: Duration = Duration::from_secs(2);
/// How often a call asks again while etcd has no leader.
const ELECTION_POLL: Duration = Duration::from_millis(100);
/// A "no leader" answer this much older than the next one starts a new wait: etcd had a
/// leader in between, as far as this node can tell.
const LEADERLESS_FORGOTTEN: Duration = Duration::from_secs(10);

/// A connection to an etcd cluster, under one key prefix.
pub struct Etcd {
    /// For the node's own streams and background calls: the watch, the lease, the
    /// snapshot, the node's record, which wait out an election.
    client: Client,
    /// For the calls of API requests (reads before a write, transactions, tokens): it asks
    /// etcd to refuse at once, with "no leader", a call to a member that has no leader,
    /// where the other client's call would wait until its request timeout ([`Etcd::led`]).
    leader_required: Client,
    /// When etcd first and last answered "no leader", with no success since.
    leaderless: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>,
    endpoints: String,
    prefix: String,
    /// One lock per organisation: this node's writes of one organisation's counter take
    /// turns, so that they only race with other nodes' (eight concurrent adds of one
    /// organisation on one node would otherwise retry each other's transactions, 503 after
    /// [`RETRIES`]).
    org_turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// How long, and how many, events the trail keeps (each node's sweep enforces it).
    retention: Arc<std::sync::Mutex<Retention>>,
    /// Wakes this node's mover of the trail's inbox once a transaction that recorded events
    /// committed ([`Etcd::move_inbox`]).
    inbox: Arc<Inbox>,
}

/// Whether this node wrote events that its mover has not been told of, and the bell.
#[derive(Default)]
struct Inbox {
    written: std::sync::atomic::AtomicBool,
    bell: tokio::sync::Notify,
    /// How many keys of the trail `events()` has read: what the scale test counts.
    keys_read: std::sync::atomic::AtomicU64,
}

impl Etcd {
    /// Connects to `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` with `access`'s TLS files and
    /// user, and checks that this node may read and write its prefix there. An etcd that
    /// cannot be reached is [`StoreError::Unavailable`] (the start waits for it); one that
    /// refuses (its certificate is not the CA's, it refuses this node's, the user or
    /// password is wrong, the user has no rights on the prefix) is [`StoreError::Other`],
    /// one line that says which and what to check.
    pub async fn connect(url: &str, access: &StoreAccess) -> StoreResult<Etcd> {
        let refuse = |message: String| StoreError::Other(anyhow::anyhow!(message));
        let rest = url.strip_prefix("etcd://").ok_or_else(|| {
            refuse(format!("invalid --store `{url}`: write etcd://HOST:PORT[,HOST:PORT…][/PREFIX], for example etcd://127.0.0.1:2379"))
        })?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "tcp-redirs"));
        let prefix = prefix.trim_matches('/');
        if hosts.is_empty() || prefix.is_empty() {
            return Err(refuse(format!(
                "invalid --store `{url}`: name at least one HOST:PORT, and a non-empty prefix if any"
            )));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let tls = access.tls().map_err(|e| refuse(format!("{e:#}")))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = access.login().map_err(|e| refuse(format!("{e:#}")))? {
            // etcd forgets every token when it restarts (and a token unused for
            // `--auth-token-ttl`): a call refused for its token logs in again and is made again.
            options = options.with_user(user, password).with_auto_token_refresh(true);
        }
        let endpoints: Vec<String> = hosts.split(',').map(|h| format!("{scheme}://{h}")).collect();
        let etcd_at = |e: etcd_client::Error| refusal(hosts, access, e);
        let connected = tokio::try_join!(
            Client::connect(&endpoints, Some(options.clone())),
            Client::connect(&endpoints, Some(options.with_require_leader(true))),
        );
        let (client, leader_required) = match connected {
            Ok(clients) => clients,
            Err(e) => {
                let err = etcd_at(e);
                // With TLS 1.3 a refused client certificate is told after the handshake
                // the client took for done, so the gRPC client often sees only a broken
                // pipe; a handshake of our own that waits for the answer reads etcd's alert.
                if let StoreError::Unavailable(_) = err {
                    if let Some(alert) = tls_alert(hosts, access).await {
                        return Err(classify(hosts, access, alert, None));
                    }
                }
                return Err(err);
            }
        };
        let etcd = Etcd {
            client,
            leader_required,
            leaderless: Arc::default(),
            endpoints: hosts.to_owned(),
            prefix: format!("{prefix}/"),
            org_turns: Default::default(),
            retention: Default::default(),
            inbox: Default::default(),
        };
        etcd.check_rights().await.map_err(etcd_at)?;
        Ok(etcd)
    }

    /// Reads one key of the prefix, and asks for a write that etcd checks but never makes
    /// (its condition is false): a user without the right on the prefix is refused either
    /// way, at start rather than at its first change.
    async fn check_rights(&self) -> Result<(), etcd_client::Error> {
        let mut kv = self.client.kv_client();
        kv.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix().with_keys_only().with_limit(1)))
            .await?;
        let probe = self.key(&["rights-probe"]);
        let never = Txn::new()
            .when([Compare::version(probe.as_str(), CompareOp::Less, 0)])
            .and_then([TxnOp::put(probe.as_str(), "", None)]);
        kv.txn(never).await?;
        Ok(())
    }

    /// Every record under the prefix, read `page` keys at a time at one revision.
    pub(super) async fn snapshot_in_pages(&self, page: i64) -> Result<Snapshot, etcd_client::Error> {
        // The range's end: the prefix with its last byte raised (it ends with `/`).
        let mut end = self.prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut kv = self.client.kv_client().max_decoding_message_size(MAX_ANSWER);
        let mut from = self.prefix.clone().into_bytes();
        let mut revision = 0;
        let mut records = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut page = kv.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let kvs = page.take_kvs();
            records.extend(kvs.iter().filter_map(|kv| self.decode(kv)));
            let events = self.key(&["events", ""]).into_bytes();
            match kvs.last() {
                Some(last) if page.more() => {
                    // The next key after the last one read; the audit trail is no part of
                    // the table: a page that reaches into it skips the rest of it.
                    from = last.key().to_vec();
                    from.push(0);
                    if from.starts_with(&events) {
                        from = self.key(&["events0"]).into_bytes();
                    }
                }
                _ => return Ok(Snapshot { revision, records }),
            }
        }
    }

    /// Waits for this node's turn to change the organisation's counter.
    async fn org_turn(&self, org_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut turns = self.org_turns.lock().unwrap_or_else(|p| p.into_inner());
            // Forget the organisations nobody waits for, so the map stays the size of the
            // writes in flight.
            turns.retain(|_, t| Arc::strong_count(t) > 1);
            turns.entry(org_id.to_owned()).or_default().clone()
        };
        turn.lock_owned().await
    }

    fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.prefix, parts.join("/"))
    }

    fn unavailable(&self, err: etcd_client::Error) -> StoreError {
        if no_leader(&err) {
            return StoreError::Unavailable(format!(
                "etcd at {} has had no leader for {ELECTION_GRACE:?} or more: most of its members are down or cut off; check them with `etcdctl endpoint status`",
                self.endpoints
            ));
        }
        StoreError::Unavailable(format!("etcd at {}: {err}", self.endpoints))
    }

    /// Makes `call` as [`unsent_again`] does, and again while etcd answers that it has no
    /// leader, up to [`ELECTION_GRACE`] after the first such answer since a success: an
    /// election ends within it, a cluster without quorum does not.
    async fn led<T, Fut>(&self, mut call: impl FnMut() -> Fut) -> Result<T, etcd_client::Error>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let leaderless = || self.leaderless.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match unsent_again(&mut call).await {
                Err(err) if no_leader(&err) => {
                    let now = Instant::now();
                    let first = {
                        let mut seen = leaderless();
                        let first = match *seen {
                            Some((first, last)) if now - last < LEADERLESS_FORGOTTEN => first,
                            _ => now,
                        };
                        *seen = Some((first, now));
                        first
                    };
                    if now - first >= ELECTION_GRACE {
                        return Err(err);
                    }
                    tokio::time::sleep(ELECTION_POLL).await;
                }
                done => {
                    if done.is_ok() {
                        *leaderless() = None;
                    }
                    return done;
                }
            }
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let kv = self.leader_required.kv_client();
        let call = || {
            let (mut kv, key) = (kv.clone(), key.to_owned());
            async move { kv.get(key, None).await }
        };
        let mut response = self.led(call).await.map_err(|e| self.unavailable(e))?;
        Ok(response.take_kvs().into_iter().next())
    }

    async fn get_prefix(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let kv = self.leader_required.kv_client();
        let options = GetOptions::new().with_prefix();
        let call = || {
            let (mut kv, prefix, options) = (kv.clone(), prefix.to_owned(), options.clone());
            async move { kv.get(prefix, Some(options)).await }
        };
        let mut response = self.led(call).await.map_err(|e| self.unavailable(e))?;
        Ok(response.take_kvs())
    }

    /// Many reads in one transaction, before a write: through the leader, like the write's
    /// own calls, so that a member without one refuses at once instead of holding the call.
    async fn read_txn(&self, gets: Vec<TxnOp>) -> StoreResult<etcd_client::TxnResponse> {
        let kv = self.leader_required.kv_client();
        let txn = Txn::new().and_then(gets);
        let call = || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        };
        self.led(call).await.map_err(|e| self.unavailable(e))
    }

    /// Runs a transaction through the leader: its revision, or `Err` with the `else` answers
    /// when its comparisons failed.
    async fn txn(&self, txn: Txn) -> StoreResult<Result<Revision, Vec<TxnOpResponse>>> {
        let kv = self.leader_required.kv_client();
        let call = || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        };
        let response = self.led(call).await.map_err(|e| self.unavailable(e))?;
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() && self.inbox.written.swap(false, std::sync::atomic::Ordering::Relaxed) {
            // Events this node recorded may be in the inbox now: its mover indexes them.
            self.inbox.bell.notify_one();
        }
        Ok(if response.succeeded() { Ok(revision) } else { Err(response.op_responses()) })
    }

    /// The organisation's redirection counter: its value and mod revision (0 when absent).
    async fn counter(&self, org_id: &str) -> StoreResult<(u64, i64)> {
        Ok(match self.get(&self.key(&["quota", org_id])).await? {
            Some(kv) => (String::from_utf8_lossy(kv.value()).parse().unwrap_or(0), kv.mod_revision()),
            None => (0, 0),
        })
    }

    /// The record a key and value stand for; `None` for index keys and damaged values.
    fn decode(&self, kv: &KeyValue) -> Option<Record> {
        let key = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&self.prefix)?;
        let kind = key.split('/').next()?;
        let value = kv.value();
        let record = match kind {
            "orgs" => serde_json::from_slice(value).map(Record::Org),
            "apps" => serde_json::from_slice(value).map(Record::App),
            // A range's other ports (issue 34): part of its claim, not records.
            "redirs" | "udpredirs" if value.starts_with(MEMBER) => return None,
            "redirs" | "udpredirs" => serde_json::from_slice::<RedirRow>(value).map(|row| {
                // The key says the protocol, whatever the value does.
                let protocol = if kind == "udpredirs" { Protocol::Udp } else { Protocol::Tcp };
                Record::Redir(RedirRow { revision: kv.mod_revision(), protocol, ..row })
            }),
            "tokens" => serde_json::from_slice(value).map(Record::Token),
            "namespaces" => serde_json::from_slice(value).map(Record::Namespace),
            "nodes" => serde_json::from_slice(value).map(Record::Node),
            "alive" => return Some(Record::Alive(key.strip_prefix("alive/")?.to_owned())),
            "quarantine" | "udpquarantine" => serde_json::from_slice::<Quarantine>(value).map(|q| {
                let protocol = if kind == "udpquarantine" { Protocol::Udp } else { Protocol::Tcp };
                Record::Quarantine(Quarantine { revision: kv.mod_revision(), protocol, ..q })
            }),
            _ => return None,
        };
        record.map_err(|e| warn!(key, error = %e, "ignoring a damaged record in etcd")).ok()
    }

    /// Which record a deleted key held; `None` for index keys.
    fn decode_key(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        let mut parts = key.splitn(3, '/');
        let (kind, name) = (parts.next()?, parts.next()?.to_owned());
        Some(match kind {
            "orgs" => Key::Org(name),
            "apps" => Key::App(name),
            "redirs" => Key::Redir(RedirKey {
                namespace: name.into(),
                protocol: Protocol::Tcp,
                port: parts.next()?.parse().ok()?,
            }),
            "udpredirs" => Key::Redir(RedirKey {
                namespace: name.into(),
                protocol: Protocol::Udp,
                port: parts.next()?.parse().ok()?,
            }),
            "tokens" => Key::Token(name),
            "namespaces" => Key::Namespace(name),
            "nodes" => Key::Node(name),
            "alive" => Key::Alive(name),
            "quarantine" | "udpquarantine" => Key::Quarantine(RedirKey {
                namespace: name.into(),
                protocol: if kind == "udpquarantine" { Protocol::Udp } else { Protocol::Tcp },
                port: parts.next()?.parse().ok()?,
            }),
            _ => return None,
        })
    }

    /// The claim of a redirection's port: `redirs/{ns}/{port}` or `udpredirs/{ns}/{port}`.
    fn redir_key(&self, namespace: &str, protocol: Protocol, port: u16) -> String {
        self.key(&[protocol_kind(protocol, "redirs"), namespace, &port.to_string()])
    }

    /// The application's one redirection of `protocol` in a namespace (its port).
    fn appns_key(&self, app_id: &str, namespace: &str, protocol: Protocol) -> String {
        self.key(&[protocol_kind(protocol, "appns"), app_id, namespace])
    }

    /// The quarantine of a port freed by a removal.
    fn quarantine_key(&self, namespace: &str, protocol: Protocol, port: u16) -> String {
        self.key(&[protocol_kind(protocol, "quarantine"), namespace, &port.to_string()])
    }

    /// The put of a quarantine for `row`'s port, in a release's transaction.
    fn quarantine_op(&self, row: &RedirRow) -> StoreResult<TxnOp> {
        let key = self.quarantine_key(&row.namespace, row.protocol, row.port);
        Ok(TxnOp::put(key, json(&Quarantine::of(row, 0))?, None))
    }

    /// The comparison that every registered node has published a revision at or past
    /// `revision` (none registered: the prefix is empty).
    fn all_applied(&self, revision: Revision, none_registered: bool) -> Compare {
        let prefix = self.key(&["applied", ""]);
        if none_registered {
            Compare::create_revision(prefix, CompareOp::Equal, 0).with_prefix()
        } else {
            Compare::value(prefix, CompareOp::Greater, padded(revision - 1)).with_prefix()
        }
    }

    /// The port of `protocol` the application last released in a namespace.
    fn prev_key(&self, app_id: &str, namespace: &str, protocol: Protocol) -> String {
        self.key(&[protocol_kind(protocol, "prev"), app_id, namespace])
    }

    /// Publishes `value` at `key` unless another is there: `Ok(None)` when it was published
    /// or equal, `Ok(Some(existing))` when it differs.
    async fn put_if_absent(&self, key: &str, value: &str) -> StoreResult<Option<Vec<u8>>> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        match self.txn(txn).await? {
            Ok(_) => Ok(None),
            Err(answers) => {
                let existing = first_kv(&answers).map(|kv| kv.value().to_vec()).unwrap_or_default();
                Ok(Some(existing))
            }
        }
    }
}

/// A kind of key of a redirection, for its protocol: TCP's kinds predate UDP, which adds
/// `udp` in front of them.
fn protocol_kind(protocol: Protocol, tcp: &'static str) -> &'static str {
    match (protocol, tcp) {
        (Protocol::Tcp, kind) => kind,
        (Protocol::Udp, "redirs") => "udpredirs",
        (Protocol::Udp, "appns") => "udpappns",
        (Protocol::Udp, "quarantine") => "udpquarantine",
        (Protocol::Udp, _) => "udpprev",
    }
}

/// The first key-value of a transaction's `get` answers.
fn first_kv(answers: &[TxnOpResponse]) -> Option<&KeyValue> {
    answers.iter().find_map(|a| match a {
        TxnOpResponse::Get(get) => get.kvs().first(),
        _ => None,
    })
}

/// Whether the `n`th `get` answer of a transaction found its key.
fn found(answers: &[TxnOpResponse], n: usize) -> Option<&KeyValue> {
    answers
        .iter()
        .filter_map(|a| match a {
            TxnOpResponse::Get(get) => Some(get.kvs().first()),
            _ => None,
        })
        .nth(n)
        .flatten()
}

/// A revision as an `applied/` value.
fn padded(revision: Revision) -> String {
    format!("{:0width$}", revision.max(0), width = REVISION_DIGITS)
}

fn json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    Ok(serde_json::to_string(value)?)
}

/// The same failure again, for each of several rows that it stopped (the cause chain of
/// [`StoreError::Other`] is kept as text).
fn again(err: &StoreError) -> StoreError {
    match err {
        StoreError::Conflict(c) => StoreError::Conflict(c.clone()),
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Compacted => StoreError::Compacted,
        StoreError::Other(e) => StoreError::Other(anyhow::anyhow!("{e:#}")),
    }
}

impl Etcd {
    /// Changes an application's record with `change`, and records the event `kind` with it,
    /// in one transaction that holds only if nobody wrote the record meanwhile (retried).
    async fn change_app(
        &self,
        app_id: &str,
        kind: EventKind,
        change: impl Fn(&mut Application),
    ) -> StoreResult<Revision> {
        let key = self.key(&["apps", app_id]);
        for _ in 0..RETRIES {
            let kv = self.get(&key).await?.ok_or(StoreError::Conflict(Conflict::NotFound))?;
            let mut app: Application = serde_json::from_slice(kv.value())?;
            let before = app.clone();
            change(&mut app);
            let mut ops = vec![TxnOp::put(key.as_str(), json(&app)?, None)];
            ops.extend(self.event_ops(vec![Entry::new(
                kind,
                Some(&app.owner_id),
                Some(app_id),
                Some(&before),
                Some(&app),
            )])?);
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision())])
                .and_then(ops);
            if let Ok(revision) = self.txn(txn).await? {
                return Ok(revision);
            }
        }
        Err(StoreError::Unavailable("etcd: the application kept changing; try again".into()))
    }

    /// The puts that record `entries` in the transaction that makes their change, with the
    /// calling task's origin ([`audit::current`]): into the inbox, as the id is not known
    /// before the transaction commits.
    fn event_ops(&self, entries: Vec<Entry>) -> StoreResult<Vec<TxnOp>> {
        let origin = audit::current();
        let at = audit::now_ms();
        let batch = uuid::Uuid::new_v4().simple().to_string();
        let mut ops = Vec::with_capacity(entries.len());
        for (place, entry) in entries.into_iter().enumerate() {
            // The stored id is the place; the mover adds the mod revision's part.
            let event = entry.event(place as i64, at, &origin);
            let key = self.key(&["events", INBOX, &format!("{at:013}-{batch}-{place:04}")]);
            ops.push(TxnOp::put(key, json(&event)?, None));
        }
        self.inbox.written.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(ops)
    }

    /// The index an organisation's events (or, with `None`, every event) are read from.
    fn event_index(&self, org_id: Option<&str>) -> String {
        match org_id {
            Some(org) => self.key(&["events", "org", org, ""]),
            None => self.key(&["events", "all", ""]),
        }
    }

    /// The key of event `id` in `index`: the id zero-padded, so that key order is id order.
    fn event_key(index: &str, id: i64) -> String {
        format!("{index}{:0width$}", id.max(0), width = ID_DIGITS)
    }

    /// The event an inbox key holds, numbered from its mod revision and place.
    fn unmoved(kv: &KeyValue) -> Option<AuditEvent> {
        let stored = serde_json::from_slice::<AuditEvent>(kv.value()).ok()?;
        Some(AuditEvent { id: kv.mod_revision() * audit::ETCD_ID_SCALE + stored.id, ..stored })
    }

    /// Indexes the inbox's events: each one's inbox key becomes `org/{org}/{id}` (the
    /// event) and `all/{id}` (its time and organisation), in one transaction that holds
    /// only if the inbox key is still the one read, so that several nodes moving the same
    /// keys agree. Idempotent; what a crashed node left is moved by the next node's sweep.
    pub(super) async fn move_inbox(&self) -> Result<(), etcd_client::Error> {
        let inbox = self.key(&["events", INBOX, ""]);
        let mut kv = self.client.kv_client();
        for _ in 0..MOVE_ROUNDS {
            let options = GetOptions::new().with_prefix().with_limit(MOVE_BATCH);
            let read = kv.get(inbox.as_str(), Some(options)).await?;
            let mut moves = Vec::new();
            for stored in read.kvs() {
                let compare = Compare::mod_revision(stored.key(), CompareOp::Equal, stored.mod_revision());
                let mut ops = vec![TxnOp::delete(stored.key(), None)];
                // An inbox key that is no event (none is) is deleted rather than kept forever.
                if let Some(event) = Self::unmoved(stored) {
                    let org = event.org_id.clone().unwrap_or_default();
                    let org_key = Self::event_key(&self.event_index(Some(&org)), event.id);
                    let all_key = Self::event_key(&self.event_index(None), event.id);
                    let value = serde_json::to_string(&event).unwrap_or_default();
                    ops.push(TxnOp::put(org_key, value, None));
                    ops.push(TxnOp::put(all_key, format!("{:013} {org}", event.at), None));
                }
                moves.push((compare, ops));
            }
            let (compares, ops): (Vec<_>, Vec<_>) = moves.iter().cloned().unzip();
            let txn = Txn::new().when(compares).and_then(ops.into_iter().flatten().collect::<Vec<_>>());
            if !kv.txn(txn).await?.succeeded() {
                // Another node moved some of them meanwhile: the rest one by one.
                for (compare, ops) in moves {
                    kv.txn(Txn::new().when([compare]).and_then(ops)).await?;
                }
            }
            if !read.more() {
                break;
            }
        }
        Ok(())
    }

    /// Deletes the events the retention no longer keeps (older than its age, or the oldest
    /// beyond its count) from both indexes, after moving the inbox; and the keys of the
    /// trail's first layout (`events/{ms}-…`), which nothing reads.
    pub(super) async fn sweep_events(&self) -> Result<(), etcd_client::Error> {
        use etcd_client::DeleteOptions;
        self.move_inbox().await?;
        let retention = *self.retention.lock().unwrap_or_else(|p| p.into_inner());
        let mut kv = self.client.kv_client();
        let first_layout = DeleteOptions::new().with_range(self.key(&["events", ":"]));
        kv.delete(self.key(&["events", "0"]), Some(first_layout)).await?;
        let all = self.event_index(None);
        let count =
            kv.get(all.as_str(), Some(GetOptions::new().with_prefix().with_count_only())).await?.count();
        let mut excess = count.saturating_sub(i64::try_from(retention.max_count).unwrap_or(i64::MAX));
        let age = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = audit::now_ms().saturating_sub(age);
        for _ in 0..SWEEP_PAGES {
            let page =
                kv.get(all.as_str(), Some(GetOptions::new().with_prefix().with_limit(SWEEP_PAGE))).await?;
            // The oldest events that go, from the start of the index: ids grow with time.
            let mut last: Option<&[u8]> = None;
            let mut orgs = std::collections::HashMap::new();
            let mut kept = false;
            for entry in page.kvs() {
                let value = String::from_utf8_lossy(entry.value());
                let (at, org) = value.split_once(' ').unwrap_or(("0", ""));
                if excess <= 0 && at.parse::<i64>().unwrap_or(0) >= cutoff {
                    kept = true;
                    break;
                }
                excess -= 1;
                last = Some(entry.key());
                let id = String::from_utf8_lossy(&entry.key()[all.len()..]).parse::<i64>().unwrap_or(0);
                orgs.insert(org.to_owned(), id);
            }
            let Some(last) = last else { break };
            let until = |key: &[u8]| {
                let mut end = key.to_vec();
                end.push(0);
                end
            };
            let mut deletes =
                vec![TxnOp::delete(all.as_str(), Some(DeleteOptions::new().with_range(until(last))))];
            for (org, id) in orgs {
                let index = self.event_index(Some(&org));
                let end = until(Self::event_key(&index, id).as_bytes());
                deletes.push(TxnOp::delete(index, Some(DeleteOptions::new().with_range(end))));
            }
            for chunk in deletes.chunks(MAX_TXN_OPS) {
                kv.txn(Txn::new().and_then(chunk.to_vec())).await?;
            }
            if kept || !page.more() {
                break;
            }
        }
        Ok(())
    }

    /// A range of the trail's index, in key order, at most `limit` keys: the keys and
    /// whether there are more; counted in [`Inbox::keys_read`].
    async fn event_range(&self, from: String, to: String, limit: i64) -> StoreResult<(Vec<KeyValue>, bool)> {
        let kv = self.leader_required.kv_client();
        let options = GetOptions::new().with_range(to).with_limit(limit);
        let call = || {
            let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
            async move { kv.get(from, Some(options)).await }
        };
        let mut response = self.led(call).await.map_err(|e| self.unavailable(e))?;
        let kvs = response.take_kvs();
        self.inbox.keys_read.fetch_add(kvs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((kvs, response.more()))
    }

    /// The events of a range of `index`: an organisation's hold them; `all/` holds where
    /// they are, read from there (a transaction of gets at a time).
    async fn indexed(&self, index: &str, kvs: Vec<KeyValue>, by_org: bool) -> StoreResult<Vec<AuditEvent>> {
        let id_of = |kv: &KeyValue| String::from_utf8_lossy(&kv.key()[index.len()..]).parse::<i64>().ok();
        if by_org {
            return Ok(kvs
                .iter()
                .filter_map(|kv| {
                    let event = serde_json::from_slice::<AuditEvent>(kv.value()).ok()?;
                    Some(AuditEvent { id: id_of(kv)?, ..event })
                })
                .collect());
        }
        let mut events = Vec::with_capacity(kvs.len());
        for chunk in kvs.chunks(MAX_TXN_OPS) {
            let gets = chunk
                .iter()
                .filter_map(|kv| {
                    let value = String::from_utf8_lossy(kv.value());
                    let org = value.split_once(' ').map_or("", |(_, org)| org);
                    Some(TxnOp::get(Self::event_key(&self.event_index(Some(org)), id_of(kv)?), None))
                })
                .collect();
            let answers = self.read_txn(gets).await?;
            for answer in answers.op_responses() {
                // Absent: swept meanwhile.
                let TxnOpResponse::Get(get) = answer else { continue };
                let Some(kv) = get.kvs().first() else { continue };
                let id = String::from_utf8_lossy(kv.key()).rsplit('/').next().and_then(|id| id.parse().ok());
                let (Some(id), Ok(event)) = (id, serde_json::from_slice::<AuditEvent>(kv.value())) else {
                    continue;
                };
                events.push(AuditEvent { id, ..event });
            }
        }
        self.inbox.keys_read.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(events)
    }

    /// How many keys of the trail `events()` read since this connection was made.
    #[cfg(test)]
    pub(super) fn event_keys_read(&self) -> u64 {
        self.inbox.keys_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records `n` events of `org` (`application.created`, `app_0`…), a hundred per
    /// transaction: a long trail, fast.
    #[cfg(test)]
    pub(super) async fn record_in_bulk(&self, org: &str, n: usize) -> StoreResult<()> {
        for start in (0..n).step_by(100) {
            let entries = (start..n.min(start + 100))
                .map(|i| {
                    let app = format!("app_{i}");
                    Entry::new(EventKind::ApplicationCreated, Some(org), Some(&app), None::<&()>, Some(&i))
                })
                .collect();
            let txn = Txn::new().and_then(self.event_ops(entries)?);
            self.txn(txn).await?.map_err(|_| StoreError::Other(anyhow::anyhow!("refused")))?;
        }
        Ok(())
    }

    /// Puts `value` at `key` under the prefix, as any writer could.
    #[cfg(test)]
    pub(super) async fn put_raw(&self, key: &str, value: &str) -> StoreResult<()> {
        self.client.kv_client().put(self.key(&[key]), value, None).await.map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    /// Whether `key` under the prefix exists.
    #[cfg(test)]
    pub(super) async fn exists(&self, key: &str) -> StoreResult<bool> {
        Ok(self.get(&self.key(&[key])).await?.is_some())
    }

    /// Releases the application's ranges (issue 34), each in a transaction of its own, so
    /// that its removal's one transaction stays within etcd's operations (a range's
    /// release costs two per port). A removal stopped between the two leaves the
    /// application with fewer redirections, which a second removal finishes.
    async fn release_ranges_of(&self, app_id: &str) -> StoreResult<()> {
        let Some(kv) = self.get(&self.key(&["apps", app_id])).await? else { return Ok(()) };
        let app: Application = serde_json::from_slice(kv.value())?;
        let prefix = self.key(&[protocol_kind(Protocol::Tcp, "appns"), app_id, ""]);
        for held in self.get_prefix(&prefix).await? {
            let namespace =
                String::from_utf8_lossy(held.key()).rsplit('/').next().unwrap_or_default().to_owned();
            let Ok(port) = String::from_utf8_lossy(held.value()).parse::<u16>() else { continue };
            let Some(head) = self.get(&self.redir_key(&namespace, Protocol::Tcp, port)).await? else {
                continue;
            };
            let Ok(row) = serde_json::from_slice::<RedirRow>(head.value()) else { continue };
            if row.ports > 1 && *row.app_id == *app_id {
                match self.release(&row, &app.owner_id).await {
                    Ok(_) | Err(StoreError::Conflict(Conflict::NotFound)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    /// Claims a range (issue 34) in one transaction of its own: every port's key absent and
    /// its quarantine as read (or none), the application's slot in the namespace free, the
    /// application there, every node past the removals it lifts, the organisation's counter
    /// unchanged. [`Conflict::RangeTaken`] names the lowest port another redirection holds.
    async fn claim_range(&self, row: &RedirRow, org_id: &str, quota: Option<u32>) -> StoreResult<Revision> {
        let ports: Vec<u16> = (row.port..=row.last_port()).collect();
        let redir_keys: Vec<String> =
            ports.iter().map(|&p| self.redir_key(&row.namespace, row.protocol, p)).collect();
        let quarantine_keys: Vec<String> =
            ports.iter().map(|&p| self.quarantine_key(&row.namespace, row.protocol, p)).collect();
        let appns_key = self.appns_key(&row.app_id, &row.namespace, row.protocol);
        let app_key = self.key(&["apps", &row.app_id]);
        let quota_key = self.key(&["quota", org_id]);
        let applied_prefix = self.key(&["applied", ""]);
        let member = format!("{{\"rangeOf\":{}}}", row.port);
        for _ in 0..RETRIES {
            let mut gets = vec![
                TxnOp::get(quota_key.as_str(), None),
                TxnOp::get(applied_prefix.as_str(), Some(GetOptions::new().with_prefix())),
            ];
            gets.extend(quarantine_keys.iter().map(|k| TxnOp::get(k.as_str(), None)));
            let read = self.read_txn(gets).await?;
            let answers = read.op_responses();
            let counter = match found(&answers, 0) {
                Some(kv) => (String::from_utf8_lossy(kv.value()).parse().unwrap_or(0u64), kv.mod_revision()),
                None => (0, 0),
            };
            let applied: Vec<(String, Revision)> = match answers.get(1) {
                Some(TxnOpResponse::Get(get)) => get
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        let name = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&applied_prefix)?;
                        Some((name.to_owned(), String::from_utf8_lossy(kv.value()).parse().ok()?))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let mut compares = Vec::with_capacity(2 * ports.len() + 4);
            let mut puts = Vec::with_capacity(2 * ports.len() + 3);
            let mut confirmed_past = 0;
            for (n, key) in quarantine_keys.iter().enumerate() {
                match found(&answers, 2 + n) {
                    Some(kv) => {
                        let q: Quarantine = serde_json::from_slice(kv.value())?;
                        if *q.app_id != *row.app_id {
                            let waits: Vec<String> = applied
                                .iter()
                                .filter(|(_, r)| *r < kv.mod_revision())
                                .map(|(name, _)| name.clone())
                                .collect();
                            if !waits.is_empty() {
                                return Err(StoreError::Conflict(Conflict::Quarantined(waits)));
                            }
                            confirmed_past = confirmed_past.max(kv.mod_revision());
                        }
                        compares.push(Compare::mod_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        ));
                        puts.push(TxnOp::delete(key.as_str(), None));
                    }
                    None => compares.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0)),
                }
            }
            if let Some(quota) = quota.filter(|&q| counter.0 >= u64::from(q)) {
                return Err(StoreError::Conflict(Conflict::Quota(quota)));
            }
            for (n, key) in redir_keys.iter().enumerate() {
                compares.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
                let value = if n == 0 { json(row)? } else { member.clone() };
                puts.push(TxnOp::put(key.as_str(), value, None));
            }
            compares.push(Compare::create_revision(appns_key.as_str(), CompareOp::Equal, 0));
            compares.push(Compare::create_revision(app_key.as_str(), CompareOp::Greater, 0));
            if confirmed_past > 0 {
                compares.push(self.all_applied(confirmed_past, applied.is_empty()));
            }
            compares.push(Compare::mod_revision(quota_key.as_str(), CompareOp::Equal, counter.1));
            puts.push(TxnOp::put(appns_key.as_str(), row.port.to_string(), None));
            puts.push(TxnOp::put(quota_key.as_str(), (counter.0 + 1).to_string(), None));
            puts.extend(self.event_ops(vec![Entry::new(
                EventKind::RedirectionAdded,
                Some(org_id),
                Some(&row.app_id),
                None::<&()>,
                Some(row),
            )])?);
            let mut gets = vec![TxnOp::get(appns_key.as_str(), None), TxnOp::get(app_key.as_str(), None)];
            gets.extend(redir_keys.iter().map(|k| TxnOp::get(k.as_str(), None)));
            let txn = Txn::new().when(compares).and_then(puts).or_else(gets);
            match self.txn(txn).await? {
                Ok(revision) => return Ok(revision),
                Err(answers) => {
                    if let Some(kv) = found(&answers, 0) {
                        let port = String::from_utf8_lossy(kv.value()).parse().unwrap_or(0);
                        return Err(StoreError::Conflict(Conflict::AppHasOne(port)));
                    }
                    if found(&answers, 1).is_none() {
                        return Err(StoreError::Conflict(Conflict::NotFound));
                    }
                    if let Some(n) = (0..ports.len()).find(|&n| found(&answers, 2 + n).is_some()) {
                        return Err(StoreError::Conflict(Conflict::RangeTaken(ports[n])));
                    }
                    debug!(org = org_id, "the organisation's counter, a quarantine or a node moved during a range's claim; trying again");
                }
            }
        }
        Err(StoreError::Unavailable("etcd: the organisation kept changing; try again".into()))
    }

    /// Claims the rows `chunk` indexes in one transaction, retried without the rows that
    /// conflict; sets their outcomes. Whether any row was claimed; an `Err` leaves the
    /// outcomes of `chunk`'s remaining rows unset.
    async fn claim_chunk(
        &self,
        rows: &[RedirRow],
        chunk: &mut Vec<usize>,
        outcomes: &mut [Option<StoreResult<Revision>>],
        org_id: &str,
        quota: Option<u32>,
    ) -> StoreResult<bool> {
        for _ in 0..RETRIES {
            if chunk.is_empty() {
                return Ok(false);
            }
            let read = self.claim_reads(org_id, rows, chunk).await?;
            refuse_before_claim(&read, rows, chunk, outcomes, quota);
            if chunk.is_empty() {
                return Ok(false);
            }
            let (txn, apps) = self.claim_txn(org_id, rows, chunk, &read)?;
            match self.txn(txn).await? {
                Ok(revision) => {
                    for i in chunk.drain(..) {
                        outcomes[i] = Some(Ok(revision));
                    }
                    return Ok(true);
                }
                Err(answers) => {
                    // Which rows stopped it: those fail, as one claim each would; the rest
                    // try again.
                    if !refused_by(&answers, &apps, rows, chunk, outcomes) {
                        debug!(
                            org = org_id,
                            "the organisation's counter, a quarantine or a node moved during a claim; trying again"
                        );
                    }
                }
            }
        }
        Err(StoreError::Unavailable("etcd: the organisation kept changing; try again".into()))
    }

    /// The transaction that claims `chunk`'s rows, if nothing moved since `read`: each row's
    /// port and its application's slot in the namespace still free, its quarantine the one
    /// read (or none), its application there, every node past the removals it lifts, the
    /// organisation's counter unchanged; else it reads back what stopped it. Also answers
    /// the applications whose keys it compares, in the order of the answers.
    fn claim_txn<'a>(
        &self,
        org_id: &str,
        rows: &'a [RedirRow],
        chunk: &[usize],
        read: &ClaimReads,
    ) -> StoreResult<(Txn, Vec<&'a str>)> {
        let quota_key = self.key(&["quota", org_id]);
        let (count, counter_revision) = read.counter;
        let mut apps: Vec<&str> = chunk.iter().map(|&i| rows[i].app_id.as_ref()).collect();
        apps.sort_unstable();
        apps.dedup();
        let mut compares = Vec::with_capacity(chunk.len() * 3 + apps.len() + 2);
        let mut puts = Vec::with_capacity(chunk.len() * 3 + 1);
        let mut gets = Vec::with_capacity(chunk.len() * 2 + apps.len());
        // The latest removal of another application whose port a row takes: every node
        // must have confirmed it.
        let mut confirmed_past = 0;
        for &i in chunk {
            let row = &rows[i];
            let redir_key = self.redir_key(&row.namespace, row.protocol, row.port);
            let appns_key = self.appns_key(&row.app_id, &row.namespace, row.protocol);
            let quarantine_key = self.quarantine_key(&row.namespace, row.protocol, row.port);
            compares.push(Compare::create_revision(redir_key.as_str(), CompareOp::Equal, 0));
            compares.push(Compare::create_revision(appns_key.as_str(), CompareOp::Equal, 0));
            match read.quarantines.get(&i) {
                Some(q) => {
                    compares.push(Compare::mod_revision(
                        quarantine_key.as_str(),
                        CompareOp::Equal,
                        q.revision,
                    ));
                    puts.push(TxnOp::delete(quarantine_key.as_str(), None));
                    if *q.app_id != *row.app_id {
                        confirmed_past = confirmed_past.max(q.revision);
                    }
                }
                None => compares.push(Compare::create_revision(quarantine_key.as_str(), CompareOp::Equal, 0)),
            }
            puts.push(TxnOp::put(redir_key.as_str(), json(row)?, None));
            puts.push(TxnOp::put(appns_key.as_str(), row.port.to_string(), None));
            gets.push(TxnOp::get(appns_key.as_str(), None));
            gets.push(TxnOp::get(redir_key.as_str(), None));
        }
        for app in &apps {
            let app_key = self.key(&["apps", app]);
            compares.push(Compare::create_revision(app_key.as_str(), CompareOp::Greater, 0));
            gets.push(TxnOp::get(app_key.as_str(), None));
        }
        if confirmed_past > 0 {
            compares.push(self.all_applied(confirmed_past, read.applied.is_empty()));
        }
        compares.push(Compare::mod_revision(quota_key.as_str(), CompareOp::Equal, counter_revision));
        puts.push(TxnOp::put(quota_key.as_str(), (count + chunk.len() as u64).to_string(), None));
        // At most 3 operations per row and the counter above, and one event per row: 121
        // for a chunk of 30, under etcd's 128.
        let entries = chunk
            .iter()
            .map(|&i| {
                let row = &rows[i];
                Entry::new(
                    EventKind::RedirectionAdded,
                    Some(org_id),
                    Some(&row.app_id),
                    None::<&()>,
                    Some(row),
                )
            })
            .collect();
        puts.extend(self.event_ops(entries)?);
        Ok((Txn::new().when(compares).and_then(puts).or_else(gets), apps))
    }

    /// What a claim of `chunk`'s rows compares, in one round trip: the organisation's
    /// counter, each row's quarantine, and every node's published revision.
    async fn claim_reads(&self, org_id: &str, rows: &[RedirRow], chunk: &[usize]) -> StoreResult<ClaimReads> {
        let applied_prefix = self.key(&["applied", ""]);
        let mut gets = vec![
            TxnOp::get(self.key(&["quota", org_id]), None),
            TxnOp::get(applied_prefix.as_str(), Some(GetOptions::new().with_prefix())),
        ];
        for &i in chunk {
            let row = &rows[i];
            gets.push(TxnOp::get(self.quarantine_key(&row.namespace, row.protocol, row.port), None));
        }
        let response = self.read_txn(gets).await?;
        let responses = response.op_responses();
        let answers: Vec<&[KeyValue]> = responses
            .iter()
            .map(|a| match a {
                TxnOpResponse::Get(get) => get.kvs(),
                _ => &[],
            })
            .collect();
        let counter = match answers.first().and_then(|kvs| kvs.first()) {
            Some(kv) => (String::from_utf8_lossy(kv.value()).parse().unwrap_or(0), kv.mod_revision()),
            None => (0, 0),
        };
        let applied = answers
            .get(1)
            .into_iter()
            .flat_map(|kvs| kvs.iter())
            .filter_map(|kv| {
                let name = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&applied_prefix)?;
                Some((name.to_owned(), String::from_utf8_lossy(kv.value()).parse().ok()?))
            })
            .collect();
        let mut quarantines = std::collections::HashMap::new();
        for (n, &i) in chunk.iter().enumerate() {
            if let Some(kv) = answers.get(2 + n).and_then(|kvs| kvs.first()) {
                let q: Quarantine = serde_json::from_slice(kv.value())?;
                quarantines
                    .insert(i, Quarantine { revision: kv.mod_revision(), protocol: rows[i].protocol, ..q });
            }
        }
        Ok(ClaimReads { counter, applied, quarantines })
    }
}

/// Refuses, before any write, the rows of `chunk` that `read` already dooms: a port another
/// application freed that a node has not confirmed yet (the nodes it waits for are named),
/// and the rows past the organisation's quota (the later ones, as one claim each would).
fn refuse_before_claim(
    read: &ClaimReads,
    rows: &[RedirRow],
    chunk: &mut Vec<usize>,
    outcomes: &mut [Option<StoreResult<Revision>>],
    quota: Option<u32>,
) {
    chunk.retain(|&i| match read.quarantines.get(&i) {
        Some(q) if *q.app_id != *rows[i].app_id => {
            let waits: Vec<String> =
                read.applied.iter().filter(|(_, r)| *r < q.revision).map(|(n, _)| n.clone()).collect();
            if waits.is_empty() {
                return true;
            }
            outcomes[i] = Some(Err(StoreError::Conflict(Conflict::Quarantined(waits))));
            false
        }
        _ => true,
    });
    if let Some(quota) = quota {
        let room = u64::from(quota).saturating_sub(read.counter.0) as usize;
        for i in chunk.drain(room.min(chunk.len())..) {
            outcomes[i] = Some(Err(StoreError::Conflict(Conflict::Quota(quota))));
        }
    }
}

/// Reads what stopped a claim transaction (its `or_else` answers, laid out as
/// [`Etcd::claim_txn`] asks them): the rows it refuses leave `chunk` with their conflict;
/// whether any did (none: something else moved, and the rest try again).
fn refused_by(
    answers: &[TxnOpResponse],
    apps: &[&str],
    rows: &[RedirRow],
    chunk: &mut Vec<usize>,
    outcomes: &mut [Option<StoreResult<Revision>>],
) -> bool {
    let missing: HashSet<&str> = apps
        .iter()
        .enumerate()
        .filter(|(n, _)| found(answers, chunk.len() * 2 + n).is_none())
        .map(|(_, app)| *app)
        .collect();
    let before = chunk.len();
    let mut n = 0;
    chunk.retain(|&i| {
        let (appns, redir) = (found(answers, 2 * n), found(answers, 2 * n + 1));
        n += 1;
        let conflict = if let Some(kv) = appns {
            Conflict::AppHasOne(String::from_utf8_lossy(kv.value()).parse().unwrap_or(0))
        } else if redir.is_some() {
            Conflict::PortTaken
        } else if missing.contains(rows[i].app_id.as_ref()) {
            Conflict::NotFound
        } else {
            return true;
        };
        outcomes[i] = Some(Err(StoreError::Conflict(conflict)));
        false
    });
    chunk.len() != before
}

/// What [`Etcd::claim_reads`] read.
struct ClaimReads {
    /// The organisation's counter: its value and mod revision.
    counter: (u64, i64),
    /// Each registered node's published revision.
    applied: Vec<(String, Revision)>,
    /// The quarantines of the rows that have one, by row.
    quarantines: std::collections::HashMap<usize, Quarantine>,
}

#[async_trait::async_trait]
impl Store for Etcd {
    fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints)
    }

    fn max_range_ports(&self) -> u16 {
        MAX_RANGE_PORTS
    }

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        // In pages, all read at the first page's revision: one range of a large table would
        // pass gRPC's 4 MiB answer limit (about 11,000 redirections) and the request
        // timeout. A page's revision compacted away meanwhile starts the read again.
        let mut tries = 0;
        loop {
            match self.snapshot_in_pages(SNAPSHOT_PAGE).await {
                Err(etcd_client::Error::GRpcStatus(status))
                    if tries < SNAPSHOT_TRIES && status.message().contains("compacted") =>
                {
                    tries += 1;
                    debug!("a compaction overtook the snapshot; reading it again");
                }
                read => return read.map_err(|e| self.unavailable(e)),
            }
        }
    }

    fn revision_here(&self) -> Option<Revision> {
        // Other nodes write too: only etcd knows its latest revision.
        None
    }

    async fn watch(&self, after: Revision) -> StoreResult<Changes> {
        let options = WatchOptions::new().with_prefix().with_start_revision(after + 1);
        let mut stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_ANSWER)
            .watch(self.prefix.as_str(), Some(options))
            .await
            .map_err(|e| self.unavailable(e))?;
        // The first answer says whether the watch exists: a start revision that was
        // compacted away cancels it at once.
        let first = stream.message().await.map_err(|e| self.unavailable(e))?;
        let first = first.ok_or_else(|| {
            StoreError::Unavailable(format!("etcd at {}: the watch closed", self.endpoints))
        })?;
        if first.canceled() {
            return Err(if first.compact_revision() > 0 {
                StoreError::Compacted
            } else {
                StoreError::Unavailable(format!(
                    "etcd at {} cancelled the watch: {}",
                    self.endpoints,
                    first.cancel_reason()
                ))
            });
        }
        let (tx, rx) = mpsc::channel(256);
        let decoder = Etcd {
            client: self.client.clone(),
            leader_required: self.leader_required.clone(),
            leaderless: self.leaderless.clone(),
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            org_turns: Default::default(),
            retention: Default::default(),
            inbox: self.inbox.clone(),
        };
        tokio::spawn(async move {
            let mut pending = Some(first);
            loop {
                let response = match pending.take() {
                    Some(r) => r,
                    None => match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            let _ = tx
                                .send(Err(StoreError::Unavailable(format!(
                                    "etcd at {}: the watch closed",
                                    decoder.endpoints
                                ))))
                                .await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(decoder.unavailable(e))).await;
                            return;
                        }
                    },
                };
                if response.canceled() {
                    let err = if response.compact_revision() > 0 {
                        StoreError::Compacted
                    } else {
                        StoreError::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            response.cancel_reason()
                        ))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                let events: Vec<Event> = response
                    .events()
                    .iter()
                    .filter_map(|event| {
                        let kv = event.kv()?;
                        let change = match event.event_type() {
                            EventType::Put => Change::Put(decoder.decode(kv)?),
                            EventType::Delete => Change::Delete(decoder.decode_key(kv.key())?),
                        };
                        Some(Event { revision: kv.mod_revision(), change })
                    })
                    .collect();
                if !events.is_empty() && tx.send(Ok(events)).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn agree(&self, namespaces: &[NamespaceDef], org_quota: Option<u32>) -> StoreResult<()> {
        for def in namespaces {
            let key = self.key(&["namespaces", &def.name]);
            let Some(existing) = self.put_if_absent(&key, &json(def)?).await? else { continue };
            let stored: NamespaceDef = serde_json::from_slice(&existing)?;
            // A host name this node's config did not set follows the fleet's.
            let mut mine = NamespaceDef { default_host: false, ..def.clone() };
            if def.default_host {
                mine.public_host = stored.public_host.clone();
            }
            if stored.retired && (NamespaceDef { retired: false, ..stored.clone() }) == mine {
                // A namespace a reload had retired is declared again: it serves again.
                self.client
                    .kv_client()
                    .put(key.as_str(), json(&mine)?, None)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                continue;
            }
            let same = mine == stored;
            if !same {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "namespace `{}` is defined differently in {}: there {}, here {}; make every node's config agree (only `bind` may differ)",
                    def.name,
                    self.describe(),
                    String::from_utf8_lossy(&existing),
                    json(def)?
                )));
            }
        }
        let settings = json(&serde_json::json!({ "maxRedirectionsPerOrg": org_quota }))?;
        if let Some(existing) = self.put_if_absent(&self.key(&["settings"]), &settings).await? {
            let stored: serde_json::Value = serde_json::from_slice(&existing)?;
            if stored != serde_json::from_str::<serde_json::Value>(&settings)? {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "max_redirections_per_org is {} in {}, {} here: make every node's config agree",
                    stored["maxRedirectionsPerOrg"],
                    self.describe(),
                    org_quota.map_or("none".into(), |q| q.to_string())
                )));
            }
        }
        Ok(())
    }

    async fn reconfigure(&self, namespaces: &[NamespaceDef], org_quota: Option<u32>) -> StoreResult<()> {
        let mut kv = self.client.kv_client();
        for def in namespaces {
            let key = self.key(&["namespaces", &def.name]);
            let mut def = def.clone();
            if def.default_host {
                if let Some(stored) = self.get(&key).await? {
                    def.public_host = serde_json::from_slice::<NamespaceDef>(stored.value())?.public_host;
                }
            }
            kv.put(key, json(&def)?, None).await.map_err(|e| self.unavailable(e))?;
        }
        let settings = json(&serde_json::json!({ "maxRedirectionsPerOrg": org_quota }))?;
        kv.put(self.key(&["settings"]), settings, None).await.map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn ensure_org(&self, name: &str, id: &str) -> StoreResult<Organisation> {
        let org = Organisation { id: id.to_owned(), name: name.to_owned() };
        let name_key = self.key(&["orgnames", name]);
        let mut ops = vec![
            TxnOp::put(name_key.as_str(), id, None),
            TxnOp::put(self.key(&["orgs", id]), json(&org)?, None),
        ];
        ops.extend(self.event_ops(vec![Entry::new(
            EventKind::OrganisationCreated,
            Some(id),
            None,
            None::<&()>,
            Some(&org),
        )])?);
        let txn = Txn::new()
            .when([Compare::create_revision(name_key.as_str(), CompareOp::Equal, 0)])
            .and_then(ops)
            .or_else([TxnOp::get(name_key.as_str(), None)]);
        match self.txn(txn).await? {
            Ok(_) => Ok(org),
            Err(answers) => {
                let id = first_kv(&answers)
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .unwrap_or_default();
                let kv = self.get(&self.key(&["orgs", &id])).await?;
                let kv = kv.ok_or_else(|| {
                    StoreError::Other(anyhow::anyhow!(
                        "organisation `{name}` has a name but no record in etcd"
                    ))
                })?;
                Ok(serde_json::from_slice(kv.value())?)
            }
        }
    }

    async fn create_org(&self, org: &Organisation) -> StoreResult<Revision> {
        let name_key = self.key(&["orgnames", &org.name]);
        let mut ops = vec![
            TxnOp::put(name_key.as_str(), org.id.as_str(), None),
            TxnOp::put(self.key(&["orgs", &org.id]), json(org)?, None),
        ];
        ops.extend(self.event_ops(vec![Entry::new(
            EventKind::OrganisationCreated,
            Some(&org.id),
            None,
            None::<&()>,
            Some(org),
        )])?);
        let txn =
            Txn::new().when([Compare::create_revision(name_key.as_str(), CompareOp::Equal, 0)]).and_then(ops);
        self.txn(txn).await?.map_err(|_| StoreError::Conflict(Conflict::OrgName))
    }

    async fn create_app(&self, app: &Application) -> StoreResult<Revision> {
        let name_key = self.key(&["appnames", &app.owner_id, &app.name]);
        let org_key = self.key(&["orgs", &app.owner_id]);
        let txn = Txn::new()
            .when([
                Compare::create_revision(name_key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(org_key.as_str(), CompareOp::Greater, 0),
            ])
            .and_then(
                [
                    TxnOp::put(name_key.as_str(), app.id.as_str(), None),
                    TxnOp::put(self.key(&["apps", &app.id]), json(app)?, None),
                ]
                .into_iter()
                .chain(self.event_ops(vec![Entry::new(
                    EventKind::ApplicationCreated,
                    Some(&app.owner_id),
                    Some(&app.id),
                    None::<&()>,
                    Some(app),
                )])?)
                .collect::<Vec<_>>(),
            )
            .or_else([TxnOp::get(name_key.as_str(), None)]);
        match self.txn(txn).await? {
            Ok(revision) => Ok(revision),
            Err(answers) if first_kv(&answers).is_some() => Err(StoreError::Conflict(Conflict::AppName)),
            Err(_) => Err(StoreError::Conflict(Conflict::NotFound)),
        }
    }

    async fn set_instances(&self, app_id: &str, list: &[Instance]) -> StoreResult<Revision> {
        self.change_app(app_id, EventKind::ApplicationInstances, |app| app.instances = list.to_vec()).await
    }

    async fn set_health_check(&self, app_id: &str, check: &HealthCheck) -> StoreResult<Revision> {
        self.change_app(app_id, EventKind::ApplicationHealthCheck, |app| app.health_check = check.clone())
            .await
    }

    async fn remove_app(&self, app_id: &str) -> StoreResult<Revision> {
        let key = self.key(&["apps", app_id]);
        self.release_ranges_of(app_id).await?;
        for _ in 0..RETRIES {
            let kv = self.get(&key).await?.ok_or(StoreError::Conflict(Conflict::NotFound))?;
            let app: Application = serde_json::from_slice(kv.value())?;
            let mut held = Vec::new();
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                let prefix = self.key(&[protocol_kind(protocol, "appns"), app_id, ""]);
                held.extend(self.get_prefix(&prefix).await?.into_iter().map(|kv| (protocol, kv)));
            }
            let quota_key = self.key(&["quota", &app.owner_id]);
            let (count, counter_revision) = self.counter(&app.owner_id).await?;
            let mut ops = vec![
                TxnOp::delete(key.as_str(), None),
                TxnOp::delete(self.key(&["appnames", &app.owner_id, &app.name]), None),
            ];
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                for kind in ["appns", "prev"] {
                    ops.push(TxnOp::delete(
                        self.key(&[protocol_kind(protocol, kind), app_id, ""]),
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    ));
                }
            }
            let mut entries = Vec::new();
            for (protocol, kv) in &held {
                let namespace =
                    String::from_utf8_lossy(kv.key()).rsplit('/').next().unwrap_or_default().to_owned();
                let port = String::from_utf8_lossy(kv.value()).into_owned();
                ops.push(TxnOp::delete(
                    self.key(&[protocol_kind(*protocol, "redirs"), &namespace, &port]),
                    None,
                ));
                if let Ok(port) = port.parse() {
                    let row = RedirRow {
                        namespace: namespace.into(),
                        port,
                        ports: 1,
                        protocol: *protocol,
                        app_id: app_id.into(),
                        settings: Default::default(),
                        revision: 0,
                    };
                    ops.push(self.quarantine_op(&row)?);
                    entries.push(Entry::new(
                        EventKind::RedirectionRemoved,
                        Some(&app.owner_id),
                        Some(app_id),
                        Some(&row),
                        None::<&()>,
                    ));
                }
            }
            entries.push(Entry::new(
                EventKind::ApplicationRemoved,
                Some(&app.owner_id),
                Some(app_id),
                Some(&app),
                None::<&()>,
            ));
            ops.extend(self.event_ops(entries)?);
            if !held.is_empty() {
                ops.push(TxnOp::put(
                    quota_key.as_str(),
                    count.saturating_sub(held.len() as u64).to_string(),
                    None,
                ));
            }
            // Every claim and release of the organisation moves its counter: comparing it
            // makes sure no redirection of the application appeared since it was read.
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
                    Compare::mod_revision(quota_key.as_str(), CompareOp::Equal, counter_revision),
                ])
                .and_then(ops);
            if let Ok(revision) = self.txn(txn).await? {
                return Ok(revision);
            }
        }
        Err(StoreError::Unavailable("etcd: the organisation kept changing; try again".into()))
    }

    async fn claim_many(
        &self,
        rows: &[RedirRow],
        org_id: &str,
        quota: Option<u32>,
    ) -> StoreResult<Vec<StoreResult<Revision>>> {
        let _turn = self.org_turn(org_id).await;
        let mut outcomes: Vec<Option<StoreResult<Revision>>> = rows.iter().map(|_| None).collect();
        let mut queue: VecDeque<usize> = (0..rows.len()).collect();
        let mut committed = false;
        while !queue.is_empty() {
            // A transaction compares against the state before it: two rows of one chunk on
            // the same port, or of the same application and namespace, would both pass. The
            // later one waits for a later chunk, where it meets the earlier one's claim.
            let (mut chunk, mut later, mut keys) = (Vec::new(), Vec::new(), HashSet::new());
            while let Some(i) = queue.pop_front() {
                let row = &rows[i];
                if row.ports > 1 {
                    // A range goes in a transaction of its own (issue 34), in its turn.
                    if chunk.is_empty() {
                        chunk.push(i);
                    } else {
                        later.push(i);
                    }
                    break;
                }
                let port_key = (0u8, row.protocol, &*row.namespace, row.port.to_string());
                let app_key = (1u8, row.protocol, &*row.namespace, row.app_id.to_string());
                if keys.contains(&port_key) || keys.contains(&app_key) {
                    later.push(i);
                    continue;
                }
                keys.insert(port_key);
                keys.insert(app_key);
                chunk.push(i);
                if chunk.len() == CLAIM_CHUNK {
                    break;
                }
            }
            for i in later.into_iter().rev() {
                queue.push_front(i);
            }
            if let [i] = chunk[..] {
                if rows[i].ports > 1 {
                    match self.claim_range(&rows[i], org_id, quota).await {
                        Ok(revision) => {
                            committed = true;
                            outcomes[i] = Some(Ok(revision));
                        }
                        Err(err @ StoreError::Conflict(_)) => outcomes[i] = Some(Err(err)),
                        Err(err) if !committed => return Err(err),
                        Err(err) => {
                            for i in chunk.into_iter().chain(queue.drain(..)) {
                                outcomes[i] = Some(Err(again(&err)));
                            }
                        }
                    }
                    continue;
                }
            }
            match self.claim_chunk(rows, &mut chunk, &mut outcomes, org_id, quota).await {
                Ok(claimed) => committed |= claimed,
                Err(err) if !committed => return Err(err),
                Err(err) => {
                    // Some rows were claimed: each of the others says why it was not.
                    for i in chunk.into_iter().chain(queue.drain(..)) {
                        outcomes[i] = Some(Err(again(&err)));
                    }
                }
            }
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(Err(StoreError::Conflict(Conflict::NotFound)))).collect())
    }

    async fn release(&self, row: &RedirRow, org_id: &str) -> StoreResult<Revision> {
        let _turn = self.org_turn(org_id).await;
        let redir_key = self.redir_key(&row.namespace, row.protocol, row.port);
        let appns_key = self.appns_key(&row.app_id, &row.namespace, row.protocol);
        let quota_key = self.key(&["quota", org_id]);
        let port = row.port.to_string();
        // A range's other ports (issue 34): their members go, each gets a quarantine.
        let mut range_ops = Vec::new();
        for p in row.port.saturating_add(1)..=row.last_port() {
            range_ops.push(TxnOp::delete(self.redir_key(&row.namespace, row.protocol, p), None));
            range_ops.push(self.quarantine_op(&RedirRow { port: p, ..row.clone() })?);
        }
        for _ in 0..RETRIES {
            let (count, counter_revision) = self.counter(org_id).await?;
            let txn = Txn::new()
                .when([
                    Compare::value(appns_key.as_str(), CompareOp::Equal, port.as_str()),
                    Compare::mod_revision(quota_key.as_str(), CompareOp::Equal, counter_revision),
                ])
                .and_then(
                    [
                        TxnOp::delete(redir_key.as_str(), None),
                        TxnOp::delete(appns_key.as_str(), None),
                        TxnOp::put(quota_key.as_str(), count.saturating_sub(1).to_string(), None),
                        TxnOp::put(
                            self.prev_key(&row.app_id, &row.namespace, row.protocol),
                            port.as_str(),
                            None,
                        ),
                        self.quarantine_op(row)?,
                    ]
                    .into_iter()
                    .chain(range_ops.iter().cloned())
                    .chain(self.event_ops(vec![Entry::new(
                        EventKind::RedirectionRemoved,
                        Some(org_id),
                        Some(&row.app_id),
                        Some(row),
                        None::<&()>,
                    )])?)
                    .collect::<Vec<_>>(),
                )
                .or_else([TxnOp::get(appns_key.as_str(), None)]);
            match self.txn(txn).await? {
                Ok(revision) => return Ok(revision),
                Err(answers) if first_kv(&answers).is_none_or(|kv| kv.value() != port.as_bytes()) => {
                    return Err(StoreError::Conflict(Conflict::NotFound))
                }
                Err(_) => {
                    debug!(org = org_id, "the organisation's counter moved during a release; trying again")
                }
            }
        }
        Err(StoreError::Unavailable("etcd: the organisation kept changing; try again".into()))
    }

    async fn update_redir(&self, row: &RedirRow) -> StoreResult<Revision> {
        let redir_key = self.redir_key(&row.namespace, row.protocol, row.port);
        let appns_key = self.appns_key(&row.app_id, &row.namespace, row.protocol);
        let port = row.port.to_string();
        // For the audit trail: the row as it was, and its application's organisation, read
        // just before (the transaction below compares ownership, not these values).
        let read = self
            .read_txn(vec![
                TxnOp::get(redir_key.as_str(), None),
                TxnOp::get(self.key(&["apps", &row.app_id]), None),
            ])
            .await?;
        let answers = read.op_responses();
        let before = found(&answers, 0).and_then(|kv| serde_json::from_slice::<RedirRow>(kv.value()).ok());
        let org = found(&answers, 1).and_then(|kv| serde_json::from_slice::<Application>(kv.value()).ok());
        let mut ops = vec![TxnOp::put(redir_key.as_str(), json(row)?, None)];
        ops.extend(self.event_ops(vec![Entry::new(
            EventKind::RedirectionUpdated,
            org.as_ref().map(|a| a.owner_id.as_str()),
            Some(&row.app_id),
            before.as_ref(),
            Some(row),
        )])?);
        // The application's index says it holds this port: the row is its, and stays so.
        let txn = Txn::new()
            .when([
                Compare::value(appns_key.as_str(), CompareOp::Equal, port.as_str()),
                Compare::create_revision(redir_key.as_str(), CompareOp::Greater, 0),
            ])
            .and_then(ops);
        match self.txn(txn).await? {
            Ok(revision) => Ok(revision),
            Err(_) => Err(StoreError::Conflict(Conflict::NotFound)),
        }
    }

    async fn previous_ports(&self, asked: &[(String, String, Protocol)]) -> StoreResult<Vec<Option<u16>>> {
        let mut ports = Vec::with_capacity(asked.len());
        for chunk in asked.chunks(MAX_TXN_OPS) {
            let gets: Vec<TxnOp> = chunk
                .iter()
                .map(|(app, ns, protocol)| TxnOp::get(self.prev_key(app, ns, *protocol), None))
                .collect();
            let response = self.read_txn(gets).await?;
            let answers = response.op_responses();
            for n in 0..chunk.len() {
                ports
                    .push(found(&answers, n).and_then(|kv| String::from_utf8_lossy(kv.value()).parse().ok()));
            }
        }
        Ok(ports)
    }

    async fn put_token(&self, token: &TokenRecord) -> StoreResult<Revision> {
        let (key, value) = (self.key(&["tokens", &token.info.id]), json(token)?);
        let info = &token.info;
        let mut ops = vec![TxnOp::put(key, value, None)];
        ops.extend(self.event_ops(vec![Entry::new(
            EventKind::TokenIssued,
            info.owner_id.as_deref(),
            None,
            None::<&()>,
            Some(info),
        )])?);
        // No comparison: it always succeeds.
        Ok(self.txn(Txn::new().and_then(ops)).await?.unwrap_or(0))
    }

    async fn revoke_token(&self, org_id: Option<&str>, id: &str) -> StoreResult<Revision> {
        let key = self.key(&["tokens", id]);
        let kv = self.get(&key).await?.ok_or(StoreError::Conflict(Conflict::NotFound))?;
        let token: TokenRecord = serde_json::from_slice(kv.value())?;
        if token.info.owner_id.as_deref() != org_id {
            return Err(StoreError::Conflict(Conflict::NotFound));
        }
        let mut ops = vec![TxnOp::delete(key.as_str(), None)];
        let info: &TokenInfo = &token.info;
        ops.extend(self.event_ops(vec![Entry::new(
            EventKind::TokenRevoked,
            org_id,
            None,
            Some(info),
            None::<&()>,
        )])?);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision())])
            .and_then(ops);
        self.txn(txn).await?.map_err(|_| StoreError::Conflict(Conflict::NotFound))
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        // The record and its revision in the form claims compare, together.
        let txn = Txn::new().and_then([
            TxnOp::put(self.key(&["nodes", &node.name]), json(node)?, None),
            TxnOp::put(self.key(&["applied", &node.name]), padded(node.revision), None),
        ]);
        self.client.kv_client().txn(txn).await.map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn forget_node(&self, name: &str) -> StoreResult<Revision> {
        let (node_key, alive_key) = (self.key(&["nodes", name]), self.key(&["alive", name]));
        let txn = Txn::new()
            .when([
                Compare::create_revision(alive_key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(node_key.as_str(), CompareOp::Greater, 0),
            ])
            .and_then([
                TxnOp::delete(node_key.as_str(), None),
                TxnOp::delete(self.key(&["applied", name]), None),
            ])
            .or_else([TxnOp::get(alive_key.as_str(), None)]);
        match self.txn(txn).await? {
            Ok(revision) => Ok(revision),
            Err(answers) if first_kv(&answers).is_some() => Err(StoreError::Conflict(Conflict::Alive)),
            Err(_) => Err(StoreError::Conflict(Conflict::NotFound)),
        }
    }

    async fn sweep_quarantines(&self, done: &[Quarantine]) -> StoreResult<()> {
        for q in done {
            let key = self.quarantine_key(&q.namespace, q.protocol, q.port);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.as_str(), CompareOp::Equal, q.revision),
                    self.all_applied(q.revision, false),
                ])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            // Not confirmed after all, or changed, or swept by another node: left. A
            // background call: it waits out an election on its own client, and leaves the
            // API calls' count of leaderless answers alone.
            self.client.kv_client().txn(txn).await.map_err(|e| self.unavailable(e))?;
        }
        Ok(())
    }

    async fn keep_alive(&self, node: &str, ttl: Duration, stop: CancellationToken) {
        let lease = Lease {
            client: self.client.clone(),
            key: self.key(&["alive", node]),
            ttl: ttl.as_secs().max(1) as i64,
            endpoints: self.endpoints.clone(),
        };
        let stop_lease = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = lease.run() => {}
                _ = stop_lease.cancelled() => {}
            }
        });
        // The audit trail's retention, swept by every node while it runs.
        let sweeper = Etcd {
            client: self.client.clone(),
            leader_required: self.leader_required.clone(),
            leaderless: self.leaderless.clone(),
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            org_turns: Default::default(),
            retention: self.retention.clone(),
            inbox: self.inbox.clone(),
        };
        let sweeper = Arc::new(sweeper);
        let (mover, stop_mover) = (sweeper.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(EVENT_SWEEP);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                if let Err(error) = sweeper.sweep_events().await {
                    debug!(%error, "cannot sweep the audit trail now; trying again later");
                }
            }
        });
        // The inbox's mover: rung by this node's writes, and now and then for what other
        // nodes left (a node killed between its change and the move).
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = mover.inbox.bell.notified() => {
                        // A burst of changes gathers first, so that one move indexes it in a
                        // few transactions rather than one a change (each is an fsync of
                        // etcd's): reads look in the inbox, so nothing waits for the move.
                        tokio::select! {
                            _ = tokio::time::sleep(INBOX_GATHER) => {}
                            _ = stop_mover.cancelled() => return,
                        }
                    }
                    _ = tokio::time::sleep(INBOX_SWEEP) => {}
                    _ = stop_mover.cancelled() => return,
                }
                if let Err(error) = mover.move_inbox().await {
                    debug!(%error, "cannot index the audit trail's inbox now; trying again later");
                }
            }
        });
    }

    async fn create_webhook(&self, hook: &WebhookRecord) -> StoreResult<()> {
        let key = self.key(&["webhooks", &hook.info.id]);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), json(hook)?, None)]);
        self.txn(txn).await?.map(drop).map_err(|_| StoreError::Other(anyhow::anyhow!("webhook id taken")))
    }

    async fn remove_webhook(&self, org_id: &str, id: &str) -> StoreResult<WebhookRecord> {
        let key = self.key(&["webhooks", id]);
        let kv = self.get(&key).await?.ok_or(StoreError::Conflict(Conflict::NotFound))?;
        let record: WebhookRecord = serde_json::from_slice(kv.value())?;
        if record.info.owner_id != org_id {
            return Err(StoreError::Conflict(Conflict::NotFound));
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Greater, 0)])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        self.txn(txn).await?.map_err(|_| StoreError::Conflict(Conflict::NotFound))?;
        Ok(record)
    }

    async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        let kvs = self.get_prefix(&self.key(&["webhooks", ""])).await?;
        Ok(kvs.iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    async fn save_delivery(&self, id: &str, delivery: &DeliveryState) -> StoreResult<()> {
        let key = self.key(&["webhooks", id]);
        for _ in 0..RETRIES {
            let kv = self.get(&key).await?.ok_or(StoreError::Conflict(Conflict::NotFound))?;
            let mut record: WebhookRecord = serde_json::from_slice(kv.value())?;
            record.info.delivery = delivery.clone();
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision())])
                .and_then([TxnOp::put(key.as_str(), json(&record)?, None)]);
            if self.txn(txn).await?.is_ok() {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable("etcd: the webhook kept changing; try again".into()))
    }

    async fn hold_role(&self, role: &str, node: &str, ttl: Duration) -> StoreResult<bool> {
        let key = self.key(&["roles", role]);
        let now = audit::now_ms();
        let until = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mine = json(&RoleHolder { node: node.to_owned(), until })?;
        let condition = match self.get(&key).await? {
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            Some(kv) => {
                let holder: Option<RoleHolder> = serde_json::from_slice(kv.value()).ok();
                if holder.is_some_and(|h| h.node != node && h.until > now) {
                    return Ok(false);
                }
                Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision())
            }
        };
        // Taken or renewed only if nobody moved it since it was read.
        let txn = Txn::new().when([condition]).and_then([TxnOp::put(key.as_str(), mine, None)]);
        Ok(self.txn(txn).await?.is_ok())
    }

    fn set_retention(&self, retention: Retention) {
        *self.retention.lock().unwrap_or_else(|p| p.into_inner()) = retention;
    }

    async fn events(&self, query: &EventQuery) -> StoreResult<Vec<AuditEvent>> {
        // The inbox first: the events not indexed yet, and the revision by which every event
        // with a lower id had committed, hence was in the inbox or the index then (a move
        // is atomic) and still is in the index (a move never goes back): reading the index
        // below that bound afterwards, in as many calls as it takes, misses none.
        let inbox = self.key(&["events", INBOX, ""]);
        let kv = self.leader_required.kv_client();
        let options = GetOptions::new().with_prefix().with_limit(INBOX_READ);
        let call = || {
            let (mut kv, inbox, options) = (kv.clone(), inbox.clone(), options.clone());
            async move { kv.get(inbox, Some(options)).await }
        };
        let response = self.led(call).await.map_err(|e| self.unavailable(e))?;
        self.inbox.keys_read.fetch_add(response.kvs().len() as u64, std::sync::atomic::Ordering::Relaxed);
        let revision = response.header().map_or(0, |h| h.revision());
        let bound = revision.saturating_add(1).saturating_mul(audit::ETCD_ID_SCALE);
        let unmoved: Vec<AuditEvent> = response.kvs().iter().filter_map(Self::unmoved).collect();
        let index = self.event_index(query.org_id.as_deref());
        let by_org = query.org_id.is_some();
        let page = i64::try_from(query.limit.max(EVENT_PAGE)).unwrap_or(i64::MAX);
        let mut indexed = Vec::new();
        let mut admitted = 0;
        // The ids [low, high) whose events in the index have all been read.
        let (low, high);
        if let Some(after) = query.after {
            // Oldest first: one range from the cursor, a page at a time.
            let mut from = after.saturating_add(1);
            loop {
                let (kvs, more) = self
                    .event_range(Self::event_key(&index, from), Self::event_key(&index, bound), page)
                    .await?;
                let last = kvs.last().map(|kv| kv.key().to_vec());
                let events = self.indexed(&index, kvs, by_org).await?;
                admitted += events.iter().filter(|e| query.admits(e)).count();
                indexed.extend(events);
                // Read up to the last key read, or to the bound when the range ended.
                from = match last {
                    Some(last) if more => {
                        String::from_utf8_lossy(&last[index.len()..]).parse::<i64>().unwrap_or(bound) + 1
                    }
                    _ => bound,
                };
                if !more || admitted >= query.limit {
                    break;
                }
            }
            (low, high) = (after.saturating_add(1), from);
        } else {
            // Newest first: etcd reads a range in key order only (sorted otherwise, it
            // loads the whole range first), so windows below the cursor, each read with
            // the page's limit: one with more keys than that shrinks (to half the ids its
            // page spanned, at most half its width), one read whole is
            // taken, and the next below it is twice as wide if this one was not half full.
            let top = query.before.unwrap_or(bound).min(bound);
            let mut to = top;
            let mut width = page * audit::ETCD_ID_SCALE;
            for _ in 0..WINDOWS {
                if to <= 0 || admitted >= query.limit {
                    break;
                }
                let from = to.saturating_sub(width).max(0);
                let (kvs, more) = self
                    .event_range(Self::event_key(&index, from), Self::event_key(&index, to), page)
                    .await?;
                if more {
                    // The page read is the window's oldest keys: half the ids they span
                    // holds about half a page, where the events are as dense.
                    let spanned = kvs
                        .last()
                        .and_then(|kv| String::from_utf8_lossy(&kv.key()[index.len()..]).parse::<i64>().ok())
                        .map_or(width, |last| last - from);
                    width = (width / 2).min(spanned / 2).max(1);
                    continue;
                }
                // Wider below only if this one was less than half full.
                if kvs.len() < EVENT_PAGE / 2 {
                    width = width.saturating_mul(2);
                }
                let events = self.indexed(&index, kvs, by_org).await?;
                admitted += events.iter().filter(|e| query.admits(e)).count();
                indexed.extend(events);
                to = from;
            }
            (low, high) = (to, top);
        }
        let mut events: Vec<AuditEvent> = unmoved
            .into_iter()
            .filter(|e| (low..high).contains(&e.id))
            .chain(indexed)
            .filter(|e| query.admits(e) && query.after.is_none_or(|after| e.id > after))
            .collect();
        // An event moved between the two reads is in both.
        events.sort_by_key(|e| e.id);
        events.dedup_by_key(|e| e.id);
        if query.after.is_none() {
            events.reverse();
        }
        events.truncate(query.limit);
        Ok(events)
    }
}

impl StoreAccess {
    /// The TLS settings when a CA is given, the files read and their PEM checked (a file
    /// that is not what it should be is refused here, not taken for an etcd away).
    fn tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
        };
        let certificates = |flag: &str, path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
            let pem = read(flag, path)?;
            let found = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
            match found {
                Ok(list) if !list.is_empty() => Ok(pem),
                _ => {
                    bail!("{flag} {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)", path.display())
                }
            }
        };
        match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => Ok(None),
            (None, _, _) => {
                bail!("--store-cert and --store-key need --store-ca: TLS to etcd checks etcd's certificate against that CA")
            }
            (Some(_), Some(_), None) | (Some(_), None, Some(_)) => {
                bail!("--store-cert and --store-key go together")
            }
            (Some(ca), cert, key) => {
                let mut tls =
                    TlsOptions::new().ca_certificate(Certificate::from_pem(certificates("--store-ca", ca)?));
                if let (Some(cert), Some(key)) = (cert, key) {
                    let cert = certificates("--store-cert", cert)?;
                    let key_pem = read("--store-key", key)?;
                    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
                        bail!("--store-key {}: no PEM private key in it", key.display());
                    }
                    tls = tls.identity(Identity::from_pem(cert, key_pem));
                }
                Ok(Some(tls))
            }
        }
    }

    /// The etcd user and its password: the first line of the password file, else
    /// `TCP_REDIRS_STORE_PASSWORD`.
    fn login(&self) -> anyhow::Result<Option<(String, String)>> {
        let password = match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --store-password-file {}", path.display()))?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            None => std::env::var("TCP_REDIRS_STORE_PASSWORD").ok(),
        }
        .filter(|p| !p.is_empty());
        match (&self.user, password) {
            (None, None) => Ok(None),
            (None, Some(_)) => bail!(
                "a password for etcd is given (--store-password-file or TCP_REDIRS_STORE_PASSWORD) but no user: give --store-user"
            ),
            (Some(user), None) => bail!(
                "--store-user `{user}` needs its password: --store-password-file FILE, or TCP_REDIRS_STORE_PASSWORD"
            ),
            (Some(user), Some(password)) => Ok(Some((user.clone(), password))),
        }
    }
}

/// How many times a call whose request never left this node is made again.
const UNSENT_TRIES: usize = 8;

/// Makes `call`, again while its error says the request never reached etcd: the client
/// could not connect to the member it picked (one that is down), so nothing was done and
/// its balancer picks among the members again. An error that may have reached etcd (a
/// timeout, a broken stream) is never retried here: that write may have happened, and the
/// caller answers 503 for it.
async fn unsent_again<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, etcd_client::Error>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 1;
    loop {
        match call().await {
            Err(err) if tries < UNSENT_TRIES && never_sent(&err) => tries += 1,
            done => return done,
        }
    }
}

/// Whether etcd refused a call because the member it reached has no leader (asked for by
/// the client's require-leader option).
fn no_leader(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status) if status.message().contains("no leader"))
}

/// Whether an error says that the connection to a member could not be made.
fn never_sent(err: &etcd_client::Error) -> bool {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// What an error of etcd at `hosts` means for a node that starts: a refusal, one line that
/// says what to check, or an etcd that cannot be reached yet.
fn refusal(hosts: &str, access: &StoreAccess, err: etcd_client::Error) -> StoreError {
    // The whole chain: a TLS failure is a few sources below the transport error.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    // gRPC's codes (tonic's `Code`, which this crate does not name).
    let code = match &err {
        etcd_client::Error::GRpcStatus(status) => Some(i32::from(status.code())),
        _ => None,
    };
    classify(hosts, access, text, code)
}

/// The TLS alert the first of `hosts` answers a handshake with `access`'s files, if it
/// sends one within a second of the handshake (None without TLS, when it cannot be
/// reached, or when it accepts).
async fn tls_alert(hosts: &str, access: &StoreAccess) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    let ca = std::fs::read(access.ca.as_ref()?).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
    let config = match (&access.cert, &access.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&std::fs::read(cert).ok()?)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_slice(&std::fs::read(key).ok()?).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
        _ => builder.with_no_client_auth(),
    };
    let host = hosts.split(',').next()?;
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name).trim_matches(['[', ']']);
    let name = ServerName::try_from(name.to_owned()).ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let wait = Duration::from_secs(1);
    let tcp = tokio::time::timeout(wait, tokio::net::TcpStream::connect(host)).await.ok()?.ok()?;
    let mut tls = match tokio::time::timeout(wait, connector.connect(name, tcp)).await.ok()? {
        Ok(tls) => tls,
        Err(e) => return Some(format!("TLS handshake: {e}")),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, tls.read(&mut byte)).await {
        Ok(Err(e)) => Some(format!("TLS after the handshake: {e}")),
        _ => None,
    }
}

/// [`refusal`] from the error's text and gRPC code.
fn classify(hosts: &str, access: &StoreAccess, text: String, code: Option<i32>) -> StoreError {
    let user = access.user.as_deref().unwrap_or_default();
    let file = |path: &Option<std::path::PathBuf>| {
        path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    };
    let refused = |why: String| StoreError::Other(anyhow::anyhow!("etcd at {hosts} {why}"));
    const UNAUTHENTICATED: i32 = 16;
    const PERMISSION_DENIED: i32 = 7;
    if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        return refused(format!(
            "has a certificate that --store-ca ({}) did not sign: give the CA that signed etcd's --cert-file ({text})",
            file(&access.ca)
        ));
    }
    if text.contains("NotValidForName") {
        return refused(format!(
            "has a certificate that does not name the host --store gives: use a name or address in its subject alternative names ({text})"
        ));
    }
    if text.contains("CertificateRequired")
        || text.contains("BadCertificate")
        || text.contains("UnknownCA")
        || text.contains("certificate required")
        || text.contains("bad certificate")
        || text.contains("unknown ca")
    {
        return refused(match &access.cert {
            None => format!("asks for a client certificate: give --store-cert and --store-key, signed by etcd's --trusted-ca-file ({text})"),
            Some(cert) => format!("refused this node's client certificate {}: it must be signed by etcd's --trusted-ca-file ({text})", cert.display()),
        });
    }
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        return refused(format!(
            "does not speak TLS: drop --store-ca, or check that --store names etcd's TLS client port ({text})"
        ));
    }
    if text.contains("authentication is not enabled") {
        return refused(format!(
            "has authentication off, so --store-user `{user}` protects nothing: enable it there (`etcdctl auth enable`), or drop --store-user"
        ));
    }
    if text.contains("invalid user ID or password") || code == Some(UNAUTHENTICATED) && !user.is_empty() {
        return refused(format!(
            "refused user `{user}` and its password: check --store-user and the password (--store-password-file or TCP_REDIRS_STORE_PASSWORD) ({text})"
        ));
    }
    if code == Some(UNAUTHENTICATED) || text.contains("user name is empty") {
        return refused(format!("asks for a user: give --store-user and its password ({text})"));
    }
    if code == Some(PERMISSION_DENIED) && user.is_empty() {
        return refused(format!(
            "refused this node: give --store-user and its password, or a client certificate whose common name is an etcd user with `readwrite` on the prefix ({text})"
        ));
    }
    if code == Some(PERMISSION_DENIED) {
        return refused(format!(
            "does not let user `{user}` read and write this fleet's prefix: grant its role `readwrite` on the prefix (`etcdctl role grant-permission ROLE --prefix=true readwrite PREFIX/`) ({text})"
        ));
    }
    StoreError::Unavailable(format!("etcd at {hosts}: {text}"))
}

/// A node's liveness: a key bound to a lease that the node keeps alive.
struct Lease {
    client: Client,
    key: String,
    ttl: i64,
    endpoints: String,
}

impl Lease {
    /// Grants a lease and binds the liveness key to it.
    async fn register(&self) -> Result<i64, etcd_client::Error> {
        let id = self.client.lease_client().grant(self.ttl, None).await?.id();
        let options = PutOptions::new().with_lease(id);
        self.client.kv_client().put(self.key.as_str(), "", Some(options)).await?;
        Ok(id)
    }

    /// Registers the node, then keeps its lease alive; when the lease is lost (etcd away
    /// for longer than the TTL), takes a new one as soon as etcd answers again. Never ends.
    async fn run(self) {
        let every = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(300));
        let mut tries = 0u32;
        loop {
            match self.register().await {
                Ok(id) => {
                    info!(key = %self.key, lease = id, pid = std::process::id(), "this node is registered in the fleet");
                    tries = 0;
                    if let Err(err) = self.keep(id, every).await {
                        warn!(error = %err, "this node's lease lapsed (etcd away longer than --node-ttl); registering again");
                    }
                }
                Err(err) => {
                    tries += 1;
                    // Every try in the debug log; a line a minute or so in the log.
                    if tries == 1 || tries.is_multiple_of(60) {
                        warn!(endpoints = %self.endpoints, error = %err, tries, "cannot register this node in the fleet yet; trying again every second");
                    } else {
                        debug!(endpoints = %self.endpoints, error = %err, "cannot register the node yet");
                    }
                }
            }
            tokio::time::sleep(every.min(Duration::from_secs(1))).await;
        }
    }

    /// Renews the lease every `every` until a renewal fails or finds the lease gone.
    async fn keep(&self, id: i64, every: Duration) -> Result<(), etcd_client::Error> {
        let (mut keeper, mut answers) = self.client.lease_client().keep_alive(id).await?;
        loop {
            keeper.keep_alive().await?;
            match tokio::time::timeout(every.max(Duration::from_secs(1)), answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                Ok(Err(err)) => return Err(err),
                _ => return Err(etcd_client::Error::LeaseKeepAliveError("the lease expired".into())),
            }
            tokio::time::sleep(every).await;
        }
    }
}
