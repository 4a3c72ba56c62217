//! The embedded store: SQLite (WAL, `synchronous=FULL`) in the data directory.
//!
//! A write answers only once its transaction is durably committed, which is why a restart
//! (even after `kill -9`) brings back every acknowledged redirection. One process owns the
//! file (the data directory is locked), so the changes it makes are also the only ones:
//! each committed write is numbered with the next revision and kept in a window of recent
//! changes, from which [`Store::watch`] serves the process's own copy of the table, exactly
//! as etcd's watch serves a fleet's nodes. Redirection changes are also logged in the
//! `changes` table, and an application's previous port in each namespace (and protocol)
//! is an explicit row of `previous_ports`, so that a re-added redirection gets its port
//! back. Schema 3 added the protocol to both, and to the keys of `redirs`: TCP and UDP ports
//! are separate spaces.
//!
//! Namespace definitions, node descriptions and liveness only live in memory here: a
//! single server has its namespaces from its config and is its own only node.
//!
//! The audit trail ([`super::audit`]) is the `events` table: each write's store method
//! notes what it changed ([`note`]), and [`Sqlite::write`] inserts those events, with the
//! calling task's origin, in the write's own transaction, then deletes what the retention
//! no longer keeps (two indexed range deletes, usually of nothing). The table is an addition
//! that an older build ignores, so it is created when missing rather than by a new schema.
//!
//! Revisions grow across restarts: the file keeps a ceiling (`meta.revision_ceiling`)
//! above every revision handed out, raised by [`CEILING_STEP`] in the same transaction as
//! the write that reaches it (a change that lives in memory raises it with a write of its
//! own, once per [`CEILING_STEP`]), and a reopened store starts from it. Nothing that takes
//! the lock runs on an async worker: it may be held by a commit waiting for the disk.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::audit::{self, Entry, EventQuery, Origin, Retention};
use super::webhook::WebhookRecord;
use super::{
    Change, Changes, Conflict, Event, Key, NamespaceDef, NodeRecord, Quarantine, Record, RedirKey, RedirRow,
    Revision, Snapshot, Store, StoreError, StoreResult, TokenRecord,
};
use crate::wire::{Actor, AuditEvent, DeliveryState, EventKind};
use crate::wire::{Application, HealthCheck, Instance, Organisation, Protocol, TokenInfo};
use crate::wire::{ProxyProtocol, RedirSettings};

/// The marker that tells our database apart from any other SQLite file.
const FORMAT: &str = "tcp-redirs";
/// The schema version this build reads and writes.
const SCHEMA: i64 = 5;
/// How many recent changes a watch can start from; an older start reloads a snapshot.
/// A watch starts from the snapshot the node just loaded, so the window only has to cover
/// the writes made meanwhile (a few batches); each change kept costs ~200 B plus its strings.
const WINDOW: usize = 4_096;
/// How far the stored revision ceiling is raised each time a revision reaches it.
const CEILING_STEP: Revision = 1024;

const SCHEMA_SQL: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    UNIQUE (org_id, name)
);
CREATE TABLE instances (
    app_id TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    address TEXT NOT NULL,
    weight INTEGER CHECK (weight BETWEEN 0 AND 1000),
    PRIMARY KEY (app_id, position)
);
CREATE TABLE redirs (
    namespace TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    app_id TEXT NOT NULL REFERENCES apps(id),
    revision INTEGER NOT NULL,
    connect_timeout INTEGER,
    idle_timeout INTEGER,
    half_close_timeout INTEGER,
    proxy_protocol TEXT CHECK (proxy_protocol IN ('v1', 'v2')),
    allow_ranges TEXT NOT NULL DEFAULT '[]',
    deny_ranges TEXT NOT NULL DEFAULT '[]',
    max_connections INTEGER,
    max_rate INTEGER,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (namespace, port),
    UNIQUE (app_id, namespace)
);
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    namespace TEXT NOT NULL,
    port INTEGER NOT NULL,
    app_id TEXT NOT NULL,
    at INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE TABLE tokens (
    token_hash BLOB PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    secret_hash BLOB NOT NULL,
    org_id TEXT REFERENCES orgs(id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);
";

/// The audit trail, created when missing (see the module's documentation).
const EVENTS_SQL: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    org_id TEXT,
    app_id TEXT,
    actor_id TEXT,
    actor_name TEXT NOT NULL,
    client TEXT,
    node TEXT,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_org ON events (org_id, id);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    record TEXT NOT NULL
);
";

thread_local! {
    /// The entries the write running on this thread has noted ([`note`]): a write's closure
    /// runs whole on one blocking thread, under the store's lock.
    static NOTED: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Notes a change for the audit trail of the write in progress on this thread.
fn note(entry: Entry) {
    NOTED.with(|n| n.borrow_mut().push(entry));
}

/// Schema 1 to 2: the previous port of an application is an explicit record, filled from
/// the change log that schema 1 searched for it.
const MIGRATE_1_TO_2: &str = "
CREATE TABLE previous_ports (
    app_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    port INTEGER NOT NULL,
    PRIMARY KEY (app_id, namespace)
);
INSERT INTO previous_ports (app_id, namespace, port)
    SELECT app_id, namespace, port FROM changes c
    WHERE op = 'remove' AND revision = (
        SELECT max(revision) FROM changes d
        WHERE d.op = 'remove' AND d.app_id = c.app_id AND d.namespace = c.namespace);
UPDATE meta SET value = '2' WHERE key = 'schema';
";

/// Schema 2 to 3: a redirection has a protocol, TCP or UDP, each with its own ports, and an
/// application may have one of each per namespace (SQLite cannot change a primary key in
/// place: the two tables are copied; every existing row is TCP). The PROXY protocol setting
/// may also be `v2-every` (UDP's header on every datagram), and a UDP redirection has a rate
/// of datagrams per client address (`max_datagram_rate`).
const MIGRATE_2_TO_3: &str = "
CREATE TABLE redirs_3 (
    namespace TEXT NOT NULL,
    protocol TEXT NOT NULL DEFAULT 'tcp' CHECK (protocol IN ('tcp', 'udp')),
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    app_id TEXT NOT NULL REFERENCES apps(id),
    revision INTEGER NOT NULL,
    connect_timeout INTEGER,
    idle_timeout INTEGER,
    half_close_timeout INTEGER,
    proxy_protocol TEXT CHECK (proxy_protocol IN ('v1', 'v2', 'v2-every')),
    allow_ranges TEXT NOT NULL DEFAULT '[]',
    deny_ranges TEXT NOT NULL DEFAULT '[]',
    max_connections INTEGER,
    max_rate INTEGER,
    max_datagram_rate INTEGER,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    PRIMARY KEY (namespace, protocol, port),
    UNIQUE (app_id, namespace, protocol)
);
INSERT INTO redirs_3 (namespace, protocol, port, app_id, revision, connect_timeout, idle_timeout,
                      half_close_timeout, proxy_protocol, allow_ranges, deny_ranges,
                      max_connections, max_rate, created_at)
    SELECT namespace, 'tcp', port, app_id, revision, connect_timeout, idle_timeout,
           half_close_timeout, proxy_protocol, allow_ranges, deny_ranges,
           max_connections, max_rate, created_at FROM redirs;
DROP TABLE redirs;
ALTER TABLE redirs_3 RENAME TO redirs;
CREATE TABLE previous_ports_3 (
    app_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    protocol TEXT NOT NULL DEFAULT 'tcp',
    port INTEGER NOT NULL,
    PRIMARY KEY (app_id, namespace, protocol)
);
INSERT INTO previous_ports_3 (app_id, namespace, protocol, port)
    SELECT app_id, namespace, 'tcp', port FROM previous_ports;
DROP TABLE previous_ports;
ALTER TABLE previous_ports_3 RENAME TO previous_ports;
ALTER TABLE changes ADD COLUMN protocol TEXT NOT NULL DEFAULT 'tcp';
UPDATE meta SET value = '3' WHERE key = 'schema';
";

/// Schema 3 to 4: an application has its own health-check settings (issue 33), the API's
/// JSON of them in one column (NULL: the node's, every one): they are read and written
/// whole, never searched.
const MIGRATE_3_TO_4: &str = "
ALTER TABLE apps ADD COLUMN health_check TEXT;
UPDATE meta SET value = '4' WHERE key = 'schema';
";

/// Schema 4 to 5 (issue 34): a redirection's limits per client address and its bandwidth
/// limit, one column a setting like the others (NULL: unset); and the range of consecutive
/// ports it may hold, `port` to `port + ports - 1` (every existing one holds one). The
/// primary key stays the first port: a claim checks the ranges around it ([`overlapped`])
/// in its transaction.
const MIGRATE_4_TO_5: &str = "
ALTER TABLE redirs ADD COLUMN max_connections_per_client INTEGER;
ALTER TABLE redirs ADD COLUMN max_rate_per_client INTEGER;
ALTER TABLE redirs ADD COLUMN bandwidth_limit INTEGER;
ALTER TABLE redirs ADD COLUMN ports INTEGER NOT NULL DEFAULT 1 CHECK (ports BETWEEN 1 AND 65535);
UPDATE meta SET value = '5' WHERE key = 'schema';
";

/// What one lock guards: the connection, the revision counter and the recent changes.
struct Inner {
    conn: Connection,
    revision: Revision,
    /// `revision`, readable without the lock.
    latest: Arc<AtomicI64>,
    /// The stored ceiling: every revision handed out is below it.
    ceiling: Revision,
    recent: VecDeque<Event>,
    watchers: Vec<mpsc::Sender<StoreResult<Vec<Event>>>>,
    namespaces: BTreeMap<String, NamespaceDef>,
    nodes: BTreeMap<String, NodeRecord>,
    alive: Option<String>,
    /// Ports freed by a removal that not every node has confirmed. In memory, as the nodes
    /// are: a single server that restarts has closed every port it had.
    quarantine: BTreeMap<RedirKey, Quarantine>,
    /// How long, and how many, events the trail keeps.
    retention: Retention,
}

/// What a claim checks beside the database: the nodes and the quarantines.
struct Fleet<'a> {
    nodes: &'a BTreeMap<String, NodeRecord>,
    quarantine: &'a BTreeMap<RedirKey, Quarantine>,
}

