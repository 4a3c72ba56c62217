//! The web console (`GET /` on the control API), driven in a real browser: Debian's
//! `chromium`, headless, through `chromedriver` (WebDriver), as a person would use it.
//!
//! Each test starts the real server, an echo backend, chromedriver on a free loopback port
//! and a fresh Chromium profile. Waits are on the page (the DOM is polled, bounded by
//! [`WAIT`]), never sleeps. Without chromium the tests fail and say what to install.
//! `TCP_REDIRS_UPDATE_SCREENSHOTS=1` rewrites `docs/console-desktop.png` and
//! `docs/console-narrow.png` from the scenario's page.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL: &str = "apt-get install chromium chromium-driver";
/// The longest wait for anything on the page.
const WAIT: Duration = Duration::from_secs(20);
/// How often a wait probes the page.
const PAGE_POLL: Duration = Duration::from_millis(100);
/// How long chromedriver may take to say it is ready.
const DRIVER_READY: Duration = Duration::from_secs(20);
/// The Enter key, as WebDriver types it.
const ENTER: &str = "\u{E007}";

/// The console's Content-Security-Policy, exactly.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

// ---------------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------------

/// chromedriver in its own process group: dropping it kills the group (the driver and the
/// browsers it started), so that a failed test leaves no Chromium behind.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child (it leads the group).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn require_browser() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the console tests need a real browser: {INSTALL} (.ci/run does it)"
        );
    }
}

/// Starts chromedriver on a free loopback port and waits until it says it is ready.
async fn start_driver() -> Driver {
    require_browser();
    let mut last_error = String::new();
    for _ in 0..3 {
        let port = refused_port();
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({e}): {INSTALL}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Drains the driver's output for its whole life; the first lines say whether it started.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + DRIVER_READY;
        let started = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("started successfully") => break true,
                Ok(line) => last_error = line,
                Err(_) => break false,
            }
        };
        if !started {
            continue; // the port was taken meanwhile, or the driver died: try another
        }
        // chromedriver keeps connections alive, so ask with a real HTTP client.
        let status: Value = reqwest::get(format!("{}/status", driver.url))
            .await
            .and_then(|r| r.error_for_status())
            .expect("chromedriver's /status")
            .json()
            .await
            .expect("chromedriver's /status is JSON");
        assert_eq!(status["value"]["ready"], true, "chromedriver is not ready: {status}");
        return driver;
    }
    panic!("chromedriver did not start ({last_error}); is it installed? {INSTALL}");
}

/// A headless Chromium with a fresh profile, driven over WebDriver.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

/// The viewport of a test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Viewport {
    Desktop,
    /// 375 px wide, like a phone.
    Narrow,
}

