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
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("{}:{line}:{column}", path.display())
            }
            None => path.display().to_string(),
        };
        anyhow::anyhow!("{place}: {}", e.message().trim().replace('\n', " "))
    })
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
        let err = parse::<Doc>("[[namespace]\n", Path::new("g.toml")).unwrap_err().to_string();
        assert!(err.starts_with("g.toml:1:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
