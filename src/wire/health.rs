//! An application's health-check settings (issue 33): how its instances are checked.
//!
//! Every setting is optional: an absent one takes the node's (`[health_checks]` in the
//! config file, whose built-in defaults are a TCP connect every 5 s, 2 s to answer, `rise 2
//! fall 3`). The settings are the application's, not a redirection's: its instances are
//! checked once, whatever the number of its ports.
//!
//! A check is one of three kinds:
//! - `connect`: a TCP connect within the timeout (the default when the node's checks are on);
//! - `expect`: connect, send `send` (if any), and read until the answer's first bytes are
//!   `expect`, all within the timeout; an instance that answers anything else, or nothing,
//!   fails the check (HAProxy's `tcp-check send`/`expect binary`);
//! - `none`: no active check; only a failed connection marks an instance down, and it is
//!   then tried every 2 s until it answers (the default when the node's checks are off).
//!
//! `send` and `expect` are **hexadecimal** (`50494e470d0a` for `PING\r\n`), 1 to
//! [`MAX_PAYLOAD`] bytes: one spelling for every surface (JSON, TOML, a shell's argument)
//! that carries any byte, a NUL or a lone `\r` included, with no escaping rule to learn.
//! An `expect` without `kind` means `kind = "expect"`.
//!
//! The same type is the API's (`healthCheck` of an application, lowerCamelCase), the
//! CLI's flags (`--check-interval-ms`), the manifest's (snake_case, through [`Toml`]) and
//! the store's (etcd as the API's JSON, SQLite as that JSON in one column).

use serde::{Deserialize, Serialize};

use super::integral;
use super::settings::patch;

/// The shortest check interval and timeout, in milliseconds.
pub const MIN_CHECK_MS: u32 = 100;
/// The longest check interval, in milliseconds (an hour).
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// The longest check timeout, in milliseconds.
pub const MAX_TIMEOUT_MS: u32 = 60_000;
/// The largest `rise` or `fall`.
pub const MAX_RISE_FALL: u32 = 100;
/// The most bytes `send` or `expect` holds.
pub const MAX_PAYLOAD: usize = 1024;
/// A hex payload: 1 to [`MAX_PAYLOAD`] bytes, two hex digits each.
pub const PAYLOAD_PATTERN: &str = "^(?:[0-9A-Fa-f]{2}){1,1024}$";

/// What a health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect.
    Connect,
    /// Connect, send `send`, and expect the answer to start with `expect`.
    Expect,
    /// No active check: only failed connections mark an instance down.
    None,
}

impl CheckKind {
    /// Its name in the API and the files.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Connect => "connect",
            CheckKind::Expect => "expect",
            CheckKind::None => "none",
        }
    }
}

/// An application's health-check settings; an absent one is the node's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::Args)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// What a check does: `connect`, `expect` (send, then expect) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(
        long = "check",
        value_name = "KIND",
        value_enum,
        help = "What a health check does: connect, expect (send --check-send, expect --check-expect) or none [default: the node's, connect]"
    )]
    pub kind: Option<CheckKind>,
    /// Milliseconds between two checks of an instance.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::check_interval))]
    #[arg(long = "check-interval-ms", value_name = "MS",
        value_parser = clap::value_parser!(u32).range(MIN_CHECK_MS as i64..=MAX_INTERVAL_MS as i64),
        help = "Milliseconds between two health checks of an instance [default: the node's, 5000]")]
    pub interval_ms: Option<u32>,
    /// Milliseconds a check may take; no longer than the interval.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::check_timeout))]
    #[arg(long = "check-timeout-ms", value_name = "MS",
        value_parser = clap::value_parser!(u32).range(MIN_CHECK_MS as i64..=MAX_TIMEOUT_MS as i64),
        help = "Milliseconds a health check may take, no more than the interval [default: the node's, 2000]")]
    pub timeout_ms: Option<u32>,
    /// Successful checks in a row that bring a down instance up.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::rise_fall))]
    #[arg(long = "check-rise", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=MAX_RISE_FALL as i64),
        help = "Successful health checks in a row that bring a down instance up [default: the node's, 2]")]
    pub rise: Option<u32>,
    /// Failed checks in a row that take an up instance down.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "integral::option")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::rise_fall))]
    #[arg(long = "check-fall", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=MAX_RISE_FALL as i64),
        help = "Failed health checks in a row that take an up instance down [default: the node's, 3]")]
    pub fall: Option<u32>,
    /// `expect` checks: the bytes to send once connected, in hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::payload))]
    #[arg(long = "check-send", value_name = "HEX", value_parser = parse_payload,
        help = "Bytes a health check sends once connected, in hexadecimal (50494e470d0a is PING\\r\\n)")]
    pub send: Option<String>,
    /// `expect` checks: the bytes the answer must start with, in hexadecimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::payload))]
    #[arg(long = "check-expect", value_name = "HEX", value_parser = parse_payload,
        help = "Bytes the instance's answer must start with, in hexadecimal (2b504f4e47 is +PONG); implies --check expect")]
    pub expect: Option<String>,
}

