//! Every error the control API can answer, with its HTTP status, stable id and message.
//!
//! The body is Clever's `{"type":"error","id":N,"message":"…"}`. Ids are stable so that
//! scripts can match on them; messages say what went wrong and what to do next. Keeping all
//! of them in this one file makes the list reviewable (and documented in the README).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::{ApiError, Protocol};

/// An error answer of the control API.
#[derive(Debug, Clone)]
pub struct Error {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable id in the body.
    pub id: u32,
    /// The message in the body.
    pub message: String,
}

impl Error {
    fn new(status: StatusCode, id: u32, message: impl Into<String>) -> Error {
        Error { status, id, message: message.into() }
    }

    /// A request the server cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, 4000, message)
    }

    /// A body that is not the JSON the call expects.
    pub fn bad_body(detail: impl std::fmt::Display, expected: &str) -> Error {
        Error::new(
            StatusCode::BAD_REQUEST,
            4001,
            format!("invalid request body: {detail}; send JSON like {expected}"),
        )
    }

    /// A body over the size limit.
    pub fn body_too_large(limit: usize) -> Error {
        Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            4130,
            format!("request body too large: the limit is {limit} bytes, and every call of this API needs far less"),
        )
    }

    /// A port outside 1..=65535 or not a number.
    pub fn bad_port(port: &str) -> Error {
        Error::new(
            StatusCode::BAD_REQUEST,
            4002,
            format!("invalid port `{port}`: use a number from 1 to 65535"),
        )
    }

    /// A request without credentials.
    pub fn no_credentials() -> Error {
        Error::new(
            StatusCode::UNAUTHORIZED,
            4010,
            "missing credentials: send `Authorization: Bearer TOKEN` (or Clever's OAuth PLAINTEXT header)",
        )
    }

    /// Credentials the server did not issue, or a wrong secret.
    pub fn bad_credentials() -> Error {
        Error::new(
            StatusCode::UNAUTHORIZED,
            4011,
            "invalid credentials: the token is unknown or revoked, or its secret is wrong",
        )
    }

    /// A call only the server's admin may make.
    pub fn admin_only(what: &str) -> Error {
        Error::new(
            StatusCode::FORBIDDEN,
            4030,
            format!("only the server's admin may {what}: use the admin credential (DATA_DIR/admin.toml)"),
        )
    }

    /// A credential the organisation does not have.
    pub fn unknown_token(id: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4045,
            format!("credential `{id}` not found in this organisation: `GET …/tokens` lists them"),
        )
    }

    /// An organisation name already used.
    pub fn org_name_taken(name: &str) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4093,
            format!("an organisation named `{name}` already exists: choose another name"),
        )
    }

    /// Too many failed authentications from one address.
    pub fn slow_down(wait: std::time::Duration) -> Error {
        Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            4290,
            format!(
                "too many failed authentications from your address: wait {}s and check your credential",
                wait.as_secs().max(1)
            ),
        )
    }

    /// A path that matches no route.
    pub fn no_route(path: &str) -> Error {
        Error::new(StatusCode::NOT_FOUND, 4040, format!("no such API route: {path}"))
    }

    /// An organisation the caller cannot see.
    pub fn unknown_org(id: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4041,
            format!("organisation `{id}` not found: `GET /v2/organisations` lists yours"),
        )
    }

    /// An application the caller cannot see.
    pub fn unknown_app(id: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4042,
            format!("application `{id}` not found in this organisation: `tcp-redirs apps list` shows the applications"),
        )
    }

    /// A namespace that does not exist or that the caller may not use.
    pub fn unknown_namespace(name: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4043,
            format!("namespace `{name}` not found: `tcp-redirs list-namespaces` shows the ones you may use"),
        )
    }

    /// A port the application has no redirection of that protocol on.
    pub fn unknown_redir(protocol: Protocol, port: u16, namespace: &str) -> Error {
        let what = protocol.name().to_uppercase();
        Error::new(
            StatusCode::NOT_FOUND,
            4044,
            format!("no {what} redirection on port {port} in namespace `{namespace}` for this application: `tcp-redirs list` shows its redirections"),
        )
    }

    /// A port inside one of the application's ranges (issue 34), named where a range is
    /// named by its first port.
    pub fn inside_range(port: u16, first: u16, last: u16, namespace: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4244,
            format!("port {port} in namespace `{namespace}` is part of this application's range {first}-{last}, which is one redirection named by its first port: use {first}"),
        )
    }

    /// A second redirection of one protocol for the same application and namespace.
    pub fn already_redirected(protocol: Protocol, port: u16, namespace: &str) -> Error {
        let what = protocol.name().to_uppercase();
        Error::new(
            StatusCode::CONFLICT,
            4090,
            format!("this application already has a {what} redirection in namespace `{namespace}`, on port {port}: use it, or remove it first"),
        )
    }

    /// An application name already used in the organisation.
    pub fn app_name_taken(name: &str) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4091,
            format!("an application named `{name}` already exists in this organisation: choose another name or remove it first"),
        )
    }

    /// A namespace whose port range has no port left.
    pub fn no_free_port(namespace: &str, min: u16, max: u16) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4092,
            format!(
                "no free port in namespace `{namespace}` (range {min}-{max}): every port is taken by a redirection, in use on the machine, or held back after another application's removal that some nodes have not confirmed yet; remove a redirection or widen the namespace's range"
            ),
        )
    }

    /// A requested port that a redirection or another program holds.
    pub fn port_taken(port: u16, namespace: &str) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4095,
            format!("port {port} of namespace `{namespace}` is taken by another redirection or in use on the machine: ask for another port, or none for a random one"),
        )
    }

    /// A range (issue 34) of more ports than this server's store takes in one redirection.
    pub fn range_too_large(asked: u16, most: u16) -> Error {
        let why = if most < crate::wire::MAX_RANGE_PORTS {
            " (its store, etcd, claims a range in one transaction)"
        } else {
            ""
        };
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4240,
            format!("a redirection takes at most {most} consecutive ports on this server{why}, and {asked} were asked: ask for fewer, or make several redirections"),
        )
    }

    /// A range of UDP ports (issue 34): UDP redirections take one port each.
    pub fn udp_range() -> Error {
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4241,
            "a UDP redirection takes one port: port ranges are TCP only; leave `ports` out (or 1), or make one UDP redirection per port",
        )
    }

    /// A range (issue 34) that does not fit in the ports it may take.
    pub fn range_outside(first: Option<u16>, n: u16, namespace: &str, min: u16, max: u16) -> Error {
        let what = match first {
            Some(first) => format!("ports {first}-{} do not all lie", u32::from(first) + u32::from(n) - 1),
            None => format!("a block of {n} consecutive ports does not fit"),
        };
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4242,
            format!("{what} in the range {min}-{max} of namespace `{namespace}`: ask for fewer ports, another first port, or a wider `minPort`-`maxPort`"),
        )
    }

    /// A port of a range asked for (issue 34) that a redirection or another program holds:
    /// none of the range was taken.
    pub fn range_port_taken(port: u16, first: u16, n: u16, namespace: &str) -> Error {
        let last = u32::from(first) + u32::from(n) - 1;
        Error::new(
            StatusCode::CONFLICT,
            4243,
            format!("port {port} of the range {first}-{last} in namespace `{namespace}` is taken by another redirection or in use on the machine, so none of the range was taken: ask for another first port, or none for a free block"),
        )
    }

    /// A requested port that another application freed and that some nodes have not yet
    /// confirmed closing (a quarantine, issue 31): giving it now could lead this
    /// application's clients, on those nodes, to the one that held it.
    pub fn port_quarantined(port: u16, namespace: &str, waits: &[String]) -> Error {
        let nodes = waits.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        Error::new(
            StatusCode::CONFLICT,
            4096,
            format!("port {port} of namespace `{namespace}` was freed by another application's removal that node(s) {nodes} have not confirmed yet (cut off from the store, or down): they may still lead it to that application; retry once they are back, ask for another port or none, or, for a node gone for good, `tcp-redirs nodes forget NODE`"),
        )
    }

    /// A node the fleet does not list.
    pub fn unknown_node(name: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4046,
            format!("no node `{name}` in the fleet: `tcp-redirs nodes` lists them"),
        )
    }

    /// A webhook the caller's organisation does not have.
    pub fn unknown_webhook(id: &str) -> Error {
        Error::new(
            StatusCode::NOT_FOUND,
            4047,
            format!("no webhook `{id}` in this organisation: `GET …/webhooks` (`tcp-redirs webhooks list`) lists them"),
        )
    }

    /// A webhook URL the server will not post to.
    pub fn bad_webhook_url(url: &str, why: &str) -> Error {
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4225,
            format!("webhook URL `{url}`: {why}; give https://HOST/PATH, or http:// to a loopback address (127.0.0.1, [::1], localhost)"),
        )
    }

    /// An organisation that holds as many webhooks as it may.
    pub fn webhook_limit(limit: usize) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4098,
            format!("the organisation has {limit} webhooks, the most it may: remove one first (`tcp-redirs webhooks remove ID`)"),
        )
    }

    /// A node that cannot be forgotten: its lease holds.
    pub fn node_alive(name: &str) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4097,
            format!("node `{name}` is up (its lease in the store holds): forget only a node that is gone for good; stop it first, and its lease lapses after its --node-ttl"),
        )
    }

    /// An organisation at its redirection quota.
    pub fn quota_reached(quota: u32) -> Error {
        Error::new(
            StatusCode::CONFLICT,
            4094,
            format!("this organisation holds its quota of {quota} redirections: remove one first, or ask the operator to raise max_redirections_per_org"),
        )
    }

    /// A method the route does not take.
    pub fn method_not_allowed() -> Error {
        Error::new(StatusCode::METHOD_NOT_ALLOWED, 4050, "method not allowed on this route")
    }

    /// A failure of the server itself (the store could not be read or written). The cause
    /// (a file path, an SQL error, a cause chain) goes to the server's log only, under a
    /// short id that the answer gives, so that the operator can find it and the client
    /// learns nothing of the server's insides.
    pub fn internal(err: anyhow::Error) -> Error {
        let id = incident_id();
        tracing::error!(incident = %id, error = format!("{err:#}"), "request failed");
        Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            5000,
            format!("the server could not complete the request, and nothing was changed: an internal error; the server's log has the details under {id}"),
        )
    }

    /// An instance address listed twice in one instance list (the document cannot say
    /// "unique by address", only "unique", hence 422 rather than 400).
    pub fn instance_twice(address: &str) -> Error {
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4220,
            format!("instance `{address}` is listed twice: list each address once"),
        )
    }

    /// A setting that a redirection of this protocol does not have (TCP and UDP share the
    /// document's body, hence 422 rather than 400).
    pub fn not_for(protocol: Protocol, setting: &str, why: &str) -> Error {
        let what = protocol.name().to_uppercase();
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4222,
            format!("`{setting}` is not a setting of a {what} redirection ({why}): leave it out"),
        )
    }

    /// Health-check settings that do not hold together (a timeout longer than the
    /// interval, `send` without `expect`, a payload with a kind that sends none): the
    /// document states each field's bounds, not how they combine, hence 422.
    pub fn bad_health_check(why: &str) -> Error {
        Error::new(StatusCode::UNPROCESSABLE_ENTITY, 4224, format!("invalid health check: {why}"))
    }

    /// A `minPort`/`maxPort` sub-range outside the namespace's range, or upside down.
    pub fn bad_sub_range(min: u16, max: u16, namespace: &str, ns_min: u16, ns_max: u16) -> Error {
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4223,
            format!("minPort {min} to maxPort {max} is not a range within namespace `{namespace}`'s {ns_min}-{ns_max}: give a minPort at most maxPort, both in that range, or neither"),
        )
    }

    /// A port asked for that is outside the namespace's range (the range is the operator's
    /// setting, not part of the document, hence 422 rather than 400).
    pub fn port_outside_range(port: u16, namespace: &str, min: u16, max: u16) -> Error {
        Error::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            4221,
            format!("port {port} is outside namespace `{namespace}`'s range {min}-{max}: ask for a port in it, or none for a random one"),
        )
    }
}

