//! The OpenAPI document is the contract: schemathesis, driven by the document alone, sends a
//! real `tcp-redirs serve` what the document allows and what it forbids, and checks that
//! valid requests are never refused for their shape (only for the state they find: 404,
//! 409, 422), invalid ones are always refused, nothing answers 5xx, and every answer has a
//! status and a shape the document declares. It follows the document's links too
//! (stateful: create an application, then read, change and remove it).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The schemathesis version `scripts/test` installs, the one this test was written against.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Test cases per operation and phase: bounded so that the run takes about a minute on
/// two cores; the seed and deterministic generation make it the same run every time.
const MAX_EXAMPLES: &str = "25";
/// The longest the run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// `st` from `$SCHEMATHESIS`, else from the PATH, with its `--version` output.
fn schemathesis() -> Option<(String, String)> {
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".to_owned());
    let out = Command::new(&program).arg("--version").stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| (program, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

#[test]
#[ignore = "needs schemathesis (pip install schemathesis); scripts/test installs it and runs ignored tests"]
fn the_server_keeps_to_its_openapi_document() {
    let Some((st, version)) = schemathesis() else {
        cannot_run_here(
            "the_server_keeps_to_its_openapi_document",
            &format!(
                "schemathesis (`st`) is not installed: `pip install schemathesis=={SCHEMATHESIS_VERSION}`, or set SCHEMATHESIS to its path"
            ),
        );
    };
    eprintln!("[openapi] {version}");
    let echo = TcpService::echo();
    let server = Server::start();

    // Real ids and names, so that generated requests reach past "not found" often; the
    // generator still draws its own values for part of the cases.
    let orgs = server.api("GET", "/v2/organisations", None).ok_json();
    let org = orgs[0]["id"].as_str().expect("the default organisation's id").to_owned();
    let body = json!({"name": "seed-app", "instances": [{"address": echo.addr().to_string()}]}).to_string();
    let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
    let app = app["id"].as_str().expect("the new application's id").to_owned();
    let token = server.api("POST", &format!("/v2/organisations/{org}/tokens"), Some(r#"{"name":"seed"}"#));
    let token = token.ok_json()["id"].as_str().expect("the new credential's id").to_owned();

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[dictionaries.orgs]
values = ["{org}"]
[dictionaries.apps]
values = ["{app}"]
[dictionaries.tokens]
values = ["{token}"]
[dictionaries.namespaces]
values = ["default", "cleverapps"]

[parameters]
"path.org" = {{ dictionary = "orgs", probability = 0.8 }}
"path.app" = {{ dictionary = "apps", probability = 0.6 }}
"path.token" = {{ dictionary = "tokens", probability = 0.3 }}
"query.namespace" = {{ dictionary = "namespaces", probability = 0.7 }}
# Always a real namespace in a body: the stateful phase follows createApplication to
# addTcpRedir, where an unknown namespace answers 404 (4043, as on Clever), which
# schemathesis takes for the new application not found (ST302). Unknown namespaces are
# covered by tests/api.rs and tests/batch.rs.
"body.namespace" = {{ dictionary = "namespaces", probability = 1.0 }}

# A port asked for outside its namespace's range is refused with 422 (4221), as the
# operation documents: the range is the namespace's, which the document cannot state, so
# a body the document allows may get it. tests/api.rs covers the 4221 itself.
[[operations]]
include-operation-id = "addTcpRedir"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# The same for UDP, which also answers 422 (4222) for the TCP settings it does not have.
[[operations]]
include-operation-id = "addUdpRedir"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# An update answers 422 (4222) for a setting the redirection's protocol does not have, as
# an add does; the protocol is the path's, which the body's schema cannot follow.
[[operations]]
include-operation-id = "updateTcpRedir"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# The audit trail's long poll answers after `wait` seconds when no event comes: generated
# waits of up to a minute would make the run hours long. tests/events.rs covers the wait.
[[operations]]
include-operation-id = "listEvents"
parameters = {{ "query.wait" = 0 }}

[[operations]]
include-operation-id = "listAllEvents"
parameters = {{ "query.wait" = 0 }}

# A webhook URL must be https, or http to a loopback address (422, 4225), which the schema
# of a string cannot state; an organisation holds at most 10 (409, 4098). tests/webhooks.rs
# covers both.
[[operations]]
include-operation-id = "createWebhook"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-operation-id = "updateUdpRedir"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# Health-check settings are bounded one by one in the document; how they combine (a
# timeout no longer than the interval, the node's own filling in) is answered 422 (4224).
# tests/health.rs covers the 4224 itself.
[[operations]]
include-operation-id = "createApplication"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[[operations]]
include-operation-id = "updateApplication"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"#
        ),
    )
    .expect("write the schemathesis config");

    let url = &server.url;
    let started = Instant::now();
    let mut child = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{url}/openapi.json"), "--url", url])
        .args(["-H", &format!("Authorization: Bearer {}", server.token)])
        // Every check but `ignored_auth`: it sends wrong credentials, which the brake on
        // guessing answers (429 for every request from loopback once it holds, valid ones
        // included), and tests/api.rs covers the 401s. The 429 would otherwise be an
        // accepted answer to everything and hide what this test looks for.
        .args(["--checks", "all", "--exclude-checks", "ignored_auth"])
        .args(["--generation-with-security-parameters", "false"])
        .args(["--max-examples", MAX_EXAMPLES, "--generation-deterministic", "--workers", "1"])
        .arg("--no-color")
        .arg("--report-dir")
        .arg(dir.path().join("report"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn schemathesis");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let Some(status) = wait_for_child(&mut child, RUN_LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "schemathesis still running after {RUN_LIMIT:?}; killed it\n{}",
            out.join().unwrap_or_default()
        );
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    eprintln!("[openapi] schemathesis ran in {:?}", started.elapsed());
    let summary = out.find("SUMMARY").map_or(out.as_str(), |at| &out[at..]);
    eprintln!("[openapi] {summary}");
    assert!(
        status.success(),
        "schemathesis found requests the server answers against its document ({status}):\n{out}\n{err}\n--- server stderr ---\n{}",
        server.log()
    );
    // A run that tested nothing would pass too: it must have generated and sent cases.
    assert!(out.contains("Tested: 29"), "schemathesis must test all 29 operations:\n{out}");
    // The seeded application is still served: nothing the run did broke the server.
    server.api("GET", "/v2/organisations", None).ok_json();
}
