//! The control API over HTTP/JSON: Clever's API v2 subset, plus organisations and applications.
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /v2/organisations` | the organisations the credential sees |
//! | `GET /v2/organisations/{org}/namespaces` | `[{"namespace":"cleverapps"}, …]` |
//! | `GET, POST /v2/organisations/{org}/applications` | applications; create one |
//! | `GET, DELETE /v2/organisations/{org}/applications/{app}` | one application; remove it |
//! | `GET, POST /v2/organisations/{org}/applications/{app}/tcpRedirs` | redirections; add one |
//! | `POST /v2/organisations/{org}/tcpRedirs` | adds many, of several applications (`apply`) |
//! | `DELETE /v2/organisations/{org}/applications/{app}/tcpRedirs/{port}?namespace=NS` | remove one |
//! | `PATCH /v2/organisations/{org}/applications/{app}/tcpRedirs/{port}?namespace=NS` | change its settings in place |
//! | `GET, POST …/applications/{app}/udpRedirs`, `DELETE, PATCH …/udpRedirs/{port}?namespace=NS` | the same for UDP |
//! | `GET /v2/nodes` | the gateway nodes sharing the store, up or down |
//! | `DELETE /v2/nodes/{node}` | forgets a node gone for good (admin) |
//! | `GET /v2/organisations/{org}/events`, `GET /v2/events` | the audit trail ([`super::events`]) |
//! | `GET, POST /v2/organisations/{org}/webhooks`, `DELETE …/webhooks/{id}` | webhooks ([`super::webhooks`]) |
//! | `GET /`, `/console.js`, `/console.css` | the web console ([`super::console`]), no credential |
//!
//! This file only translates HTTP to [`Gateway`] calls and back; every error, including a
//! body or a path the extractors reject, answers with the JSON error shape of
//! [`super::error`].

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Extension, Json, Router};
use serde::Deserialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{self, Caller};
use super::error::Error;
use super::events::{__path_all_events, __path_org_events, all_events, org_events};
use super::gateway::Gateway;
use super::webhooks::{
    __path_create_webhook, __path_list_webhooks, __path_remove_webhook, create_webhook, list_webhooks,
    remove_webhook,
};
use crate::wire::{
    ApiError, Application, ApplicationPatch, Instance, IssuedToken, NewApplication, NewInstance,
    NewOrganisation, NewTcpRedir, NewTcpRedirBatch, NewTcpRedirItem, NewToken, Node, Organisation, Protocol,
    SettingsPatch, TcpRedir, TcpRedirBatch, TokenInfo, MAX_BATCH_BODY,
};

/// The largest request body accepted; every body of this API is a few bytes.
const BODY_LIMIT: usize = 64 * 1024;

type Answer<T> = Result<Json<T>, Error>;
type Gw = State<Arc<Gateway>>;

/// The OpenAPI document's header; the paths come from the routes themselves, and
/// [`Contract`] adds what every operation shares once they are in.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tcp-redirs control API",
        description = "Clever Cloud's API v2 subset for TCP and UDP redirections, plus organisations, credentials and applications.\n\nThis document is the contract: every constraint the server checks on a request is stated here (patterns, ranges, lengths, enums), and the server accepts every request that the document allows (a refusal of a well-formed request is for the state it finds: 404, 409, 422) and refuses every request that it forbids (400). Request bodies refuse unknown fields (`additionalProperties: false`); answers may gain fields in later versions, which clients ignore. Every error answers the `ApiError` shape with a stable id. tests/openapi.rs holds the server to this document."
    ),
    security(("bearer" = []), ("oauthPlaintext" = [])),
    // Referred to by the batch's list, whose schema is built from wire.rs's constants.
    components(schemas(NewTcpRedirItem))
)]
struct ApiDoc;

/// What every operation shares, added to the document in one place: the credential
/// schemes, the error answers common to all operations, the path parameters' rules (the
/// constants of [`crate::wire`]), and the links from each creation to the operations on
/// what it created.
struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("`Authorization: Bearer TOKEN`, the token of a credential"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let oauth = HttpBuilder::new()
            .scheme(HttpAuthScheme::OAuth)
            .description(Some(
                "The OAuth 1.0a PLAINTEXT header the clever CLI sends: `Authorization: OAuth oauth_consumer_key=\"K\", oauth_token=\"TOKEN\", oauth_signature=\"CONSUMER_SECRET%26SECRET\"`; only TOKEN and SECRET are checked",
            ))
            .build();
        components.add_security_scheme("oauthPlaintext", SecurityScheme::Http(oauth));
        for body in ["NewTcpRedir", "NewTcpRedirItem"] {
            contract::close(components, body);
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (operation, writes) in operations {
                if let Some(operation) = operation.as_mut() {
                    contract::complete(operation, writes);
                }
            }
        }
    }
}

