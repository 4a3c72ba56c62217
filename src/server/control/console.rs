//! The web console: `GET /` on the control API's address.
//!
//! One page, its script and its style, embedded in the binary (no CDN, no build step,
//! nothing fetched from elsewhere: it works on an offline machine). The page holds no data:
//! it signs in with a credential kept in the tab's `sessionStorage` and calls the same API
//! as the CLI, with the credential in the `Authorization` header (never a cookie, so no
//! other site can make the browser act for the user). These routes need no credential and
//! are not API operations, so they are not in `/openapi.json`.
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's script and
//! style (no inline script or style, no other origin, no framing), `nosniff` and
//! `no-referrer`. The API itself sends no CORS header: other origins cannot read it.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page.
const INDEX: &str = include_str!("console/index.html");
/// Its script.
const SCRIPT: &str = include_str!("console/console.js");
/// Its style.
const STYLE: &str = include_str!("console/console.css");

/// The policy of every console answer: this origin only, no inline script or style, no
/// framing, no `<base>`, forms post to this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Where the console's files are served.
pub const PAGE: &str = "/";
/// The script's path.
pub const SCRIPT_PATH: &str = "/console.js";
/// The style's path.
pub const STYLE_PATH: &str = "/console.css";

/// The console's routes, without authentication: the files hold no data.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PAGE, get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route(SCRIPT_PATH, get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route(STYLE_PATH, get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

/// One embedded file with the console's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let set = |name, value| (name, HeaderValue::from_static(value));
    for (name, value) in [
        set(header::CONTENT_TYPE, content_type),
        set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        set(header::REFERRER_POLICY, "no-referrer"),
        set(header::X_FRAME_OPTIONS, "DENY"),
        // A new binary may change the files: revalidate rather than run a stale script.
        set(header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_nothing_inline() {
        assert!(INDEX.contains(&format!(r#"<script src="{SCRIPT_PATH}" defer></script>"#)));
        assert!(INDEX.contains(&format!(r#"<link rel="stylesheet" href="{STYLE_PATH}">"#)));
        // One <script> tag, the external one; no style element or attribute, no handler
        // attribute, nothing from another origin.
        assert_eq!(INDEX.matches("<script").count(), 1);
        for banned in ["<style", "style=", "http://", "https://", "javascript:"] {
            assert!(!INDEX.contains(banned), "index.html contains `{banned}`");
        }
        let handler = INDEX.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(handler.is_none(), "index.html has an event handler attribute: on{handler:?}");
        // The script never parses text as HTML; its one URL is the SVG namespace's name.
        let script = SCRIPT.replace("'http://www.w3.org/2000/svg'", "");
        for banned in
            ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "http://", "https://"]
        {
            assert!(!script.contains(banned), "console.js contains `{banned}`");
        }
        assert!(!STYLE.contains("url(") && !STYLE.contains("@import"), "console.css loads another file");
    }
}
