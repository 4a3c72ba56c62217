//! The audit trail's shapes (issue 35): one event per change, as the API answers it and the
//! CLI prints it.
//!
//! An event says what changed (its kind, the organisation and application it belongs to,
//! the record before and after), who changed it (a credential's id and name, never its
//! secret; or the server itself, for the config file and the admin credential at start),
//! from which address and through which node. Ids grow with every event a store records,
//! so that a reader resumes after the last id it saw with no gap and no duplicate.

use serde::{Deserialize, Serialize};

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(clap::ValueEnum)]
pub enum EventKind {
    /// An organisation was created.
    #[serde(rename = "organisation.created")]
    #[value(name = "organisation.created")]
    OrganisationCreated,
    /// A credential was issued.
    #[serde(rename = "token.issued")]
    #[value(name = "token.issued")]
    TokenIssued,
    /// A credential was revoked.
    #[serde(rename = "token.revoked")]
    #[value(name = "token.revoked")]
    TokenRevoked,
    /// An application was created.
    #[serde(rename = "application.created")]
    #[value(name = "application.created")]
    ApplicationCreated,
    /// An application's instances were replaced.
    #[serde(rename = "application.instances")]
    #[value(name = "application.instances")]
    ApplicationInstances,
    /// An application's health-check settings were changed.
    #[serde(rename = "application.health_check")]
    #[value(name = "application.health_check")]
    ApplicationHealthCheck,
    /// An application was removed, with its redirections.
    #[serde(rename = "application.removed")]
    #[value(name = "application.removed")]
    ApplicationRemoved,
    /// A redirection was added.
    #[serde(rename = "redirection.added")]
    #[value(name = "redirection.added")]
    RedirectionAdded,
    /// A redirection's settings were changed in place.
    #[serde(rename = "redirection.updated")]
    #[value(name = "redirection.updated")]
    RedirectionUpdated,
    /// A redirection was removed.
    #[serde(rename = "redirection.removed")]
    #[value(name = "redirection.removed")]
    RedirectionRemoved,
}

impl EventKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [EventKind; 10] = [
        EventKind::OrganisationCreated,
        EventKind::TokenIssued,
        EventKind::TokenRevoked,
        EventKind::ApplicationCreated,
        EventKind::ApplicationInstances,
        EventKind::ApplicationHealthCheck,
        EventKind::ApplicationRemoved,
        EventKind::RedirectionAdded,
        EventKind::RedirectionUpdated,
        EventKind::RedirectionRemoved,
    ];

    /// Its name, as the JSON and the query string spell it (`redirection.added`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::OrganisationCreated => "organisation.created",
            EventKind::TokenIssued => "token.issued",
            EventKind::TokenRevoked => "token.revoked",
            EventKind::ApplicationCreated => "application.created",
            EventKind::ApplicationInstances => "application.instances",
            EventKind::ApplicationHealthCheck => "application.health_check",
            EventKind::ApplicationRemoved => "application.removed",
            EventKind::RedirectionAdded => "redirection.added",
            EventKind::RedirectionUpdated => "redirection.updated",
            EventKind::RedirectionRemoved => "redirection.removed",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Who made a change: a credential (its id and name, never its secret), or the server
/// itself (`id` absent: the config file, the admin credential installed at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// The credential's id (`tok_…`, `admin`, `admin@NODE`); absent for the server itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The credential's name, or `config file`, or `server`.
    pub name: String,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Grows with every event the store records: `after=ID` resumes after it.
    pub id: i64,
    /// When it was recorded (Unix milliseconds).
    pub at: i64,
    /// What kind of change.
    pub kind: EventKind,
    /// The organisation it belongs to; absent for the admin's own credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The application it belongs to, when it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Who made it.
    pub actor: Actor,
    /// The address the call came from, when it came through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The node that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The record before the change (absent for a creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub before: Option<serde_json::Value>,
    /// The record after the change (absent for a removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Option<Object>))]
    pub after: Option<serde_json::Value>,
}

/// A page of events: newest first when read backwards (`before`), oldest first when read
/// forwards (`after`, what `--follow` does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// The events, at most the limit asked.
    pub events: Vec<AuditEvent>,
    /// The cursor of the next page (`before=` when reading backwards, `after=` forwards);
    /// absent when reading backwards reached the oldest event kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// The body of `POST /v2/organisations/{orgId}/webhooks`; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are posted: `https://…`, or `http://` to a loopback address (tests, a
    /// local relay).
    #[cfg_attr(feature = "server", schema(min_length = 1, max_length = 2048))]
    pub url: String,
    /// Only events of these kinds (absent or empty: every kind).
    #[serde(default)]
    pub kinds: Vec<EventKind>,
}

/// A delivery that is being retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PendingDelivery {
    /// The event being delivered.
    pub event_id: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// When the first attempt was made (Unix milliseconds).
    pub since: i64,
    /// Why the last attempt failed.
    pub last_error: String,
}

/// An event given up on after retrying for the configured time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FailedDelivery {
    /// The event.
    pub event_id: i64,
    /// When it was given up (Unix milliseconds).
    pub at: i64,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: String,
}

/// Where a webhook's deliveries stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeliveryState {
    /// Every event up to this id is delivered, or failed (listed in `failed`).
    pub delivered: i64,
    /// The delivery being retried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingDelivery>,
    /// The latest deliveries given up (at most 20, newest last).
    #[serde(default)]
    pub failed: Vec<FailedDelivery>,
}

/// A registered webhook (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// `whk_…`, what `DELETE …/webhooks/{id}` takes.
    pub id: String,
    /// The organisation whose events it receives.
    pub owner_id: String,
    /// Where events are posted.
    pub url: String,
    /// The kinds it receives (empty: every kind).
    pub kinds: Vec<EventKind>,
    /// When it was registered (Unix milliseconds).
    pub created_at: i64,
    /// Where its deliveries stand.
    pub delivery: DeliveryState,
}

/// A webhook just registered, with its signing secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhook {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: Webhook,
    /// The key of the `X-Tcp-Redirs-Signature` HMAC-SHA256 (hex); shown only now.
    pub secret: String,
}
