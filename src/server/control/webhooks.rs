//! Registering webhooks (issue 35): `GET, POST /v2/organisations/{org}/webhooks` and
//! `DELETE …/webhooks/{id}`. The delivery itself is [`super::delivery`]'s.
//!
//! A webhook receives its organisation's events from its registration on (not the past
//! ones: `GET …/events` reads those). Its secret is made by the server and shown once, in
//! the answer to the registration, as a credential's is. URLs are `https://`, or `http://`
//! to a loopback address only: a plain-HTTP post elsewhere would carry the events in clear.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::auth::{self, Caller};
use super::error::Error;
use super::gateway::Gateway;
use crate::server::state::store::audit::EventQuery;
use crate::server::state::store::webhook::WebhookRecord;
use crate::server::state::store::{Conflict, StoreError};
use crate::wire::{ApiError, CreatedWebhook, DeliveryState, NewWebhook, Webhook};

/// The most webhooks one organisation may register.
pub const MAX_PER_ORG: usize = 10;

/// Why `url` is refused, if it is.
fn check_url(url: &str) -> Result<(), Error> {
    if url.len() > 2048 {
        return Err(Error::bad_webhook_url(
            &url.chars().take(64).collect::<String>(),
            "longer than 2048 bytes",
        ));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| Error::bad_webhook_url(url, &format!("not a URL ({e})")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::bad_webhook_url(url, "credentials in a URL would be stored in clear"));
    }
    let host = parsed.host_str().ok_or_else(|| Error::bad_webhook_url(url, "no host"))?;
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(Error::bad_webhook_url(url, "plain http is for loopback receivers only")),
        other => Err(Error::bad_webhook_url(url, &format!("`{other}` is not http nor https"))),
    }
}

fn store_error(gw: &Gateway, err: StoreError) -> Error {
    Error::from_store(&gw.synced().store().describe(), err)
}

#[utoipa::path(get, path = "/v2/organisations/{org}/webhooks", operation_id = "listWebhooks", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…")), responses((status = 200, description = "the organisation's webhooks and where their deliveries stand (never their secrets)", body = Vec<Webhook>), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError), (status = 503, description = "5030: the store cannot be reached", body = ApiError)))]
/// An organisation's webhooks.
pub async fn list_webhooks(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(org): axum::extract::Path<String>,
) -> Result<Json<Vec<Webhook>>, Error> {
    let org = gw.org(&caller, &org).await?;
    let hooks = gw.synced().store().webhooks().await.map_err(|e| store_error(&gw, e))?;
    Ok(Json(hooks.into_iter().filter(|h| h.info.owner_id == org.id).map(|h| h.info).collect()))
}

#[utoipa::path(post, path = "/v2/organisations/{org}/webhooks", operation_id = "createWebhook", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…")), request_body = NewWebhook, responses((status = 201, description = "the webhook, with its signing secret shown this once", body = CreatedWebhook), (status = 404, description = "4041: no such organisation, or not the caller's", body = ApiError), (status = 409, description = "4098: the organisation has as many webhooks as it may", body = ApiError), (status = 422, description = "4225: a URL the server will not post to", body = ApiError), (status = 503, description = "5030: the store cannot be reached", body = ApiError)))]
/// Registers a webhook: the organisation's events from now on are posted to its URL.
pub async fn create_webhook(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(org): axum::extract::Path<String>,
    body: Result<Json<NewWebhook>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedWebhook>), Error> {
    let Json(new) = body.map_err(|e| {
        Error::bad_body(
            e.body_text(),
            r#"{"url":"https://hooks.example.com/tcp-redirs","kinds":["redirection.added"]}"#,
        )
    })?;
    let org = gw.org(&caller, &org).await?;
    check_url(&new.url)?;
    let store = gw.synced().store();
    let hooks = store.webhooks().await.map_err(|e| store_error(&gw, e))?;
    if hooks.iter().filter(|h| h.info.owner_id == org.id).count() >= MAX_PER_ORG {
        return Err(Error::webhook_limit(MAX_PER_ORG));
    }
    // From now on: the newest event is where its deliveries start.
    let newest = EventQuery { org_id: Some(org.id.clone()), limit: 1, ..EventQuery::default() };
    let newest = store.events(&newest).await.map_err(|e| store_error(&gw, e))?;
    let mut kinds = new.kinds;
    kinds.sort_by_key(|k| k.name());
    kinds.dedup();
    let info = Webhook {
        id: format!("whk_{}", uuid::Uuid::new_v4()),
        owner_id: org.id,
        url: new.url,
        kinds,
        created_at: crate::server::state::store::audit::now_ms(),
        delivery: DeliveryState { delivered: newest.first().map_or(0, |e| e.id), ..DeliveryState::default() },
    };
    let record = WebhookRecord { info: info.clone(), secret: auth::generate("whsec_") };
    store.create_webhook(&record).await.map_err(|e| store_error(&gw, e))?;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { webhook: info, secret: record.secret })))
}

#[utoipa::path(delete, path = "/v2/organisations/{org}/webhooks/{webhook}", operation_id = "removeWebhook", tag = "organisations", params(("org" = String, Path, description = "the organisation, orga_…"), ("webhook" = String, Path, description = "the webhook, whk_…")), responses((status = 200, description = "the removed webhook; its deliveries stop", body = Webhook), (status = 404, description = "4041: no such organisation; 4047: no such webhook in it", body = ApiError), (status = 503, description = "5030: the store cannot be reached", body = ApiError)))]
/// Removes a webhook; its deliveries stop.
pub async fn remove_webhook(
    State(gw): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path((org, id)): axum::extract::Path<(String, String)>,
) -> Result<Json<Webhook>, Error> {
    let org = gw.org(&caller, &org).await?;
    match gw.synced().store().remove_webhook(&org.id, &id).await {
        Ok(record) => Ok(Json(record.info)),
        Err(StoreError::Conflict(Conflict::NotFound)) => Err(Error::unknown_webhook(&id)),
        Err(err) => Err(store_error(&gw, err)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_https_anywhere_http_on_loopback_only() {
        for ok in
            ["https://hooks.example.com/x", "http://127.0.0.1:8080/h", "http://[::1]/h", "http://localhost/h"]
        {
            assert!(super::check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/x",
            "ftp://127.0.0.1/",
            "https://u:p@example.com/",
            "nope",
            "http://10.0.0.1/",
        ] {
            assert!(super::check_url(bad).is_err(), "{bad}");
        }
    }
}