/// A short id for an internal error, `err-` and 6 hex digits: random, so that the ids of
/// several nodes and restarts do not collide in a shared log.
fn incident_id() -> String {
    format!("err-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

impl Error {
    /// The store cannot be reached: nothing was changed, and forwarding goes on. The answer
    /// names the kind of store; its address and the client library's error go to the log,
    /// under the id the answer gives.
    pub fn store_unavailable(store: &str, why: &str) -> Error {
        let id = incident_id();
        tracing::warn!(incident = %id, store, error = why, "a change was refused: the store is unavailable");
        let kind = store.split_whitespace().next().unwrap_or("store");
        Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            5030,
            format!("the store ({kind}) is unavailable, so nothing was changed; open ports keep forwarding and reads answer from this node's copy; retry once the store is back (the server's log says more under {id})"),
        )
    }

    /// The node has no descriptor left for a new port: it keeps serving the ports it has.
    pub fn out_of_descriptors(node: &str, limit: u64) -> Error {
        tracing::warn!(node, limit, "cannot listen on a new port: this node has reached its open-file limit; raise it (systemd: LimitNOFILE= in the unit; a shell: ulimit -Hn), or serve this namespace from another node (serve --namespaces)");
        Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            5031,
            format!("node `{node}` has reached its open-file limit ({limit} descriptors), so it cannot listen on a new port; nothing was changed and its ports keep forwarding; the operator raises the limit (one descriptor per port, two per connection) or serves the namespace from another node"),
        )
    }

    /// An upgrade's new process is not ready yet (it may be waiting for a store it cannot
    /// reach): the old process answers reads from its copy and refuses changes, which the
    /// new one could miss.
    pub fn handing_over() -> Error {
        Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            5032,
            "this node is handing over to a new process (an upgrade) that is not ready yet, so nothing was changed; open ports keep forwarding and reads answer from this node's copy; retry in a few seconds (the node's log says what the new process waits for)",
        )
    }

    /// A store failure that is not one of the conflicts the caller maps itself.
    pub fn from_store(store: &str, err: crate::server::state::store::StoreError) -> Error {
        use crate::server::state::store::StoreError;
        match err {
            StoreError::Unavailable(why) => Error::store_unavailable(store, &why),
            StoreError::Compacted => Error::store_unavailable(store, "its history was compacted"),
            StoreError::Other(e) => Error::internal(e.context(format!("store {store}"))),
            StoreError::Conflict(c) => {
                Error::internal(anyhow::anyhow!("unexpected store conflict in {store}: {c:?}"))
            }
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(err: anyhow::Error) -> Error {
        Error::internal(err)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ApiError { kind: "error".into(), id: self.id, message: self.message };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cause of an internal error stays in the log: the answer has only its id.
    #[test]
    fn an_internal_error_answers_an_id_and_no_detail() {
        let cause = anyhow::anyhow!("no such table: redirections")
            .context("INSERT INTO redirections failed")
            .context("store SQLite at /var/lib/tcp-redirs/tcp-redirs.db");
        let err = Error::internal(cause);
        assert_eq!((err.status, err.id), (StatusCode::INTERNAL_SERVER_ERROR, 5000));
        for detail in ["/var/lib", "SQLite", "INSERT", "no such table", "redirections"] {
            assert!(!err.message.contains(detail), "`{detail}` leaked into: {}", err.message);
        }
        let id = err.message.split(|c: char| c.is_whitespace() || c == ';').find(|w| w.starts_with("err-"));
        let id = id.unwrap_or_else(|| panic!("no err-… id in: {}", err.message));
        assert!(id.len() == 10 && id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_ne!(Error::internal(anyhow::anyhow!("x")).message, err.message, "each error has its own id");
    }

    /// A store that cannot be reached is named by its kind only, not its address.
    #[test]
    fn an_unavailable_store_is_named_by_its_kind() {
        let err =
            Error::store_unavailable("etcd at http://10.1.2.3:2379", "transport error: connection refused");
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.message.contains("(etcd)") && err.message.contains("err-"), "{}", err.message);
        assert!(!err.message.contains("10.1.2.3") && !err.message.contains("transport"), "{}", err.message);
    }
}
