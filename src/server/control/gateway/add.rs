//! Making redirections: `add` (one) and a batch (`POST /v2/organisations/{orgId}/tcpRedirs`,
//! used by `apply`) walk one path, [`Gateway::make`]; an `add` is a batch of one.
//!
//! The walk, each room entered once: the rules here check each redirection against this
//! node's copy of the table ([`plan`]); the live ports reserve each port
//! ([`Reservations`]: bound on the spot on a node that serves the namespace, so that no
//! other program can take it between the check and the claim); the store claims them all in
//! one write, which re-checks atomically what the copy said (another node may have changed
//! it); a port the store says was claimed meanwhile is picked again, up to [`CLAIM_TRIES`]
//! rounds. The answer waits for this node's copy (and so its ports) to reach the write's
//! revision and, briefly, for the other live nodes of each namespace, once per batch.
//!
//! Each redirection of a batch is made or refused on its own, and the answer says which, in
//! the order asked: a refusal for the state found (an unknown application or namespace, a
//! port taken or out of range, an application that has one there, the quota) is that
//! redirection's outcome, with the error a single `add` answers, and the others are made. A
//! batch that breaks the API's document (a bad namespace name, limit or range, more than
//! [`wire::MAX_BATCH`] redirections) is refused whole with 400 before anything is done, so
//! that a client learns about a malformed request at once, not one item at a time.
//!
//! A port that another application's removal freed is in quarantine until every node has
//! confirmed the removal (issue 31, docs/fleet.md "Partitions"): a random pick skips it,
//! and a port asked for by number is waited for, up to [`QUARANTINE_WAIT`], while the nodes
//! it waits for are up, then refused with 409 naming them. The store's claim checks it
//! again atomically.
//!
//! A store write that had already reached SQLite when its request was dropped may still
//! commit: its ports start as after a restart, bound by the reconciler, and a second
//! `apply` finds them made.

use std::collections::{BTreeSet, HashMap, HashSet};

use tracing::info;

use super::Gateway;
use crate::server::control::auth::Caller;
use crate::server::control::error::Error;
use crate::server::control::validate;
use crate::server::state::live::{Reservations, Unreserved};
use crate::server::state::store::{Conflict, NamespaceDef, RedirKey, RedirRow, StoreError};
use crate::server::state::table::Table;
use crate::wire::{
    self, ApiError, NewTcpRedir, NewTcpRedirItem, Organisation, Protocol, TcpRedir, TcpRedirOutcome,
};

