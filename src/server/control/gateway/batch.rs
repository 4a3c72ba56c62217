//! Many redirections at once (`POST /v2/organisations/{orgId}/tcpRedirs`, used by `apply`):
//! what [`Gateway::add`] does for one, with one store write, one wait for this node's ports
//! and one for the fleet per batch instead of per redirection.
//!
//! Each redirection of a batch is made or refused on its own, and the answer says which, in
//! the order asked: a refusal for the state found (an unknown application or namespace, a
//! port taken or out of range, an application that has one there, the quota) is that
//! redirection's outcome, with the error a single `add` would answer, and the others are
//! made. A batch that breaks the API's document (a bad namespace name, limit or range, more
//! than [`wire::MAX_BATCH`] redirections) is refused whole with 400 before anything is done,
//! so that a client learns about a malformed request at once, not one item at a time.
//!
//! A node that serves a namespace binds each port before claiming it, as `add` does, and
//! holds the listeners in a [`Held`] guard until the store answers: a claim that fails
//! closes its listener, and so does every listener of a request that is dropped midway
//! (its client went away). A store write that had already reached SQLite may still commit
//! then: its ports start as after a restart, bound by the reconciler, and a second `apply`
//! finds them made.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tracing::info;

use super::{Gateway, CLAIM_TRIES};
use crate::server::control::auth::Caller;
use crate::server::control::error::Error;
use crate::server::control::validate;
use crate::server::data::ports;
use crate::server::state::live::LivePorts;
use crate::server::state::store::{Conflict, NamespaceDef, RedirKey, RedirRow, Revision, StoreError};
use crate::server::state::table::Table;
use crate::wire::{
    self, ApiError, NewTcpRedir, NewTcpRedirItem, Organisation, Protocol, TcpRedir, TcpRedirOutcome,
};

/// How many ports are bound between two yields to the runtime (binding is a few system
/// calls each, done on the async worker as `add` does).
const BINDS_PER_YIELD: usize = 64;

/// One redirection of a batch that passed the checks against the table, to be claimed.
struct Plan {
    /// Its place in the request.
    index: usize,
    /// Its namespace.
    ns: NamespaceDef,
    /// What is claimed, the port set once picked.
    row: RedirRow,
    /// The port asked for, if any.
    fixed: Option<u16>,
    /// The application's previous port in the namespace, tried first.
    previous: Option<u16>,
    /// The ports it may take: the namespace's, or the `minPort`-`maxPort` part of them.
    range: std::ops::RangeInclusive<u16>,
}

/// The listeners a batch bound for its claims. A port leaves the guard when its claim
/// succeeds (the reconciler takes the listener) or fails (it is closed); when the guard is
/// dropped, with the request or at the end, every listener still in it is closed.
struct Held {
    live: Arc<LivePorts>,
    ports: HashSet<RedirKey>,
}

impl Held {
    /// The socket of `key`'s claim, bound and held in the live ports, is this guard's.
    fn hold(&mut self, key: RedirKey) {
        self.ports.insert(key);
    }

    /// The claim succeeded: the socket is the reconciler's now.
    fn claimed(&mut self, key: &RedirKey) {
        self.ports.remove(key);
    }

    /// The claim failed: the socket is closed.
    fn release(&mut self, key: &RedirKey) {
        if self.ports.remove(key) {
            self.live.unhold(key);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for key in self.ports.drain() {
            self.live.unhold(&key);
        }
    }
}

/// The ports of one namespace that a new redirection cannot take: the table's and those
/// running or held on this node (asked of their indexes, port by port, so a batch costs
/// what it makes, not the namespace's size), and those the batch picked already.
struct Taken {
    namespace: String,
    protocol: Protocol,
    ports: HashSet<u16>,
}

impl Taken {
    /// Whether `port` is taken.
    fn contains(&self, gateway: &Gateway, port: u16) -> bool {
        self.ports.contains(&port) || gateway.port_taken(&RedirKey::new(&self.namespace, self.protocol, port))
    }

