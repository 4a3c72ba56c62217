//! The checks of what callers send: names, instance lists, limits and access rules.
//!
//! Every rule that refuses a request for its content is here or in a function this file
//! calls, so that the API, the config file and `apply` refuse the same things alike; a
//! redirection's settings are the redirection spec's to check ([`crate::server::spec`]),
//! and this file only turns its refusals into API errors. The patterns and bounds are the
//! constants of [`crate::wire`], which the OpenAPI document states too: what the document
//! allows, the server accepts, and the reverse (`tests/openapi.rs`).

use std::ops::RangeInclusive;

use super::error::Error;
use crate::server::spec::{self, Limits, Refusal};
use crate::server::state::store::NamespaceDef;
use crate::wire::{self, matches, NewTcpRedir, Protocol, RedirSettings};

/// An instance list: at most [`wire::MAX_INSTANCES`], valid addresses and weights, no repeats.
pub fn instances(instances: &[wire::Instance]) -> Result<(), Error> {
    if instances.len() > wire::MAX_INSTANCES {
        return Err(Error::bad_request(format!("at most {} instances per application", wire::MAX_INSTANCES)));
    }
    for (i, instance) in instances.iter().enumerate() {
        wire::check_instance_address(&instance.address).map_err(Error::bad_request)?;
        if !matches(wire::INSTANCE_ADDRESS_PATTERN, &instance.address) {
            return Err(Error::bad_request(format!(
                "instance address `{}` is not HOST:PORT: write it like 127.0.0.1:4040, db.internal:5432 or [::1]:4040",
                instance.address
            )));
        }
        if instance.weight.is_some_and(|w| w > wire::MAX_WEIGHT) {
            return Err(Error::bad_request(format!(
                "instance `{}`: weight must be from 0 (no new connections) to {}",
                instance.address,
                wire::MAX_WEIGHT
            )));
        }
        if instances[..i].iter().any(|other| other.address == instance.address) {
            return Err(Error::instance_twice(&instance.address));
        }
    }
    Ok(())
}

/// An application's health-check settings, as this node would run them (its own
/// `[health_checks]` fill in what the application leaves out): each bound, and how they
/// combine (see [`crate::server::data::balance::CheckSettings::plan`]).
pub fn health_check(
    check: &wire::HealthCheck,
    node: &crate::server::data::balance::CheckSettings,
) -> Result<(), Error> {
    for payload in [&check.send, &check.expect].into_iter().flatten() {
        if !matches(wire::health::PAYLOAD_PATTERN, payload) {
            return Err(Error::bad_request(wire::health::decode_hex(payload).err().unwrap_or_else(|| {
                format!("payload `{payload}`: write the bytes in hexadecimal, two digits each")
            })));
        }
    }
    let bounded = |value: Option<u32>, range: RangeInclusive<u32>, what: &str| match value {
        Some(v) if !range.contains(&v) => Err(Error::bad_request(format!(
            "healthCheck.{what} = {v}: use from {} to {}",
            range.start(),
            range.end()
        ))),
        _ => Ok(()),
    };
    bounded(check.interval_ms, wire::health::MIN_CHECK_MS..=wire::health::MAX_INTERVAL_MS, "intervalMs")?;
    bounded(check.timeout_ms, wire::health::MIN_CHECK_MS..=wire::health::MAX_TIMEOUT_MS, "timeoutMs")?;
    bounded(check.rise, 1..=wire::health::MAX_RISE_FALL, "rise")?;
    bounded(check.fall, 1..=wire::health::MAX_RISE_FALL, "fall")?;
    node.plan(check).map(drop).map_err(|why| Error::bad_health_check(&why))
}

/// An organisation's or a credential's name.
pub fn name(name: &str, what: &str) -> Result<(), Error> {
    if matches(wire::NAME_PATTERN, name) {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "invalid {what} name `{name}`: use 1 to 128 ASCII letters, digits, `-`, `_` or `.`"
    )))
}

