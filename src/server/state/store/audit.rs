//! The audit trail (issue 35): who changed what, recorded by the store in the same atomic
//! write as the change itself.
//!
//! A change and its record cannot part: SQLite inserts the event in the transaction that
//! makes the change, etcd puts it in the change's transaction. A change that failed left no
//! event, and no event describes a change that did not happen; a crash between the two is
//! impossible, as there is no "between".
//!
//! Who made the change is not a parameter of every store call: it is the [`Origin`] of the
//! task that calls, set once where a call enters the server (the API's authentication sets
//! the credential, the client's address and the node; the start sets "config file" around
//! the config file's applications, "server" around the admin credential). The store reads
//! it when it writes ([`current`]). This keeps the store's interface as it was (the
//! gateway's calls are unchanged) and makes an unattributed write impossible to forget: a
//! write outside any origin is attributed to the server itself, never to nobody.
//!
//! Each backend numbers events with ids that only grow: SQLite's `AUTOINCREMENT`, etcd's
//! revision of the transaction times [`ETCD_ID_SCALE`] plus the event's place in it. A
//! reader that saw id N resumes with `after = N` and gets every later event once.
//!
//! The trail is bounded: [`Retention`] (the config file's `[events]`) keeps events for a
//! time and at most a count, both enforced by the store as it writes (SQLite) or by each
//! node's sweep (etcd).

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::wire::{Actor, AuditEvent, EventKind};

/// etcd's event id: the transaction's revision times this, plus the event's place in the
/// transaction (a transaction writes at most 128 keys, so fewer events).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // etcd's alone
pub const ETCD_ID_SCALE: i64 = 1024;

/// Where a change comes from: who, from which address, through which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The credential, or the server itself.
    pub actor: Actor,
    /// The client's address, for a call through the API.
    pub client: Option<String>,
    /// The node that took the call.
    pub node: Option<String>,
}

impl Origin {
    /// The server itself, on `node`: the admin credential and default organisation at start.
    pub fn server(node: Option<String>) -> Origin {
        Origin { actor: Actor { id: None, name: "server".into() }, client: None, node }
    }

    /// The config file read at start (or on a reload), on `node`.
    pub fn config_file(node: &str) -> Origin {
        Origin {
            actor: Actor { id: None, name: "config file".into() },
            client: None,
            node: Some(node.to_owned()),
        }
    }
}

tokio::task_local! {
    static ORIGIN: Origin;
}

/// Runs `work` with `origin` as the origin of every store write it makes.
pub async fn acting<F: Future>(origin: Origin, work: F) -> F::Output {
    ORIGIN.scope(origin, work).await
}

/// The origin of the calling task's writes: the one [`acting`] set, else the server itself.
pub fn current() -> Origin {
    ORIGIN.try_with(Clone::clone).unwrap_or_else(|_| Origin::server(None))
}

/// One change to record, as a store method describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// What kind of change.
    pub kind: EventKind,
    /// The organisation it belongs to.
    pub org_id: Option<String>,
    /// The application it belongs to.
    pub app_id: Option<String>,
    /// The record before.
    pub before: Option<serde_json::Value>,
    /// The record after.
    pub after: Option<serde_json::Value>,
}

impl Entry {
    /// An entry of `kind` with the records `before` and `after` as JSON (a record that does
    /// not serialize, which none of ours does not, is left out rather than failing the change).
    pub fn new<B: Serialize, A: Serialize>(
        kind: EventKind,
        org_id: Option<&str>,
        app_id: Option<&str>,
        before: Option<&B>,
        after: Option<&A>,
    ) -> Entry {
        Entry {
            kind,
            org_id: org_id.map(str::to_owned),
            app_id: app_id.map(str::to_owned),
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: after.and_then(|a| serde_json::to_value(a).ok()),
        }
    }

    /// The event it becomes, numbered `id`, recorded at `at` (Unix milliseconds) by `origin`.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // etcd's alone
    pub fn event(self, id: i64, at: i64, origin: &Origin) -> AuditEvent {
        AuditEvent {
            id,
            at,
            kind: self.kind,
            org_id: self.org_id,
            app_id: self.app_id,
            actor: origin.actor.clone(),
            client: origin.client.clone(),
            node: origin.node.clone(),
            before: self.before,
            after: self.after,
        }
    }
}

/// How long, and how many, events are kept (the config file's `[events]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are deleted.
    pub max_age: Duration,
    /// At most this many are kept, the newest.
    pub max_count: u64,
}

impl Default for Retention {
    /// 90 days, a million events (a few hundred MB at most, usually far less).
    fn default() -> Retention {
        Retention { max_age: Duration::from_secs(90 * 86_400), max_count: 1_000_000 }
    }
}

/// Which events to read, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this organisation's (`None`: all, for the admin).
    pub org_id: Option<String>,
    /// Only those with an id below this, newest first (a page's cursor).
    pub before: Option<i64>,
    /// Only those with an id above this, oldest first (following); wins over `before`.
    pub after: Option<i64>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<EventKind>,
    /// Only this application's.
    pub app_id: Option<String>,
    /// Only those recorded at or after this (Unix milliseconds).
    pub since: Option<i64>,
    /// Only those recorded before this (Unix milliseconds).
    pub until: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

impl EventQuery {
    /// Whether `event` passes the filters (organisation, kinds, application, time; not the
    /// cursor nor the limit).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // etcd's alone
    pub fn admits(&self, event: &AuditEvent) -> bool {
        self.org_id.as_ref().is_none_or(|o| event.org_id.as_ref() == Some(o))
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self.app_id.as_ref().is_none_or(|a| event.app_id.as_ref() == Some(a))
            && self.since.is_none_or(|s| event.at >= s)
            && self.until.is_none_or(|u| event.at < u)
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
