//! The patterns of [`crate::wire`] compiled once, for the server's checks (the client has
//! no regex engine: it checks what it must by hand, `check_instance_address`).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// Every pattern of [`crate::wire`], compiled once.
static PATTERNS: LazyLock<HashMap<&'static str, Regex>> = LazyLock::new(|| {
    [
        super::NAME_PATTERN,
        super::APP_NAME_PATTERN,
        super::NAMESPACE_PATTERN,
        super::INSTANCE_ADDRESS_PATTERN,
        super::RANGE_PATTERN,
        super::ORG_ID_PATTERN,
        super::APP_ID_PATTERN,
        super::TOKEN_ID_PATTERN,
        super::health::PAYLOAD_PATTERN,
    ]
    .into_iter()
    .map(|p| {
        (p, Regex::new(p).unwrap_or_else(|e| panic!("pattern {p} of wire/mod.rs does not compile: {e}")))
    })
    .collect()
});

/// Whether `text` matches `pattern`, one of the patterns of [`crate::wire`].
pub fn matches(pattern: &'static str, text: &str) -> bool {
    PATTERNS
        .get(pattern)
        .unwrap_or_else(|| panic!("pattern {pattern} is not in wire::patterns::PATTERNS"))
        .is_match(text)
}