/// How many rounds a redirection gets when the store says its port was claimed meanwhile.
const CLAIM_TRIES: usize = 8;
/// How long a port asked for by number waits for the live nodes that have not confirmed
/// its quarantine (a node confirms within milliseconds of the removal; one that does not
/// within this is cut off or stuck).
const QUARANTINE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How many ports are reserved between two yields to the runtime (binding is a few system
/// calls each, done on the async worker).
const RESERVES_PER_YIELD: usize = 64;

/// One redirection that passed the checks against the table, to be claimed.
struct Plan {
    /// Its place in the request.
    index: usize,
    /// Its namespace.
    ns: NamespaceDef,
    /// What is claimed, the port set once reserved.
    row: RedirRow,
    /// The port asked for, if any.
    fixed: Option<u16>,
    /// The application's previous port in the namespace, tried first.
    previous: Option<u16>,
    /// The ports it may take: the namespace's, or the `minPort`-`maxPort` part of them.
    range: std::ops::RangeInclusive<u16>,
}

/// What became of each redirection asked, in the order asked (`None`: not decided yet).
type Outcomes = Vec<Option<Result<TcpRedir, Error>>>;

impl Gateway {
    /// Allocates a port of `protocol` in `namespace` for the application and starts
    /// forwarding it: a batch of one, whose refusal is the answer.
    pub async fn add(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        protocol: Protocol,
        new: &NewTcpRedir,
    ) -> Result<TcpRedir, Error> {
        validate::namespace(&new.namespace)?;
        validate::ports_shape(new)?;
        let org = self.org(caller, org_id).await?;
        let item = NewTcpRedirItem { application: app_id.to_owned(), protocol, redirection: new.clone() };
        self.make(&org, std::slice::from_ref(&item)).await?.pop().flatten().unwrap_or_else(|| Err(gap()))
    }

    /// Makes many redirections of one organisation's applications; each is made or refused
    /// on its own (see the module's documentation), and the answer lists them in order.
    pub async fn add_many(
        &self,
        caller: &Caller,
        org_id: &str,
        items: &[NewTcpRedirItem],
    ) -> Result<Vec<TcpRedirOutcome>, Error> {
        if items.len() > wire::MAX_BATCH {
            return Err(Error::bad_request(format!(
                "a batch holds {} redirections; the most is {}: send them in several batches",
                items.len(),
                wire::MAX_BATCH
            )));
        }
        for (n, item) in items.iter().enumerate() {
            check_shape(&item.redirection).map_err(|e| {
                Error::bad_request(format!(
                    "redirection {n} of the batch ({} in {}): {}; nothing was changed",
                    item.application, item.redirection.namespace, e.message
                ))
            })?;
        }
        let org = self.org(caller, org_id).await?;
        let outcomes = self.make(&org, items).await?;
        Ok(items.iter().zip(outcomes).map(|(item, outcome)| outcome_of(item, outcome)).collect())
    }

    /// The one path of `add` and a batch: plan, reserve, claim, then answer once this node
    /// (and briefly the fleet) caught up. Fails whole only when the store refused the first
    /// write, before anything was made.
    async fn make(&self, org: &Organisation, items: &[NewTcpRedirItem]) -> Result<Outcomes, Error> {
        let mut outcomes: Outcomes = items.iter().map(|_| None).collect();
        let plans = self.plan_all(org, items, &mut outcomes).await?;
        let made = self.claim_all(org, plans, &mut outcomes).await?;
        let Some(revision) = made.iter().map(|(_, row)| row.revision).max() else { return Ok(outcomes) };
        self.settle(revision).await;
        let namespaces: BTreeSet<&str> = made.iter().map(|(_, row)| &*row.namespace).collect();
        for namespace in namespaces {
            self.wait_for_fleet(namespace, revision).await;
        }
        match made.as_slice() {
            [(_, row)] => info!(app = %row.app_id, namespace = %row.namespace, port = row.port,
                protocol = %row.protocol, revision, "redirection added"),
            _ => info!(org = %org.id, redirections = made.len(), asked = items.len(), revision,
                "redirections added"),
        }
        let table = self.table();
        for (index, row) in &made {
            let stored = table.redirs.row(row).map_or(row, |r| &**r);
            outcomes[*index] = Some(Ok(self.describe(&table, stored)));
        }
        Ok(outcomes)
    }

    /// Checks each redirection against the table (applications written through another
    /// node a moment ago are waited for, all at once) and looks up the previous ports of
    /// those that ask for none.
    async fn plan_all(
        &self,
        org: &Organisation,
        items: &[NewTcpRedirItem],
        outcomes: &mut Outcomes,
    ) -> Result<Vec<Plan>, Error> {
        let wanted: HashSet<&str> = items.iter().map(|i| i.application.as_str()).collect();
        let all_known = |t: &Table| {
            wanted.iter().all(|id| t.apps.get(*id).is_some_and(|a| *a.owner_id == *org.id)).then_some(())
        };
        if all_known(&self.table()).is_none() {
            self.synced.look_again(all_known).await;
        }
        let mut plans = Vec::with_capacity(items.len());
        let most = self.synced.store().max_range_ports();
        {
            let table = self.table();
            let existing = existing_ports(&table, &wanted);
            for (index, item) in items.iter().enumerate() {
                match plan(&table, org, index, item, &existing, most) {
                    Ok(plan) => plans.push(plan),
                    Err(e) => outcomes[index] = Some(Err(e)),
                }
            }
        }
        let asked: Vec<(String, String, Protocol)> = plans
            .iter()
            .filter(|p| p.fixed.is_none())
            .map(|p| (p.row.app_id.to_string(), p.ns.name.clone(), p.row.protocol))
            .collect();
        if !asked.is_empty() {
            let previous =
                self.synced.store().previous_ports(&asked).await.map_err(|e| self.store_error(e))?;
            for (plan, previous) in plans.iter_mut().filter(|p| p.fixed.is_none()).zip(previous) {
                plan.previous = previous.filter(|p| plan.range.contains(p));
            }
        }
        Ok(plans)
    }

    /// Reserves and claims the planned redirections, in rounds: one whose port the store
    /// says was claimed meanwhile (through another node) picks another in the next round.
    /// Answers the rows made, each with its place in the request and its revision.
    async fn claim_all(
        &self,
        org: &Organisation,
        mut plans: Vec<Plan>,
        outcomes: &mut Outcomes,
    ) -> Result<Vec<(usize, RedirRow)>, Error> {
        let mut reserved = Reservations::new(self.synced.live().clone());
        // Ports picked by this write already, per (namespace, protocol), beside those the
        // table and this node's live ports know (asked port by port, so a batch costs what
        // it makes, not the namespace's size).
        let mut picked: HashMap<(String, Protocol), HashSet<u16>> = HashMap::new();
        let quota = *self.org_quota.read().unwrap_or_else(|p| p.into_inner());
        let mut made: Vec<(usize, RedirRow)> = Vec::new();
        self.wait_out_quarantines(&plans).await;
        for _ in 0..CLAIM_TRIES {
            let mut claiming = Vec::with_capacity(plans.len());
            for (n, mut plan) in std::mem::take(&mut plans).into_iter().enumerate() {
                if n % RESERVES_PER_YIELD == RESERVES_PER_YIELD - 1 {
                    tokio::task::yield_now().await;
                }
                let picked = picked.entry((plan.ns.name.clone(), plan.row.protocol)).or_default();
                match self.reserve(&mut reserved, &plan, picked) {
                    Ok(port) => {
                        picked.extend(port..=port.saturating_add(plan.row.ports - 1));
                        plan.row.port = port;
                        claiming.push(plan);
                    }
                    Err(e) => outcomes[plan.index] = Some(Err(e)),
                }
            }
            if claiming.is_empty() {
                break;
            }
            let rows: Vec<RedirRow> = claiming.iter().map(|p| p.row.clone()).collect();
            let results = match self.synced.store().claim_many(&rows, &org.id, quota).await {
                Ok(results) => results,
                // Nothing of this round was claimed: with nothing made before, the whole
                // write fails (the reservations close their sockets); else each says why.
                Err(err) if made.is_empty() => return Err(self.store_error(err)),
                Err(err) => {
                    let err = self.store_error(err);
                    for plan in &claiming {
                        reserved.release(&plan.row.key());
                        outcomes[plan.index] = Some(Err(err.clone()));
                    }
                    break;
                }
            };
            for (plan, result) in claiming.into_iter().zip(results) {
                let key = plan.row.key();
                match result {
                    Ok(revision) => {
                        reserved.claimed(&key);
                        made.push((plan.index, RedirRow { revision, ..plan.row }));
                    }
                    Err(StoreError::Conflict(
                        Conflict::PortTaken | Conflict::RangeTaken(_) | Conflict::Quarantined(_),
                    )) if plan.fixed.is_none() => {
                        reserved.release(&key);
                        plans.push(plan);
                    }
                    Err(err) => {
                        reserved.release(&key);
                        outcomes[plan.index] = Some(Err(self.refusal(err, &plan)));
                    }
                }
            }
            if plans.is_empty() {
                break;
            }
        }
        for plan in plans {
            outcomes[plan.index] = Some(Err(no_free_block(&plan)));
        }
        Ok(made)
    }

    /// Reserves the port of one redirection: the one asked for when nobody holds it, else a
    /// free one of its range.
    fn reserve(&self, reserved: &mut Reservations, plan: &Plan, picked: &HashSet<u16>) -> Result<u16, Error> {
        let ns = &plan.ns.name;
        let protocol = plan.row.protocol;
        let app = plan.row.app_id.as_ref();
        let taken = |port: u16| {
            let key = RedirKey::new(ns, protocol, port);
            picked.contains(&port)
                || self.port_taken(&key)
                || !self.table().quarantine_waits(&key, app).is_empty()
        };
        if plan.row.ports > 1 {
            return self.reserve_range(reserved, plan, taken);
        }
        if let Some(port) = plan.fixed {
            let waits = self.table().quarantine_waits(&RedirKey::new(ns, protocol, port), app);
            if !waits.is_empty() {
                return Err(Error::port_quarantined(port, ns, &waits));
            }
            if taken(port) {
                return Err(Error::port_taken(port, ns));
            }
        }
        reserved.reserve(ns, protocol, &plan.range, plan.fixed, plan.previous, taken).map_err(|why| match why
        {
            Unreserved::Taken | Unreserved::RangeTaken(_) => {
                Error::port_taken(plan.fixed.unwrap_or_default(), ns)
            }
            Unreserved::NoFreePort => Error::no_free_port(ns, *plan.range.start(), *plan.range.end()),
            Unreserved::OutOfDescriptors(limit) => Error::out_of_descriptors(&self.node, limit),
        })
    }

    /// [`Self::reserve`] for a range (issue 34): every port of the block asked for free
    /// (the first one found taken is named, and none is reserved), or a free block.
    fn reserve_range(
        &self,
        reserved: &mut Reservations,
        plan: &Plan,
        taken: impl Fn(u16) -> bool,
    ) -> Result<u16, Error> {
        let (ns, n, app) = (&plan.ns.name, plan.row.ports, plan.row.app_id.as_ref());
        if let Some(first) = plan.fixed {
            for port in first..=first.saturating_add(n - 1) {
                let key = RedirKey::new(ns, plan.row.protocol, port);
                let waits = self.table().quarantine_waits(&key, app);
                if !waits.is_empty() {
                    return Err(Error::port_quarantined(port, ns, &waits));
                }
                if taken(port) {
                    return Err(Error::range_port_taken(port, first, n, ns));
                }
            }
        }
        reserved.reserve_range(ns, &plan.range, n, plan.fixed, plan.previous, taken).map_err(
            |why| match why {
                Unreserved::Taken => Error::range_port_taken(
                    plan.fixed.unwrap_or_default(),
                    plan.fixed.unwrap_or_default(),
                    n,
                    ns,
                ),
                Unreserved::RangeTaken(port) => {
                    Error::range_port_taken(port, plan.fixed.unwrap_or(port), n, ns)
                }
                Unreserved::NoFreePort => no_free_block(plan),
                Unreserved::OutOfDescriptors(limit) => Error::out_of_descriptors(&self.node, limit),
            },
        )
    }

    /// The error a single `add` answers for a claim the store refused.
    fn refusal(&self, err: StoreError, plan: &Plan) -> Error {
        let ns = &plan.ns.name;
        match err {
            StoreError::Conflict(Conflict::PortTaken) => Error::port_taken(plan.row.port, ns),
            StoreError::Conflict(Conflict::RangeTaken(port)) => {
                Error::range_port_taken(port, plan.row.port, plan.row.ports, ns)
            }
            StoreError::Conflict(Conflict::AppHasOne(p)) => {
                Error::already_redirected(plan.row.protocol, p, ns)
            }
            StoreError::Conflict(Conflict::Quota(q)) => Error::quota_reached(q),
            StoreError::Conflict(Conflict::NotFound) => Error::unknown_app(&plan.row.app_id),
            StoreError::Conflict(Conflict::Quarantined(waits)) => {
                Error::port_quarantined(plan.row.port, ns, &waits)
            }
            err => self.store_error(err),
        }
    }

    /// Waits, up to [`QUARANTINE_WAIT`], until no port asked for by number is held back by
    /// a quarantine that only live nodes have yet to confirm (this node itself, just after
    /// the removal, or the others): a node listed down is not waited for.
    async fn wait_out_quarantines(&self, plans: &[Plan]) {
        let asked: Vec<(RedirKey, &str)> = plans
            .iter()
            .filter_map(|p| {
                p.fixed.map(|port| (RedirKey::new(&p.ns.name, p.row.protocol, port), p.row.app_id.as_ref()))
            })
            .collect();
        let settled = |t: &Table| {
            asked.iter().all(|(key, app)| {
                let waits = t.quarantine_waits(key, app);
                waits.is_empty() || waits.iter().any(|n| !t.alive.contains(n))
            })
        };
        if asked.is_empty() || settled(&self.table()) {
            return;
        }
        self.synced.wait_table(QUARANTINE_WAIT, settled).await;
    }
}

/// The error of a redirection for which no free port (or block of ports, for a range) was
/// found in its range.
fn no_free_block(plan: &Plan) -> Error {
    let (ns, min, max) = (&plan.ns.name, *plan.range.start(), *plan.range.end());
    match plan.row.ports {
        1 => Error::no_free_port(ns, min, max),
        n => {
            let mut e = Error::no_free_port(ns, min, max);
            e.message = format!("no block of {n} consecutive free ports: {}", e.message);
            e
        }
    }
}

/// The checks of what the API's document states, made on every redirection of a batch
/// before any is made: the batch is refused whole when one fails.
fn check_shape(new: &NewTcpRedir) -> Result<(), Error> {
    validate::namespace(&new.namespace)?;
    if new.port == Some(0) {
        return Err(Error::bad_port("0"));
    }
    validate::ports_shape(new)?;
    validate::settings(&new.settings)
}

/// The ports that the applications hold, by (application, namespace, protocol).
fn existing_ports(table: &Table, apps: &HashSet<&str>) -> HashMap<(String, String, Protocol), u16> {
    apps.iter()
        .flat_map(|app| {
            table.app_rows(app).map(move |r| ((app.to_string(), r.namespace.to_string(), r.protocol), r.port))
        })
        .collect()
}

/// What the rules check against the table before a port is reserved, for one redirection.
fn plan(
    table: &Table,
    org: &Organisation,
    index: usize,
    item: &NewTcpRedirItem,
    existing: &HashMap<(String, String, Protocol), u16>,
    most: u16,
) -> Result<Plan, Error> {
    let new = &item.redirection;
    let (app_id, _) = table
        .apps
        .get_key_value(item.application.as_str())
        .filter(|(_, a)| *a.owner_id == *org.id)
        .ok_or_else(|| Error::unknown_app(&item.application))?;
    let ns = Gateway::namespace_in(table, org, &new.namespace)?;
    let protocol = item.protocol;
    validate::redirection(&ns, &new.settings, protocol)?;
    let range = validate::ports_for(&ns, new)?;
    let ports = validate::port_count(&ns, new, protocol, &range, most)?;
    if let Some(&port) = existing.get(&(app_id.to_string(), ns.name.clone(), protocol)) {
        return Err(Error::already_redirected(protocol, port, &ns.name));
    }
    let row = RedirRow {
        namespace: ns.name.as_str().into(),
        port: 0,
        ports,
        protocol,
        app_id: app_id.clone(),
        settings: new.settings.clone().into(),
        revision: 0,
    };
    Ok(Plan { index, ns, row, fixed: new.port, previous: None, range })
}

/// A batch's answer for one redirection.
fn outcome_of(item: &NewTcpRedirItem, outcome: Option<Result<TcpRedir, Error>>) -> TcpRedirOutcome {
    let (redirection, error) = match outcome {
        Some(Ok(made)) => (Some(made), None),
        Some(Err(e)) => (None, Some(ApiError { kind: "error".into(), id: e.id, message: e.message })),
        // Every item gets an outcome; should one not, it was not made.
        None => {
            let e = gap();
            (None, Some(ApiError { kind: "error".into(), id: e.id, message: e.message }))
        }
    };
    TcpRedirOutcome {
        application: item.application.clone(),
        namespace: item.redirection.namespace.clone(),
        redirection,
        error,
    }
}

/// The error of a redirection that got no outcome (never expected: each gets one).
fn gap() -> Error {
    Error::internal(anyhow::anyhow!("a redirection of a batch got no outcome"))
}