/// An application's name: like [`name`], and never taken for an id.
pub fn app_name(name: &str) -> Result<(), Error> {
    if matches(wire::APP_NAME_PATTERN, name) {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "invalid application name `{name}`: use 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not starting with `app_`"
    )))
}

/// A namespace's name, as a request gives it.
pub fn namespace(name: &str) -> Result<(), Error> {
    if matches(wire::NAMESPACE_PATTERN, name) {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "invalid namespace name `{name}`: namespaces are named with 1 to 64 of a-z, 0-9 and -; `tcp-redirs list-namespaces` shows yours"
    )))
}

/// A new redirection's settings, in a namespace, for its protocol: the spec's whole check
/// ([`spec::check`]); the limits it will run with.
pub fn redirection(
    def: &NamespaceDef,
    settings: &RedirSettings,
    protocol: Protocol,
) -> Result<Limits, Error> {
    spec::check(&def.limits, settings, protocol).map_err(refused)
}

/// The checks of a redirection's settings that need neither its namespace nor its protocol.
pub fn settings(settings: &RedirSettings) -> Result<(), Error> {
    spec::check_settings(settings).map_err(refused)
}

/// The API's error for what the spec refused.
fn refused(refusal: Refusal) -> Error {
    match refusal {
        Refusal::Invalid(message) => Error::bad_request(message),
        Refusal::NotFor { protocol, setting, why } => Error::not_for(protocol, setting, why),
    }
}

/// The ports a new redirection may take: its namespace's range, narrowed by Clever's
/// `minPort` and `maxPort` (each defaults to the namespace's bound); a port asked for must
/// be in it.
pub fn ports_for(def: &NamespaceDef, new: &NewTcpRedir) -> Result<RangeInclusive<u16>, Error> {
    let (min, max) = (new.min_port.unwrap_or(def.min_port), new.max_port.unwrap_or(def.max_port));
    if min > max || min < def.min_port || max > def.max_port {
        return Err(Error::bad_sub_range(min, max, &def.name, def.min_port, def.max_port));
    }
    if let Some(port) = new.port {
        port_in_range(def, port)?;
        if !(min..=max).contains(&port) {
            return Err(Error::port_outside_range(port, &def.name, min, max));
        }
    }
    Ok(min..=max)
}

/// `ports` as the API's document states it: 1 to [`wire::MAX_RANGE_PORTS`] (400 otherwise).
pub fn ports_shape(new: &NewTcpRedir) -> Result<(), Error> {
    match new.ports {
        Some(n) if n == 0 || n > wire::MAX_RANGE_PORTS => Err(Error::bad_request(format!(
            "invalid `ports` {n}: the number of consecutive ports is 1 to {}",
            wire::MAX_RANGE_PORTS
        ))),
        _ => Ok(()),
    }
}

/// How many consecutive ports a redirection asks for (issue 34), checked: 1 to the store's
/// most, TCP only, and a block of them fits in `range` (from the fixed first port, when
/// one is asked for).
pub fn port_count(
    def: &NamespaceDef,
    new: &NewTcpRedir,
    protocol: Protocol,
    range: &RangeInclusive<u16>,
    most: u16,
) -> Result<u16, Error> {
    let n = new.port_count();
    if n == 0 {
        return Err(Error::bad_request("`ports` is the number of consecutive ports: 1 or more"));
    }
    if n == 1 {
        return Ok(1);
    }
    if protocol == Protocol::Udp {
        return Err(Error::udp_range());
    }
    if n > most {
        return Err(Error::range_too_large(n, most));
    }
    let (min, max) = (*range.start(), *range.end());
    let first = new.port.unwrap_or(min);
    if u32::from(first) + u32::from(n) - 1 > u32::from(max) {
        return Err(Error::range_outside(new.port, n, &def.name, min, max));
    }
    Ok(n)
}