mod contract {
    //! The parts of [`super::Contract`].

    use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
    use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, Schema, Type};
    use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

    use crate::wire;

    /// Makes a body's schema one object that refuses unknown fields, as the server does:
    /// utoipa writes a struct with `#[serde(flatten)]` parts as an `allOf` of open objects,
    /// which would let a client send any field, and `additionalProperties: false` on one of
    /// them would refuse the others' fields.
    pub fn close(components: &mut Components, name: &str) {
        fn gather(components: &Components, schema: &RefOr<Schema>, into: &mut Object) {
            match schema {
                RefOr::Ref(r) => {
                    let name = r.ref_location.rsplit('/').next().unwrap_or_default();
                    if let Some(part) = components.schemas.get(name) {
                        gather(components, part, into);
                    }
                }
                RefOr::T(Schema::AllOf(all)) => {
                    all.items.iter().for_each(|part| gather(components, part, into))
                }
                RefOr::T(Schema::Object(part)) => {
                    into.properties.extend(part.properties.clone());
                    into.required.extend(part.required.iter().cloned());
                }
                RefOr::T(_) => {}
            }
        }
        let Some(schema) = components.schemas.get(name) else { return };
        let mut closed = Object::with_type(Type::Object);
        gather(components, schema, &mut closed);
        closed.description = match schema {
            RefOr::T(Schema::AllOf(all)) => all.description.clone(),
            RefOr::T(Schema::Object(object)) => object.description.clone(),
            _ => None,
        };
        closed.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        components.schemas.insert(name.to_owned(), RefOr::T(Schema::Object(closed)));
    }

    /// An error answer: the `ApiError` shape, with what it means.
    fn error(description: &str) -> RefOr<Response> {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build();
        ResponseBuilder::new().description(description).content("application/json", content).build().into()
    }

    /// Adds `status` unless the operation's own attribute declared it (with its own words).
    fn add(operation: &mut Operation, status: &str, description: &str) {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description));
    }

    /// Puts the rules of the path and query parameters, and the error answers every
    /// operation shares, into one operation.
    pub fn complete(operation: &mut Operation, writes: bool) {
        let mut checked_params = false;
        let mut port = false;
        for param in operation.parameters.iter_mut().flatten() {
            checked_params |= rule(param);
            port |= param.name == "port";
        }
        if operation.request_body.is_some() && port {
            add(operation, "400", "4001: the body is not JSON of the documented shape (a field of the wrong type, out of range, not matching its pattern, unknown, or missing), or no `Content-Type: application/json`; 4000: a value breaks a documented rule (a name or address pattern), the path is not valid UTF-8, or the query is invalid (a missing or invalid namespace); 4002: the port is not a number from 1 to 65535");
            add(operation, "413", "4130: the body is over 64 KiB");
        } else if operation.request_body.is_some() {
            add(operation, "400", "4001: the body is not JSON of the documented shape (a field of the wrong type, out of range, not matching its pattern, unknown, or missing), or no `Content-Type: application/json`; 4000: a value breaks a documented rule (a name or address pattern)");
            add(operation, "413", "4130: the body is over 64 KiB");
        } else if checked_params {
            add(operation, "400", "4000: the path is not valid UTF-8, or the query is invalid (a missing or invalid namespace); 4002: the port is not a number from 1 to 65535");
        }
        add(operation, "401", "4010: no credential; 4011: a credential the server does not know, revoked, or with a wrong secret");
        add(
            operation,
            "429",
            "4290: too many failed authentications from this address; wait the time the message says",
        );
        add(operation, "500", "5000: the server failed (its store could not be read or written); nothing was changed; the message gives the id under which the server's log has the details");
        if writes {
            add(
                operation,
                "503",
                "5030: the store (etcd) cannot be reached; 5032: the node is handing over to a new process (an upgrade) that has not been ready for 2 s; either way nothing was changed and forwarding goes on: retry",
            );
        }
    }

    /// The rule of a parameter, by its name; whether the server may refuse it with 400 (an
    /// id that does not match its pattern is only not found, but a path that is not UTF-8
    /// is refused).
    fn rule(param: &mut Parameter) -> bool {
        let (schema, checked) = match (param.name.as_str(), &param.parameter_in) {
            ("org", ParameterIn::Path) => (id(wire::ORG_ID_PATTERN, "orga_"), true),
            ("app", ParameterIn::Path) => (id(wire::APP_ID_PATTERN, "app_"), true),
            ("token", ParameterIn::Path) => (id(wire::TOKEN_ID_PATTERN, "tok_"), true),
            ("port", ParameterIn::Path) => (
                ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(65535)).into(),
                true,
            ),
            ("namespace", ParameterIn::Query) => (wire::schema::namespace(), true),
            _ => return false,
        };
        param.schema = Some(RefOr::T(schema));
        checked
    }

    /// An id the server issued; one that does not match is not found (404) like any other
    /// unknown id.
    fn id(pattern: &str, prefix: &str) -> utoipa::openapi::Schema {
        wire::schema::string(
            pattern,
            &format!("`{prefix}` and a UUID, as the server issued it; any other value is not found (404)"),
        )
    }

    /// A link: from an operation, to an operation, with the parameters' runtime expressions.
    type Link<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    /// Links from each creation to the operations on what it created, so that a tool can
    /// chain calls (create, then read, change and remove it). Written into the JSON form of
    /// the document: utoipa 5's `Link` serializes `operation_id` where OpenAPI says
    /// `operationId`.
    pub fn link(doc: &mut serde_json::Value) {
        let org = ("org", "$request.path.org");
        let app = ("app", "$request.path.app");
        let new_org = ("org", "$response.body#/id");
        let new_app = ("app", "$response.body#/id");
        let links: [Link; 17] = [
            ("createOrganisation", "listApplications", &[new_org]),
            ("createOrganisation", "createApplication", &[new_org]),
            ("createOrganisation", "listNamespaces", &[new_org]),
            ("createOrganisation", "issueToken", &[new_org]),
            ("issueToken", "revokeToken", &[org, ("token", "$response.body#/id")]),
            ("createApplication", "getApplication", &[org, new_app]),
            ("createApplication", "setInstances", &[org, new_app]),
            ("createApplication", "updateApplication", &[org, new_app]),
            ("createApplication", "listTcpRedirs", &[org, new_app]),
            ("createApplication", "addTcpRedir", &[org, new_app]),
            ("createApplication", "removeApplication", &[org, new_app]),
            ("createApplication", "listUdpRedirs", &[org, new_app]),
            ("createApplication", "addUdpRedir", &[org, new_app]),
            ("addTcpRedir", "listTcpRedirs", &[org, app]),
            (
                "addTcpRedir",
                "removeTcpRedir",
                &[org, app, ("port", "$response.body#/port"), ("namespace", "$response.body#/namespace")],
            ),
            ("addUdpRedir", "listUdpRedirs", &[org, app]),
            (
                "addUdpRedir",
                "removeUdpRedir",
                &[org, app, ("port", "$response.body#/port"), ("namespace", "$response.body#/namespace")],
            ),
        ];
        let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
        for operation in paths.values_mut().filter_map(|item| item.get_mut("post")) {
            let Some(from) = operation["operationId"].as_str().map(str::to_owned) else { continue };
            let Some(created) = operation.pointer_mut("/responses/201").and_then(|r| r.as_object_mut())
            else {
                continue;
            };
            let mut map = serde_json::Map::new();
            for (_, to, parameters) in links.iter().filter(|(f, _, _)| *f == from) {
                let parameters: serde_json::Map<_, _> = parameters
                    .iter()
                    .map(|(name, value)| (name.to_string(), serde_json::json!(value)))
                    .collect();
                let mut link = serde_json::json!({"operationId": to, "parameters": parameters});
                // A redirection of the new application is made in a namespace that exists
                // by default: a tool that follows the link with a namespace of its own
                // invention would get 404 (4043) and take it for the application not found.
                if to.starts_with("add") && to.ends_with("Redir") {
                    link["requestBody"] = serde_json::json!({"namespace": "default"});
                }
                map.insert(to.to_string(), link);
            }
            if !map.is_empty() {
                created.insert("links".into(), serde_json::Value::Object(map));
            }
        }
    }
}

