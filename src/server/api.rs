//! The control API over HTTP/JSON: Clever's API v2 subset, plus organisations and applications.
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /v2/organisations` | the organisations the credential sees |
//! | `GET /v2/organisations/{org}/namespaces` | `[{"namespace":"cleverapps"}, …]` |
//! | `GET, POST /v2/organisations/{org}/applications` | applications; create one |
//! | `GET, DELETE /v2/organisations/{org}/applications/{app}` | one application; remove it |
//! | `GET, POST /v2/organisations/{org}/applications/{app}/tcpRedirs` | redirections; add one |
//! | `DELETE /v2/organisations/{org}/applications/{app}/tcpRedirs/{port}?namespace=NS` | remove one |
//! | `GET /v2/nodes` | the gateway nodes sharing the store, up or down |
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
use super::gateway::Gateway;
use crate::wire::{
    ApiError, Application, Instance, IssuedToken, NewApplication, NewOrganisation, NewTcpRedir, NewToken,
    Node, Organisation, TcpRedir, TokenInfo,
};

/// The largest request body accepted; every body of this API is a few bytes.
const BODY_LIMIT: usize = 64 * 1024;

type Answer<T> = Result<Json<T>, Error>;
type Gw = State<Arc<Gateway>>;

/// The OpenAPI document's header; the paths come from the routes themselves.
#[derive(OpenApi)]
#[openapi(
    info(title = "tcp-redirs control API", description = "Clever Cloud's API v2 subset for TCP redirections, plus organisations, credentials and applications."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API's routes, authenticated against the node's table, `/openapi.json` describing them,
/// and the web console's files.
///
/// Every route is registered through [`routes!`], which also enters it in the OpenAPI
/// document: a route cannot exist without being documented.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let auth = Arc::new(auth::Auth::new(gateway.synced().clone()));
    let (routes, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(organisations, create_org))
        .routes(routes!(tokens, issue_token))
        .routes(routes!(revoke_token))
        .routes(routes!(metrics))
        .routes(routes!(nodes))
        .routes(routes!(namespaces))
        .routes(routes!(apps, create_app))
        .routes(routes!(app, remove_app))
        .routes(routes!(set_instances))
        .routes(routes!(redirs, add))
        .routes(routes!(remove))
        .split_for_parts();
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

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "OpenMetrics text, admin only", content_type = "application/openmetrics-text"), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
/// The metrics, for the admin only: they name every organisation's applications.
async fn metrics(State(gw): Gw, Extension(caller): Extension<Caller>) -> Result<impl IntoResponse, Error> {
    if caller != Caller::Admin {
        return Err(Error::no_route("/metrics"));
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], gw.metrics_text()))
}

#[utoipa::path(get, path = "/v2/nodes", tag = "operations", responses((status = 200, body = Vec<Node>), (status = 401, body = ApiError)))]
/// The gateway nodes serving this server's store: one for a single server, the fleet for etcd.
async fn nodes(State(gw): Gw) -> Answer<Vec<Node>> {
    Ok(Json(gw.nodes().await?))
}

#[utoipa::path(get, path = "/v2/organisations", tag = "organisations", responses((status = 200, body = Vec<Organisation>), (status = 401, body = ApiError)))]
async fn organisations(State(gw): Gw, Extension(caller): Extension<Caller>) -> Answer<Vec<Organisation>> {
    Ok(Json(gw.orgs(&caller).await?))
}

#[utoipa::path(post, path = "/v2/organisations", tag = "organisations", request_body = NewOrganisation, responses((status = 201, body = Organisation), (status = 403, body = ApiError), (status = 409, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn create_org(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewOrganisation>, JsonRejection>,
) -> Result<(StatusCode, Json<Organisation>), Error> {
    let Json(new) = body.map_err(|e| body_error(e, r#"{"name":"acme"}"#))?;
    Ok((StatusCode::CREATED, Json(gw.create_org(&caller, new).await?)))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/tokens", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, body = Vec<TokenInfo>), (status = 403, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn tokens(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Answer<Vec<TokenInfo>> {
    Ok(Json(gw.tokens(&caller, &org).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/tokens", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…")), request_body = NewToken, responses((status = 201, body = IssuedToken), (status = 403, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn issue_token(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), Error> {
    let Json(new) = body.map_err(|e| body_error(e, r#"{"name":"ci"}"#))?;
    Ok((StatusCode::CREATED, Json(gw.issue_token(&caller, &org, new).await?)))
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/tokens/{token}", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…"), ("token" = String, Path, description = "the credential, tok_…")), responses((status = 200, body = TokenInfo), (status = 403, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn revoke_token(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, token)): Path<(String, String)>,
) -> Answer<TokenInfo> {
    Ok(Json(gw.revoke_token(&caller, &org, &token).await?))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/namespaces", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, body = Vec<crate::wire::Namespace>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn namespaces(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Answer<Vec<crate::wire::Namespace>> {
    Ok(Json(gw.namespaces(&caller, &org).await?))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, body = Vec<Application>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn apps(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Answer<Vec<Application>> {
    Ok(Json(gw.apps(&caller, &org).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/applications", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…")), request_body = NewApplication, responses((status = 201, body = Application), (status = 409, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn create_app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    body: Result<Json<NewApplication>, JsonRejection>,
) -> Result<(StatusCode, Json<Application>), Error> {
    let Json(new) =
        body.map_err(|e| body_error(e, r#"{"name":"my-db","instances":[{"address":"127.0.0.1:4040"}]}"#))?;
    Ok((StatusCode::CREATED, Json(gw.create_app(&caller, &org, new).await?)))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications/{app}", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, body = Application), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, app)): Path<(String, String)>,
) -> Answer<Application> {
    Ok(Json(gw.app(&caller, &org, &app).await?))
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/applications/{app}", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, body = Application), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn remove_app(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, app)): Path<(String, String)>,
) -> Answer<Application> {
    Ok(Json(gw.remove_app(&caller, &org, &app).await?))
}

#[utoipa::path(put, path = "/v2/organisations/{org}/applications/{app}/instances", tag = "applications", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), request_body = Vec<Instance>, responses((status = 200, body = Application), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn set_instances(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, app)): Path<(String, String)>,
    body: Result<Json<Vec<Instance>>, JsonRejection>,
) -> Answer<Application> {
    let Json(instances) = body.map_err(|e| body_error(e, r#"[{"address":"127.0.0.1:4040","weight":1}]"#))?;
    Ok(Json(gw.set_instances(&caller, &org, &app, instances).await?))
}

#[utoipa::path(get, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), responses((status = 200, body = Vec<TcpRedir>), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn redirs(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, app)): Path<(String, String)>,
) -> Answer<Vec<TcpRedir>> {
    Ok(Json(gw.redirs(&caller, &org, &app).await?))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…")), request_body = NewTcpRedir, responses((status = 201, body = TcpRedir), (status = 409, body = ApiError), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn add(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, app)): Path<(String, String)>,
    body: Result<Json<NewTcpRedir>, JsonRejection>,
) -> Result<(StatusCode, Json<TcpRedir>), Error> {
    let Json(new) = body.map_err(|e| body_error(e, r#"{"namespace":"default"}"#))?;
    Ok((StatusCode::CREATED, Json(gw.add(&caller, &org, &app, &new).await?)))
}

/// The query of `DELETE …/tcpRedirs/{port}`.
#[derive(Deserialize)]
struct RemoveQuery {
    namespace: Option<String>,
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}", tag = "clever", params(("org" = String, Path, description = "the organisation, orga_…"), ("app" = String, Path, description = "the application, app_…"), ("port" = u16, Path, description = "the public port"), ("namespace" = String, Query, description = "the namespace of the port")), responses((status = 200, body = TcpRedir), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn remove(
    State(gw): Gw,
    Extension(caller): Extension<Caller>,
    Path((org, app, port)): Path<(String, String, String)>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Answer<TcpRedir> {
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(Error::bad_port(&port)),
    };
    let Query(query) = query.map_err(|e| Error::bad_request(format!("invalid query: {}", e.body_text())))?;
    let namespace = query.namespace.ok_or_else(|| {
        Error::bad_request(
            "missing namespace: add `?namespace=NAME` to the URL, for example ?namespace=default",
        )
    })?;
    Ok(Json(gw.remove(&caller, &org, &app, &namespace, port).await?))
}

/// A body the JSON extractor refused: too large (413), or not the expected JSON (400).
fn body_error(rejection: JsonRejection, expected: &str) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::body_too_large(BODY_LIMIT)
    } else {
        Error::bad_body(rejection.body_text(), expected)
    }
}
