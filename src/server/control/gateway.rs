//! The gateway: what the API's calls mean, applied to the store and the node's table.
//!
//! The API layer only translates HTTP; the rules live here: which organisation sees what,
//! one redirection per application and namespace, how a port is chosen and claimed. Reads
//! are answered from the node's copy of the table ([`crate::server::state::sync`]). A write goes to the
//! store as one atomic operation (which re-checks what the copy said: another node may
//! have changed it) and answers once this node's copy and ports have caught up with the
//! write's revision; an `add` or a `remove` also waits, briefly, for the other live nodes
//! of the namespace to say they did. The ports themselves only ever change through
//! [`crate::server::state::live::LivePorts`], from the table's diffs, whichever node made the change.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::auth::Caller;
use super::error::Error;
use super::present;
use super::validate;
use crate::server::state::rows::KeyRef;
use crate::server::state::store::{
    Conflict, NamespaceDef, RedirKey, RedirRow, Revision, StoreError, TokenRecord,
};
use crate::server::state::sync::Synced;
use crate::server::state::table::Table;
use crate::wire::{self, Application, NewApplication, Node, Organisation, Protocol, TcpRedir};

mod add;

/// How long a write waits for this node's ports to reflect it (the store's watch delivers
/// in milliseconds; this only bounds a store that lags).
const SETTLE: Duration = Duration::from_secs(5);
/// How long `add` and `remove` wait for the other nodes of the namespace.
const FLEET_WAIT: Duration = Duration::from_secs(3);

/// The server's rules over its table and store.
pub struct Gateway {
    synced: Arc<Synced>,
    /// This node's name.
    node: String,
    /// The most redirections one organisation may hold (the config file's, reloadable).
    org_quota: std::sync::RwLock<Option<u32>>,
}

impl Gateway {
    /// A gateway over a table that follows its store.
    pub fn new(synced: Arc<Synced>, node: String, org_quota: Option<u32>) -> Gateway {
        Gateway { synced, node, org_quota: std::sync::RwLock::new(org_quota) }
    }

    /// Sets the quota of redirections per organisation (a config reload).
    pub fn set_org_quota(&self, quota: Option<u32>) {
        *self.org_quota.write().unwrap_or_else(|p| p.into_inner()) = quota;
    }

    /// The metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.synced.live().metrics_text()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's copy of the table.
    pub fn synced(&self) -> &Arc<Synced> {
        &self.synced
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.synced.table()
    }

    /// Whether a port is held by a redirection of the table or by this node.
    fn port_taken(&self, key: &RedirKey) -> bool {
        self.synced.live().uses(key) || self.table().port_taken(&key.namespace, key.protocol, key.port)
    }

    fn store_error(&self, err: StoreError) -> Error {
        Error::from_store(&self.synced.store().describe(), err)
    }

    /// Waits until this node's table and ports reflect a write.
    async fn settle(&self, revision: Revision) {
        if !self.synced.caught_up(revision, SETTLE).await {
            warn!(
                revision,
                "the store's changes are slow to arrive; answering before this node applied the write"
            );
        }
    }

    /// The organisations the caller may see.
    pub async fn orgs(&self, caller: &Caller) -> Result<Vec<Organisation>, Error> {
        let mut orgs: Vec<_> =
            self.table().orgs.values().filter(|o| caller.may_see(&o.id)).cloned().collect();
        orgs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(orgs)
    }

    /// The organisation `org_id`, if the caller may see it.
    pub async fn org(&self, caller: &Caller, org_id: &str) -> Result<Organisation, Error> {
        let find = |table: &Table| table.orgs.get(org_id).filter(|o| caller.may_see(&o.id)).cloned();
        self.lookup(find).await.ok_or_else(|| Error::unknown_org(org_id))
    }

    /// Finds something in the node's table; when it is not there, looks again as the watch
    /// brings changes, briefly, without asking the store ([`Synced::look_again`]): it may
    /// have been written through another node a moment ago.
    async fn lookup<T>(&self, find: impl Fn(&Table) -> Option<T>) -> Option<T> {
        let found = find(&self.table());
        if found.is_some() {
            return found;
        }
        self.synced.look_again(find).await
    }