impl Browser {
    async fn start(viewport: Viewport) -> Browser {
        let driver = start_driver().await;
        let profile = tempfile::tempdir().expect("a Chromium profile directory");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-extensions".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut chrome = json!({ "binary": CHROMIUM });
        match viewport {
            Viewport::Desktop => args.push("--window-size=1280,1000".to_owned()),
            Viewport::Narrow => {
                chrome["mobileEmulation"] = json!({ "deviceMetrics": { "width": 375, "height": 812, "pixelRatio": 1.0, "touch": false } })
            }
        }
        chrome["args"] = json!(args);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), chrome);
        // Chromium's console (errors, CSP violations, failed loads), read back by `console_log`.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e} ({INSTALL})"));
        Browser { client, _profile: profile, _driver: driver }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css`, or `None`.
    async fn text(&self, css: &str) -> Option<String> {
        let found = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await;
        found.as_str().map(str::to_owned)
    }

    /// Polls the page until `script` returns something truthy, at most [`WAIT`].
    async fn wait_until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let answered = poll_async(PAGE_POLL, WAIT, async || {
            let value = self.js(script, args.clone()).await;
            let done = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if done {
                Ok(value)
            } else {
                Err(format!("last answer: {value}"))
            }
        })
        .await;
        match answered {
            Ok((value, _)) => value,
            Err(e) => {
                let page = self.js("return document.body.innerText;", vec![]).await;
                panic!(
                    "waited {WAIT:?} for {what}; {e}\n--- the page says ---\n{}",
                    page.as_str().unwrap_or("")
                );
            }
        }
    }

    /// Waits until an element matching `css` is shown.
    async fn wait_shown(&self, css: &str) {
        let script = "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0 && !e.closest('[hidden]');";
        self.wait_until(&format!("`{css}` to be shown"), script, vec![json!(css)]).await;
    }

    /// Waits until the element matching `css` has text containing `needle`; returns its text.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e && e.textContent.includes(arguments[1]) ? e.textContent : null;";
        let value = self
            .wait_until(&format!("`{css}` to say `{needle}`"), script, vec![json!(css), json!(needle)])
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Finds the element (waiting for it) and performs `act` on it; an element replaced by
    /// a refresh meanwhile (stale) is found again.
    async fn with_element<F, Fut>(&self, css: &str, act: F)
    where
        F: Fn(fantoccini::elements::Element) -> Fut,
        Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
    {
        let acted = poll_async(PAGE_POLL, WAIT, async || match self.client.find(Locator::Css(css)).await {
            Ok(element) => act(element).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        })
        .await;
        if let Err(error) = acted {
            panic!("cannot act on `{css}` within {WAIT:?}: {error}");
        }
    }

    /// Clicks the element matching `css`, as a mouse would.
    async fn click(&self, css: &str) {
        self.with_element(css, |e| async move { e.click().await }).await;
    }

    /// Types `keys` into the element matching `css` (WebDriver focuses it first).
    async fn type_into(&self, css: &str, keys: &str) {
        let keys = keys.to_owned();
        self.with_element(css, move |e| {
            let keys = keys.clone();
            async move { e.send_keys(&keys).await }
        })
        .await;
    }

    /// Empties the input matching `css`.
    async fn clear(&self, css: &str) {
        self.with_element(css, |e| async move { e.clear().await }).await;
    }

    /// Whether the focused element matches `css`.
    async fn focused(&self, css: &str) -> bool {
        self.js(
            "return !!document.activeElement && document.activeElement.matches(arguments[0]);",
            vec![json!(css)],
        )
        .await
        .as_bool()
        .unwrap_or(false)
    }

    /// Chromium's console since the last call: `(level, source, message)`.
    async fn console_log(&self) -> Vec<(String, String, String)> {
        let entries = self.client.issue_cmd(BrowserLog).await.expect("read Chromium's console log");
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        (field("level"), field("source"), field("message"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the console has no error or warning, except failed loads with the given
    /// statuses (the API's refusals that the test provoked: Chromium logs each one).
    async fn assert_clean_console(&self, expected_refusals: &[u16]) {
        let log = self.console_log().await;
        let bad: Vec<_> = log
            .iter()
            .filter(|(level, _, _)| level == "SEVERE" || level == "WARNING")
            .filter(|(_, source, message)| {
                !(source == "network"
                    && expected_refusals.iter().any(|s| message.contains(&format!("status of {s} "))))
            })
            .collect();
        assert!(bad.is_empty(), "the browser's console has errors: {bad:#?}");
    }

    /// Asserts every control of the page has an accessible name.
    async fn assert_controls_named(&self) {
        let unnamed = self
            .js(
                r#"
                const name = (e) => (e.getAttribute('aria-label') || '').trim()
                    || [...(e.labels || [])].map((l) => l.textContent).join(' ').trim()
                    || (e.getAttribute('aria-labelledby') || '').split(' ').map((id) => (document.getElementById(id) || {}).textContent || '').join(' ').trim()
                    || (e.textContent || '').trim()
                    || (e.getAttribute('title') || '').trim();
                return [...document.querySelectorAll('a, button, input, select, textarea, [tabindex]')]
                    .filter((e) => e.getClientRects().length > 0)
                    .filter((e) => !name(e))
                    .map((e) => e.outerHTML.slice(0, 120));
                "#,
                vec![],
            )
            .await;
        assert_eq!(unnamed, json!([]), "controls without an accessible name");
    }

    /// Keeps a screenshot in `docs/` when `TCP_REDIRS_UPDATE_SCREENSHOTS=1`; checks it is a PNG.
    async fn screenshot(&self, name: &str, viewport: Viewport) {
        // The top of the page on a desktop; on a phone, from the application's name down.
        let scroll = match viewport {
            Viewport::Desktop => "window.scrollTo(0, 0); return null;",
            Viewport::Narrow => {
                "document.getElementById('app-title').scrollIntoView({block: 'start'}); return null;"
            }
        };
        self.js(scroll, vec![]).await;
        let png = self.client.screenshot().await.expect("take a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if std::env::var_os("TCP_REDIRS_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).expect("create docs/");
            std::fs::write(&path, &png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// ChromeDriver's log command (`POST /session/{id}/se/log`, type `browser`): the entries of
/// Chromium's console since the last read, kept because of `goog:loggingPrefs`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The id of the organisation `default`.
fn default_org(server: &Server) -> String {
    let orgs = server.api("GET", "/v2/organisations", None).ok_json();
    orgs.as_array()
        .and_then(|list| list.iter().find(|o| o["name"] == "default"))
        .and_then(|o| o["id"].as_str())
        .expect("the default organisation")
        .to_owned()
}

/// A desktop browser signed in to `server`'s console with its admin token, on the page of
/// its one application, `app`.
async fn signed_in_on_app(server: &Server, app: &str) -> Browser {
    let browser = Browser::start(Viewport::Desktop).await;
    browser.goto(&format!("{}/", server.url)).await;
    browser.wait_shown("#token").await;
    browser.type_into("#token", &format!("{}{ENTER}", server.token)).await;
    browser.wait_shown("#apps-view").await;
    browser.click("#apps-list a.app-link").await;
    browser.wait_text("#app-title", app).await;
    browser
}

/// The TCP row of namespace `ns`, as a CSS selector.
fn row(ns: &str) -> String {
    format!("#redirs [data-namespace=\"{ns}\"][data-protocol=\"tcp\"]")
}

/// The UDP row of namespace `ns`, as a CSS selector.
fn udp_row(ns: &str) -> String {
    format!("#redirs [data-namespace=\"{ns}\"][data-protocol=\"udp\"]")
}

/// The scenario of the issue, in one viewport: sign in, open the application, create a
/// redirection in `default` and see its port and tick, connect and see the connection,
/// delete it and see the row go back (and the port refuse connections).
async fn manage_redirections(viewport: Viewport) {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("shop-db", echo.addr());
    let browser = Browser::start(viewport).await;
    browser.goto(&format!("{}/", server.url)).await;

    if viewport == Viewport::Narrow {
        let width = browser.js("return window.innerWidth;", vec![]).await;
        assert_eq!(width, json!(375), "the narrow test must run 375 px wide");
    }

    // Sign in with the keyboard: the token, then Enter.
    browser.wait_shown("#token").await;
    assert!(browser.focused("#token").await, "the Token field has the focus on arrival");
    browser.type_into("#token", &format!("{}{ENTER}", server.token)).await;
    browser.wait_shown("#apps-view").await;
    let link = "#apps-list a.app-link";
    browser.wait_text(link, "shop-db").await;
    browser.wait_text("#apps-list .instance", &echo.addr().to_string()).await;
    browser.assert_controls_named().await;

    // Open the application: one row per namespace, none active.
    browser.click(link).await;
    browser.wait_text("#app-title", "shop-db").await;
    browser.wait_shown(&format!("{} button.create", row("default"))).await;
    browser.wait_shown(&format!("{} button.create", row("cleverapps"))).await;
    browser.wait_text("#cli", "tcp-redirs add --namespace default --app shop-db").await;

    // Create: with the mouse on a desktop, with the keyboard on the narrow screen.
    let create = format!("{} button.create", row("default"));
    match viewport {
        Viewport::Desktop => browser.click(&create).await,
        Viewport::Narrow => browser.type_into(&create, ENTER).await,
    }
    browser.wait_shown(&format!("{} .mark.tick", row("default"))).await;
    let shown = browser.text(&format!("{} .port", row("default"))).await.expect("the port");
    let port: u16 = shown.trim().parse().unwrap_or_else(|_| panic!("the row shows port `{shown}`"));
    assert_eq!(
        server.list("shop-db"),
        vec![("default".to_owned(), port)],
        "the server has the port the page shows"
    );
    let address = browser.text(&format!("{} .address", row("default"))).await.expect("the address");
    assert!(address.ends_with(&format!(":{port}/")) && address.starts_with("tcp://"), "address {address}");
    browser.wait_text("#cli", &format!("tcp-redirs remove {port} --namespace default --app shop-db")).await;
    assert!(
        browser.focused(&format!("{} button.delete", row("default"))).await,
        "focus moves to the new row's Delete"
    );
    browser.assert_controls_named().await;

    // A connection through the port appears in the row, with its bytes and the plot.
    let mut client = connect(port);
    client.write_all(b"hello through the console").expect("write through the redirection");
    let mut echoed = [0u8; 25];
    client.read_exact(&mut echoed).expect("the echo comes back");
    assert_eq!(&echoed, b"hello through the console");
    browser.wait_text(&format!("{} .open", row("default")), "1").await;
    browser.wait_text(&format!("{} .in", row("default")), "25 B").await;
    browser.wait_text(&format!("{} .out", row("default")), "25 B").await;
    browser.wait_shown(&format!("{} svg.spark polyline.conns", row("default"))).await;
    let screenshot = match viewport {
        Viewport::Desktop => "console-desktop.png",
        Viewport::Narrow => "console-narrow.png",
    };
    browser.screenshot(screenshot, viewport).await;
    if viewport == Viewport::Narrow {
        let overflow =
            browser.js("return document.documentElement.scrollWidth - window.innerWidth;", vec![]).await;
        assert_eq!(overflow, json!(0), "the page scrolls sideways at 375 px");
    }

    // Delete, after a confirmation; the row goes back to `Create`.
    let delete = format!("{} button.delete", row("default"));
    let confirm = format!("{} button.confirm-delete", row("default"));
    match viewport {
        Viewport::Desktop => {
            browser.click(&delete).await;
            browser.wait_shown(&confirm).await;
            assert_eq!(server.list("shop-db").len(), 1, "Delete alone must not delete");
            browser.click(&confirm).await;
        }
        Viewport::Narrow => {
            browser.type_into(&delete, ENTER).await;
            browser.wait_shown(&confirm).await;
            assert!(browser.focused(&confirm).await, "the confirmation has the focus");
            browser.type_into(&confirm, ENTER).await;
        }
    }
    browser.wait_shown(&create).await;
    assert!(browser.text(&format!("{} .mark.tick", row("default"))).await.is_none(), "no tick once deleted");
    assert_eq!(server.list("shop-db"), vec![], "the redirection is gone");
    assert_refuses(port);
    browser.wait_text("#cli", "tcp-redirs add --namespace default --app shop-db").await;

    browser.assert_clean_console(&[]).await;
    browser.close().await;
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_and_deletes_a_redirection_in_a_desktop_browser() {
    manage_redirections(Viewport::Desktop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_with_the_keyboard_alone_at_375_px_wide() {
    manage_redirections(Viewport::Narrow).await;
}

/// The settings form of a row changes a redirection in place (issue 33): the values in
/// force are shown, Save sends what changed, the port and an open connection stay, the next
/// connection gets the new settings; a refused value keeps the form and what was typed, and
/// a cleared number takes the namespace's setting again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_changes_a_redirections_settings_in_place_and_an_open_connection_stays() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("broker", echo.addr());
    let port = server.add("broker", "default");
    let mut open = connect(port);
    let echoed = |stream: &mut std::net::TcpStream, text: &[u8]| {
        stream.write_all(text).expect("write through the redirection");
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back).expect("the echo comes back");
        assert_eq!(back, text);
    };
    echoed(&mut open, b"before");

    let browser = signed_in_on_app(&server, "broker").await;
    browser.wait_shown(&format!("{} .mark.tick", row("default"))).await;

    // Open the form: the settings in force, the focus on its first field.
    browser.click(&format!("{} button.settings", row("default"))).await;
    let idle = format!("{} input[name=idleTimeout]", row("default"));
    browser.wait_shown(&idle).await;
    let shown = browser.js("return document.querySelector(arguments[0]).value;", vec![json!(idle)]).await;
    assert_eq!(shown, json!("3600"), "the idle timeout in force");
    assert!(browser.focused(&format!("{} input[name=connectTimeout]", row("default"))).await);
    browser.assert_controls_named().await;

    // A refused value: the error in the row, the form kept with what was typed.
    let max = format!("{} input[name=maxConnections]", row("default"));
    browser.type_into(&max, "2000000000").await;
    browser.click(&format!("{} button.save-settings", row("default"))).await;
    browser.wait_text(&format!("{} .row-error", row("default")), "maxConnections").await;
    let kept = browser.js("return document.querySelector(arguments[0]).value;", vec![json!(max)]).await;
    assert_eq!(kept, json!("2000000000"), "the typed value is kept");

    // Save: idle timeout, a cap, an access list.
    browser.clear(&max).await;
    browser.type_into(&max, "5").await;
    browser.clear(&idle).await;
    browser.type_into(&idle, "600").await;
    browser.type_into(&format!("{} textarea[name=allow]", row("default")), "127.0.0.0/8").await;
    // The limits per client address and the bandwidth limit (issue 34) alike.
    browser.type_into(&format!("{} input[name=maxConnectionsPerClient]", row("default")), "3").await;
    browser.type_into(&format!("{} input[name=bandwidthLimit]", row("default")), "10000000").await;
    browser.click(&format!("{} button.save-settings", row("default"))).await;
    browser.wait_shown(&format!("{} button.settings", row("default"))).await;
    let org = default_org(&server);
    let apps = server.api("GET", &format!("/v2/organisations/{org}/applications"), None).ok_json();
    let app = apps[0]["id"].as_str().unwrap().to_owned();
    let redir = || {
        server.api("GET", &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"), None).ok_json()[0]
            .clone()
    };
    let now = redir();
    assert_eq!(
        (now["port"].as_u64(), &now["idleTimeout"], &now["maxConnections"]),
        (Some(u64::from(port)), &json!(600), &json!(5)),
        "{now}"
    );
    assert_eq!(now["allow"], json!(["127.0.0.0/8"]), "{now}");
    assert_eq!(
        (&now["maxConnectionsPerClient"], &now["bandwidthLimit"]),
        (&json!(3), &json!(10_000_000)),
        "{now}"
    );
    assert!(browser.text(&format!("{} .settings-form", row("default"))).await.is_none(), "the form closes");
    assert!(browser.focused(&format!("{} button.settings", row("default"))).await, "focus back on Settings");

    // The open connection stays; a new one is served with the new settings.
    echoed(&mut open, b"after");
    let mut next = connect(port);
    echoed(&mut next, b"next");

    // Escape closes the form and changes nothing; a cleared number: the namespace's
    // setting again (no cap).
    browser.click(&format!("{} button.settings", row("default"))).await;
    browser.wait_shown(&idle).await;
    browser.type_into(&idle, "\u{E00C}").await;
    browser.wait_shown(&format!("{} button.settings[aria-expanded=false]", row("default"))).await;
    browser.click(&format!("{} button.settings", row("default"))).await;
    browser.wait_shown(&max).await;
    let shown = browser.js("return document.querySelector(arguments[0]).value;", vec![json!(max)]).await;
    assert_eq!(shown, json!("5"));
    browser.clear(&max).await;
    browser.click(&format!("{} button.save-settings", row("default"))).await;
    browser.wait_shown(&format!("{} button.settings", row("default"))).await;
    let now = redir();
    assert!(now.get("maxConnections").is_none(), "{now}");
    assert_eq!(now["idleTimeout"], json!(600), "{now}");
    echoed(&mut open, b"still");
    browser.assert_clean_console(&[400, 422]).await;
    browser.close().await;
}

/// A UDP redirection from the console: its row beside the TCP one of the same namespace,
/// created with a click, its `udp://` address and a flow's figures shown, the command line
/// with `--udp`, deleted after a confirmation while the TCP row stays as it was; the
/// application's recent changes list both, with who made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_and_deletes_a_udp_redirection_beside_the_tcp_one() {
    let server = Server::start();
    let echo = UdpEcho::start();
    server.create_app("game", echo.addr());
    let browser = signed_in_on_app(&server, "game").await;
    browser.wait_shown(&format!("{} button.create", row("default"))).await;
    browser.wait_text(&format!("{} .protocol", udp_row("default")), "UDP").await;
    browser.wait_text("#cli", "tcp-redirs add --udp --namespace default --app game").await;

    browser.click(&format!("{} button.create", udp_row("default"))).await;
    browser.wait_shown(&format!("{} .mark.tick", udp_row("default"))).await;
    let shown = browser.text(&format!("{} .port", udp_row("default"))).await.expect("the port");
    let port: u16 = shown.trim().parse().unwrap_or_else(|_| panic!("the row shows port `{shown}`"));
    let address = browser.text(&format!("{} .address", udp_row("default"))).await.expect("the address");
    assert!(address.starts_with("udp://") && address.ends_with(&format!(":{port}/")), "address {address}");
    assert!(
        browser.text(&format!("{} .mark.tick", row("default"))).await.is_none(),
        "the TCP row stays inactive"
    );
    browser
        .wait_text("#cli", &format!("tcp-redirs remove {port} --udp --namespace default --app game"))
        .await;
    browser.assert_controls_named().await;

    let client = udp_client(LOCALHOST.into(), port);
    assert_eq!(udp_round_trip(&client, b"hello, console").unwrap(), b"hello, console");
    browser.wait_text(&format!("{} .open", udp_row("default")), "1").await;
    browser.wait_text(&format!("{} .in", udp_row("default")), "14 B").await;

    // The audit trail's latest changes of the application, newest first.
    browser.wait_text("#changes li", &format!("redirection.added UDP port {port} in default")).await;

    browser.click(&format!("{} button.delete", udp_row("default"))).await;
    browser.wait_text(&format!("{} .confirm", udp_row("default")), "Delete UDP port").await;
    browser.click(&format!("{} button.confirm-delete", udp_row("default"))).await;
    browser.wait_shown(&format!("{} button.create", udp_row("default"))).await;
    browser.wait_text("#changes li", &format!("redirection.removed UDP port {port} in default")).await;
    let changes = browser.text("#changes").await.unwrap_or_default();
    assert!(changes.contains("application.created") && changes.contains("by admin"), "{changes}");
    let removed = udp_round_trip(&client, b"anyone?").expect_err("the deleted UDP port answers nothing");
    assert_eq!(removed.kind(), std::io::ErrorKind::ConnectionRefused, "{removed}");
    browser.assert_clean_console(&[]).await;
    browser.close().await;
}