/// A port asked for: inside the namespace's range.
pub fn port_in_range(def: &NamespaceDef, port: u16) -> Result<(), Error> {
    if (def.min_port..=def.max_port).contains(&port) {
        return Ok(());
    }
    Err(Error::port_outside_range(port, &def.name, def.min_port, def.max_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's check of an instance address (no regex engine there) and the pattern
    /// agree, on addresses near the edges of the rule.
    #[test]
    fn the_instance_address_check_and_its_pattern_agree() {
        let hosts = [
            "127.0.0.1",
            "localhost",
            "db.internal",
            "a",
            "_x-y.z",
            "[::1]",
            "[::ffff:1.2.3.4]",
            "[2001:db8::7]",
            "[1:2:3:4:5:6:7:8]",
            "[1:2:3:4:5:6:7::]",
            "",
            "[]",
            "[",
            "::1",
            "[1::2::3]",
            "[::1%eth0]",
            "a b",
            "a/b",
            "é",
            "[::g]",
            "[1.2.3.4]",
        ];
        let ports = ["1", "80", "4040", "65535", "0", "65536", "080", "+80", "", "x", "99999"];
        for host in hosts {
            for port in ports {
                let address = format!("{host}:{port}");
                assert_eq!(
                    wire::check_instance_address(&address).is_ok(),
                    matches(wire::INSTANCE_ADDRESS_PATTERN, &address),
                    "{address}"
                );
            }
        }
        assert!(matches(wire::INSTANCE_ADDRESS_PATTERN, &format!("{}:1", "a".repeat(253))));
        assert!(!matches(wire::INSTANCE_ADDRESS_PATTERN, &format!("{}:1", "a".repeat(254))));
    }

    /// The client's check of an application's name and its pattern agree.
    #[test]
    fn the_app_name_check_and_its_pattern_agree() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        for name in [
            "my-db",
            "my db",
            "",
            "app_1",
            "app-1",
            "app",
            "ap",
            "a",
            "App_x",
            "appX",
            "app.",
            "_x",
            "é",
            "a/b",
            long.as_str(),
            too_long.as_str(),
        ] {
            assert_eq!(wire::check_app_name(name).is_ok(), matches(wire::APP_NAME_PATTERN, name), "{name:?}");
        }
        assert!(wire::check_app_name("my db").unwrap_err().contains("for example my-db"));
    }

    /// What the range pattern admits, Rust's address parsers read (the server checks both).
    #[test]
    fn the_range_pattern_admits_only_what_parses() {
        let good = [
            "0.0.0.0/0",
            "203.0.113.0/24",
            "198.51.100.7",
            "255.255.255.255/32",
            "::/0",
            "::",
            "2001:db8::/32",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:7:8/128",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "fe80::1:2/64",
        ];
        let bad = [
            "",
            "10.0.0.0/33",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4/",
            "1.2.3.4/08",
            "1::2::3",
            ":::",
            "2001:db8::/129",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7:8:9",
            "::1.2.3.4.5",
            "10.0.0.0/8 ",
            " 10.0.0.0/8",
        ];
        for text in good {
            assert!(matches(wire::RANGE_PATTERN, text), "{text} should match");
            let access = RedirSettings { allow: vec![text.to_owned()], ..RedirSettings::default() };
            assert!(spec::Access::parse(&access).is_ok(), "{text} should parse");
        }
        for text in bad {
            assert!(!matches(wire::RANGE_PATTERN, text), "{text} should not match");
        }
    }

    #[test]
    fn application_names_never_start_with_app_() {
        for good in ["a", "ap", "app", "app-x", "apq_", "App_x", "my-db", "x".repeat(128).as_str()] {
            assert!(app_name(good).is_ok(), "{good}");
        }
        for bad in ["", "app_", "app_x", "my db", "é", "x".repeat(129).as_str()] {
            assert!(app_name(bad).is_err(), "{bad}");
        }
    }
}