impl Fleet<'_> {
    /// [`Conflict::Quarantined`] when one of `row`'s ports is held back from its application.
    fn check(&self, row: &RedirRow) -> StoreResult<()> {
        for (_, q) in self.quarantined(row) {
            if *q.app_id != *row.app_id {
                let waits = q.waits_for(self.nodes.values());
                if !waits.is_empty() {
                    return Err(StoreError::Conflict(Conflict::Quarantined(waits)));
                }
            }
        }
        Ok(())
    }

    /// The quarantines of `row`'s ports (a range's are a range of the map).
    fn quarantined<'b>(&'b self, row: &RedirRow) -> impl Iterator<Item = (&'b RedirKey, &'b Quarantine)> {
        let first = row.key();
        let last = RedirKey { port: row.last_port(), ..row.key() };
        self.quarantine.range(first..=last)
    }
}

/// The SQLite store; share it behind an `Arc`.
pub struct Sqlite {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
    latest: Arc<AtomicI64>,
}

impl Sqlite {
    /// Opens the database at `path`, creating it if absent, refusing a file that is not ours.
    pub fn open(path: &Path) -> Result<Sqlite> {
        let conn =
            Connection::open(path).with_context(|| format!("cannot open the store {}", path.display()))?;
        init(&conn, path)?;
        conn.execute_batch(EVENTS_SQL)
            .with_context(|| format!("cannot add the audit trail to {}", path.display()))?;
        // The ceiling is above every revision handed out; a store written before it existed
        // has its redirections' revisions and its change log to go by.
        let revision: Revision = conn.query_row(
            "SELECT max((SELECT coalesce(max(revision), 0) FROM changes),
                        (SELECT coalesce(max(revision), 0) FROM redirs),
                        (SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'revision_ceiling'))",
            [],
            |r| r.get(0),
        )?;
        let latest = Arc::new(AtomicI64::new(revision));
        let inner = Inner {
            conn,
            revision,
            latest: latest.clone(),
            ceiling: revision,
            recent: VecDeque::new(),
            watchers: Vec::new(),
            namespaces: BTreeMap::new(),
            nodes: BTreeMap::new(),
            alive: None,
            quarantine: BTreeMap::new(),
            retention: Retention::default(),
        };
        Ok(Sqlite { path: path.to_owned(), inner: Arc::new(Mutex::new(inner)), latest })
    }

    /// Runs `with` on the locked state, off the async workers.
    async fn locked<T: Send + 'static>(
        &self,
        with: impl FnOnce(&mut Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || with(&mut lock(&inner)))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
    }

    /// Changes an application's record with `change` and records the event `kind` with it,
    /// in one transaction; an application that does not exist is not found (and nothing is
    /// written: the transaction rolls back).
    async fn change_app(
        &self,
        app_id: &str,
        kind: EventKind,
        change: impl FnOnce(&Transaction, &str) -> StoreResult<()> + Send + 'static,
    ) -> StoreResult<Revision> {
        let app_id = app_id.to_owned();
        let ((), revision) = self
            .write(move |tx, _| {
                let before = app(tx, &app_id)?;
                change(tx, &app_id)?;
                let found = app(tx, &app_id)?.ok_or(StoreError::Conflict(Conflict::NotFound))?;
                note(Entry::new(kind, Some(&found.owner_id), Some(&app_id), before.as_ref(), Some(&found)));
                Ok(((), vec![Change::Put(Record::App(found))]))
            })
            .await?;
        Ok(revision)
    }

    /// Runs `write` in one transaction; on commit, numbers its changes with the next
    /// revision and hands them to the watchers. A write that changed nothing takes no
    /// revision (and answers the current one): a revision without a change would never
    /// reach the table, and whoever waited for it would wait in vain.
    async fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Transaction, Revision) -> StoreResult<(T, Vec<Change>)> + Send + 'static,
    ) -> StoreResult<(T, Revision)> {
        self.write_seeing(move |tx, revision, _| write(tx, revision)).await
    }

    /// [`Sqlite::write`] that also sees the nodes and the quarantines, as of the same lock.
    async fn write_seeing<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Transaction, Revision, &Fleet) -> StoreResult<(T, Vec<Change>)> + Send + 'static,
    ) -> StoreResult<(T, Revision)> {
        let origin = audit::current();
        self.locked(move |inner| {
            let revision = inner.revision + 1;
            let ceiling = inner.ceiling;
            let retention = inner.retention;
            let Inner { conn, nodes, quarantine, .. } = &mut *inner;
            let fleet = Fleet { nodes, quarantine };
            // Immediate: the write lock is taken at the start, waiting for it as long as the
            // busy timeout says; a deferred transaction that reads first and then finds
            // another writer fails at once instead.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            NOTED.with(|n| n.borrow_mut().clear());
            let (value, changes) = write(&tx, revision, &fleet)?;
            let noted = NOTED.with(|n| std::mem::take(&mut *n.borrow_mut()));
            if changes.is_empty() {
                tx.commit()?;
                return Ok((value, inner.revision));
            }
            record(&tx, noted, &origin, retention)?;
            let raised = raise_ceiling(&tx, ceiling, revision)?;
            tx.commit()?;
            inner.ceiling = raised.unwrap_or(ceiling);
            inner.publish(revision, changes);
            Ok((value, revision))
        })
        .await
    }

    /// Records a change that only lives in memory (namespaces, nodes, liveness).
    async fn publish_memory(&self, change: Change) -> StoreResult<Revision> {
        self.locked(move |inner| {
            let revision = inner.revision + 1;
            // Not in a transaction: on its own, durable before the revision is handed out.
            if let Some(raised) = raise_ceiling(&inner.conn, inner.ceiling, revision)? {
                inner.ceiling = raised;
            }
            inner.publish(revision, vec![change]);
            Ok(revision)
        })
        .await
    }
}