impl HealthCheck {
    /// Whether every setting is the node's.
    pub fn is_default(&self) -> bool {
        *self == HealthCheck::default()
    }

    /// The kind in force for an application with these settings: its own, else `expect`
    /// when it expects bytes, else `node`'s.
    pub fn kind_or(&self, node: CheckKind) -> CheckKind {
        self.kind.unwrap_or(if self.expect.is_some() { CheckKind::Expect } else { node })
    }

    /// Its settings as one line: `expect every 1000 ms, timeout 500 ms, rise 1`; empty when
    /// every setting is the node's.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(kind) = self.kind.or(self.expect.as_ref().map(|_| CheckKind::Expect)) {
            parts.push(kind.name().to_owned());
        }
        if let Some(ms) = self.interval_ms {
            parts.push(format!("every {ms} ms"));
        }
        if let Some(ms) = self.timeout_ms {
            parts.push(format!("timeout {ms} ms"));
        }
        if let Some(n) = self.rise {
            parts.push(format!("rise {n}"));
        }
        if let Some(n) = self.fall {
            parts.push(format!("fall {n}"));
        }
        if let Some(hex) = &self.send {
            parts.push(format!("send {hex}"));
        }
        if let Some(hex) = &self.expect {
            parts.push(format!("expect {hex}"));
        }
        parts.join(", ")
    }
}

/// Checks a hex payload as [`PAYLOAD_PATTERN`] states it, without a regex engine (the
/// client checks before sending); the text itself, lower-cased.
pub fn parse_payload(text: &str) -> Result<String, String> {
    decode_hex(text).map(|_| text.to_ascii_lowercase())
}

/// The bytes of a hex payload, or why it is not one.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let bad = |why: &str| {
        Err(format!(
            "payload `{}`: {why}; write the bytes in hexadecimal, two digits each, 1 to {MAX_PAYLOAD} bytes (50494e470d0a is PING\\r\\n)",
            text.chars().take(40).collect::<String>()
        ))
    };
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return bad("not an even number of hex digits");
    }
    if text.len() > 2 * MAX_PAYLOAD {
        return bad("too long");
    }
    let digit = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(text.len() / 2);
    for pair in text.as_bytes().chunks(2) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
            _ => return bad("not hexadecimal"),
        }
    }
    Ok(out)
}

/// A change to an application, the body of `PATCH …/applications/{app}` (`tcp-redirs apps
/// update`): today its health-check settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationPatch {
    /// The health-check settings to change (absent: none changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPatch>,
}

/// A change to an application's health-check settings: a key absent keeps its setting,
/// `null` unsets it (the node's is in force again), a value sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckPatch {
    /// `connect`, `expect` or `none`; `null`: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::value")]
    #[cfg_attr(feature = "server", schema(value_type = Option<CheckKind>))]
    pub kind: Option<Option<CheckKind>>,
    /// Milliseconds between two checks; `null`: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::check_interval))]
    pub interval_ms: Option<Option<u32>>,
    /// Milliseconds a check may take; `null`: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::check_timeout))]
    pub timeout_ms: Option<Option<u32>>,
    /// Successes in a row to come up; `null`: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::rise_fall))]
    pub rise: Option<Option<u32>>,
    /// Failures in a row to go down; `null`: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::number")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::rise_fall))]
    pub fall: Option<Option<u32>>,
    /// The bytes to send, in hexadecimal; `null`: none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::value")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::payload))]
    pub send: Option<Option<String>>,
    /// The bytes to expect, in hexadecimal; `null`: none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "patch::value")]
    #[cfg_attr(feature = "server", schema(schema_with = crate::wire::schema::payload))]
    pub expect: Option<Option<String>>,
}