/// The API's routes, authenticated against the node's table, `/openapi.json` describing them,
/// and the web console's files.
///
/// Every route is registered through [`routes!`], which also enters it in the OpenAPI
/// document: a route cannot exist without being documented.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let auth = Arc::new(auth::Auth::new(gateway.synced().clone(), gateway.node().to_owned()));
    let (routes, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(organisations, create_org))
        .routes(routes!(tokens, issue_token))
        .routes(routes!(revoke_token))
        .routes(routes!(metrics))
        .routes(routes!(nodes))
        .routes(routes!(forget_node))
        .routes(routes!(org_events))
        .routes(routes!(all_events))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(remove_webhook))
        .routes(routes!(namespaces))
        .routes(routes!(apps, create_app))
        .routes(routes!(app, remove_app, update_app))
        .routes(routes!(set_instances))
        .routes(routes!(redirs, add))
        .routes(routes!(remove, update))
        .routes(routes!(udp_redirs, add_udp))
        .routes(routes!(remove_udp, update_udp))
        // A batch is larger than any other body: its own limit, inside the common one.
        .merge(OpenApiRouter::new().routes(routes!(add_many)).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)))
        .split_for_parts();
    // After the routes: the contract completes their operations.
    let mut doc = doc;
    utoipa::Modify::modify(&Contract, &mut doc);
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    contract::link(&mut doc);
    let doc = Arc::new(doc);
    routes
        .route_layer(middleware::from_fn_with_state(auth, auth::require))
        .route("/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        // The web console's page and files: no credential (they hold no data), and not API
        // operations, so added after the documented routes and their authentication.
        .merge(super::console::router())
        .fallback(|uri: Uri| async move { Error::no_route(uri.path()) })
        .method_not_allowed_fallback(|| async { Error::method_not_allowed() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(gateway)
}

#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "operations", responses((status = 200, description = "OpenMetrics text, admin only", content_type = "application/openmetrics-text", body = String), (status = 404, description = "4040: only the admin sees this route", body = ApiError)))]
/// The metrics, for the admin only: they name every organisation's applications.
async fn metrics(State(gw): Gw, Extension(caller): Extension<Caller>) -> Result<impl IntoResponse, Error> {
    if caller != Caller::Admin {
        return Err(Error::no_route("/metrics"));
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], gw.metrics_text()))
}

