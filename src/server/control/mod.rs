//! The control plane: what operators and clients ask for, and the rules it is held to.
//!
//! A call comes in over HTTP ([`http`]), is routed and answered ([`api`], with the web
//! console beside it), its caller is checked ([`auth`]) and what it sends is validated;
//! the rules themselves ([`gateway`]) turn it into one atomic write to the store, and the
//! answers are shaped from the node's table and live state ([`present`]). The control plane
//! may use the state and the data plane's types (the store, the table, the live ports, the
//! port allocator), never the other way round: nothing below it knows HTTP exists, and it
//! never touches a forwarded connection; ports change only through the state's diffs.

pub(super) mod api;
pub(super) mod auth;
mod console;
pub(super) mod delivery;
mod error;
pub(super) mod events;
pub(super) mod gateway;
pub(super) mod http;
mod present;
pub(super) mod validate;
mod webhooks;