impl HealthCheckPatch {
    /// The settings `current` become with this change.
    pub fn apply(&self, current: &HealthCheck) -> HealthCheck {
        fn pick<T: Clone>(change: &Option<Option<T>>, current: &Option<T>) -> Option<T> {
            match change {
                Some(new) => new.clone(),
                None => current.clone(),
            }
        }
        HealthCheck {
            kind: pick(&self.kind, &current.kind),
            interval_ms: pick(&self.interval_ms, &current.interval_ms),
            timeout_ms: pick(&self.timeout_ms, &current.timeout_ms),
            rise: pick(&self.rise, &current.rise),
            fall: pick(&self.fall, &current.fall),
            send: pick(&self.send, &current.send),
            expect: pick(&self.expect, &current.expect),
        }
    }

    /// The change that makes `from` into `to` (`apply` writes it).
    pub fn between(from: &HealthCheck, to: &HealthCheck) -> HealthCheckPatch {
        fn diff<T: Clone + PartialEq>(from: &Option<T>, to: &Option<T>) -> Option<Option<T>> {
            (from != to).then(|| to.clone())
        }
        HealthCheckPatch {
            kind: diff(&from.kind, &to.kind),
            interval_ms: diff(&from.interval_ms, &to.interval_ms),
            timeout_ms: diff(&from.timeout_ms, &to.timeout_ms),
            rise: diff(&from.rise, &to.rise),
            fall: diff(&from.fall, &to.fall),
            send: diff(&from.send, &to.send),
            expect: diff(&from.expect, &to.expect),
        }
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == HealthCheckPatch::default()
    }

    /// The settings it changes, as the files spell them (`interval_ms`), in their order.
    pub fn names(&self) -> Vec<&'static str> {
        let changed = [
            (self.kind.is_some(), "kind"),
            (self.interval_ms.is_some(), "interval_ms"),
            (self.timeout_ms.is_some(), "timeout_ms"),
            (self.rise.is_some(), "rise"),
            (self.fall.is_some(), "fall"),
            (self.send.is_some(), "send"),
            (self.expect.is_some(), "expect"),
        ];
        changed.into_iter().filter(|(c, _)| *c).map(|(_, name)| name).collect()
    }
}

/// The settings as the TOML files spell them (`interval_ms = 1000`), the same fields: see
/// `settings::Toml`. Used as `#[serde(with = "crate::wire::health::Toml")]`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "HealthCheck", deny_unknown_fields)]
pub struct Toml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<CheckKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fall: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    send: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_payloads_decode_and_bad_ones_say_how_to_write_them() {
        assert_eq!(decode_hex("50494e470D0a").unwrap(), b"PING\r\n");
        assert_eq!(decode_hex("00ff").unwrap(), [0, 255]);
        for bad in ["", "abc", "zz", "50 49"] {
            let err = decode_hex(bad).unwrap_err();
            assert!(err.contains("hexadecimal, two digits each"), "{bad}: {err}");
        }
        assert!(decode_hex(&"00".repeat(MAX_PAYLOAD + 1)).is_err());
    }

    #[test]
    fn a_patch_keeps_unsets_and_sets() {
        let current = HealthCheck { interval_ms: Some(1000), rise: Some(1), ..HealthCheck::default() };
        let patch: HealthCheckPatch = serde_json::from_str(r#"{"rise":null,"timeoutMs":500}"#).unwrap();
        let after = patch.apply(&current);
        assert_eq!(
            after,
            HealthCheck { interval_ms: Some(1000), timeout_ms: Some(500), ..HealthCheck::default() }
        );
        assert_eq!(HealthCheckPatch::between(&current, &after), patch);
        assert!(serde_json::from_str::<HealthCheckPatch>(r#"{"intervall":5}"#).is_err());
    }
}