/// A range of ports from the console (issue 34): the TCP row's `Ports` field beside
/// `Create` asks for 5 consecutive ports; the row then shows `FIRST-LAST`, each port
/// reaching the matching instance port, and `Delete` removes the range whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_creates_a_range_of_ports_and_shows_it_first_to_last() {
    let server = Server::start();
    let instances = Numbered::start(5);
    server.create_app("media", instances.addr());
    let browser = signed_in_on_app(&server, "media").await;
    let field = format!("{} input.ports", row("default"));
    browser.wait_shown(&field).await;
    assert!(browser.text(&format!("{} input.ports", udp_row("default"))).await.is_none(), "no range for UDP");
    browser.clear(&field).await;
    browser.type_into(&field, "5").await;
    browser.click(&format!("{} button.create", row("default"))).await;
    browser.wait_shown(&format!("{} .mark.tick", row("default"))).await;
    let shown = browser.text(&format!("{} .port", row("default"))).await.expect("the ports");
    let (first, last) = shown.trim().split_once('-').unwrap_or_else(|| panic!("the row shows `{shown}`"));
    let (first, last): (u16, u16) = (first.parse().unwrap(), last.parse().unwrap());
    assert_eq!(last, first + 4, "the row shows {shown}");
    browser.wait_text(&format!("{} .where", row("default")), "Ports").await;
    assert_each_port_matches(first, 5, instances.first, "a range made from the console");
    browser.assert_controls_named().await;
    browser.click(&format!("{} button.delete", row("default"))).await;
    browser.click(&format!("{} button.confirm-delete", row("default"))).await;
    browser.wait_shown(&format!("{} button.create", row("default"))).await;
    for i in 0..5 {
        assert_refuses(first + i);
    }
    browser.assert_clean_console(&[]).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_names_from_the_api_are_shown_as_text_and_run_no_script() {
    let config = tempfile::NamedTempFile::new().expect("a config file");
    std::fs::write(config.path(), "max_redirections_per_org = 1\n").expect("write the config");
    let server = Server::builder().config(config.path()).start();
    let echo = TcpService::echo();
    let org = default_org(&server);
    let browser = Browser::start(Viewport::Desktop).await;
    browser.goto(&format!("{}/", server.url)).await;

    // A wrong token: the API's message, still signed out, nothing kept.
    browser.wait_shown("#token").await;
    browser.type_into("#token", "not-a-token").await;
    browser.click("#sign-in").await;
    browser.wait_text("#sign-in-error", "invalid credentials").await;
    assert!(browser.js("return document.getElementById('apps-view').hidden;", vec![]).await == json!(true));
    let kept = browser.js("return sessionStorage.length;", vec![]).await;
    assert_eq!(kept, json!(0), "a refused credential must not be kept");

    // An organisation's credential with its secret (the OAuth PLAINTEXT form).
    let issued = server
        .api("POST", &format!("/v2/organisations/{org}/tokens"), Some(r#"{"name":"console"}"#))
        .ok_json();
    browser.clear("#token").await;
    browser.type_into("#token", issued["token"].as_str().expect("token")).await;
    browser.type_into("#secret", issued["secret"].as_str().expect("secret")).await;
    browser.click("#sign-in").await;
    browser.wait_shown("#apps-view").await;
    browser.wait_text("#apps-list", "No application yet").await;
    let cookies = browser.js("return document.cookie;", vec![]).await;
    assert_eq!(cookies, json!(""), "the console uses no cookie");

    // A name that is HTML: the API refuses it, the page quotes it as text, no script runs.
    let hostile = "<img src=x onerror=window.__xss=1>";
    browser.type_into("#create-app-name", hostile).await;
    browser.type_into("#create-app-instances", &echo.addr().to_string()).await;
    browser.click("#create-app").await;
    let refusal = browser.wait_text("#create-app-error", "invalid application name").await;
    assert!(refusal.contains(hostile), "the refusal quotes the name literally: {refusal}");
    let ran =
        browser.js("return [typeof window.__xss, document.querySelectorAll('img').length];", vec![]).await;
    assert_eq!(ran, json!(["undefined", 0]), "the name was parsed as HTML");

    // An instance address that is HTML: refused by the API too, and quoted as text.
    browser.clear("#create-app-name").await;
    browser.clear("#create-app-instances").await;
    browser.type_into("#create-app-name", "web").await;
    browser.type_into("#create-app-instances", &format!("<b>:4040, {}=2", echo.addr())).await;
    browser.click("#create-app").await;
    let refusal = browser.wait_text("#create-app-error", "<b>:4040").await;
    assert!(refusal.contains("HOST:PORT"), "the refusal says what to write: {refusal}");
    let bold = browser.js("return document.querySelectorAll('main b').length;", vec![]).await;
    assert_eq!(bold, json!(0), "an instance address was parsed as HTML");
    browser.clear("#create-app-instances").await;
    browser.type_into("#create-app-instances", &format!("{}=2", echo.addr())).await;
    browser.click("#create-app").await;
    browser.wait_text("#app-title", "web").await;
    let apps = server.api("GET", &format!("/v2/organisations/{org}/applications"), None).ok_json();
    assert_eq!(apps[0]["instances"][0]["weight"], 2, "weights are sent: {apps}");

    // A call that fails shows the API's message on its row, which stays usable: the
    // organisation's quota is one redirection, so the second namespace is refused.
    let app_id = apps[0]["id"].as_str().expect("the application's id").to_owned();
    browser.click(&format!("{} button.create", row("default"))).await;
    browser.wait_shown(&format!("{} .mark.tick", row("default"))).await;
    let port = server.list("web")[0].1;
    browser.click(&format!("{} button.create", row("cleverapps"))).await;
    browser.wait_text(&format!("{} .row-error", row("cleverapps")), "quota of 1 redirections").await;
    browser.wait_shown(&format!("{} button.create", row("cleverapps"))).await;
    assert!(browser.text(&format!("{} .mark.tick", row("cleverapps"))).await.is_none());
    // Freed by the CLI (the page follows), the quota lets the same row's Create work.
    server.cli_ok(&["remove", &port.to_string(), "--namespace", "default", "--app", &app_id, "--yes"]);
    browser.wait_shown(&format!("{} button.create", row("default"))).await;
    browser.click(&format!("{} button.create", row("cleverapps"))).await;
    browser.wait_shown(&format!("{} .mark.tick", row("cleverapps"))).await;
    let row_error = browser.text(&format!("{} .row-error", row("cleverapps"))).await;
    assert_eq!(row_error.as_deref(), Some(""), "the row's error goes once a call succeeds");
    let port = server.list("web")[0].1;

    // Change the instances.
    browser.clear("#instances-input").await;
    browser.type_into("#instances-input", &format!("{}{ENTER}", echo.addr())).await;
    browser
        .wait_until(
            "the instances to be saved",
            "return document.querySelectorAll('#instances .instance').length === 1;",
            vec![],
        )
        .await;
    let app = server.api("GET", &format!("/v2/organisations/{org}/applications/{app_id}"), None).ok_json();
    let addresses: Vec<_> =
        app["instances"].as_array().expect("instances").iter().map(|i| i["address"].clone()).collect();
    assert_eq!(addresses, vec![json!(echo.addr().to_string())], "{app}");
    // The health checks' state and last check show on the instance (issue 33).
    let line = browser.wait_text("#instances .instance", "checked").await;
    assert!(line.contains("up"), "{line}");

    // Delete the application, after a confirmation.
    browser.click("#delete-app").await;
    browser.click("#delete-app-confirm").await;
    browser.wait_shown("#apps-view").await;
    browser.wait_text("#apps-list", "No application yet").await;
    let apps = server.api("GET", &format!("/v2/organisations/{org}/applications"), None).ok_json();
    assert_eq!(apps, json!([]), "the application is deleted");
    assert_refuses(port);

    // Sign out forgets the credential, also across a reload.
    browser.click("#sign-out").await;
    browser.wait_shown("#sign-in-view").await;
    assert_eq!(browser.js("return sessionStorage.length;", vec![]).await, json!(0));
    browser.goto(&format!("{}/", server.url)).await;
    browser.wait_shown("#sign-in-view").await;

    // Chromium logs each refused call (401, 400, 409) as a failed load; nothing else.
    browser.assert_clean_console(&[400, 401, 409]).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_the_gateway_cannot_listen_on_shows_a_warning_instead_of_the_tick() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("held", echo.addr());
    let port = server.add("held", "default");
    // Another program takes the port while the server is down: after the restart the
    // redirection is `unbound` (the server retries every 5 s).
    let server = {
        let mut server = server;
        server.send_signal(libc::SIGKILL);
        server.wait_for_exit(WAIT).expect("the killed server exits");
        server
    };
    let squatter = std::net::TcpListener::bind((LOCALHOST, port)).expect("take the redirection's port");
    let server = server.crash_and_restart();
    let browser = Browser::start(Viewport::Desktop).await;
    browser.goto(&format!("{}/", server.url)).await;
    browser.type_into("#token", &format!("{}{ENTER}", server.token)).await;
    browser.click("#apps-list a.app-link").await;
    browser.wait_shown(&format!("{} .mark.warn", row("default"))).await;
    let warning =
        browser.wait_text(&format!("{} .warning", row("default")), "another program holds it").await;
    assert!(warning.starts_with("Warning:"), "{warning}");
    assert!(
        browser.text(&format!("{} .mark.tick", row("default"))).await.is_none(),
        "a warning instead of the tick"
    );
    // The port freed, the server binds it again and the tick comes back.
    drop(squatter);
    browser.wait_shown(&format!("{} .mark.tick", row("default"))).await;
    assert!(browser.text(&format!("{} .warning", row("default"))).await.is_none(), "the warning goes");
    browser.assert_clean_console(&[]).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_strict_headers_and_the_api_stays_closed_to_other_origins() {
    let server = Server::start();
    assert!(
        server.log().contains(&format!("web console on {}/", server.url)),
        "the log names the console's URL:\n{}",
        server.log()
    );
    // The page and its files, without credentials, each with the security headers.
    for (path, content_type, needle) in [
        ("/", "text/html", r#"<script src="/console.js" defer></script>"#),
        ("/console.js", "text/javascript", "'use strict'"),
        ("/console.css", "text/css", ".redir"),
    ] {
        let answer = http(server.addr, "GET", path, None, None);
        assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
        assert!(
            answer.header("content-type").is_some_and(|v| v.starts_with(content_type)),
            "GET {path}: {:?}",
            answer.headers
        );
        assert_eq!(answer.header("content-security-policy"), Some(CSP), "GET {path}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "GET {path}");
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"), "GET {path}");
        assert!(answer.header("set-cookie").is_none(), "GET {path} sets a cookie");
        assert!(answer.text().contains(needle), "GET {path}: {}", answer.text());
    }
    // The console is not an API operation; unknown routes still answer the JSON 404.
    let doc = http(server.addr, "GET", "/openapi.json", None, None).ok_json();
    for path in ["/", "/console.js", "/console.css"] {
        assert!(doc["paths"].get(path).is_none(), "{path} is in the OpenAPI document");
    }
    http(server.addr, "GET", "/console.html", None, None).assert_error(404);

    // CORS stays closed: no Access-Control-Allow-Origin for another origin, in a preflight
    // or in a real request (with or without a credential).
    let token = format!("Bearer {}", server.token);
    for (method, auth) in [("OPTIONS", None), ("GET", Some(token.as_str())), ("GET", None)] {
        let answer = raw_http(
            server.addr,
            &format!(
                "{method} /v2/organisations HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\n\
                 Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n{}Connection: close\r\n\r\n",
                server.addr,
                auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default()
            ),
        );
        let lower = answer.to_ascii_lowercase();
        let head = lower.split("\r\n\r\n").next().unwrap_or_default();
        assert!(
            !head.contains("access-control-allow"),
            "{method} from another origin got a CORS header:\n{answer}"
        );
    }
}

/// Sends `request` as is and reads the answer to EOF.
fn raw_http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the control API");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}