/// Locks the store's state. A panic while holding the lock leaves SQLite consistent
/// (transactions roll back), so a poisoned lock is safe to take over.
fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raises the stored ceiling when `revision` reaches it, so that a reopened store starts
/// above every revision handed out; the new ceiling when it was raised.
fn raise_ceiling(
    conn: &Connection,
    ceiling: Revision,
    revision: Revision,
) -> rusqlite::Result<Option<Revision>> {
    if revision < ceiling {
        return Ok(None);
    }
    let raised = revision + CEILING_STEP;
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('revision_ceiling', ?1)",
        [raised.to_string()],
    )?;
    Ok(Some(raised))
}

impl Inner {
    fn publish(&mut self, revision: Revision, changes: Vec<Change>) {
        self.revision = revision;
        self.latest.store(revision, Ordering::Release);
        let events: Vec<Event> = changes.into_iter().map(|change| Event { revision, change }).collect();
        for event in &events {
            match &event.change {
                Change::Put(Record::Namespace(def)) => {
                    self.namespaces.insert(def.name.clone(), def.clone());
                }
                Change::Put(Record::Node(node)) => {
                    self.nodes.insert(node.name.clone(), node.clone());
                }
                Change::Put(Record::Alive(node)) => self.alive = Some(node.clone()),
                Change::Put(Record::Quarantine(q)) => {
                    self.quarantine.insert(q.key(), Quarantine { revision, ..q.clone() });
                }
                Change::Delete(Key::Quarantine(key)) => drop(self.quarantine.remove(key)),
                Change::Delete(Key::Node(name)) => drop(self.nodes.remove(name)),
                _ => {}
            }
            if self.recent.len() == WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(event.clone());
        }
        // A watcher that cannot keep up is dropped; it reloads a snapshot, as after an
        // etcd compaction.
        self.watchers.retain(|w| match w.try_send(Ok(events.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = w.try_send(Err(StoreError::Compacted));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// Inserts a write's events into the trail, in its transaction, and deletes what the
/// retention no longer keeps.
fn record(tx: &Transaction, noted: Vec<Entry>, origin: &Origin, retention: Retention) -> StoreResult<()> {
    if noted.is_empty() {
        return Ok(());
    }
    let at = audit::now_ms();
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (at, kind, org_id, app_id, actor_id, actor_name, client, node, before, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for entry in noted {
        insert.execute(params![
            at,
            entry.kind.name(),
            entry.org_id,
            entry.app_id,
            origin.actor.id,
            origin.actor.name,
            origin.client,
            origin.node,
            entry.before.map(|v| v.to_string()),
            entry.after.map(|v| v.to_string()),
        ])?;
    }
    let last = tx.last_insert_rowid();
    let keep = i64::try_from(retention.max_count).unwrap_or(i64::MAX);
    tx.prepare_cached("DELETE FROM events WHERE id <= ?1")?.execute([last.saturating_sub(keep)])?;
    let age = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
    tx.prepare_cached("DELETE FROM events WHERE at < ?1")?.execute([at.saturating_sub(age)])?;
    Ok(())
}

/// The events `query` asks for.
fn read_events(conn: &Connection, query: &EventQuery) -> StoreResult<Vec<AuditEvent>> {
    use rusqlite::types::Value;
    let mut sql = String::from(
        "SELECT id, at, kind, org_id, app_id, actor_id, actor_name, client, node, before, after
         FROM events WHERE 1 = 1",
    );
    let mut values: Vec<Value> = Vec::new();
    let mut and = |clause: &str, value: Value| {
        sql.push_str(&format!(" AND {clause} ?{}", values.len() + 1));
        values.push(value);
    };
    if let Some(org) = &query.org_id {
        and("org_id =", Value::Text(org.clone()));
    }
    if let Some(app) = &query.app_id {
        and("app_id =", Value::Text(app.clone()));
    }
    if let Some(since) = query.since {
        and("at >=", Value::Integer(since));
    }
    if let Some(until) = query.until {
        and("at <", Value::Integer(until));
    }
    let order = match (query.after, query.before) {
        (Some(after), _) => {
            and("id >", Value::Integer(after));
            "ASC"
        }
        (None, Some(before)) => {
            and("id <", Value::Integer(before));
            "DESC"
        }
        (None, None) => "DESC",
    };
    if !query.kinds.is_empty() {
        let marks: Vec<String> =
            (0..query.kinds.len()).map(|i| format!("?{}", values.len() + i + 1)).collect();
        sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
        values.extend(query.kinds.iter().map(|k| Value::Text(k.name().to_owned())));
    }
    sql.push_str(&format!(" ORDER BY id {order} LIMIT {}", query.limit));
    let mut stmt = conn.prepare_cached(&sql)?;
    let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
        let kind: String = r.get(2)?;
        Ok((
            kind,
            AuditEvent {
                id: r.get(0)?,
                at: r.get(1)?,
                kind: EventKind::OrganisationCreated,
                org_id: r.get(3)?,
                app_id: r.get(4)?,
                actor: Actor { id: r.get(5)?, name: r.get(6)? },
                client: r.get(7)?,
                node: r.get(8)?,
                before: json(r.get(9)?),
                after: json(r.get(10)?),
            },
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (kind, event) = row?;
        // A kind this build does not know (written by a newer one) is left out.
        if let Some(kind) = EventKind::parse(&kind) {
            events.push(AuditEvent { kind, ..event });
        }
    }
    Ok(events)
}

/// The organisation that owns the application `app_id`, if it exists.
fn org_of(conn: &Connection, app_id: &str) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT org_id FROM apps WHERE id = ?1")?
        .query_row([app_id], |r| r.get(0))
        .optional()?)
}

/// The redirection stored at `key`, if any.
fn redir_at(conn: &Connection, key: &RedirKey) -> StoreResult<Option<RedirRow>> {
    Ok(redirs_where(
        conn,
        "namespace = ?1 AND protocol = ?2 AND port = ?3",
        params![key.namespace, key.protocol.name(), key.port],
    )?
    .pop())
}

fn init(conn: &Connection, path: &Path) -> Result<()> {
    let refuse = |why: String| {
        anyhow::anyhow!(
            "{} is not a tcp-redirs store ({why}); it was left untouched: point --data-dir at an empty or tcp-redirs directory",
            path.display()
        )
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| refuse(format!("SQLite cannot read it: {e}")))?;
    // Nothing is written (not even the switch to WAL, which rewrites the header) before
    // the file is known to be ours or empty.
    let durable = || -> Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    };
    if tables == 0 {
        durable()?;
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA_SQL)?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('format', ?1), ('schema', '1')", params![FORMAT])?;
        tx.execute_batch(MIGRATE_1_TO_2)?;
        tx.execute_batch(MIGRATE_2_TO_3)?;
        tx.execute_batch(MIGRATE_3_TO_4)?;
        tx.execute_batch(MIGRATE_4_TO_5)?;
        tx.commit()?;
        return Ok(());
    }
    let format: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0))
        .optional()
        .map_err(|e| refuse(format!("no tcp-redirs metadata: {e}")))?;
    if format.as_deref() != Some(FORMAT) {
        return Err(refuse("its metadata names another program".into()));
    }
    let schema: String = conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))?;
    match schema.parse::<i64>() {
        Ok(SCHEMA) => durable(),
        Ok(from @ (1..=4)) => {
            durable()?;
            // One transaction: a crash midway leaves the file at its old schema.
            let tx = conn.unchecked_transaction()?;
            if from == 1 {
                tx.execute_batch(MIGRATE_1_TO_2)?;
            }
            if from <= 2 {
                tx.execute_batch(MIGRATE_2_TO_3)?;
            }
            if from <= 3 {
                tx.execute_batch(MIGRATE_3_TO_4)?;
            }
            tx.execute_batch(MIGRATE_4_TO_5)?;
            tx.commit().with_context(|| format!("cannot upgrade the store from schema {from} to {SCHEMA}"))
        }
        _ => bail!(
            "{} has store schema {schema}, this build reads schema {SCHEMA}: run the tcp-redirs version that wrote it",
            path.display()
        ),
    }
}

