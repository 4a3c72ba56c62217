//! The node's copy of the store: every record, as of one revision.
//!
//! Calls are answered from this copy (credentials, lists, the checks before a write), so a
//! node keeps answering reads, and checking credentials, while the store is away. It is
//! loaded from a snapshot and then moved forward by the store's changes in revision order
//! ([`super::sync`]). Applying a change is idempotent: a change at or below the revision
//! already applied is skipped, and a put or a delete applied twice leaves the same table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::store::{
    Change, Event, Key, NamespaceDef, NodeRecord, Record, RedirRow, Revision, Snapshot, TokenRecord,
};
use crate::wire::{Application, Organisation};

/// The whole table.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// The revision every change up to which is applied.
    pub revision: Revision,
    /// Organisations by id.
    pub orgs: BTreeMap<String, Organisation>,
    /// Applications by id.
    pub apps: BTreeMap<String, Application>,
    /// Redirections by (namespace, port).
    pub redirs: BTreeMap<(String, u16), RedirRow>,
    /// Credentials by id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Credential ids by token hash (two nodes may be given the same admin token).
    by_hash: HashMap<String, BTreeSet<String>>,
    /// Namespace definitions by name.
    pub namespaces: BTreeMap<String, NamespaceDef>,
    /// Node descriptions by name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// The nodes whose liveness lease holds.
    pub alive: BTreeSet<String>,
}

/// What a batch of changes touched, so that only what depends on it is redone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    /// Redirections, applications or namespaces: the live ports may have to follow.
    pub ports: bool,
}

impl Table {
    /// The table of a snapshot.
    pub fn load(snapshot: Snapshot) -> Table {
        let mut table = Table { revision: snapshot.revision, ..Table::default() };
        for record in snapshot.records {
            table.put(record);
        }
        table
    }

    /// Applies a batch of changes; those at or below the applied revision are skipped.
    pub fn apply(&mut self, events: &[Event]) -> Touched {
        let mut touched = Touched::default();
        let applied = self.revision;
        for event in events.iter().filter(|e| e.revision > applied) {
            touched.ports |= match &event.change {
                Change::Put(record) => {
                    matches!(record, Record::Redir(_) | Record::App(_) | Record::Namespace(_))
                }
                Change::Delete(key) => matches!(key, Key::Redir(..) | Key::App(_) | Key::Namespace(_)),
            };
            match &event.change {
                Change::Put(Record::Redir(row)) => {
                    let row = RedirRow { revision: event.revision, ..row.clone() };
                    self.put(Record::Redir(row));
                }
                Change::Put(record) => self.put(record.clone()),
                Change::Delete(key) => self.delete(key),
            }
            self.revision = self.revision.max(event.revision);
        }
        touched
    }

    fn put(&mut self, record: Record) {
        match record {
            Record::Org(org) => {
                self.orgs.insert(org.id.clone(), org);
            }
            Record::App(app) => {
                self.apps.insert(app.id.clone(), app);
            }
            Record::Redir(row) => {
                self.redirs.insert((row.namespace.clone(), row.port), row);
            }
            Record::Token(token) => {
                self.delete(&Key::Token(token.info.id.clone()));
                self.by_hash.entry(token.token_hash.clone()).or_default().insert(token.info.id.clone());
                self.tokens.insert(token.info.id.clone(), token);
            }
            Record::Namespace(def) => {
                self.namespaces.insert(def.name.clone(), def);
            }
            Record::Node(node) => {
                self.nodes.insert(node.name.clone(), node);
            }
            Record::Alive(name) => {
                self.alive.insert(name);
            }
        }
    }

    fn delete(&mut self, key: &Key) {
        match key {
            Key::Org(id) => drop(self.orgs.remove(id)),
            Key::App(id) => drop(self.apps.remove(id)),
            Key::Redir(ns, port) => drop(self.redirs.remove(&(ns.clone(), *port))),
            Key::Token(id) => {
                if let Some(old) = self.tokens.remove(id) {
                    if let Some(ids) = self.by_hash.get_mut(&old.token_hash) {
                        ids.remove(id);
                        if ids.is_empty() {
                            self.by_hash.remove(&old.token_hash);
                        }
                    }
                }
            }
            Key::Namespace(name) => drop(self.namespaces.remove(name)),
            Key::Node(name) => drop(self.nodes.remove(name)),
            Key::Alive(name) => drop(self.alive.remove(name)),
        }
    }

    /// The credentials whose token hashes to `hash` (hex).
    pub fn tokens_by_hash(&self, hash: &str) -> impl Iterator<Item = &TokenRecord> {
        self.by_hash.get(hash).into_iter().flatten().filter_map(|id| self.tokens.get(id))
    }

    /// An application's redirections, sorted by (namespace, port).
    pub fn app_redirs(&self, app_id: &str) -> Vec<RedirRow> {
        self.redirs.values().filter(|r| r.app_id == app_id).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redir(port: u16) -> RedirRow {
        RedirRow {
            namespace: "default".into(),
            port,
            app_id: "app_1".into(),
            limits: Default::default(),
            access: Default::default(),
            revision: 0,
        }
    }

    #[test]
    fn applying_a_change_twice_does_nothing() {
        let mut table = Table::default();
        let add = Event { revision: 3, change: Change::Put(Record::Redir(redir(5000))) };
        let remove = Event { revision: 4, change: Change::Delete(Key::Redir("default".into(), 5000)) };
        assert!(table.apply(std::slice::from_ref(&add)).ports);
        assert!(table.apply(std::slice::from_ref(&remove)).ports);
        // Replayed (a watch restarted from an older revision): skipped, the port stays gone.
        assert!(!table.apply(&[add, remove]).ports);
        assert!(table.redirs.is_empty());
        assert_eq!(table.revision, 4);
    }

    #[test]
    fn a_redirection_takes_the_revision_of_its_change() {
        let mut table = Table::default();
        table.apply(&[Event { revision: 7, change: Change::Put(Record::Redir(redir(5001))) }]);
        assert_eq!(table.redirs[&("default".into(), 5001)].revision, 7);
    }
}