    /// Creates an organisation (admin only).
    pub async fn create_org(
        &self,
        caller: &Caller,
        new: wire::NewOrganisation,
    ) -> Result<Organisation, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("create organisations"));
        }
        validate::name(&new.name, "organisation")?;
        let org = Organisation { id: format!("orga_{}", uuid::Uuid::new_v4()), name: new.name };
        match self.synced.store().create_org(&org).await {
            Ok(revision) => self.settle(revision).await,
            Err(StoreError::Conflict(Conflict::OrgName)) => return Err(Error::org_name_taken(&org.name)),
            Err(err) => return Err(self.store_error(err)),
        }
        info!(org = %org.id, name = %org.name, "organisation created");
        Ok(org)
    }

    /// The credentials of an organisation (admin only).
    pub async fn tokens(&self, caller: &Caller, org_id: &str) -> Result<Vec<wire::TokenInfo>, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("list credentials"));
        }
        let org = self.org(caller, org_id).await?;
        let mut list: Vec<_> = self
            .table()
            .tokens
            .values()
            .filter(|t| t.info.owner_id.as_deref() == Some(org.id.as_str()))
            .map(|t| t.info.clone())
            .collect();
        list.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(list)
    }

    /// Issues a credential scoped to an organisation (admin only).
    pub async fn issue_token(
        &self,
        caller: &Caller,
        org_id: &str,
        new: wire::NewToken,
    ) -> Result<wire::IssuedToken, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("issue credentials"));
        }
        let org = self.org(caller, org_id).await?;
        validate::name(&new.name, "credential")?;
        let issued = wire::IssuedToken {
            info: wire::TokenInfo {
                id: format!("tok_{}", uuid::Uuid::new_v4()),
                name: new.name,
                owner_id: Some(org.id),
                created_at: Some(crate::server::state::unix_now()),
            },
            token: super::auth::generate("trt_"),
            secret: super::auth::generate("trs_"),
        };
        let record = TokenRecord {
            info: issued.info.clone(),
            token_hash: super::auth::hash(&issued.token),
            secret_hash: super::auth::hash(&issued.secret),
        };
        let revision = self.synced.store().put_token(&record).await.map_err(|e| self.store_error(e))?;
        self.settle(revision).await;
        info!(token = %issued.info.id, org = ?issued.info.owner_id, "credential issued");
        Ok(issued)
    }

    /// Revokes a credential of an organisation (admin only); it stops working at once.
    pub async fn revoke_token(
        &self,
        caller: &Caller,
        org_id: &str,
        id: &str,
    ) -> Result<wire::TokenInfo, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("revoke credentials"));
        }
        let org = self.org(caller, org_id).await?;
        let found = self
            .table()
            .tokens
            .get(id)
            .filter(|t| t.info.owner_id.as_deref() == Some(org.id.as_str()))
            .map(|t| t.info.clone())
            .ok_or_else(|| Error::unknown_token(id))?;
        match self.synced.store().revoke_token(Some(&org.id), id).await {
            Ok(revision) => self.settle(revision).await,
            Err(StoreError::Conflict(Conflict::NotFound)) => return Err(Error::unknown_token(id)),
            Err(err) => return Err(self.store_error(err)),
        }
        info!(token = %id, org = %org.id, "credential revoked");
        Ok(found)
    }

    /// The namespace `name` of the table, if the organisation may use it.
    fn namespace_in(table: &Table, org: &Organisation, name: &str) -> Result<NamespaceDef, Error> {
        // A namespace reserved to other organisations does not exist for this one.
        table
            .namespaces
            .get(name)
            .filter(|n| n.admits(org) && !n.retired)
            .cloned()
            .ok_or_else(|| Error::unknown_namespace(name))
    }

    /// The namespaces the caller's organisation may use, sorted by name.
    pub async fn namespaces(&self, caller: &Caller, org_id: &str) -> Result<Vec<wire::Namespace>, Error> {
        let org = self.org(caller, org_id).await?;
        Ok(self
            .table()
            .namespaces
            .values()
            .filter(|n| n.admits(&org) && !n.retired)
            .map(|n| wire::Namespace {
                namespace: n.name.clone(),
                description: n.description.clone(),
                public_host: Some(n.public_host.clone()),
                min_port: Some(n.min_port),
                max_port: Some(n.max_port),
            })
            .collect())
    }

    /// The applications of an organisation, sorted by name.
    pub async fn apps(&self, caller: &Caller, org_id: &str) -> Result<Vec<Application>, Error> {
        let org = self.org(caller, org_id).await?;
        let mut apps: Vec<_> = self
            .table()
            .apps
            .iter()
            .filter(|(_, a)| *a.owner_id == *org.id)
            .map(|(id, a)| a.to_wire(id))
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps.into_iter().map(|a| self.with_live_state(a)).collect())
    }

    /// The application `app_id` of the organisation `org_id`.
    pub async fn app(&self, caller: &Caller, org_id: &str, app_id: &str) -> Result<Application, Error> {
        let org = self.org(caller, org_id).await?;
        let find = |table: &Table| {
            table.apps.get(app_id).filter(|a| *a.owner_id == *org.id).map(|a| a.to_wire(app_id))
        };
        self.lookup(find).await.map(|app| self.with_live_state(app)).ok_or_else(|| Error::unknown_app(app_id))
    }

    /// The application with its instances' live state, when a port here uses them.
    fn with_live_state(&self, mut app: Application) -> Application {
        if let Some(instances) = self.synced.live().instances(&app.id) {
            app.instances = instances;
        }
        app
    }

    /// Creates an application in an organisation.
    pub async fn create_app(
        &self,
        caller: &Caller,
        org_id: &str,
        new: NewApplication,
    ) -> Result<Application, Error> {
        let org = self.org(caller, org_id).await?;
        validate::app_name(&new.name)?;
        let instances: Vec<wire::Instance> = new.instances.into_iter().map(wire::Instance::from).collect();
        validate::instances(&instances)?;
        validate::health_check(&new.health_check, &self.synced.live().health_checks())?;
        let app = Application {
            id: format!("app_{}", uuid::Uuid::new_v4()),
            name: new.name,
            owner_id: org.id,
            instances,
            health_check: new.health_check,
        };
        match self.synced.store().create_app(&app).await {
            Ok(revision) => self.settle(revision).await,
            Err(StoreError::Conflict(Conflict::AppName)) => return Err(Error::app_name_taken(&app.name)),
            Err(StoreError::Conflict(Conflict::NotFound)) => return Err(Error::unknown_org(org_id)),
            Err(err) => return Err(self.store_error(err)),
        }
        info!(app = %app.id, name = %app.name, org = %app.owner_id, "application created");
        Ok(app)
    }

    /// Makes sure the organisation has this application with these instances (config file).
    pub async fn declare_app(
        &self,
        org_id: &str,
        name: &str,
        instances: Vec<wire::Instance>,
    ) -> Result<(), Error> {
        let existing = self
            .table()
            .apps
            .iter()
            .find(|(_, a)| &*a.owner_id == org_id && &*a.name == name)
            .map(|(id, a)| a.to_wire(id));
        let result = match existing {
            Some(app) if app.instances == instances => return Ok(()),
            Some(app) => self.set_instances(&Caller::Admin, org_id, &app.id, instances).await.map(drop),
            None => {
                let instances = instances.iter().map(wire::NewInstance::from).collect();
                let new =
                    NewApplication { name: name.to_owned(), instances, health_check: Default::default() };
                match self.create_app(&Caller::Admin, org_id, new).await {
                    // Another node of the fleet declared it at the same time.
                    Err(e) if e.id == Error::app_name_taken(name).id => Ok(()),
                    other => other.map(drop),
                }
            }
        };
        result.map_err(|e| Error {
            message: format!("application `{name}` of the config file: {}", e.message),
            ..e
        })
    }

    /// Removes an application and closes its redirections.
    pub async fn remove_app(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
    ) -> Result<Application, Error> {
        let app = self.app(caller, org_id, app_id).await?;
        let redirections = self.table().app_redirs(&app.id).len();
        match self.synced.store().remove_app(&app.id).await {
            Ok(revision) => {
                self.settle(revision).await;
                if redirections > 0 {
                    self.confirm_here(revision).await;
                }
            }
            Err(StoreError::Conflict(Conflict::NotFound)) => return Err(Error::unknown_app(app_id)),
            Err(err) => return Err(self.store_error(err)),
        }
        info!(app = %app.id, name = %app.name, redirections, "application removed");
        Ok(app)
    }

    /// Replaces an application's instances; connections already made stay where they are.
    pub async fn set_instances(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        instances: Vec<wire::Instance>,
    ) -> Result<Application, Error> {
        validate::instances(&instances)?;
        let app = self.app(caller, org_id, app_id).await?;
        match self.synced.store().set_instances(&app.id, &instances).await {
            Ok(revision) => self.settle(revision).await,
            Err(StoreError::Conflict(Conflict::NotFound)) => return Err(Error::unknown_app(app_id)),
            Err(err) => return Err(self.store_error(err)),
        }
        info!(app = %app.id, instances = instances.len(), "instances replaced");
        self.app(caller, org_id, app_id).await
    }

    /// Changes an application's settings in place (today its health checks): every node's
    /// checks of its instances follow when the call answers, with no restart; its ports,
    /// connections and instances stay.
    pub async fn update_app(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        patch: &wire::ApplicationPatch,
    ) -> Result<Application, Error> {
        let app = self.app(caller, org_id, app_id).await?;
        let Some(change) = &patch.health_check else { return Ok(app) };
        let check = change.apply(&app.health_check);
        validate::health_check(&check, &self.synced.live().health_checks())?;
        if check == app.health_check {
            return Ok(app);
        }
        match self.synced.store().set_health_check(&app.id, &check).await {
            Ok(revision) => {
                self.settle(revision).await;
                // The nodes that check its instances: those serving a namespace where it
                // has a port.
                let namespaces: std::collections::BTreeSet<String> =
                    self.table().app_redirs(&app.id).iter().map(|r| r.namespace.to_string()).collect();
                for namespace in &namespaces {
                    self.wait_for_fleet(namespace, revision).await;
                }
            }
            Err(StoreError::Conflict(Conflict::NotFound)) => return Err(Error::unknown_app(app_id)),
            Err(err) => return Err(self.store_error(err)),
        }
        info!(app = %app.id, health_check = %check.summary(), "health checks changed");
        self.app(caller, org_id, app_id).await
    }

    /// An application's redirections of `protocol`, sorted by (namespace, port).
    pub async fn redirs(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        protocol: Protocol,
    ) -> Result<Vec<TcpRedir>, Error> {
        let app = self.app(caller, org_id, app_id).await?;
        let table = self.table();
        Ok(table
            .app_redirs(&app.id)
            .iter()
            .filter(|r| r.protocol == protocol)
            .map(|r| self.describe(&table, r))
            .collect())
    }

    /// Removes a redirection; its port stops accepting on this node before this returns,
    /// and on the other live nodes of the namespace unless they are slow to say so.
    pub async fn remove(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        protocol: Protocol,
        namespace: &str,
        port: u16,
    ) -> Result<TcpRedir, Error> {
        validate::namespace(namespace)?;
        let org = self.org(caller, org_id).await?;
        let app = self.app(caller, org_id, app_id).await?;
        if !self.table().namespaces.contains_key(namespace) {
            return Err(Error::unknown_namespace(namespace));
        }
        let find = |table: &Table| {
            let row =
                table.redirs.row(&KeyRef { namespace, protocol, port }).filter(|r| *r.app_id == *app.id)?;
            Some((row.clone(), self.describe(table, row)))
        };
        let (row, described) =
            self.lookup(find).await.ok_or_else(|| self.not_found(&app.id, protocol, port, namespace))?;
        match self.synced.store().release(&row, &org.id).await {
            Ok(revision) => {
                self.settle(revision).await;
                self.confirm_here(revision).await;
                self.wait_for_fleet(namespace, revision).await;
            }
            Err(StoreError::Conflict(Conflict::NotFound)) => {
                return Err(Error::unknown_redir(protocol, port, namespace))
            }
            Err(err) => return Err(self.store_error(err)),
        }
        info!(app = %app.id, namespace, port, %protocol, "redirection removed");
        Ok(TcpRedir { state: None, nodes: Vec::new(), ..described })
    }

    /// Changes a redirection's settings in place: the port, its application and its open
    /// connections stay (each keeps what it started with), and new connections get the new
    /// settings on this node when this returns, and on the other live nodes of the
    /// namespace unless they are slow to say so. A change that changes nothing writes
    /// nothing. The merged settings are checked as an `add`'s are.
    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        caller: &Caller,
        org_id: &str,
        app_id: &str,
        protocol: Protocol,
        namespace: &str,
        port: u16,
        patch: &wire::SettingsPatch,
    ) -> Result<TcpRedir, Error> {
        validate::namespace(namespace)?;
        let app = self.app(caller, org_id, app_id).await?;
        let Some(def) = self.table().namespaces.get(namespace).cloned() else {
            return Err(Error::unknown_namespace(namespace));
        };
        let find = |table: &Table| {
            table
                .redirs
                .row(&KeyRef { namespace, protocol, port })
                .filter(|r| *r.app_id == *app.id)
                .map(|r| RedirRow::clone(r))
        };
        let row =
            self.lookup(find).await.ok_or_else(|| self.not_found(&app.id, protocol, port, namespace))?;
        let settings = patch.apply(&row.settings);
        // The spec's whole check (its bounds and lists included).
        validate::redirection(&def, &settings, protocol)?;
        if *row.settings != settings {
            let updated = RedirRow { settings: settings.into(), ..row };
            match self.synced.store().update_redir(&updated).await {
                Ok(revision) => {
                    self.settle(revision).await;
                    self.wait_for_fleet(namespace, revision).await;
                }
                Err(StoreError::Conflict(Conflict::NotFound)) => {
                    return Err(Error::unknown_redir(protocol, port, namespace))
                }
                Err(err) => return Err(self.store_error(err)),
            }
            info!(app = %app.id, namespace, port, %protocol, "redirection's settings changed in place");
        }
        let table = self.table();
        let row = find(&table).ok_or_else(|| Error::unknown_redir(protocol, port, namespace))?;
        Ok(self.describe(&table, &row))
    }

    /// Waits, briefly, until this node's published record says its ports reflect a
    /// removal's `revision`: the port's quarantine waits for no node that took the removal
    /// itself (a single server's is lifted when `remove` answers).
    async fn confirm_here(&self, revision: Revision) {
        let done = |t: &Table| t.nodes.get(&self.node).is_some_and(|n| n.revision >= revision);
        if !self.synced.wait_table(FLEET_WAIT, done).await {
            warn!(revision, "this node's record did not come back from the store in time");
        }
    }

    /// Waits until every other live node of the namespace says its ports reflect `revision`.
    async fn wait_for_fleet(&self, namespace: &str, revision: Revision) {
        let done = |t: &Table| {
            present::serving_nodes(t, namespace)
                .filter(|n| n.name != self.node)
                .all(|n| n.revision >= revision)
        };
        if !self.synced.wait_table(FLEET_WAIT, done).await {
            warn!(
                namespace,
                revision, "some nodes did not confirm the change in time; the answer says which"
            );
        }
    }

    /// The gateway nodes: every node that has published its state, up or down.
    pub async fn nodes(&self) -> Result<Vec<Node>, Error> {
        Ok(present::nodes(&self.table()))
    }

    /// Forgets a node that is gone for good (admin): the quarantines stop waiting for it.
    /// Refused while its lease holds; a node that comes back publishes itself again.
    pub async fn forget_node(&self, caller: &Caller, name: &str) -> Result<Node, Error> {
        if *caller != Caller::Admin {
            return Err(Error::admin_only("forget nodes"));
        }
        let found = {
            let table = self.table();
            present::nodes(&table).into_iter().find(|n| n.name == name)
        };
        let found = found.ok_or_else(|| Error::unknown_node(name))?;
        match self.synced.store().forget_node(name).await {
            Ok(revision) => self.settle(revision).await,
            Err(StoreError::Conflict(Conflict::Alive)) => return Err(Error::node_alive(name)),
            Err(StoreError::Conflict(Conflict::NotFound)) => return Err(Error::unknown_node(name)),
            Err(err) => return Err(self.store_error(err)),
        }
        warn!(node = %name, "node forgotten by the admin: no quarantine waits for it any more");
        Ok(found)
    }

    /// Why the application has no redirection named by `port`: none holds it, or it is
    /// inside one of its ranges, which its first port names (issue 34).
    fn not_found(&self, app_id: &str, protocol: Protocol, port: u16, namespace: &str) -> Error {
        match self.table().holder(namespace, protocol, port) {
            Some(row) if *row.app_id == *app_id => {
                Error::inside_range(port, row.port, row.last_port(), namespace)
            }
            _ => Error::unknown_redir(protocol, port, namespace),
        }
    }

    fn describe(&self, table: &Table, row: &RedirRow) -> TcpRedir {
        present::redirection(table, self.synced.live(), &self.node, row)
    }
}