#[utoipa::path(get, path = "/v2/nodes", operation_id = "listNodes", tag = "operations", responses((status = 200, body = Vec<Node>)))]
/// The gateway nodes serving this server's store: one for a single server, the fleet for etcd.
async fn nodes(State(gw): Gw) -> Answer<Vec<Node>> {
    Ok(Json(gw.nodes().await?))
}

#[utoipa::path(delete, path = "/v2/nodes/{node}", operation_id = "forgetNode", tag = "operations", params(("node" = String, Path, description = "the node's name (`serve --node`)")), responses((status = 200, description = "the node as it was listed, now forgotten", body = Node), (status = 403, description = "4030: only the server's admin may do this", body = ApiError), (status = 404, description = "4046: no such node", body = ApiError), (status = 409, description = "4097: the node is up (its lease holds)", body = ApiError), (status = 503, description = "5030: the store cannot be reached", body = ApiError)))]
/// Forgets a node that is gone for good (admin), so that no quarantined port waits for it
/// any more; refused while the node is up.
async fn forget_node(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(node): Params<String>,
) -> Answer<Node> {
    Ok(Json(gw.forget_node(&caller, &node).await?))
}

#[utoipa::path(get, path = "/v2/organisations", operation_id = "listOrganisations", tag = "organisations", responses((status = 200, body = Vec<Organisation>)))]
async fn organisations(State(gw): Gw, Extension(caller): Extension<Caller>) -> Answer<Vec<Organisation>> {
    Ok(Json(gw.orgs(&caller).await?))
}