#[async_trait::async_trait]
impl Store for Sqlite {
    fn describe(&self) -> String {
        format!("SQLite at {}", self.path.display())
    }

    async fn snapshot(&self) -> StoreResult<Snapshot> {
        self.locked(|inner| {
            let conn = &inner.conn;
            let mut records = Vec::new();
            let mut stmt = conn.prepare_cached("SELECT id, name FROM orgs ORDER BY name")?;
            let orgs = stmt.query_map([], |r| Ok(Organisation { id: r.get(0)?, name: r.get(1)? }))?;
            for org in orgs {
                records.push(Record::Org(org?));
            }
            let mut stmt = conn.prepare_cached("SELECT id FROM apps ORDER BY name")?;
            let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            for id in ids {
                if let Some(app) = app(conn, &id)? {
                    records.push(Record::App(app));
                }
            }
            for row in redirs_where(conn, "1 = 1", [])? {
                records.push(Record::Redir(row));
            }
            let mut stmt = conn.prepare_cached(
                "SELECT id, name, org_id, created_at, token_hash, secret_hash FROM tokens ORDER BY id",
            )?;
            let tokens = stmt.query_map([], |r| {
                Ok(TokenRecord {
                    info: TokenInfo {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        owner_id: r.get(2)?,
                        created_at: r.get(3)?,
                    },
                    token_hash: hex::encode(r.get::<_, Vec<u8>>(4)?),
                    secret_hash: hex::encode(r.get::<_, Vec<u8>>(5)?),
                })
            })?;
            for token in tokens {
                records.push(Record::Token(token?));
            }
            records.extend(inner.namespaces.values().cloned().map(Record::Namespace));
            records.extend(inner.nodes.values().cloned().map(Record::Node));
            records.extend(inner.alive.clone().map(Record::Alive));
            records.extend(inner.quarantine.values().cloned().map(Record::Quarantine));
            Ok(Snapshot { revision: inner.revision, records })
        })
        .await
    }

    fn revision_here(&self) -> Option<Revision> {
        Some(self.latest.load(Ordering::Acquire))
    }

    async fn watch(&self, after: Revision) -> StoreResult<Changes> {
        self.locked(move |inner| {
            let oldest = inner.recent.front().map_or(inner.revision + 1, |e| e.revision);
            // Changes after `after` must all still be in the window.
            if after + 1 < oldest && after < inner.revision {
                return Err(StoreError::Compacted);
            }
            let (tx, rx) = mpsc::channel(1024);
            let missed: Vec<Event> = inner.recent.iter().filter(|e| e.revision > after).cloned().collect();
            if !missed.is_empty() {
                let _ = tx.try_send(Ok(missed));
            }
            inner.watchers.push(tx);
            Ok(rx)
        })
        .await
    }

    async fn agree(&self, namespaces: &[NamespaceDef], _org_quota: Option<u32>) -> StoreResult<()> {
        for def in namespaces {
            self.publish_memory(Change::Put(Record::Namespace(def.clone()))).await?;
        }
        Ok(())
    }

    async fn reconfigure(&self, namespaces: &[NamespaceDef], org_quota: Option<u32>) -> StoreResult<()> {
        self.agree(namespaces, org_quota).await
    }

    async fn ensure_org(&self, name: &str, id: &str) -> StoreResult<Organisation> {
        let (name, id) = (name.to_owned(), id.to_owned());
        let (org, _) = self
            .write(move |tx, _| {
                let inserted =
                    tx.execute("INSERT OR IGNORE INTO orgs (id, name) VALUES (?1, ?2)", params![id, name])?;
                let org = tx.query_row("SELECT id, name FROM orgs WHERE name = ?1", [&name], |r| {
                    Ok(Organisation { id: r.get(0)?, name: r.get(1)? })
                })?;
                let changes = if inserted > 0 { vec![Change::Put(Record::Org(org.clone()))] } else { vec![] };
                if inserted > 0 {
                    note(Entry::new(
                        EventKind::OrganisationCreated,
                        Some(&org.id),
                        None,
                        None::<&()>,
                        Some(&org),
                    ));
                }
                Ok((org, changes))
            })
            .await?;
        Ok(org)
    }

    async fn create_org(&self, org: &Organisation) -> StoreResult<Revision> {
        let org = org.clone();
        let ((), revision) = self
            .write(move |tx, _| {
                let inserted =
                    tx.execute("INSERT INTO orgs (id, name) VALUES (?1, ?2)", params![org.id, org.name]);
                match inserted {
                    Err(e) if is_constraint(&e, "orgs.name") => Err(StoreError::Conflict(Conflict::OrgName)),
                    other => other.map(drop).map_err(Into::into),
                }?;
                note(Entry::new(
                    EventKind::OrganisationCreated,
                    Some(&org.id),
                    None,
                    None::<&()>,
                    Some(&org),
                ));
                Ok(((), vec![Change::Put(Record::Org(org))]))
            })
            .await?;
        Ok(revision)
    }

    async fn create_app(&self, new: &Application) -> StoreResult<Revision> {
        let new = new.clone();
        let ((), revision) = self
            .write(move |tx, _| {
                let org: Option<String> = tx
                    .query_row("SELECT id FROM orgs WHERE id = ?1", [&new.owner_id], |r| r.get(0))
                    .optional()?;
                if org.is_none() {
                    return Err(StoreError::Conflict(Conflict::NotFound));
                }
                let inserted = tx.execute(
                    "INSERT INTO apps (id, org_id, name, health_check) VALUES (?1, ?2, ?3, ?4)",
                    params![new.id, new.owner_id, new.name, health_json(&new.health_check)?],
                );
                match inserted {
                    Err(e) if is_constraint(&e, "apps.org_id, apps.name") => {
                        Err(StoreError::Conflict(Conflict::AppName))
                    }
                    other => other.map(drop).map_err(Into::into),
                }?;
                write_instances(tx, &new.id, &new.instances)?;
                note(Entry::new(
                    EventKind::ApplicationCreated,
                    Some(&new.owner_id),
                    Some(&new.id),
                    None::<&()>,
                    Some(&new),
                ));
                Ok(((), vec![Change::Put(Record::App(new))]))
            })
            .await?;
        Ok(revision)
    }

    async fn set_instances(&self, app_id: &str, list: &[Instance]) -> StoreResult<Revision> {
        let list = list.to_vec();
        self.change_app(app_id, EventKind::ApplicationInstances, move |tx, app_id| {
            tx.execute("DELETE FROM instances WHERE app_id = ?1", [app_id])?;
            write_instances(tx, app_id, &list)?;
            Ok(())
        })
        .await
    }

