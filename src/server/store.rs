//! The embedded store: SQLite (WAL, `synchronous=FULL`) in the data directory.
//!
//! The store is the only source of truth; the forwarding side is rebuilt from it at start.
//! It is shaped for the day several gateway nodes share one table (etcd, PostgreSQL):
//! every change to the redirection table is appended to `changes` with a revision, so a
//! node can load the table and then follow changes in revision order, and a port claim is
//! the primary key `(namespace, port)`, so two writers can never hand out the same port.
//! An `add` answers only once its row is durably committed, which is why a restart (even
//! after `kill -9`) brings back every redirection that was acknowledged.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::wire::{Application, Instance, Organisation, ProxyProtocol, RedirAccess, RedirLimits, TokenInfo};

/// The marker that tells our database apart from any other SQLite file.
const FORMAT: &str = "tcp-redirs";
/// The schema version this build reads and writes.
const SCHEMA: i64 = 1;

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

/// A redirection row: which application a namespace's port leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirRow {
    /// The namespace the port belongs to.
    pub namespace: String,
    /// The public port.
    pub port: u16,
    /// The application it leads to.
    pub app_id: String,
    /// Its own connection time limits, over the namespace's.
    pub limits: RedirLimits,
    /// Its access list and PROXY protocol setting.
    pub access: RedirAccess,
}

/// The outcome of claiming a port for an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The claim is committed, at this revision.
    Done(i64),
    /// Another redirection already holds this port in the namespace.
    PortTaken,
    /// The application already has a redirection in the namespace, on this port.
    AppHasOne(u16),
}

/// Who a credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// SHA-256 of the secret that goes with the token (OAuth PLAINTEXT form).
    pub secret_hash: Vec<u8>,
    /// The organisation it is scoped to; `None` for the server's admin.
    pub org_id: Option<String>,
}