    /// `port` is taken from now on.
    fn insert(&mut self, port: u16) {
        self.ports.insert(port);
    }
}

impl Gateway {
    /// The ports of `namespace` and `protocol` a new redirection cannot take, as [`Taken`]
    /// answers them.
    fn taken_in(&self, namespace: &str, protocol: Protocol) -> Taken {
        Taken { namespace: namespace.to_owned(), protocol, ports: HashSet::new() }
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
        let mut outcomes: Vec<Option<Result<TcpRedir, Error>>> = items.iter().map(|_| None).collect();

        // Applications created through another node a moment ago: looked for all at once.
        let wanted: HashSet<&str> = items.iter().map(|i| i.application.as_str()).collect();
        let all_known = |t: &Table| {
            wanted.iter().all(|id| t.apps.get(*id).is_some_and(|a| a.owner_id == org.id)).then_some(())
        };
        if all_known(&self.table()).is_none() {
            self.synced.look_again(all_known).await;
        }
        let mut plans = Vec::with_capacity(items.len());
        {
            let table = self.table();
            let existing = existing_ports(&table, &wanted);
            for (index, item) in items.iter().enumerate() {
                match plan(&table, &org, index, item, &existing) {
                    Ok(plan) => plans.push(plan),
                    Err(e) => outcomes[index] = Some(Err(e)),
                }
            }
        }
        let asked: Vec<(String, String, Protocol)> = plans
            .iter()
            .filter(|p| p.fixed.is_none())
            .map(|p| (p.row.app_id.clone(), p.ns.name.clone(), p.row.protocol))
            .collect();
        let previous = self.synced.store().previous_ports(&asked).await.map_err(|e| self.store_error(e))?;
        for (plan, previous) in plans.iter_mut().filter(|p| p.fixed.is_none()).zip(previous) {
            plan.previous = previous.filter(|p| plan.range.contains(p));
        }

        let live = self.synced.live().clone();
        let mut held = Held { live: live.clone(), ports: HashSet::new() };
        let mut taken: HashMap<(String, Protocol), Taken> = HashMap::new();
        let quota = *self.org_quota.read().unwrap_or_else(|p| p.into_inner());
        let mut made: Vec<(usize, RedirRow)> = Vec::new();
        let mut revision: Option<Revision> = None;
        for _ in 0..CLAIM_TRIES {
            if plans.is_empty() {
                break;
            }
            let mut claiming = Vec::with_capacity(plans.len());
            for (n, mut plan) in std::mem::take(&mut plans).into_iter().enumerate() {
                if n % BINDS_PER_YIELD == BINDS_PER_YIELD - 1 {
                    tokio::task::yield_now().await;
                }
                let key = (plan.ns.name.clone(), plan.row.protocol);
                let taken =
                    taken.entry(key).or_insert_with(|| self.taken_in(&plan.ns.name, plan.row.protocol));
                match pick(self, &live, &plan, taken, &mut held) {
                    Ok(port) => {
                        taken.insert(port);
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
                // batch fails (the guard closes the listeners); else each says why.
                Err(err) if made.is_empty() => return Err(self.store_error(err)),
                Err(err) => {
                    let err = self.store_error(err);
                    for plan in &claiming {
                        held.release(&plan.row.key());
                        outcomes[plan.index] = Some(Err(copy(&err)));
                    }
                    break;
                }
            };
            for (plan, result) in claiming.into_iter().zip(results) {
                let key = plan.row.key();
                match result {
                    Ok(at) => {
                        held.claimed(&key);
                        revision = revision.max(Some(at));
                        made.push((plan.index, RedirRow { revision: at, ..plan.row }));
                    }
                    // Claimed meanwhile through another node: another port, next round.
                    Err(StoreError::Conflict(Conflict::PortTaken)) if plan.fixed.is_none() => {
                        held.release(&key);
                        plans.push(plan);
                    }
                    Err(err) => {
                        held.release(&key);
                        outcomes[plan.index] = Some(Err(self.refusal(err, &plan)));
                    }
                }
            }
        }
        for plan in plans {
            outcomes[plan.index] =
                Some(Err(Error::no_free_port(&plan.ns.name, *plan.range.start(), *plan.range.end())));
        }
        drop(held);

        if let Some(revision) = revision {
            self.settle(revision).await;
            let namespaces: BTreeSet<&str> = made.iter().map(|(_, row)| row.namespace.as_str()).collect();
            for namespace in namespaces {
                self.wait_for_fleet(namespace, revision).await;
            }
            info!(org = %org.id, redirections = made.len(), asked = items.len(), revision, "redirections added");
        }
        let table = self.table();
        for (index, row) in made {
            let stored = table.redirs.get(&row.key()).unwrap_or(&row);
            outcomes[index] = Some(Ok(self.describe(&table, stored)));
        }
        Ok(items
            .iter()
            .zip(outcomes)
            .map(|(item, outcome)| {
                let (redirection, error) = match outcome {
                    Some(Ok(made)) => (Some(made), None),
                    Some(Err(e)) => {
                        (None, Some(ApiError { kind: "error".into(), id: e.id, message: e.message }))
                    }
                    // Every item gets an outcome above; should one not, it was not made.
                    None => (None, Some(internal_gap())),
                };
                TcpRedirOutcome {
                    application: item.application.clone(),
                    namespace: item.redirection.namespace.clone(),
                    redirection,
                    error,
                }
            })
            .collect())
    }

    /// The error a single `add` answers for a claim the store refused.
    fn refusal(&self, err: StoreError, plan: &Plan) -> Error {
        let ns = &plan.ns.name;
        match err {
            StoreError::Conflict(Conflict::PortTaken) => Error::port_taken(plan.row.port, ns),
            StoreError::Conflict(Conflict::AppHasOne(p)) => {
                Error::already_redirected(plan.row.protocol, p, ns)
            }
            StoreError::Conflict(Conflict::Quota(q)) => Error::quota_reached(q),
            StoreError::Conflict(Conflict::NotFound) => Error::unknown_app(&plan.row.app_id),
            err => self.store_error(err),
        }
    }
}

/// The checks of what the API's document states, made on every redirection before any is
/// made: the batch is refused whole when one fails.
fn check_shape(new: &NewTcpRedir) -> Result<(), Error> {
    validate::namespace(&new.namespace)?;
    if new.port == Some(0) {
        return Err(Error::bad_port("0"));
    }
    validate::settings(&new.settings)
}

/// The ports that the batch's applications hold, by (application, namespace, protocol).
fn existing_ports(table: &Table, apps: &HashSet<&str>) -> HashMap<(String, String, Protocol), u16> {
    apps.iter()
        .flat_map(|app| {
            table.app_keys(app).map(move |k| ((app.to_string(), k.namespace.clone(), k.protocol), k.port))
        })
        .collect()
}

/// What a single `add` checks against the table before it binds, for one redirection.
fn plan(
    table: &Table,
    org: &Organisation,
    index: usize,
    item: &NewTcpRedirItem,
    existing: &HashMap<(String, String, Protocol), u16>,
) -> Result<Plan, Error> {
    let new = &item.redirection;
    let app = table
        .apps
        .get(&item.application)
        .filter(|a| a.owner_id == org.id)
        .ok_or_else(|| Error::unknown_app(&item.application))?;
    // A namespace reserved to other organisations does not exist for this one.
    let ns = table
        .namespaces
        .get(&new.namespace)
        .filter(|n| n.admits(org) && !n.retired)
        .cloned()
        .ok_or_else(|| Error::unknown_namespace(&new.namespace))?;
    let protocol = item.protocol;
    validate::redirection(&ns, &new.settings, protocol)?;
    let range = validate::ports_for(&ns, new)?;
    if let Some(&port) = existing.get(&(app.id.clone(), ns.name.clone(), protocol)) {
        return Err(Error::already_redirected(protocol, port, &ns.name));
    }
    let row = RedirRow {
        namespace: ns.name.clone(),
        port: 0,
        protocol,
        app_id: app.id.clone(),
        settings: new.settings.clone(),
        revision: 0,
    };
    Ok(Plan { index, ns, row, fixed: new.port, previous: None, range })
}

/// Picks the port of one redirection, bound and held when this node serves its namespace.
fn pick(gw: &Gateway, live: &LivePorts, plan: &Plan, taken: &Taken, held: &mut Held) -> Result<u16, Error> {
    let ns = &plan.ns;
    let range = plan.range.clone();
    let no_free = || Error::no_free_port(&ns.name, *range.start(), *range.end());
    let serves = live.served().serves(&ns.name);
    let bind = live.served().bind(&ns.name);
    let protocol = plan.row.protocol;
    let port = match (plan.fixed, serves) {
        (Some(port), _) if taken.contains(gw, port) => return Err(Error::port_taken(port, &ns.name)),
        (Some(port), true) => {
            gw.bind_held(&RedirKey::new(&ns.name, protocol, port), SocketAddr::new(bind, port))?;
            port
        }
        (Some(port), false) => return Ok(port),
        (None, true) => {
            gw.allocate_held(ns, protocol, bind, &range, |p| taken.contains(gw, p), plan.previous)?
        }
        (None, false) => {
            return ports::pick(&range, |p| taken.contains(gw, p), plan.previous).ok_or_else(no_free)
        }
    };
    held.hold(RedirKey::new(&ns.name, protocol, port));
    Ok(port)
}

/// The same error again, for each of several redirections it stopped.
fn copy(err: &Error) -> Error {
    Error { status: err.status, id: err.id, message: err.message.clone() }
}

/// The outcome of a redirection that got none (never expected: each gets one).
fn internal_gap() -> ApiError {
    let err = Error::internal(anyhow::anyhow!("a redirection of a batch got no outcome"));
    ApiError { kind: "error".into(), id: err.id, message: err.message }
}