    async fn set_health_check(&self, app_id: &str, check: &HealthCheck) -> StoreResult<Revision> {
        let check = check.clone();
        self.change_app(app_id, EventKind::ApplicationHealthCheck, move |tx, app_id| {
            tx.execute(
                "UPDATE apps SET health_check = ?2 WHERE id = ?1",
                params![app_id, health_json(&check)?],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_app(&self, app_id: &str) -> StoreResult<Revision> {
        let app_id = app_id.to_owned();
        let ((), revision) = self
            .write(move |tx, revision| {
                let removed = redirs_where(tx, "app_id = ?1", [&app_id])?;
                let before = app(tx, &app_id)?;
                let org = before.as_ref().map(|a| a.owner_id.clone());
                let mut changes = Vec::new();
                for row in &removed {
                    note(Entry::new(
                        EventKind::RedirectionRemoved,
                        org.as_deref(),
                        Some(&app_id),
                        Some(row),
                        None::<&()>,
                    ));
                    log_change(tx, "remove", row)?;
                    changes.push(Change::Delete(Key::Redir(row.key())));
                    changes.extend(
                        Quarantine::all_of(row, revision).map(|q| Change::Put(Record::Quarantine(q))),
                    );
                }
                tx.execute("DELETE FROM redirs WHERE app_id = ?1", [&app_id])?;
                tx.execute("DELETE FROM previous_ports WHERE app_id = ?1", [&app_id])?;
                if tx.execute("DELETE FROM apps WHERE id = ?1", [&app_id])? == 0 {
                    return Err(StoreError::Conflict(Conflict::NotFound));
                }
                note(Entry::new(
                    EventKind::ApplicationRemoved,
                    org.as_deref(),
                    Some(&app_id),
                    before.as_ref(),
                    None::<&()>,
                ));
                changes.push(Change::Delete(Key::App(app_id)));
                Ok(((), changes))
            })
            .await?;
        Ok(revision)
    }

    async fn claim_many(
        &self,
        rows: &[RedirRow],
        org_id: &str,
        quota: Option<u32>,
    ) -> StoreResult<Vec<StoreResult<Revision>>> {
        let (rows, org_id) = (rows.to_vec(), org_id.to_owned());
        let (claimed, revision) = self
            .write_seeing(move |tx, revision, fleet| {
                let mut held = held_by(tx, &org_id, quota)?;
                let mut claimed = Vec::with_capacity(rows.len());
                let mut changes = Vec::new();
                for row in rows {
                    // A row that fails changed nothing (a failed statement is undone alone), so
                    // the rows after it go on in the same transaction.
                    let outcome = fleet
                        .check(&row)
                        .and_then(|()| claim_row(tx, &row, &org_id, quota, &mut held, revision));
                    match outcome {
                        Ok(()) => {
                            // The ports are taken: their quarantines, if any, are over.
                            changes.extend(
                                fleet
                                    .quarantined(&row)
                                    .map(|(k, _)| Change::Delete(Key::Quarantine(k.clone()))),
                            );
                            note(Entry::new(
                                EventKind::RedirectionAdded,
                                Some(&org_id),
                                Some(&row.app_id),
                                None::<&()>,
                                Some(&row),
                            ));
                            changes.push(Change::Put(Record::Redir(RedirRow { revision, ..row })));
                            claimed.push(Ok(()));
                        }
                        Err(StoreError::Conflict(conflict)) => claimed.push(Err(conflict)),
                        Err(other) => return Err(other),
                    }
                }
                Ok((claimed, changes))
            })
            .await?;
        Ok(claimed.into_iter().map(|c| c.map(|()| revision).map_err(StoreError::Conflict)).collect())
    }

    async fn release(&self, row: &RedirRow, org_id: &str) -> StoreResult<Revision> {
        let (row, org_id) = (row.clone(), org_id.to_owned());
        let ((), revision) = self
            .write(move |tx, revision| {
                let before = redir_at(tx, &row.key())?.filter(|b| b.app_id == row.app_id);
                let deleted = tx.execute(
                    "DELETE FROM redirs WHERE namespace = ?1 AND protocol = ?2 AND port = ?3 AND app_id = ?4",
                    params![row.namespace, row.protocol.name(), row.port, row.app_id],
                )?;
                if deleted == 0 {
                    return Err(StoreError::Conflict(Conflict::NotFound));
                }
                note(Entry::new(
                    EventKind::RedirectionRemoved,
                    Some(&org_id),
                    Some(&row.app_id),
                    before.as_ref(),
                    None::<&()>,
                ));
                log_change(tx, "remove", &row)?;
                tx.execute(
                    "INSERT OR REPLACE INTO previous_ports (app_id, namespace, protocol, port) VALUES (?1, ?2, ?3, ?4)",
                    params![row.app_id, row.namespace, row.protocol.name(), row.port],
                )?;
                // The stored row's extent, whatever the caller's says.
                let row = RedirRow { ports: before.as_ref().map_or(row.ports, |b| b.ports), ..row };
                let mut changes = vec![Change::Delete(Key::Redir(row.key()))];
                changes.extend(Quarantine::all_of(&row, revision).map(|q| Change::Put(Record::Quarantine(q))));
                Ok(((), changes))
            })
            .await?;
        Ok(revision)
    }

    async fn update_redir(&self, row: &RedirRow) -> StoreResult<Revision> {
        let row = row.clone();
        let ((), revision) = self
            .write(move |tx, revision| {
                let before = redir_at(tx, &row.key())?;
                let s = &row.settings;
                let updated = tx
                    .prepare_cached(
                        "UPDATE redirs SET revision = ?5, connect_timeout = ?6, idle_timeout = ?7,
                             half_close_timeout = ?8, proxy_protocol = ?9, allow_ranges = ?10,
                             deny_ranges = ?11, max_connections = ?12, max_rate = ?13,
                             max_datagram_rate = ?14, max_connections_per_client = ?15,
                             max_rate_per_client = ?16, bandwidth_limit = ?17
                         WHERE namespace = ?1 AND protocol = ?2 AND port = ?3 AND app_id = ?4",
                    )?
                    .execute(params![
                        row.namespace,
                        row.protocol.name(),
                        row.port,
                        row.app_id,
                        revision,
                        s.connect_timeout,
                        s.idle_timeout,
                        s.half_close_timeout,
                        s.proxy_protocol.map(ProxyProtocol::name),
                        serde_json::to_string(&s.allow)?,
                        serde_json::to_string(&s.deny)?,
                        s.max_connections,
                        s.max_connections_per_second,
                        s.max_datagrams_per_second,
                        s.max_connections_per_client,
                        s.max_connections_per_second_per_client,
                        s.bandwidth_limit,
                    ])?;
                if updated == 0 {
                    return Err(StoreError::Conflict(Conflict::NotFound));
                }
                note(Entry::new(
                    EventKind::RedirectionUpdated,
                    org_of(tx, &row.app_id)?.as_deref(),
                    Some(&row.app_id),
                    before.as_ref(),
                    Some(&row),
                ));
                Ok(((), vec![Change::Put(Record::Redir(RedirRow { revision, ..row }))]))
            })
            .await?;
        Ok(revision)
    }

    async fn previous_ports(&self, asked: &[(String, String, Protocol)]) -> StoreResult<Vec<Option<u16>>> {
        let asked = asked.to_vec();
        self.locked(move |inner| {
            let mut stmt = inner.conn.prepare_cached(
                "SELECT port FROM previous_ports WHERE app_id = ?1 AND namespace = ?2 AND protocol = ?3",
            )?;
            let mut ports = Vec::with_capacity(asked.len());
            for (app_id, namespace, protocol) in &asked {
                ports.push(
                    stmt.query_row(params![app_id, namespace, protocol.name()], |r| r.get(0)).optional()?,
                );
            }
            Ok(ports)
        })
        .await
    }

    async fn put_token(&self, token: &TokenRecord) -> StoreResult<Revision> {
        let token = token.clone();
        let ((), revision) = self
            .write(move |tx, _| {
                let (token_hash, secret_hash) = (unhex(&token.token_hash)?, unhex(&token.secret_hash)?);
                let info = &token.info;
                tx.execute(
                    "INSERT OR REPLACE INTO tokens (token_hash, id, secret_hash, org_id, name, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, coalesce(?6, unixepoch()))",
                    params![token_hash, info.id, secret_hash, info.owner_id, info.name, info.created_at],
                )?;
                note(Entry::new(
                    EventKind::TokenIssued,
                    info.owner_id.as_deref(),
                    None,
                    None::<&()>,
                    Some(info),
                ));
                Ok(((), vec![Change::Put(Record::Token(token))]))
            })
            .await?;
        Ok(revision)
    }

    async fn revoke_token(&self, org_id: Option<&str>, id: &str) -> StoreResult<Revision> {
        let (org_id, id) = (org_id.map(str::to_owned), id.to_owned());
        let ((), revision) = self
            .write(move |tx, _| {
                let before = tx
                    .query_row(
                        "SELECT name, created_at FROM tokens WHERE id = ?1 AND org_id IS ?2",
                        params![id, org_id],
                        |r| {
                            Ok(TokenInfo {
                                id: id.clone(),
                                name: r.get(0)?,
                                owner_id: org_id.clone(),
                                created_at: r.get(1)?,
                            })
                        },
                    )
                    .optional()?;
                let deleted =
                    tx.execute("DELETE FROM tokens WHERE id = ?1 AND org_id IS ?2", params![id, org_id])?;
                if deleted == 0 {
                    return Err(StoreError::Conflict(Conflict::NotFound));
                }
                note(Entry::new(
                    EventKind::TokenRevoked,
                    org_id.as_deref(),
                    None,
                    before.as_ref(),
                    None::<&()>,
                ));
                Ok(((), vec![Change::Delete(Key::Token(id))]))
            })
            .await?;
        Ok(revision)
    }

    async fn put_node(&self, node: &NodeRecord) -> StoreResult<()> {
        self.publish_memory(Change::Put(Record::Node(node.clone()))).await.map(drop)
    }

    async fn forget_node(&self, name: &str) -> StoreResult<Revision> {
        let name = name.to_owned();
        self.locked(move |inner| {
            if inner.alive.as_deref() == Some(name.as_str()) {
                return Err(StoreError::Conflict(Conflict::Alive));
            }
            if !inner.nodes.contains_key(&name) {
                return Err(StoreError::Conflict(Conflict::NotFound));
            }
            let revision = inner.revision + 1;
            if let Some(raised) = raise_ceiling(&inner.conn, inner.ceiling, revision)? {
                inner.ceiling = raised;
            }
            inner.publish(revision, vec![Change::Delete(Key::Node(name))]);
            Ok(revision)
        })
        .await
    }

    async fn sweep_quarantines(&self, done: &[Quarantine]) -> StoreResult<()> {
        let done = done.to_vec();
        self.locked(move |inner| {
            let changes: Vec<Change> = done
                .iter()
                .filter(|q| {
                    inner.quarantine.get(&q.key()).is_some_and(|held| {
                        held.revision == q.revision && held.waits_for(inner.nodes.values()).is_empty()
                    })
                })
                .map(|q| Change::Delete(Key::Quarantine(q.key())))
                .collect();
            if changes.is_empty() {
                return Ok(());
            }
            let revision = inner.revision + 1;
            if let Some(raised) = raise_ceiling(&inner.conn, inner.ceiling, revision)? {
                inner.ceiling = raised;
            }
            inner.publish(revision, changes);
            Ok(())
        })
        .await
    }

    fn set_retention(&self, retention: Retention) {
        lock(&self.inner).retention = retention;
    }

    async fn events(&self, query: &EventQuery) -> StoreResult<Vec<AuditEvent>> {
        let query = query.clone();
        self.locked(move |inner| read_events(&inner.conn, &query)).await
    }

    async fn create_webhook(&self, hook: &WebhookRecord) -> StoreResult<()> {
        let hook = hook.clone();
        self.locked(move |inner| {
            inner.conn.execute(
                "INSERT INTO webhooks (id, org_id, record) VALUES (?1, ?2, ?3)",
                params![hook.info.id, hook.info.owner_id, serde_json::to_string(&hook)?],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_webhook(&self, org_id: &str, id: &str) -> StoreResult<WebhookRecord> {
        let (org_id, id) = (org_id.to_owned(), id.to_owned());
        self.locked(move |inner| {
            let tx = inner.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let record: Option<String> = tx
                .query_row(
                    "SELECT record FROM webhooks WHERE id = ?1 AND org_id = ?2",
                    params![id, org_id],
                    |r| r.get(0),
                )
                .optional()?;
            let record = record.ok_or(StoreError::Conflict(Conflict::NotFound))?;
            tx.execute("DELETE FROM webhooks WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(serde_json::from_str(&record)?)
        })
        .await
    }

    async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        self.locked(|inner| {
            let mut stmt = inner.conn.prepare_cached("SELECT record FROM webhooks ORDER BY id")?;
            let records =
                stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(records.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
        })
        .await
    }

    async fn save_delivery(&self, id: &str, delivery: &DeliveryState) -> StoreResult<()> {
        let (id, delivery) = (id.to_owned(), delivery.clone());
        self.locked(move |inner| {
            let tx = inner.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let record: Option<String> =
                tx.query_row("SELECT record FROM webhooks WHERE id = ?1", [&id], |r| r.get(0)).optional()?;
            let mut record: WebhookRecord =
                serde_json::from_str(&record.ok_or(StoreError::Conflict(Conflict::NotFound))?)?;
            record.info.delivery = delivery;
            tx.execute(
                "UPDATE webhooks SET record = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(&record)?],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn hold_role(&self, _role: &str, _node: &str, _ttl: std::time::Duration) -> StoreResult<bool> {
        // The data directory is locked: this process is the only node.
        Ok(true)
    }

    async fn keep_alive(&self, node: &str, _ttl: std::time::Duration, _stop: CancellationToken) {
        // One node, alive while it runs: nothing to renew.
        if let Err(error) = self.publish_memory(Change::Put(Record::Alive(node.to_owned()))).await {
            tracing::warn!(%error, "cannot mark this node alive in its own table");
        }
    }
}

/// How many redirections the organisation holds, when a quota is to be checked (0 when not).
fn held_by(conn: &Connection, org_id: &str, quota: Option<u32>) -> StoreResult<u64> {
    if quota.is_none() {
        return Ok(0);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT count(*) FROM redirs JOIN apps ON apps.id = redirs.app_id WHERE apps.org_id = ?1",
    )?;
    Ok(stmt.query_row([org_id], |r| r.get(0))?)
}

/// Claims one redirection inside a transaction: the application is the organisation's and
/// has none of the protocol in the namespace, the organisation is under its quota (`held` counts what it
/// holds, this claim included once made), the port is free.
fn claim_row(
    conn: &Connection,
    row: &RedirRow,
    org_id: &str,
    quota: Option<u32>,
    held: &mut u64,
    revision: Revision,
) -> StoreResult<()> {
    let owner: Option<String> = conn
        .prepare_cached("SELECT org_id FROM apps WHERE id = ?1")?
        .query_row([&row.app_id], |r| r.get(0))
        .optional()?;
    if owner.as_deref() != Some(org_id) {
        return Err(StoreError::Conflict(Conflict::NotFound));
    }
    let existing: Option<u16> = conn
        .prepare_cached("SELECT port FROM redirs WHERE app_id = ?1 AND namespace = ?2 AND protocol = ?3")?
        .query_row(params![row.app_id, row.namespace, row.protocol.name()], |r| r.get(0))
        .optional()?;
    if let Some(port) = existing {
        return Err(StoreError::Conflict(Conflict::AppHasOne(port)));
    }
    if let Some(quota) = quota.filter(|&q| *held >= u64::from(q)) {
        return Err(StoreError::Conflict(Conflict::Quota(quota)));
    }
    if let Some(taken) = overlapped(conn, row)? {
        return Err(StoreError::Conflict(if row.ports > 1 {
            Conflict::RangeTaken(taken)
        } else {
            Conflict::PortTaken
        }));
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO redirs (namespace, port, app_id, revision, connect_timeout, idle_timeout,
                                 half_close_timeout, proxy_protocol, allow_ranges, deny_ranges,
                                 max_connections, max_rate, protocol, max_datagram_rate,
                                 max_connections_per_client, max_rate_per_client, bandwidth_limit, ports)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?
        .execute(params![
            row.namespace,
            row.port,
            row.app_id,
            revision,
            row.settings.connect_timeout,
            row.settings.idle_timeout,
            row.settings.half_close_timeout,
            row.settings.proxy_protocol.map(ProxyProtocol::name),
            serde_json::to_string(&row.settings.allow)?,
            serde_json::to_string(&row.settings.deny)?,
            row.settings.max_connections,
            row.settings.max_connections_per_second,
            row.protocol.name(),
            row.settings.max_datagrams_per_second,
            row.settings.max_connections_per_client,
            row.settings.max_connections_per_second_per_client,
            row.settings.bandwidth_limit,
            row.ports.max(1),
        ]);
    match inserted {
        Err(e) if is_constraint(&e, "redirs.namespace, redirs.protocol, redirs.port") => {
            Err(StoreError::Conflict(Conflict::PortTaken))
        }
        other => other.map(drop).map_err(Into::into),
    }?;
    log_change(conn, "add", row)?;
    *held += 1;
    Ok(())
}

/// The first port of `row`'s extent that another redirection of its namespace and protocol
/// holds, if any. For a single port, redirections never overlapping, the one with the
/// highest first port at or below it is the only one that can hold it: one indexed lookup.
/// A range looks at every redirection that starts within its extent or less than
/// [`crate::wire::MAX_RANGE_PORTS`] below, for the lowest port taken.
fn overlapped(conn: &Connection, row: &RedirRow) -> StoreResult<Option<u16>> {
    if row.ports > 1 {
        let lowest = row.port.saturating_sub(crate::wire::MAX_RANGE_PORTS - 1);
        let first: Option<(u16, u16)> = conn
            .prepare_cached(
                "SELECT port, ports FROM redirs WHERE namespace = ?1 AND protocol = ?2
                     AND port BETWEEN ?3 AND ?4 AND port + ports - 1 >= ?5
                 ORDER BY port LIMIT 1",
            )?
            .query_row(params![row.namespace, row.protocol.name(), lowest, row.last_port(), row.port], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        return Ok(first.map(|(port, _)| port.max(row.port)));
    }
    let below: Option<(u16, u16)> = conn
        .prepare_cached(
            "SELECT port, ports FROM redirs WHERE namespace = ?1 AND protocol = ?2 AND port <= ?3
             ORDER BY port DESC LIMIT 1",
        )?
        .query_row(params![row.namespace, row.protocol.name(), row.last_port()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(below.and_then(|(port, ports)| {
        let held = RedirRow { port, ports, ..row.clone() };
        held.overlaps(row.port, row.last_port()).then(|| port.max(row.port))
    }))
}

fn app(conn: &Connection, id: &str) -> StoreResult<Option<Application>> {
    let found: Option<(String, String, Option<String>)> = conn
        .query_row("SELECT name, org_id, health_check FROM apps WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((name, owner_id, health_check)) = found else { return Ok(None) };
    let health_check = match health_check {
        Some(text) => serde_json::from_str(&text)?,
        None => HealthCheck::default(),
    };
    let mut stmt =
        conn.prepare_cached("SELECT address, weight FROM instances WHERE app_id = ?1 ORDER BY position")?;
    let instances = stmt
        .query_map([id], |r| Ok(Instance { address: r.get(0)?, weight: r.get(1)?, ..Instance::default() }))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(Application { id: id.to_owned(), name, owner_id, instances, health_check }))
}

/// An application's health-check settings as stored: NULL for the node's, every one.
fn health_json(check: &HealthCheck) -> StoreResult<Option<String>> {
    Ok(if check.is_default() { None } else { Some(serde_json::to_string(check)?) })
}

fn write_instances(conn: &Connection, app_id: &str, list: &[Instance]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO instances (app_id, position, address, weight) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (position, instance) in list.iter().enumerate() {
        stmt.execute(params![app_id, position as i64, instance.address, instance.weight])?;
    }
    Ok(())
}

fn redirs_where<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> StoreResult<Vec<RedirRow>> {
    let sql = format!(
        "SELECT namespace, port, app_id, connect_timeout, idle_timeout, half_close_timeout,
                proxy_protocol, allow_ranges, deny_ranges, max_connections, max_rate, revision, protocol,
                max_datagram_rate, max_connections_per_client, max_rate_per_client, bandwidth_limit, ports
         FROM redirs WHERE {filter} ORDER BY namespace, protocol, port"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(RedirRow {
            namespace: r.get(0)?,
            port: r.get(1)?,
            ports: r.get(17)?,
            protocol: if r.get::<_, String>(12)? == "udp" { Protocol::Udp } else { Protocol::Tcp },
            app_id: r.get(2)?,
            settings: RedirSettings {
                connect_timeout: r.get(3)?,
                idle_timeout: r.get(4)?,
                half_close_timeout: r.get(5)?,
                max_connections: r.get(9)?,
                max_connections_per_second: r.get(10)?,
                max_datagrams_per_second: r.get(13)?,
                max_connections_per_client: r.get(14)?,
                max_connections_per_second_per_client: r.get(15)?,
                bandwidth_limit: r.get(16)?,
                proxy_protocol: r
                    .get::<_, Option<String>>(6)?
                    .as_deref()
                    .and_then(|v| ProxyProtocol::parse(v).ok()),
                allow: json_list(r, 7)?,
                deny: json_list(r, 8)?,
            }
            .into(),
            revision: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn json_list(row: &rusqlite::Row, column: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Appends to the log of redirection changes, an audit trail kept in the file.
fn log_change(conn: &Connection, op: &str, row: &RedirRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO changes (op, namespace, port, app_id, protocol) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![op, row.namespace, row.port, row.app_id, row.protocol.name()])?;
    Ok(())
}

/// Whether `e` is the failure of the UNIQUE or PRIMARY KEY constraint on `columns`
/// (`table.column, table.column`, as SQLite names them): any other constraint that fails,
/// such as a foreign key, is a different error and must not pass for this one.
fn is_constraint(e: &rusqlite::Error, columns: &str) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(msg))
        if f.code == ErrorCode::ConstraintViolation && msg.ends_with(columns))
}

fn unhex(text: &str) -> StoreResult<Vec<u8>> {
    hex::decode(text).map_err(|e| StoreError::Other(anyhow::anyhow!("a credential's hash is not hex: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redir(app: &str, port: u16) -> RedirRow {
        RedirRow {
            namespace: "default".into(),
            port,
            ports: 1,
            protocol: Protocol::Tcp,
            app_id: app.into(),
            settings: Default::default(),
            revision: 0,
        }
    }

    fn node(revision: Revision) -> NodeRecord {
        NodeRecord {
            name: "a".into(),
            public_address: "127.0.0.1".into(),
            namespaces: vec!["default".into()],
            last_seen: 0,
            revision,
            listening: 0,
            unbound: Vec::new(),
            port_mode: None,
        }
    }

    /// Makes a store file of schema 1 at `path`, then runs `migrations` on it and `rows`
    /// (SQL): a store as an older release left it.
    fn old_store(path: &Path, migrations: &[&str], rows: &str) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA_SQL).unwrap();
        conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?1), ('schema', '1')", params![FORMAT])
            .unwrap();
        for step in migrations {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(rows).unwrap();
    }

    /// The redirections of a snapshot's records.
    fn redir_rows(records: Vec<Record>) -> Vec<RedirRow> {
        records
            .into_iter()
            .filter_map(|r| match r {
                Record::Redir(row) => Some(row),
                _ => None,
            })
            .collect()
    }

    /// A store of schema 2 (before UDP) opens as schema 3 with everything in it: its
    /// redirections are TCP ones, their previous ports too, and a UDP redirection may then
    /// take a port that a TCP one holds.
    #[tokio::test]
    async fn a_schema_2_store_is_migrated_to_3_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        old_store(
            &path,
            &[MIGRATE_1_TO_2],
            "INSERT INTO orgs (id, name) VALUES ('orga_1', 'acme');
             INSERT INTO apps (id, org_id, name) VALUES ('app_1', 'orga_1', 'db'), ('app_2', 'orga_1', 'dns');
             INSERT INTO redirs (namespace, port, app_id, revision, idle_timeout) VALUES ('default', 6000, 'app_1', 7, 600);
             INSERT INTO previous_ports (app_id, namespace, port) VALUES ('app_1', 'cleverapps', 6001);",
        );
        let store = Sqlite::open(&path).unwrap();
        let schema: String = lock(&store.inner)
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(schema, SCHEMA.to_string());
        let snapshot = store.snapshot().await.unwrap();
        let rows = redir_rows(snapshot.records);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].protocol, rows[0].port, rows[0].settings.idle_timeout),
            (Protocol::Tcp, 6000, Some(600))
        );
        assert_eq!(rows[0].revision, 7);
        assert_eq!(store.previous_port("app_1", "cleverapps", Protocol::Tcp).await.unwrap(), Some(6001));
        assert_eq!(store.previous_port("app_1", "cleverapps", Protocol::Udp).await.unwrap(), None);
        let udp = RedirRow { protocol: Protocol::Udp, ..redir("app_2", 6000) };
        store.claim(&udp, "orga_1", None).await.unwrap();
        drop(store);
        // Opened again: schema 3 as it is, nothing migrated twice.
        let store = Sqlite::open(&path).unwrap();
        assert_eq!(
            store.snapshot().await.unwrap().records.iter().filter(|r| matches!(r, Record::Redir(_))).count(),
            2
        );
    }

    /// A store of schema 4 (before the limits per client, the bandwidth limit and port
    /// ranges) opens as schema 5: its redirections keep their settings, the new ones unset,
    /// each holding one port; then they are written and read back like the others.
    #[tokio::test]
    async fn a_schema_4_store_is_migrated_to_5_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        old_store(
            &path,
            &[MIGRATE_1_TO_2, MIGRATE_2_TO_3, MIGRATE_3_TO_4],
            "INSERT INTO orgs (id, name) VALUES ('orga_1', 'acme');
             INSERT INTO apps (id, org_id, name) VALUES ('app_1', 'orga_1', 'db');
             INSERT INTO redirs (namespace, port, app_id, revision, max_connections) VALUES ('default', 6000, 'app_1', 7, 9);",
        );
        let store = Sqlite::open(&path).unwrap();
        let before = redir_rows(store.snapshot().await.unwrap().records);
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].ports, 1, "an existing redirection holds one port");
        let s = &before[0].settings;
        assert_eq!(
            (
                s.max_connections,
                s.max_connections_per_client,
                s.max_connections_per_second_per_client,
                s.bandwidth_limit
            ),
            (Some(9), None, None, None)
        );
        let limited = RedirRow {
            settings: RedirSettings {
                max_connections_per_client: Some(3),
                max_connections_per_second_per_client: Some(4),
                bandwidth_limit: Some(5_000),
                ..(**s).clone()
            }
            .into(),
            ..before[0].clone()
        };
        store.update_redir(&limited).await.unwrap();
        drop(store);
        let store = Sqlite::open(&path).unwrap();
        let after = redir_rows(store.snapshot().await.unwrap().records);
        assert_eq!(after[0].settings, limited.settings, "written and read back, reopened");
    }

    /// Every revision handed out before a reopen, by writes that the file keeps, by writes
    /// whose records were deleted since, and by changes that only lived in memory, is below
    /// every revision after it.
    #[tokio::test]
    async fn revisions_grow_across_a_reopen_even_after_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut highest = 0;
        for round in 0..3 {
            let store = Sqlite::open(&path).unwrap();
            let first = store.snapshot().await.unwrap().revision;
            assert!(first >= highest, "round {round}: reopened at {first}, below {highest}");
            let org = Organisation { id: format!("orga_{round}"), name: format!("org{round}") };
            let mut seen = vec![store.create_org(&org).await.unwrap()];
            let app = |id: &str| Application {
                id: id.into(),
                name: id.into(),
                owner_id: org.id.clone(),
                instances: Vec::new(),
                health_check: Default::default(),
            };
            seen.push(store.create_app(&app(&format!("app_{round}a"))).await.unwrap());
            seen.push(store.create_app(&app(&format!("app_{round}b"))).await.unwrap());
            seen.push(store.claim(&redir(&format!("app_{round}a"), 6000), &org.id, None).await.unwrap());
            let batch = [redir(&format!("app_{round}b"), 6001), redir(&format!("app_{round}b"), 6002)];
            let claimed = store.claim_many(&batch, &org.id, None).await.unwrap();
            assert!(
                matches!(claimed[1], Err(StoreError::Conflict(Conflict::AppHasOne(6001)))),
                "{claimed:?}"
            );
            seen.push(*claimed[0].as_ref().unwrap());
            // Changes that live in memory, more than one step of the ceiling: they take
            // revisions too.
            for i in 0..CEILING_STEP + 10 {
                store.put_node(&node(i)).await.unwrap();
            }
            seen.push(store.revision_here().unwrap());
            // Deletes: the redirections, the applications, a credential.
            seen.push(store.release(&redir(&format!("app_{round}a"), 6000), &org.id).await.unwrap());
            seen.push(store.remove_app(&format!("app_{round}a")).await.unwrap());
            seen.push(store.remove_app(&format!("app_{round}b")).await.unwrap());
            let token = TokenRecord {
                info: TokenInfo {
                    id: format!("tok_{round}"),
                    name: "ci".into(),
                    owner_id: Some(org.id.clone()),
                    created_at: None,
                },
                token_hash: "ab".repeat(32),
                secret_hash: "cd".repeat(32),
            };
            seen.push(store.put_token(&token).await.unwrap());
            seen.push(store.revoke_token(Some(&org.id), &token.info.id).await.unwrap());
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "round {round}: revisions grow: {seen:?}");
            assert!(seen[0] > highest, "round {round}: {} after a reopen, not above {highest}", seen[0]);
            highest = *seen.last().unwrap();
            assert_eq!(store.revision_here(), Some(highest));
        }
    }

    /// A write that changes nothing takes no revision: the table, which only moves with
    /// changes, would never reach it.
    #[tokio::test]
    async fn a_write_that_changes_nothing_takes_no_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("t.db")).unwrap();
        store.ensure_org("default", "orga_1").await.unwrap();
        let before = store.revision_here().unwrap();
        assert_eq!(store.ensure_org("default", "orga_2").await.unwrap().id, "orga_1");
        assert_eq!(store.claim_many(&[], "orga_1", None).await.unwrap().len(), 0);
        assert_eq!(store.revision_here().unwrap(), before);
    }
}
