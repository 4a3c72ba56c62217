//! The node's copy of the store: every record, as of one revision.
//!
//! Calls are answered from this copy (credentials, lists, the checks before a write), so a
//! node keeps answering reads, and checking credentials, while the store is away. It is
//! loaded from a snapshot and then moved forward by the store's changes in revision order
//! ([`super::sync`]). Applying a change is idempotent: a change at or below the revision
//! already applied is skipped, and a put or a delete applied twice leaves the same table.
//!
//! Applying a batch answers a [`Diff`]: the keys whose records it really changed, so that
//! what follows the table (the live ports) redoes those and nothing else. A change costs
//! what it touches: redirections are kept by (namespace, protocol, port), so one
//! namespace's are a range of the map, and indexed by application, so one application's are found without a
//! pass over the table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::rows::{KeyRef, Keyed, Rows};
use super::store::{
    Change, Event, Key, NamespaceDef, NodeRecord, Quarantine, Record, RedirKey, RedirRow, Revision, Snapshot,
    TokenRecord,
};
use crate::server::data::balance::{shared_check, Endpoint};
use crate::wire::{Application, HealthCheck, Organisation, Protocol};

/// The whole table.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// The revision every change up to which is applied.
    pub revision: Revision,
    /// Organisations by id.
    pub orgs: BTreeMap<String, Organisation>,
    /// Applications by id. The key is the one copy of the id that the index of its rows
    /// (`by_app`) and its rows hold too.
    pub apps: BTreeMap<Arc<str>, AppRecord>,
    /// Redirections by (namespace, protocol, port). Shared with the ports that run them
    /// (`live`), so that a redirection's row is in memory once, and boxed so that the map's
    /// nodes, often half full, hold a pointer rather than the row.
    pub redirs: Rows<()>,
    /// Credentials by id.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Credential ids by token hash (two nodes may be given the same admin token).
    by_hash: HashMap<String, BTreeSet<String>>,
    /// Each application's redirections, sorted by key: a short vector (an application has
    /// one redirection per namespace and protocol at most), not a B-tree whose first node
    /// costs ~370 bytes, of the rows `redirs` holds (a pointer each, not a key's copy).
    /// The key is the one copy of the application's id that its rows hold too.
    by_app: HashMap<Arc<str>, Vec<Arc<RedirRow>>>,
    /// The namespaces' names that rows hold, and the organisations' ids that applications
    /// hold, one copy each, shared by the rows and their keys (here and in the live ports)
    /// and by the applications: a redirection's key and an application's owner cost no
    /// string of their own. Rows come from the store, which holds defined namespaces only,
    /// and organisations are few, so this stays small.
    names: HashSet<Arc<str>>,
    /// Namespace definitions by name.
    pub namespaces: BTreeMap<String, NamespaceDef>,
    /// Node descriptions by name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// The nodes whose liveness lease holds.
    pub alive: BTreeSet<String>,
    /// Ports freed by a removal that not every node has confirmed yet, by key.
    pub quarantine: BTreeMap<RedirKey, Quarantine>,
}

/// An application as the table keeps it, in 56 bytes where its [`Application`] takes 184
/// and four more allocations, and 24 bytes an instance where the API's takes 72 (issue
/// 32's memory: an application per redirection or two; tests
/// `an_application_and_an_instance_take_the_bytes_their_docs_say`).
/// Its id is the map's key; its owner is the table's one copy of its organisation's id;
/// its health-check settings are the one shared record of none for most applications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    /// A human name, unique within its organisation.
    pub name: Box<str>,
    /// The id of the organisation that owns it.
    pub owner_id: Arc<str>,
    /// The addresses the application listens on, as stored.
    pub instances: Box<[Endpoint]>,
    /// Its own health-check settings (the default record: the node's, every one).
    pub health_check: Arc<HealthCheck>,
}

impl AppRecord {
    /// The application of id `id` as the API shows it.
    pub fn to_wire(&self, id: &str) -> Application {
        Application {
            id: id.to_owned(),
            name: self.name.to_string(),
            owner_id: self.owner_id.to_string(),
            instances: self.instances.iter().map(Endpoint::to_wire).collect(),
            health_check: HealthCheck::clone(&self.health_check),
        }
    }
}

