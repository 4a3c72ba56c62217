//! Reading the audit trail (issue 35): `GET /v2/organisations/{org}/events` (an
//! organisation's own events; the admin may read any organisation's) and `GET /v2/events`
//! (every event, the admin only).
//!
//! A page is newest first, `before=ID` continuing where the last page ended (its `next`).
//! Following is a long poll: `after=ID` answers the events after ID, oldest first, and with
//! `wait=SECONDS` an empty answer waits for the next change this node's table applies (the
//! store's watch, whichever node made it) before asking the store again, up to the wait.
//! A reader that keeps the last id it printed resumes with `after=` after any break (the
//! server restarted, the connection dropped) and gets every later event once: the ids only
//! grow, and the trail is the store's, not a node's memory.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::Caller;
use super::error::Error;
use super::gateway::Gateway;
use crate::server::state::store::audit::EventQuery;
use crate::wire::{ApiError, EventKind, EventPage};

/// The most events one page holds.
pub const MAX_LIMIT: usize = 1000;
/// The events a page holds when the query does not say.
const DEFAULT_LIMIT: usize = 100;
/// The longest a long poll waits for a new event.
pub const MAX_WAIT: u64 = 60;

/// The query string of both routes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only these kinds, comma-separated (`redirection.added,redirection.removed`).
    // The pattern must be a literal here; `the_kind_pattern_names_every_kind` checks it
    // against `EventKind::ALL`.
    #[param(
        pattern = r"^(organisation\.created|token\.issued|token\.revoked|application\.created|application\.instances|application\.health_check|application\.removed|redirection\.added|redirection\.updated|redirection\.removed)(,(organisation\.created|token\.issued|token\.revoked|application\.created|application\.instances|application\.health_check|application\.removed|redirection\.added|redirection\.updated|redirection\.removed))*$"
    )]
    kind: Option<String>,
    /// Only this application's events (`app_…`).
    app: Option<String>,
    /// Only events recorded at or after this time (Unix milliseconds).
    since: Option<i64>,
    /// Only events recorded before this time (Unix milliseconds).
    until: Option<i64>,
    /// Newest first, below this id: the `next` of the previous page.
    before: Option<i64>,
    /// Oldest first, above this id (following); wins over `before`.
    after: Option<i64>,
    /// At most this many events (1 to 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// With `after`: seconds to wait for a new event when there is none yet (0 to 60);
    /// without `after`, nothing to wait for.
    #[param(maximum = 60)]
    wait: Option<u64>,
}

impl EventsQuery {
    /// The store's query for `org_id`, or the error that says what to fix.
    fn to_store(&self, org_id: Option<String>) -> Result<EventQuery, Error> {
        let mut kinds = Vec::new();
        for name in self.kind.iter().flat_map(|k| k.split(',')) {
            let kind = EventKind::parse(name).ok_or_else(|| {
                let known: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                Error::bad_request(format!("unknown event kind `{name}`: use one of {}", known.join(", ")))
            })?;
            kinds.push(kind);
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::bad_request(format!(
                "limit={limit}: ask for 1 to {MAX_LIMIT} events, and page with `before` or `after`"
            )));
        }
        if self.wait.is_some_and(|w| w > MAX_WAIT) {
            return Err(Error::bad_request(format!("wait: give 0 to {MAX_WAIT} seconds")));
        }
        Ok(EventQuery {
            org_id,
            before: self.before,
            after: self.after,
            kinds,
            app_id: self.app.clone(),
            since: self.since,
            until: self.until,
            limit,
        })
    }
}

#[utoipa::path(get, path = "/v2/organisations/{org}/events", operation_id = "listEvents", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…"), EventsQuery), responses((status = 200, description = "the organisation's audit trail: newest first, or oldest first after `after`", body = EventPage), (status = 400, description = "4000: an unknown kind, a limit or wait out of bounds", body = ApiError), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError), (status = 503, description = "5030: the store cannot be reached", body = ApiError)))]
/// An organisation's audit trail: who changed what, when, from where.
pub async fn org_events(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(org): axum::extract::Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventPage>, Error> {
    let Query(query) = query.map_err(|e| Error::bad_request(format!("invalid query: {}", e.body_text())))?;
    let org = gw.org(&caller, &org).await?;
    let store_query = query.to_store(Some(org.id))?;
    Ok(Json(read(&gw, store_query, query.wait).await?))
}

#[utoipa::path(get, path = "/v2/events", operation_id = "listAllEvents", tag = "operations", params(EventsQuery), responses((status = 200, description = "every organisation's audit trail, and the admin's own credentials", body = EventPage), (status = 400, description = "4000: an unknown kind, a limit or wait out of bounds", body = ApiError), (status = 403, description = "4030: only the server's admin may do this", body = ApiError), (status = 503, description = "5030: the store cannot be reached", body = ApiError)))]
/// The whole audit trail (admin).
pub async fn all_events(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventPage>, Error> {
    if caller != Caller::Admin {
        return Err(Error::admin_only("read every organisation's events"));
    }
    let Query(query) = query.map_err(|e| Error::bad_request(format!("invalid query: {}", e.body_text())))?;
    let store_query = query.to_store(None)?;
    Ok(Json(read(&gw, store_query, query.wait).await?))
}

/// One page of `query`; with `wait`, an empty page following `after` waits for changes.
async fn read(gw: &Gateway, query: EventQuery, wait: Option<u64>) -> Result<EventPage, Error> {
    let synced = gw.synced();
    let store = synced.store();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.unwrap_or(0));
    // Subscribed before the first read: a change between the read and the wait still wakes it.
    let mut applied = synced.applied();
    let events = loop {
        let events = store.events(&query).await.map_err(|e| Error::from_store(&store.describe(), e))?;
        if !events.is_empty() || query.after.is_none() || tokio::time::Instant::now() >= deadline {
            break events;
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => {}
            // The wait is over, or the node stopped following the store.
            Err(_) | Ok(Err(_)) => break events,
        }
    };
    let next = match query.after {
        // Following: the next call continues after the last event, or where it was.
        Some(after) => Some(events.last().map_or(after, |e| e.id)),
        // Backwards: a full page may have more below its last.
        None => (events.len() == query.limit).then(|| events.last().map(|e| e.id)).flatten(),
    };
    Ok(EventPage { events, next })
}

#[cfg(test)]
mod tests {
    use crate::wire::EventKind;

    #[test]
    fn the_kind_pattern_names_every_kind() {
        let one = EventKind::ALL.iter().map(|k| k.name().replace('.', r"\.")).collect::<Vec<_>>().join("|");
        let want = format!("^({one})(,({one}))*$");
        let source = include_str!("events.rs");
        assert!(source.contains(&format!("pattern = r\"{want}\"")), "the `kind` pattern must be {want}");
    }
}
