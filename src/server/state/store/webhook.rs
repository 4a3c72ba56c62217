//! Webhooks as the store keeps them (issue 35): each registration with its signing secret
//! and where its deliveries stand, so that deliveries survive a restart and any node of a
//! fleet can take them over.
//!
//! Deliveries are never queued in memory: the delivering node reads the events after a
//! webhook's `delivered` id from the trail itself, a page at a time, and writes the new
//! position back after each event. The node that delivers is the one that holds the
//! `webhooks` role ([`super::Store::hold_role`]): SQLite's single node always does; in
//! etcd the role is a key a node takes when it is free or expired and renews while it
//! runs, so one node delivers at a time (two only in the moment a paused holder's term
//! runs out, which at-least-once delivery allows).

use serde::{Deserialize, Serialize};

use crate::wire::Webhook;

/// The most failed deliveries a webhook keeps listed.
pub const MAX_FAILED: usize = 20;

/// A webhook as stored: what the API lists, and the secret it signs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRecord {
    /// What the API lists.
    #[serde(flatten)]
    pub info: Webhook,
    /// The HMAC-SHA256 key (hex), needed to sign each delivery.
    pub secret: String,
}

/// Who holds a role, and until when (etcd's `roles/{role}`).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // etcd's alone
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleHolder {
    /// The node.
    pub node: String,
    /// Unix milliseconds after which another node may take the role.
    pub until: i64,
}
