//! The checks of what callers send: names, instance lists, limits and access rules.
//!
//! Every rule that refuses a request for its content is here or in a function this file
//! calls, so that the API, the config file and `apply` refuse the same things alike.

use super::access::Access;
use super::config::DEFAULT_LIMITS;
use super::error::Error;
use super::forward::Limits;
use super::store::NamespaceDef;
use crate::wire::{self, RedirAccess, RedirLimits};

/// The most instances an application may have.
pub const MAX_INSTANCES: usize = 64;

/// An instance list: at most [`MAX_INSTANCES`], valid addresses and weights, no repeats.
pub fn instances(instances: &[wire::Instance]) -> Result<(), Error> {
    if instances.len() > MAX_INSTANCES {
        return Err(Error::bad_request(format!("at most {MAX_INSTANCES} instances per application")));
    }
    for (i, instance) in instances.iter().enumerate() {
        wire::check_instance_address(&instance.address).map_err(Error::bad_request)?;
        if instance.weight.is_some_and(|w| w > wire::MAX_WEIGHT) {
            return Err(Error::bad_request(format!(
                "instance `{}`: weight must be from 0 (no new connections) to {}",
                instance.address,
                wire::MAX_WEIGHT
            )));
        }
        if instances[..i].iter().any(|other| other.address == instance.address) {
            return Err(Error::bad_request(format!("instance `{}` is listed twice", instance.address)));
        }
    }
    Ok(())
}

/// An organisation's or a credential's name.
pub fn name(name: &str, what: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid {what} name `{name}`: use 1 to 128 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// An application's name: like [`name`], and never taken for an id.
pub fn app_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with("app_")
        && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid application name `{name}`: use 1 to 128 letters, digits, `-`, `_` or `.`, not starting with `app_`"
        )))
    }
}

/// A new redirection's limits and access rules, in a namespace: the limits in force.
pub fn redirection(def: &NamespaceDef, limits: &RedirLimits, access: &RedirAccess) -> Result<Limits, Error> {
    let base = DEFAULT_LIMITS.with(&def.limits).map_err(Error::bad_request)?;
    let limits = base.with(limits).map_err(Error::bad_request)?;
    Access::parse(access).map_err(Error::bad_request)?;
    Ok(limits)
}

/// A port asked for: inside the namespace's range.
pub fn port_in_range(def: &NamespaceDef, port: u16) -> Result<(), Error> {
    if (def.min_port..=def.max_port).contains(&port) {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "port {port} is outside namespace `{}`'s range {}-{}",
        def.name, def.min_port, def.max_port
    )))
}
