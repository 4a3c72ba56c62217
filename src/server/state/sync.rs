//! Following the store: the node's table and live ports, kept up to date.
//!
//! At start the node loads a snapshot of the store, makes its ports match it, and only then
//! serves. It then follows the store's changes from the revision it loaded, in revision
//! order, applying each batch to its table and handing what it changed (a diff) to the live
//! ports ([`super::live`]), which redo those ports only. When the watch ends (the store
//! went away) it keeps its table and ports as they are and resumes from the revision it
//! had; when the store no longer has that revision (compacted while the node was away), it
//! loads a new snapshot and reconciles the ports with all of it. A full reconcile also runs
//! every few minutes, off the watch loop, as the safety net of the diff path.
//!
//! Writers wait on [`Synced::caught_up`]: a call that wrote revision R answers once this
//! node's ports reflect R. A node also publishes its state for the others (a
//! [`NodeRecord`]) whenever its ports change, so that the node that took an `add` can tell
//! when every node of the namespace listens on the new port; between changes it only
//! refreshes the record's `lastSeen`, every [`NODE_REFRESH`]. The record's revision is what
//! lifts a quarantine (a port freed by a removal, held back from other applications until
//! every node has closed it): the same loop deletes the quarantines that every node has
//! confirmed, as its table sees them.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::live::LivePorts;
use super::store::{NodeRecord, Revision, Snapshot, Store, StoreError};
use super::table::Table;

/// The longest pause between two attempts to reach a store that is away.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a node rewrites its description even when nothing changed (its `lastSeen`).
const NODE_REFRESH: Duration = Duration::from_secs(10);
/// How often the full reconcile runs as a safety net, give or take a fifth, so that the
/// nodes of a fleet started together do not all run theirs at once.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// The node's table, following the store.
pub struct Synced {
    store: Arc<dyn Store>,
    table: RwLock<Table>,
    live: Arc<LivePorts>,
    /// The revision the table and the ports have caught up with.
    applied: watch::Sender<Revision>,
    /// The revision of the last change that touched the ports (what [`NodeRecord`] says).
    ports_revision: watch::Sender<Revision>,
    stop: CancellationToken,
}

impl Synced {
    /// Starts the ports of a snapshot of the store's table, and follows the store from there
    /// until [`Synced::stop`].
    pub async fn start(store: Arc<dyn Store>, live: Arc<LivePorts>, snapshot: Snapshot) -> Arc<Synced> {
        let revision = snapshot.revision;
        let synced = Arc::new(Synced {
            store,
            table: RwLock::new(Table::load(snapshot)),
            live,
            applied: watch::Sender::new(revision),
            ports_revision: watch::Sender::new(revision),
            stop: CancellationToken::new(),
        });
        synced.live.reconcile(&synced.table, false).await;
        tokio::spawn(synced.clone().follow());
        tokio::spawn(synced.clone().safety_net());
        synced
    }

    /// Cancelled when the node stops following the store.
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The table as this node knows it.
    pub fn table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The live ports.
    pub fn live(&self) -> &Arc<LivePorts> {
        &self.live
    }