/// The handle on the database; cheap to share behind an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens the database at `path`, creating it if absent, refusing a file that is not ours.
    pub fn open(path: &Path) -> Result<Store> {
        let conn =
            Connection::open(path).with_context(|| format!("cannot open the store {}", path.display()))?;
        let store = Store { conn: Mutex::new(conn) };
        store.init(path)?;
        Ok(store)
    }

    fn init(&self, path: &Path) -> Result<()> {
        let conn = self.conn();
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
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('format', ?1), ('schema', ?2)",
                params![FORMAT, SCHEMA.to_string()],
            )?;
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
        let schema: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))?;
        if schema != SCHEMA.to_string() {
            bail!(
                "{} has store schema {schema}, this build reads schema {SCHEMA}: run the tcp-redirs version that wrote it",
                path.display()
            );
        }
        durable()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back),
        // so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every organisation, sorted by name.
    pub fn orgs(&self) -> Result<Vec<Organisation>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, name FROM orgs ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok(Organisation { id: r.get(0)?, name: r.get(1)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The organisation with this id.
    pub fn org(&self, id: &str) -> Result<Option<Organisation>> {
        let conn = self.conn();
        Ok(conn
            .query_row("SELECT id, name FROM orgs WHERE id = ?1", [id], |r| {
                Ok(Organisation { id: r.get(0)?, name: r.get(1)? })
            })
            .optional()?)
    }

    /// Returns the organisation named `name`, creating it with `id` when absent.
    pub fn ensure_org(&self, name: &str, id: &str) -> Result<Organisation> {
        let conn = self.conn();
        conn.execute("INSERT OR IGNORE INTO orgs (id, name) VALUES (?1, ?2)", params![id, name])?;
        Ok(conn.query_row("SELECT id, name FROM orgs WHERE name = ?1", [name], |r| {
            Ok(Organisation { id: r.get(0)?, name: r.get(1)? })
        })?)
    }

    /// The applications of an organisation, sorted by name.
    pub fn apps(&self, org_id: &str) -> Result<Vec<Application>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id, name, org_id FROM apps WHERE org_id = ?1 ORDER BY name")?;
        let apps = stmt
            .query_map([org_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
        apps.into_iter()
            .map(|(id, name, owner_id)| {
                let instances = instances(&conn, &id)?;
                Ok(Application { id, name, owner_id, instances })
            })
            .collect()
    }

    /// The application with this id, whatever its organisation.
    pub fn app(&self, id: &str) -> Result<Option<Application>> {
        let conn = self.conn();
        let found: Option<(String, String)> = conn
            .query_row("SELECT name, org_id FROM apps WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((name, owner_id)) = found else {
            return Ok(None);
        };
        let instances = instances(&conn, id)?;
        Ok(Some(Application { id: id.to_owned(), name, owner_id, instances }))
    }

    /// Creates an application; `None` when the organisation already has one of that name.
    pub fn create_app(&self, app: &Application) -> Result<Option<()>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO apps (id, org_id, name) VALUES (?1, ?2, ?3)",
            params![app.id, app.owner_id, app.name],
        );
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(None),
            other => other?,
        };
        write_instances(&tx, &app.id, &app.instances)?;
        tx.commit()?;
        Ok(Some(()))
    }

    /// Replaces an application's instances.
    pub fn set_instances(&self, app_id: &str, list: &[Instance]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM instances WHERE app_id = ?1", [app_id])?;
        write_instances(&tx, app_id, list)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes an application and its redirections, returning the redirections removed.
    pub fn remove_app(&self, app_id: &str) -> Result<Vec<RedirRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let removed = redirs_where(&tx, "app_id = ?1", [app_id])?;
        for r in &removed {
            log_change(&tx, "remove", r)?;
        }
        tx.execute("DELETE FROM redirs WHERE app_id = ?1", [app_id])?;
        tx.execute("DELETE FROM apps WHERE id = ?1", [app_id])?;
        tx.commit()?;
        Ok(removed)
    }

    /// Every redirection, sorted by (namespace, port).
    pub fn all_redirs(&self) -> Result<Vec<RedirRow>> {
        redirs_where(&self.conn(), "1 = 1", [])
    }

    /// An application's redirections, sorted by (namespace, port).
    pub fn app_redirs(&self, app_id: &str) -> Result<Vec<RedirRow>> {
        redirs_where(&self.conn(), "app_id = ?1", [app_id])
    }

    /// The ports held in a namespace.
    pub fn taken_ports(&self, namespace: &str) -> Result<HashSet<u16>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT port FROM redirs WHERE namespace = ?1")?;
        let ports = stmt.query_map([namespace], |r| r.get::<_, u16>(0))?;
        Ok(ports.collect::<rusqlite::Result<_>>()?)
    }

    /// Claims `port` in `namespace` for `app_id`, atomically and durably.
    pub fn claim(&self, row: &RedirRow) -> Result<Claim> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing: Option<u16> = tx
            .query_row(
                "SELECT port FROM redirs WHERE app_id = ?1 AND namespace = ?2",
                params![row.app_id, row.namespace],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(port) = existing {
            return Ok(Claim::AppHasOne(port));
        }
        let revision = log_change(&tx, "add", row)?;
        let inserted = tx.execute(
            "INSERT INTO redirs (namespace, port, app_id, revision, connect_timeout, idle_timeout,
                                 half_close_timeout, proxy_protocol, allow_ranges, deny_ranges,
                                 max_connections, max_rate)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                row.namespace,
                row.port,
                row.app_id,
                revision,
                row.limits.connect_timeout,
                row.limits.idle_timeout,
                row.limits.half_close_timeout,
                row.access.proxy_protocol.map(proxy_name),
                serde_json::to_string(&row.access.allow)?,
                serde_json::to_string(&row.access.deny)?,
                row.limits.max_connections,
                row.limits.max_connections_per_second,
            ],
        );
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(Claim::PortTaken),
            other => other?,
        };
        tx.commit()?;
        Ok(Claim::Done(revision))
    }

    /// Releases a redirection; `false` when the application had no such redirection.
    pub fn release(&self, row: &RedirRow) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let deleted = tx.execute(
            "DELETE FROM redirs WHERE namespace = ?1 AND port = ?2 AND app_id = ?3",
            params![row.namespace, row.port, row.app_id],
        )?;
        if deleted == 0 {
            return Ok(false);
        }
        log_change(&tx, "remove", row)?;
        tx.commit()?;
        Ok(true)
    }

    /// How many redirections the organisation's applications hold.
    pub fn org_redir_count(&self, org_id: &str) -> Result<u64> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM redirs JOIN apps ON apps.id = redirs.app_id WHERE apps.org_id = ?1",
            [org_id],
            |r| r.get(0),
        )?)
    }

    /// The port the application last released in the namespace, from the change log.
    pub fn last_port(&self, app_id: &str, namespace: &str) -> Result<Option<u16>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT port FROM changes WHERE op = 'remove' AND app_id = ?1 AND namespace = ?2
             ORDER BY revision DESC LIMIT 1",
        )?;
        Ok(stmt.query_row(params![app_id, namespace], |r| r.get(0)).optional()?)
    }

    /// Records a credential: the hashes of its token and secret, and its scope.
    pub fn put_token(&self, info: &TokenInfo, token_hash: &[u8], secret_hash: &[u8]) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT OR REPLACE INTO tokens (token_hash, id, secret_hash, org_id, name) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, info.id, secret_hash, info.owner_id, info.name],
        )?;
        Ok(())
    }

    /// Forgets the credential `id`; `false` when the organisation has no such credential.
    pub fn revoke_token(&self, org_id: Option<&str>, id: &str) -> Result<bool> {
        let deleted =
            self.conn().execute("DELETE FROM tokens WHERE id = ?1 AND org_id IS ?2", params![id, org_id])?;
        Ok(deleted > 0)
    }

    /// The credentials of an organisation (never their secrets), sorted by name.
    pub fn tokens(&self, org_id: &str) -> Result<Vec<TokenInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, org_id, created_at FROM tokens WHERE org_id = ?1 ORDER BY name, id",
        )?;
        let rows = stmt.query_map([org_id], |r| {
            Ok(TokenInfo { id: r.get(0)?, name: r.get(1)?, owner_id: r.get(2)?, created_at: r.get(3)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Creates an organisation; `None` when the name is taken.
    pub fn create_org(&self, org: &Organisation) -> Result<Option<()>> {
        let inserted =
            self.conn().execute("INSERT INTO orgs (id, name) VALUES (?1, ?2)", params![org.id, org.name]);
        match inserted {
            Err(e) if is_unique_violation(&e) => Ok(None),
            other => other.map(|_| Some(())).map_err(Into::into),
        }
    }

    /// The credential whose token hashes to `token_hash`.
    pub fn token(&self, token_hash: &[u8]) -> Result<Option<TokenRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT secret_hash, org_id FROM tokens WHERE token_hash = ?1")?;
        Ok(stmt
            .query_row([token_hash], |r| Ok(TokenRow { secret_hash: r.get(0)?, org_id: r.get(1)? }))
            .optional()?)
    }
}

fn instances(conn: &Connection, app_id: &str) -> Result<Vec<Instance>> {
    let mut stmt =
        conn.prepare_cached("SELECT address, weight FROM instances WHERE app_id = ?1 ORDER BY position")?;
    let rows = stmt.query_map([app_id], |r| {
        Ok(Instance { address: r.get(0)?, weight: r.get(1)?, ..Instance::default() })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn write_instances(conn: &Connection, app_id: &str, list: &[Instance]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO instances (app_id, position, address, weight) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (position, instance) in list.iter().enumerate() {
        stmt.execute(params![app_id, position as i64, instance.address, instance.weight])?;
    }
    Ok(())
}

fn redirs_where<P: rusqlite::Params>(conn: &Connection, filter: &str, params: P) -> Result<Vec<RedirRow>> {
    let sql = format!(
        "SELECT namespace, port, app_id, connect_timeout, idle_timeout, half_close_timeout,
                proxy_protocol, allow_ranges, deny_ranges, max_connections, max_rate
         FROM redirs WHERE {filter} ORDER BY namespace, port"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(RedirRow {
            namespace: r.get(0)?,
            port: r.get(1)?,
            app_id: r.get(2)?,
            limits: RedirLimits {
                connect_timeout: r.get(3)?,
                idle_timeout: r.get(4)?,
                half_close_timeout: r.get(5)?,
                max_connections: r.get(9)?,
                max_connections_per_second: r.get(10)?,
            },
            access: RedirAccess {
                proxy_protocol: match r.get::<_, Option<String>>(6)?.as_deref() {
                    Some("v1") => Some(ProxyProtocol::V1),
                    Some("v2") => Some(ProxyProtocol::V2),
                    _ => None,
                },
                allow: json_list(r, 7)?,
                deny: json_list(r, 8)?,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn proxy_name(version: ProxyProtocol) -> &'static str {
    match version {
        ProxyProtocol::V1 => "v1",
        ProxyProtocol::V2 => "v2",
    }
}

fn json_list(row: &rusqlite::Row, column: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn log_change(conn: &Connection, op: &str, row: &RedirRow) -> Result<i64> {
    conn.execute(
        "INSERT INTO changes (op, namespace, port, app_id) VALUES (?1, ?2, ?3, ?4)",
        params![op, row.namespace, row.port, row.app_id],
    )?;
    Ok(conn.last_insert_rowid())
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}