/// How a row sorts against a key, as the key's own order (namespace, protocol, port).
fn by_key(row: &RedirRow, key: &RedirKey) -> std::cmp::Ordering {
    row.parts().cmp(&key.parts())
}

/// What a batch of changes changed: the keys whose records differ from before, so that
/// only what depends on them is redone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Redirections added, removed or changed.
    pub redirs: BTreeSet<RedirKey>,
    /// Applications created, removed or changed (their instances).
    pub apps: BTreeSet<String>,
    /// Namespaces defined, redefined or removed.
    pub namespaces: BTreeSet<String>,
}

impl Diff {
    /// Whether the live ports may have to follow.
    pub fn touches_ports(&self) -> bool {
        !(self.redirs.is_empty() && self.apps.is_empty() && self.namespaces.is_empty())
    }
}

impl Table {
    /// The table of a snapshot.
    pub fn load(snapshot: Snapshot) -> Table {
        let mut table = Table { revision: snapshot.revision, ..Table::default() };
        let mut diff = Diff::default();
        for record in snapshot.records {
            table.put(record, &mut diff);
            // A loaded table is followed whole (a full reconcile), not by its diff.
            diff = Diff::default();
        }
        table
    }

    /// Applies a batch of changes; those at or below the applied revision are skipped.
    pub fn apply(&mut self, events: &[Event]) -> Diff {
        let mut diff = Diff::default();
        let applied = self.revision;
        for event in events.iter().filter(|e| e.revision > applied) {
            match &event.change {
                Change::Put(Record::Redir(row)) => {
                    let row = RedirRow { revision: event.revision, ..row.clone() };
                    self.put(Record::Redir(row), &mut diff);
                }
                Change::Put(Record::Quarantine(q)) => {
                    let q = Quarantine { revision: event.revision, ..q.clone() };
                    self.put(Record::Quarantine(q), &mut diff);
                }
                Change::Put(record) => self.put(record.clone(), &mut diff),
                Change::Delete(key) => self.delete(key, &mut diff),
            }
            self.revision = self.revision.max(event.revision);
        }
        diff
    }

    fn put(&mut self, record: Record, diff: &mut Diff) {
        match record {
            Record::Org(org) => {
                self.orgs.insert(org.id.clone(), org);
            }
            Record::App(app) => {
                let owner_id = self.intern(&app.owner_id);
                // Copies, not the record's own strings and list: the record, and with it
                // the rest of what the store's read allocated around them, is then freed
                // whole (a snapshot's reads would otherwise leave holes between the parts
                // kept, 20 MiB at 50,000 applications), and the list loses the spare room
                // it grew (SQLite's rows, etcd's JSON: 4 at the first instance).
                let record = AppRecord {
                    name: Box::from(app.name.as_str()),
                    owner_id,
                    instances: app.instances.iter().map(Endpoint::from).collect(),
                    health_check: shared_check(&app.health_check),
                };
                if self.apps.get(app.id.as_str()) != Some(&record) {
                    diff.apps.insert(app.id.clone());
                }
                // The copy of the id its rows already share, if they came first.
                let id = match self.by_app.get_key_value(app.id.as_str()) {
                    Some((id, _)) => id.clone(),
                    None => Arc::from(app.id.as_str()),
                };
                // An application already here keeps its key (`insert` does not replace it).
                self.apps.insert(id, record);
            }
            Record::Redir(mut row) => {
                // Share the names the table already holds (a row from the store comes with
                // its own copies), before its key is taken from it.
                row.namespace = self.intern(&row.namespace);
                if let Some((id, _)) = self.by_app.get_key_value(&*row.app_id) {
                    row.app_id = id.clone();
                } else if let Some((id, _)) = self.apps.get_key_value(&*row.app_id) {
                    row.app_id = id.clone();
                }
                let key = row.key();
                let old = self.redirs.row(&key);
                if old.is_none_or(|old| !old.same_settings(&row)) {
                    diff.redirs.insert(key.clone());
                }
                if let Some(old) = old.filter(|old| old.app_id != row.app_id) {
                    let old_app = old.app_id.clone();
                    self.unindex(&old_app, &key);
                }
                let row = Arc::new(row);
                let rows = self.by_app.entry(row.app_id.clone()).or_insert_with(|| Vec::with_capacity(1));
                match rows.binary_search_by(|r| by_key(r, &key)) {
                    Ok(at) => rows[at] = row.clone(),
                    Err(at) => {
                        // One more, not the doubling (to 4 at the second row) that `insert`
                        // would make: an application has a few rows at most.
                        rows.reserve_exact(1);
                        rows.insert(at, row.clone())
                    }
                }
                self.redirs.put(row);
            }
            Record::Token(token) => {
                self.delete(&Key::Token(token.info.id.clone()), diff);
                self.by_hash.entry(token.token_hash.clone()).or_default().insert(token.info.id.clone());
                self.tokens.insert(token.info.id.clone(), token);
            }
            Record::Namespace(def) => {
                if self.namespaces.get(&def.name) != Some(&def) {
                    diff.namespaces.insert(def.name.clone());
                }
                self.namespaces.insert(def.name.clone(), def);
            }
            Record::Node(node) => {
                self.nodes.insert(node.name.clone(), node);
            }
            Record::Alive(name) => {
                self.alive.insert(name);
            }
            Record::Quarantine(q) => {
                self.quarantine.insert(q.key(), q);
            }
        }
    }

