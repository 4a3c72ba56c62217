//! Reading the TOML files a user writes (the server's config, `apply -f`, the profiles),
//! with errors on one line: `FILE:LINE:COLUMN: what is wrong`, as compilers say it, so that
//! the CLI's single `error:` line stays single.

use std::path::Path;

use serde::de::DeserializeOwned;

/// Parses `text`, read from `path`; an error names the place and the reason on one line.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| {
        let place = match e.span() {
            Some(span) => {
                // An unknown key of a table read through `flatten` is reported at the
                // table: point at the key's own line instead.
                let start = unknown_key(e.message())
                    .and_then(|key| key_at(text, span.clone(), key))
                    .unwrap_or(span.start);
                let before = &text[..start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("{}:{line}:{column}", path.display())
            }
            None => path.display().to_string(),
        };
        anyhow::anyhow!("{place}: {}", e.message().trim().replace('\n', " "))
    })
}

/// The key of serde's "unknown field `KEY`, expected …".
fn unknown_key(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// Where the line that sets `key` (bare or quoted) starts, in the table that `span` heads
/// (or holds): from the span to the next table header.
fn key_at(text: &str, span: std::ops::Range<usize>, key: &str) -> Option<usize> {
    let mut offset = span.start.min(text.len());
    for (n, line) in text.get(offset..)?.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if n > 0 && offset >= span.end && trimmed.starts_with('[') {
            return None;
        }
        let rest = trimmed
            .strip_prefix(key)
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| trimmed.strip_prefix(&format!("'{key}'")));
        if rest.is_some_and(|r| r.trim_start().starts_with('=')) {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        port: u16,
    }

    #[test]
    fn an_error_is_one_line_with_its_place() {
        let err = parse::<Doc>("# a comment\nport = \"x\"\n", Path::new("f.toml")).unwrap_err().to_string();
        assert!(err.starts_with("f.toml:2:8: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse::<crate::manifest::Manifest>(
            "[[application]]\nname = \"db\"\n\n[[application.redirection]]\nnamespace = \"default\"\nidle_timout = 6\n",
            Path::new("bad.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("bad.toml:6:1: unknown field `idle_timout`"),
            "a misspelt key at its own line: {err}"
        );
        let err = parse::<Doc>("[[namespace]\n", Path::new("g.toml")).unwrap_err().to_string();
        assert!(err.starts_with("g.toml:1:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