#[utoipa::path(post, path = "/v2/organisations", operation_id = "createOrganisation", tag = "organisations", request_body = NewOrganisation, responses((status = 201, body = Organisation), (status = 403, description = "4030: only the server's admin may do this", body = ApiError), (status = 409, description = "4093: an organisation of that name exists", body = ApiError)))]
async fn create_org(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewOrganisation>, JsonRejection>,
) -> Result<(StatusCode, Json<Organisation>), Error> {
    let Json(new) = body.map_err(|e| body_error(e, r#"{"name":"acme"}"#))?;
    Ok((StatusCode::CREATED, Json(gw.create_org(&caller, new).await?)))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/tokens", operation_id = "listTokens", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, body = Vec<TokenInfo>), (status = 403, description = "4030: only the server's admin may do this", body = ApiError), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError)))]
async fn tokens(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(org): Params<String>,
) -> Answer<Vec<TokenInfo>> {
    Ok(Json(gw.tokens(&caller, &org).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/tokens", operation_id = "issueToken", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…")), request_body = NewToken, responses((status = 201, body = IssuedToken), (status = 403, description = "4030: only the server's admin may do this", body = ApiError), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError)))]
async fn issue_token(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(org): Params<String>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), Error> {
    let Json(new) = body.map_err(|e| body_error(e, r#"{"name":"ci"}"#))?;
    Ok((StatusCode::CREATED, Json(gw.issue_token(&caller, &org, new).await?)))
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/tokens/{token}", operation_id = "revokeToken", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…"), ("token" = String, Path, description = "the credential, tok_…")), responses((status = 200, body = TokenInfo), (status = 403, description = "4030: only the server's admin may do this", body = ApiError), (status = 404, description = "4041: no such organisation; 4045: no such credential in it", body = ApiError)))]
async fn revoke_token(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, token)): Params<(String, String)>,
) -> Answer<TokenInfo> {
    Ok(Json(gw.revoke_token(&caller, &org, &token).await?))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/namespaces", operation_id = "listNamespaces", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, body = Vec<crate::wire::Namespace>), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError)))]
async fn namespaces(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(org): Params<String>,
) -> Answer<Vec<crate::wire::Namespace>> {
    Ok(Json(gw.namespaces(&caller, &org).await?))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications", operation_id = "listApplications", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, body = Vec<Application>), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError)))]
async fn apps(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(org): Params<String>,
) -> Answer<Vec<Application>> {
    Ok(Json(gw.apps(&caller, &org).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/applications", operation_id = "createApplication", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…")), request_body = NewApplication, responses((status = 201, body = Application), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError), (status = 409, description = "4091: an application of that name exists in the organisation", body = ApiError), (status = 422, description = "4220: an instance address is listed twice; 4224: health-check settings that do not hold together (as `updateApplication` says)", body = ApiError)))]