    /// Waits until the table and the ports reflect `revision`; `false` after `limit`.
    pub async fn caught_up(&self, revision: Revision, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(limit, applied.wait_for(|&r| r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// The revision the table has caught up with, as it moves: what a reader that waits for
    /// the next change (the audit trail's long poll) watches.
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Waits until `until` holds of the table, checking after each applied change; `false` after `limit`.
    pub async fn wait_table(&self, limit: Duration, until: impl Fn(&Table) -> bool) -> bool {
        let mut applied = self.applied.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if until(&self.table()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                return false;
            }
        }
    }

    /// Stops following the store (at server stop, before the ports drain).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut away_since: Option<Instant> = None;
        loop {
            let after = self.table().revision;
            let ended = tokio::select! {
                _ = self.stop.cancelled() => return,
                ended = self.watch_from(after, &mut away_since) => ended,
            };
            if away_since.is_none() {
                backoff = Duration::from_millis(100);
            }
            match ended {
                StoreError::Compacted => {
                    info!(
                        revision = after,
                        "the store no longer has the changes after this node's revision; reloading the table"
                    );
                    match self.reload().await {
                        Ok(()) => continue,
                        Err(err) => {
                            warn!(error = %err, "cannot reload the table; keeping the ports as they are")
                        }
                    }
                }
                err if away_since.is_none() => {
                    warn!(store = %self.store.describe(), error = %err,
                        "lost the store: forwarding goes on with the ports as they are; changes are refused until it is back");
                    away_since = Some(Instant::now());
                }
                _ => {}
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Follows the changes after `after` until the watch ends; returns why it ended.
    async fn watch_from(&self, after: Revision, away_since: &mut Option<Instant>) -> StoreError {
        let mut changes = match self.store.watch(after).await {
            Ok(changes) => changes,
            Err(err) => return err,
        };
        if let Some(since) = away_since.take() {
            info!(
                away_ms = since.elapsed().as_millis() as u64,
                "the store is back; following its changes again"
            );
        }
        while let Some(batch) = changes.recv().await {
            match batch {
                Ok(events) => {
                    let diff = self.table.write().unwrap_or_else(|p| p.into_inner()).apply(&events);
                    let revision = self.table().revision;
                    if diff.touches_ports() {
                        self.live.apply(&self.table, &diff).await;
                        self.ports_revision.send_replace(revision);
                    }
                    self.applied.send_replace(revision);
                }
                Err(err) => return err,
            }
        }
        StoreError::Unavailable(format!("the watch of {} ended", self.store.describe()))
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let snapshot = self.store.snapshot().await?;
        let revision = snapshot.revision;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Table::load(snapshot);
        self.live.reconcile(&self.table, false).await;
        self.ports_revision.send_replace(revision);
        self.applied.send_replace(revision);
        Ok(())
    }

    /// Runs the full reconcile every [`RECONCILE_EVERY`] (give or take a fifth) until stopped.
    async fn safety_net(self: Arc<Self>) {
        use rand::Rng;
        loop {
            let every = RECONCILE_EVERY.mul_f64(rand::rng().random_range(0.8..1.2));
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let started = Instant::now();
            let repaired = self.live.reconcile(&self.table, true).await;
            tracing::debug!(repaired, took_ms = started.elapsed().as_millis() as u64, "full reconcile");
            if repaired > 0 {
                self.ports_revision.send_modify(|_| {});
            }
        }
    }

    /// Publishes this node's state whenever its ports change, and every [`NODE_REFRESH`].
    pub async fn publish_node(self: Arc<Self>, name: String, public_address: String) {
        let mut changed = self.ports_revision.subscribe();
        let mut applied = self.applied.subscribe();
        let mut written: Option<(NodeRecord, Instant)> = None;
        let mut failed = false;
        loop {
            let (listening, unbound) = self.live.status();
            let namespaces: Vec<String> =
                self.table().namespaces.keys().filter(|n| self.live.served().serves(n)).cloned().collect();
            let record = NodeRecord {
                name: name.clone(),
                public_address: public_address.clone(),
                namespaces,
                last_seen: crate::server::state::unix_now(),
                revision: *changed.borrow_and_update(),
                listening,
                unbound,
                port_mode: Some(self.live.port_mode()),
            };
            let fresh = written.as_ref().is_some_and(|(last, at)| {
                at.elapsed() < NODE_REFRESH
                    && NodeRecord { last_seen: record.last_seen, ..last.clone() } == record
            });
            if !fresh {
                match self.store.put_node(&record).await {
                    Ok(()) => (written, failed) = (Some((record, Instant::now())), false),
                    Err(err) => {
                        failed = true;
                        tracing::debug!(error = %err, "cannot publish this node's state; will retry")
                    }
                }
            }
            let confirmed = self.table().confirmed_quarantines();
            if !confirmed.is_empty() {
                if let Err(err) = self.store.sweep_quarantines(&confirmed).await {
                    tracing::debug!(error = %err, "cannot delete the confirmed quarantines; will retry");
                }
            }
            // A port that binds later (it was held by another program) changes the state
            // without a store change: its task says so. While ports are in quarantine, each
            // change (another node's record) may confirm one; and a sweep that failed (the
            // store's connection coming back after a partition) or that etcd refused (this
            // node's view behind its own) is tried again within MAX_BACKOFF, not
            // NODE_REFRESH: a quarantine left over holds its port from every other
            // application (issue 33's partition tests, which wait for none to be left).
            let quarantined = !self.table().quarantine.is_empty();
            let refresh = if failed || quarantined { MAX_BACKOFF } else { NODE_REFRESH };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = changed.changed() => {}
                _ = self.live.bound_changed() => {}
                _ = applied.changed(), if quarantined => {}
                _ = tokio::time::sleep(refresh) => {}
            }
        }
    }

    /// Looks again for what a call did not find in the table (a credential, an id): it may
    /// have been written through another node a moment ago and not have reached this one.
    ///
    /// The store is never asked, so that a wrong credential or an unknown id costs no
    /// round trip to it (issue 19: up to 1 s each, 3 s with etcd away). A store that only
    /// this process writes (SQLite) knows its latest revision in memory: the lookup waits
    /// only for writes that committed and are still being applied, and a miss is final at
    /// once otherwise (every write that answered was applied before answering). A shared
    /// store (etcd) cannot say without a round trip, so the lookup waits for the watch,
    /// up to [`MISS_WAIT`], looking again after each change applied and answering as soon
    /// as it finds. The watch brings a write made on another node within milliseconds
    /// (README, fleet benchmark: b accepts 0.7 ms after a's answer at p99, 3.6 ms at
    /// most), so a token issued there a moment ago works here at once; a wrong one is
    /// refused after [`MISS_WAIT`], which costs a timer (and slows guessing down).
    pub async fn look_again<T>(&self, find: impl Fn(&Table) -> Option<T>) -> Option<T> {
        // Subscribed before looking, so that no change applied meanwhile goes unseen.
        let mut applied = self.applied.subscribe();
        let known = self.store.revision_here();
        let deadline = tokio::time::Instant::now() + MISS_WAIT;
        loop {
            let (found, revision) = {
                let table = self.table();
                (find(&table), table.revision)
            };
            if found.is_some() || known.is_some_and(|latest| revision >= latest) {
                return found;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return find(&self.table()),
            }
        }
    }
}

/// How long a lookup that found nothing waits for a shared store's watch ([`Synced::look_again`]).
const MISS_WAIT: Duration = Duration::from_millis(100);