    /// The table's one copy of `name` (a namespace's name or an organisation's id).
    fn intern(&mut self, name: &str) -> Arc<str> {
        match self.names.get(name) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(name);
                self.names.insert(name.clone());
                name
            }
        }
    }

    fn delete(&mut self, key: &Key, diff: &mut Diff) {
        match key {
            Key::Org(id) => drop(self.orgs.remove(id)),
            Key::App(id) => {
                if self.apps.remove(id.as_str()).is_some() {
                    diff.apps.insert(id.clone());
                }
            }
            Key::Redir(key) => {
                if let Some((old, ())) = self.redirs.remove(key) {
                    self.unindex(&old.app_id, key);
                    diff.redirs.insert(key.clone());
                }
            }
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
            Key::Namespace(name) => {
                if self.namespaces.remove(name).is_some() {
                    diff.namespaces.insert(name.clone());
                }
            }
            Key::Node(name) => drop(self.nodes.remove(name)),
            Key::Alive(name) => drop(self.alive.remove(name)),
            Key::Quarantine(key) => drop(self.quarantine.remove(key)),
        }
    }

    fn unindex(&mut self, app_id: &str, key: &RedirKey) {
        if let Some(rows) = self.by_app.get_mut(app_id) {
            if let Ok(at) = rows.binary_search_by(|r| by_key(r, key)) {
                rows.remove(at);
            }
            if rows.is_empty() {
                self.by_app.remove(app_id);
            }
        }
    }

    /// The credentials whose token hashes to `hash` (hex).
    pub fn tokens_by_hash(&self, hash: &str) -> impl Iterator<Item = &TokenRecord> {
        self.by_hash.get(hash).into_iter().flatten().filter_map(|id| self.tokens.get(id))
    }

    /// An application's redirections, sorted by (namespace, protocol, port).
    pub fn app_redirs(&self, app_id: &str) -> Vec<RedirRow> {
        self.app_rows(app_id).cloned().collect()
    }

    /// An application's redirections as the table holds them, sorted by key.
    pub fn app_rows(&self, app_id: &str) -> impl Iterator<Item = &RedirRow> {
        self.by_app.get(app_id).into_iter().flatten().map(|row| &**row)
    }

    /// A namespace's redirections, TCP then UDP, by port.
    pub fn namespace_redirs<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a RedirRow> + 'a {
        self.redirs.namespace(namespace).map(|(row, ())| &**row)
    }

    /// The nodes that `app_id` waits for before it may take `key`: those that have not
    /// confirmed the removal that put the port in quarantine, when another application
    /// freed it (empty: the port is not held back from `app_id`).
    pub fn quarantine_waits(&self, key: &RedirKey, app_id: &str) -> Vec<String> {
        match self.quarantine.get(key) {
            Some(q) if q.app_id != app_id => q.waits_for(self.nodes.values()),
            _ => Vec::new(),
        }
    }

    /// The quarantines every registered node has confirmed: to be deleted.
    pub fn confirmed_quarantines(&self) -> Vec<Quarantine> {
        self.quarantine.values().filter(|q| q.waits_for(self.nodes.values()).is_empty()).cloned().collect()
    }

    /// Whether a namespace's port of `protocol` is held by a redirection (a range's every
    /// port is).
    pub fn port_taken(&self, namespace: &str, protocol: Protocol, port: u16) -> bool {
        self.holder(namespace, protocol, port).is_some()
    }

    /// The redirection that holds a namespace's port of `protocol`: the one at that port, or
    /// the range that covers it. Redirections never overlap, so only the nearest at or below
    /// the port can: one lookup.
    pub fn holder(&self, namespace: &str, protocol: Protocol, port: u16) -> Option<&RedirRow> {
        let (row, ()) = self.redirs.at_or_below(&KeyRef { namespace, protocol, port })?;
        row.covers(port).then_some(&**row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the records' doc comments say they cost (issue 32's memory per redirection).
    #[test]
    fn an_application_and_an_instance_take_the_bytes_their_docs_say() {
        assert_eq!(std::mem::size_of::<AppRecord>(), 56);
        assert_eq!(std::mem::size_of::<Endpoint>(), 24);
    }

    fn redir(port: u16) -> RedirRow {
        RedirRow {
            namespace: "default".into(),
            port,
            ports: 1,
            protocol: Protocol::Tcp,
            app_id: "app_1".into(),
            settings: Default::default(),
            revision: 0,
        }
    }

    #[test]
    fn applying_a_change_twice_does_nothing() {
        let mut table = Table::default();
        let add = Event { revision: 3, change: Change::Put(Record::Redir(redir(5000))) };
        let remove = Event {
            revision: 4,
            change: Change::Delete(Key::Redir(RedirKey::new("default", Protocol::Tcp, 5000))),
        };
        assert!(table.apply(std::slice::from_ref(&add)).touches_ports());
        assert!(table.apply(std::slice::from_ref(&remove)).touches_ports());
        // Replayed (a watch restarted from an older revision): skipped, the port stays gone.
        assert!(!table.apply(&[add, remove]).touches_ports());
        assert!(table.redirs.is_empty());
        assert_eq!(table.revision, 4);
    }

    #[test]
    fn a_diff_names_what_changed_and_only_that() {
        let mut table = Table::default();
        let put = |revision, port| Event { revision, change: Change::Put(Record::Redir(redir(port))) };
        let diff = table.apply(&[put(1, 5000), put(2, 5001)]);
        assert_eq!(diff.redirs.len(), 2);
        assert_eq!(table.app_rows("app_1").count(), 2);
        // The same row again (a later revision): nothing the ports depend on changed.
        assert!(!table.apply(&[put(3, 5000)]).touches_ports());
        let diff = table.apply(&[Event {
            revision: 4,
            change: Change::Delete(Key::Redir(RedirKey::new("default", Protocol::Tcp, 5000))),
        }]);
        assert_eq!(
            diff.redirs.into_iter().collect::<Vec<_>>(),
            vec![RedirKey::new("default", Protocol::Tcp, 5000)]
        );
        assert_eq!(table.app_redirs("app_1").iter().map(|r| r.port).collect::<Vec<_>>(), vec![5001]);
        assert_eq!(
            table.app_rows("app_1").map(|k| (k.protocol, k.port)).collect::<Vec<_>>(),
            [(Protocol::Tcp, 5001)]
        );
        assert_eq!(table.namespace_redirs("default").count(), 1);
        assert!(table.namespace_redirs("other").next().is_none());
    }

    #[test]
    fn a_redirection_takes_the_revision_of_its_change() {
        let mut table = Table::default();
        table.apply(&[Event { revision: 7, change: Change::Put(Record::Redir(redir(5001))) }]);
        assert_eq!(table.redirs[&RedirKey::new("default", Protocol::Tcp, 5001)].revision, 7);
    }
}