async fn create_app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(org): Params<String>,
    body: Result<Json<NewApplication>, JsonRejection>,
) -> Result<(StatusCode, Json<Application>), Error> {
    let Json(new) =
        body.map_err(|e| body_error(e, r#"{"name":"my-db","instances":[{"address":"127.0.0.1:4040"}]}"#))?;
    Ok((StatusCode::CREATED, Json(gw.create_app(&caller, &org, new).await?)))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications/{app}", operation_id = "getApplication", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, body = Application), (status = 404, description = "4041: no such organisation; 4042: no such application in it", body = ApiError)))]
async fn app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
) -> Answer<Application> {
    Ok(Json(gw.app(&caller, &org, &app).await?))
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/applications/{app}", operation_id = "removeApplication", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, body = Application), (status = 404, description = "4041: no such organisation; 4042: no such application in it", body = ApiError)))]
async fn remove_app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
) -> Answer<Application> {
    Ok(Json(gw.remove_app(&caller, &org, &app).await?))
}

#[utoipa::path(patch, path = "/v2/organisations/{org}/applications/{app}", operation_id = "updateApplication", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), request_body(content = ApplicationPatch, description = "the settings to change: in `healthCheck`, a key absent keeps its setting, `null` unsets it (the node's `[health_checks]` is in force again), a value sets it. Every node's checks of the application's instances follow when the call answers; its ports, connections and instances stay"), responses((status = 200, description = "the application with its own settings now", body = Application), (status = 404, description = "4041: no such organisation; 4042: no such application in it", body = ApiError), (status = 422, description = "4224: health-check settings that do not hold together (a timeout longer than the interval, the node's filling in what the application leaves out; `send` without `expect`; a payload with a kind other than `expect`)", body = ApiError)))]
/// Changes an application's settings in place.
async fn update_app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
    body: Result<Json<ApplicationPatch>, JsonRejection>,
) -> Answer<Application> {
    let Json(patch) = body.map_err(|e| body_error(e, r#"{"healthCheck":{"intervalMs":1000}}"#))?;
    Ok(Json(gw.update_app(&caller, &org, &app, &patch).await?))
}

#[utoipa::path(put, path = "/v2/organisations/{org}/applications/{app}/instances", operation_id = "setInstances", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), request_body(content = Vec<NewInstance>, description = "the new instance list: at most 64, each address once"), responses((status = 200, body = Application), (status = 404, description = "4041: no such organisation; 4042: no such application in it", body = ApiError), (status = 422, description = "4220: an instance address is listed twice", body = ApiError)))]
async fn set_instances(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
    body: Result<Json<Vec<NewInstance>>, JsonRejection>,
) -> Answer<Application> {
    let Json(instances) = body.map_err(|e| body_error(e, r#"[{"address":"127.0.0.1:4040","weight":1}]"#))?;
    let instances = instances.into_iter().map(Instance::from).collect();
    Ok(Json(gw.set_instances(&caller, &org, &app, instances).await?))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs", operation_id = "listTcpRedirs", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, body = Vec<TcpRedir>), (status = 404, description = "4041: no such organisation; 4042: no such application in it", body = ApiError)))]
async fn redirs(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
) -> Answer<Vec<TcpRedir>> {
    Ok(Json(gw.redirs(&caller, &org, &app, Protocol::Tcp).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs", operation_id = "addTcpRedir", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), request_body = NewTcpRedir, responses((status = 201, body = TcpRedir), (status = 404, description = "4041: no such organisation; 4042: no such application; 4043: no such namespace for this organisation", body = ApiError), (status = 409, description = "4090: the application has a TCP redirection in this namespace; 4092: no free port; 4094: the organisation holds its quota; 4095: the port asked for is taken; 4096: the port asked for was freed by another application's removal that some nodes have not confirmed (the message names them); 4243: a port of the range asked for is taken (the message names it; none of the range was taken)", body = ApiError), (status = 422, description = "4221: the port asked for is outside the namespace's range (or minPort-maxPort); 4222: a setting TCP does not have (proxyProtocol v2-every, maxDatagramsPerSecond); 4223: minPort-maxPort is not within the namespace's range; 4240: more ports than this server's store takes in one range (1000; a fleet on etcd: 50); 4242: the range does not fit in the namespace's range (or minPort-maxPort)", body = ApiError)))]
async fn add(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
    body: Result<Json<NewTcpRedir>, JsonRejection>,
) -> Result<(StatusCode, Json<TcpRedir>), Error> {
    add_one(gw, caller, org, app, Protocol::Tcp, body).await
}

/// A redirection of either protocol: the bodies and answers are the same.
async fn add_one(
    gw: Arc<Gateway>,
    caller: Caller,
    org: String,
    app: String,
    protocol: Protocol,
    body: Result<Json<NewTcpRedir>, JsonRejection>,
) -> Result<(StatusCode, Json<TcpRedir>), Error> {
    let Json(new) = body.map_err(|e| body_error(e, r#"{"namespace":"default"}"#))?;
    Ok((StatusCode::CREATED, Json(gw.add(&caller, &org, &app, protocol, &new).await?)))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications/{app}/udpRedirs", operation_id = "listUdpRedirs", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, description = "the application's UDP redirections, in the TCP ones' shape with `\"protocol\":\"udp\"`; `activeConnections` and `connections` count flows", body = Vec<TcpRedir>), (status = 404, description = "4041: no such organisation; 4042: no such application in it", body = ApiError)))]
async fn udp_redirs(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
) -> Answer<Vec<TcpRedir>> {
    Ok(Json(gw.redirs(&caller, &org, &app, Protocol::Udp).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/applications/{app}/udpRedirs", operation_id = "addUdpRedir", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), request_body(content = NewTcpRedir, description = "as for `addTcpRedir`; on UDP, `idleTimeout` ends a flow, `maxConnections` caps the open flows (10,000 by default), `maxConnectionsPerSecond` the new flows, and `proxyProtocol` is `v2` (a header in front of a flow's first datagram) or `v2-every`, `maxDatagramsPerSecond` caps each client address's datagrams, `maxConnectionsPerClient` and `maxConnectionsPerSecondPerClient` its flows; `bandwidthLimit` is TCP's alone"), responses((status = 201, body = TcpRedir), (status = 404, description = "4041: no such organisation; 4042: no such application; 4043: no such namespace for this organisation", body = ApiError), (status = 409, description = "4090: the application has a UDP redirection in this namespace; 4092: no free port; 4094: the organisation holds its quota (TCP and UDP count alike); 4095: the port asked for is taken; 4096: the port asked for was freed by another application's removal that some nodes have not confirmed (the message names them)", body = ApiError), (status = 422, description = "4221: the port asked for is outside the namespace's range (or minPort-maxPort); 4222: a setting UDP does not have (connectTimeout, halfCloseTimeout, proxyProtocol v1, bandwidthLimit); 4223: minPort-maxPort is not within the namespace's range; 4241: a range of ports (`ports` above 1): UDP redirections take one port each", body = ApiError)))]
async fn add_udp(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app)): Params<(String, String)>,
    body: Result<Json<NewTcpRedir>, JsonRejection>,
) -> Result<(StatusCode, Json<TcpRedir>), Error> {
    add_one(gw, caller, org, app, Protocol::Udp, body).await
}

#[utoipa::path(post, path = "/v2/organisations/{org}/tcpRedirs", operation_id = "addTcpRedirs", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…")), request_body(content = NewTcpRedirBatch, description = "up to 1000 redirections of the organisation's applications (an item with `\"protocol\":\"udp\"` is a UDP one, as `addUdpRedir` makes it); one that breaks a rule of this document refuses the whole batch (400) and nothing is made"), responses((status = 200, description = "one outcome per redirection asked, in order: `redirection` when it was made (as `addTcpRedir` answers it), else `error` with what `addTcpRedir` would have answered: 4042 no such application, 4043 no such namespace, 4090 the application has one there, 4092 no free port, 4094 the quota, 4095 the port asked for is taken, 4096 the port asked for is in quarantine, 4221 outside the namespace's range, 4222 a setting the protocol does not have, 4223 minPort-maxPort outside the namespace's range, 4240 a range too large for the store, 4241 a UDP range, 4242 a range that does not fit in the namespace's range, 4243 a port of the range asked for is taken, 5030 the store was lost midway", body = TcpRedirBatch), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError), (status = 413, description = "4130: the body is over 1 MiB", body = ApiError)))]
/// Adds many redirections at once, each made or refused on its own: one store write, and
/// one wait for the ports, per batch.
async fn add_many(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params(org): Params<String>,
    body: Result<Json<NewTcpRedirBatch>, JsonRejection>,
) -> Answer<TcpRedirBatch> {
    let expected = r#"{"redirections":[{"application":"app_…","namespace":"default"}]}"#;
    let Json(batch) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::body_too_large(MAX_BATCH_BODY),
        _ => Error::bad_body(e.body_text(), expected),
    })?;
    Ok(Json(TcpRedirBatch { redirections: gw.add_many(&caller, &org, &batch.redirections).await? }))
}

/// The query of `DELETE` and `PATCH …/tcpRedirs/{port}`.
#[derive(Deserialize)]
struct RemoveQuery {
    namespace: Option<String>,
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}", operation_id = "removeTcpRedir", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…"), ("port" = u16, Path, description = "the public port"), ("namespace" = String, Query, description = "the namespace of the port")), responses((status = 200, body = TcpRedir), (status = 404, description = "4041: no such organisation; 4042: no such application; 4043: no such namespace; 4044: no redirection of this application on this port; 4244: the port is inside one of the application's ranges, which its first port names", body = ApiError)))]
async fn remove(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app, port)): Params<(String, String, String)>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Answer<TcpRedir> {
    remove_one(gw, caller, org, app, Protocol::Tcp, port, query).await
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/applications/{app}/udpRedirs/{port}", operation_id = "removeUdpRedir", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…"), ("port" = u16, Path, description = "the public port"), ("namespace" = String, Query, description = "the namespace of the port")), responses((status = 200, body = TcpRedir), (status = 404, description = "4041: no such organisation; 4042: no such application; 4043: no such namespace; 4044: no UDP redirection of this application on this port; 4244: the port is inside one of the application's ranges, which its first port names", body = ApiError)))]
async fn remove_udp(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app, port)): Params<(String, String, String)>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Answer<TcpRedir> {
    remove_one(gw, caller, org, app, Protocol::Udp, port, query).await
}

/// Removes a redirection of either protocol.
async fn remove_one(
    gw: Arc<Gateway>,
    caller: Caller,
    org: String,
    app: String,
    protocol: Protocol,
    port: String,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Answer<TcpRedir> {
    let (port, namespace) = port_and_namespace(&port, query)?;
    Ok(Json(gw.remove(&caller, &org, &app, protocol, &namespace, port).await?))
}

#[utoipa::path(patch, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}", operation_id = "updateTcpRedir", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…"), ("port" = u16, Path, description = "the public port"), ("namespace" = String, Query, description = "the namespace of the port")), request_body(content = SettingsPatch, description = "the settings to change: a key absent keeps its setting, `null` unsets it (the namespace's is in force again), a value sets it; `allow` and `deny` replace the list. The port, its application and its open connections stay; new connections get the new settings on every node when the call answers"), responses((status = 200, description = "the redirection with the settings now in force", body = TcpRedir), (status = 404, description = "4041: no such organisation; 4042: no such application; 4043: no such namespace; 4044: no redirection of this application on this port", body = ApiError), (status = 422, description = "4222: a setting TCP does not have (proxyProtocol v2-every, maxDatagramsPerSecond)", body = ApiError)))]
/// Changes a TCP redirection's settings in place.
async fn update(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app, port)): Params<(String, String, String)>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
    body: Result<Json<SettingsPatch>, JsonRejection>,
) -> Answer<TcpRedir> {
    update_one(gw, caller, org, app, Protocol::Tcp, port, query, body).await
}

#[utoipa::path(patch, path = "/v2/organisations/{org}/applications/{app}/udpRedirs/{port}", operation_id = "updateUdpRedir", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…"), ("port" = u16, Path, description = "the public port"), ("namespace" = String, Query, description = "the namespace of the port")), request_body(content = SettingsPatch, description = "as for `updateTcpRedir`; open flows keep what they started with, new flows get the new settings"), responses((status = 200, description = "the redirection with the settings now in force", body = TcpRedir), (status = 404, description = "4041: no such organisation; 4042: no such application; 4043: no such namespace; 4044: no UDP redirection of this application on this port; 4244: the port is inside one of the application's ranges, which its first port names", body = ApiError), (status = 422, description = "4222: a setting UDP does not have (connectTimeout, halfCloseTimeout, proxyProtocol v1, bandwidthLimit)", body = ApiError)))]
/// Changes a UDP redirection's settings in place.
async fn update_udp(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Params((org, app, port)): Params<(String, String, String)>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
    body: Result<Json<SettingsPatch>, JsonRejection>,
) -> Answer<TcpRedir> {
    update_one(gw, caller, org, app, Protocol::Udp, port, query, body).await
}

/// Changes the settings of a redirection of either protocol.
#[allow(clippy::too_many_arguments)]
async fn update_one(
    gw: Arc<Gateway>,
    caller: Caller,
    org: String,
    app: String,
    protocol: Protocol,
    port: String,
    query: Result<Query<RemoveQuery>, QueryRejection>,
    body: Result<Json<SettingsPatch>, JsonRejection>,
) -> Answer<TcpRedir> {
    let (port, namespace) = port_and_namespace(&port, query)?;
    let Json(patch) = body.map_err(|e| body_error(e, r#"{"idleTimeout":600}"#))?;
    Ok(Json(gw.update(&caller, &org, &app, protocol, &namespace, port, &patch).await?))
}

/// The port of a path and the namespace of its query, or the error that says what to fix.
fn port_and_namespace(
    port: &str,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Result<(u16, String), Error> {
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(Error::bad_port(port)),
    };
    let Query(query) = query.map_err(|e| Error::bad_request(format!("invalid query: {}", e.body_text())))?;
    let namespace = query.namespace.ok_or_else(|| {
        Error::bad_request(
            "missing namespace: add `?namespace=NAME` to the URL, for example ?namespace=default",
        )
    })?;
    Ok((port, namespace))
}

/// A request's path parameters, like axum's [`Path`], but a path it cannot decode (not
/// UTF-8 once percent-decoded) answers the JSON error shape, not axum's plain text.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Error> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(Params(params)),
            Err(rejection) => Err(Error::bad_request(format!("invalid path: {}", rejection.body_text()))),
        }
    }
}

/// A body the JSON extractor refused: too large (413), or not the expected JSON (400).
fn body_error(rejection: JsonRejection, expected: &str) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::body_too_large(BODY_LIMIT)
    } else {
        Error::bad_body(rejection.body_text(), expected)
    }
}
