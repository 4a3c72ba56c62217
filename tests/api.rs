//! The HTTP API (Clever's API v2 subset) spoken raw over a `TcpStream`.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

/// The id of the one organisation a fresh server has.
fn default_org(server: &Server) -> String {
    let orgs = server.api("GET", "/v2/organisations", None).ok_json();
    let orgs = orgs.as_array().unwrap_or_else(|| panic!("organisations must be an array: {orgs}"));
    assert_eq!(orgs.len(), 1, "a fresh server has one organisation: {orgs:?}");
    assert!(orgs[0]["name"].is_string(), "organisation name: {}", orgs[0]);
    let id = orgs[0]["id"].as_str().expect("organisation id");
    assert!(id.starts_with("orga_"), "organisation id: {id}");
    id.to_owned()
}

/// `POST …/applications` with one instance; the new application's id.
fn create_app(server: &Server, org: &str, name: &str, instance: SocketAddr) -> String {
    let body = json!({"name": name, "instances": [{"address": instance.to_string()}]}).to_string();
    let created = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body));
    assert!(
        matches!(created.status, 200 | 201),
        "create application: status {} {}",
        created.status,
        created.text()
    );
    let app = created.json();
    assert_eq!(app["name"], name, "{app}");
    assert_eq!(app["ownerId"], org, "{app}");
    assert_eq!(app["instances"], json!([{"address": instance.to_string()}]), "{app}");
    let id = app["id"].as_str().unwrap_or_else(|| panic!("no id in {app}"));
    assert!(id.starts_with("app_"), "application id: {id}");
    id.to_owned()
}

#[test]
fn requests_without_valid_credentials_get_401() {
    let server = Server::start();
    let org = default_org(&server);
    let paths = [
        "/v2/organisations".to_owned(),
        format!("/v2/organisations/{org}/namespaces"),
        format!("/v2/organisations/{org}/applications"),
    ];
    for path in &paths {
        http(server.addr, "GET", path, None, None).assert_error(401);
        http(server.addr, "GET", path, Some("Bearer not-the-token"), None).assert_error(401);
        let oauth = r#"OAuth oauth_consumer_key="k", oauth_token="nope", oauth_signature="s%26nope""#;
        http(server.addr, "GET", path, Some(oauth), None).assert_error(401);
    }
}

#[test]
fn clevers_oauth_plaintext_header_is_accepted() {
    let secret = "test-admin-secret";
    let server = Server::builder().env("TCP_REDIRS_ADMIN_SECRET", secret).start();
    let org = default_org(&server);
    let path = format!("/v2/organisations/{org}/namespaces");
    let oauth = |signature_secret: &str| {
        format!(
            r#"OAuth oauth_consumer_key="anything", oauth_token="{}", oauth_signature="consumer-secret%26{signature_secret}""#,
            server.token
        )
    };

    let namespaces = http(server.addr, "GET", &path, Some(&oauth(secret)), None).ok_json();
    assert_eq!(namespace_names(&namespaces), ["cleverapps", "default"]);

    http(server.addr, "GET", &path, Some(&oauth("wrong-secret")), None).assert_error(401);
}

/// The four calls `clever tcp-redirs` makes, with their exact shapes, plus the
/// organisation and application calls that lead to them.
#[test]
fn clevers_tcp_redirs_calls() {
    let echo = TcpService::echo();
    let server = Server::start();
    let org = default_org(&server);
    let app = create_app(&server, &org, "api-app", echo.addr());

    let apps = server.api("GET", &format!("/v2/organisations/{org}/applications"), None).ok_json();
    assert!(
        apps.as_array().is_some_and(|a| a.iter().any(|x| x["id"] == app.as_str())),
        "the new app is listed: {apps}"
    );

    let namespaces = server.api("GET", &format!("/v2/organisations/{org}/namespaces"), None).ok_json();
    assert_eq!(namespace_names(&namespaces), ["cleverapps", "default"]);

    let redirs_path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");
    assert_eq!(server.api("GET", &redirs_path, None).ok_json(), json!([]));

    let added = server.api("POST", &redirs_path, Some(r#"{"namespace":"default"}"#)).ok_json();
    assert_eq!(added["namespace"], "default", "{added}");
    let port = port_of(&added);
    assert_same_bytes(&send_and_read_back(port, b"via the API"), b"via the API", "API-made redirection");

    let listed = server.api("GET", &redirs_path, None).ok_json();
    assert_eq!(redirections(&listed), vec![("default".to_owned(), port)]);

    let removed = server.api("DELETE", &format!("{redirs_path}/{port}?namespace=default"), None);
    assert!((200..300).contains(&removed.status), "DELETE: {} {}", removed.status, removed.text());
    let body = removed.text();
    // Clever answers empty or `{}`; we answer the removed redirection, an object with more
    // fields, which clients expecting `{}` read the same way.
    assert!(
        body.trim().is_empty()
            || serde_json::from_str::<Value>(&body)
                .is_ok_and(|v| v.is_object() && (v.get("port").is_none() || v["port"] == json!(port))),
        "DELETE answers empty or an object describing the removed redirection: {body}"
    );
    assert_refuses(port);
    assert_eq!(server.api("GET", &redirs_path, None).ok_json(), json!([]));
}

#[test]
fn a_bad_json_body_is_400() {
    let echo = TcpService::echo();
    let server = Server::start();
    let org = default_org(&server);
    let app = create_app(&server, &org, "api-app", echo.addr());
    let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");

    server.api("POST", &path, Some(r#"{"namespace":"#)).assert_error(400);
    server.api("POST", &path, Some(r#"{"port":5123}"#)).assert_error(400);
    // Unknown fields are refused, not ignored: a misspelt limit is not a silent default.
    let message =
        server.api("POST", &path, Some(r#"{"namespace":"default","idleTimout":5}"#)).assert_error(400);
    assert!(message.contains("idleTimout"), "the refusal names the field: {message}");
    let apps = format!("/v2/organisations/{org}/applications");
    server.api("POST", &apps, Some(r#"{"name":"x","instances":[],"owner":"me"}"#)).assert_error(400);
    // The answer-only fields of an instance are not part of a request.
    let body = r#"{"name":"x","instances":[{"address":"127.0.0.1:4040","activeConnections":1.5}]}"#;
    server.api("POST", &apps, Some(body)).assert_error(400);
}

/// What the document allows is accepted: an integer written `5.0` is the integer 5, as JSON
/// Schema reads it. A port outside the namespace's range is well formed: 422, not 400.
#[test]
fn whole_numbers_written_as_floats_are_integers_and_a_port_outside_the_range_is_422() {
    let echo = TcpService::echo();
    let server = Server::start();
    let org = default_org(&server);
    let app = create_app(&server, &org, "api-app", echo.addr());
    let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");

    server.api("POST", &path, Some(r#"{"namespace":"default","port":80}"#)).assert_error(422);
    let added = server.api("POST", &path, Some(r#"{"namespace":"default","idleTimeout":60.0}"#)).ok_json();
    assert_eq!(added["idleTimeout"], 60, "{added}");
    server.api("POST", &path, Some(r#"{"namespace":"cleverapps","idleTimeout":60.5}"#)).assert_error(400);
}

#[test]
fn an_unknown_namespace_is_404() {
    let echo = TcpService::echo();
    let server = Server::start();
    let org = default_org(&server);
    let app = create_app(&server, &org, "api-app", echo.addr());
    let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");

    server.api("POST", &path, Some(r#"{"namespace":"nope"}"#)).assert_error(404);
    assert_eq!(server.api("GET", &path, None).ok_json(), json!([]));
}

#[test]
fn a_port_outside_1_to_65535_in_delete_is_400() {
    let echo = TcpService::echo();
    let server = Server::start();
    let org = default_org(&server);
    let app = create_app(&server, &org, "api-app", echo.addr());
    let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs/70000?namespace=default");

    server.api("DELETE", &path, None).assert_error(400);
}

#[test]
fn an_unknown_route_is_404() {
    let server = Server::start();
    server.api("GET", "/v2/no-such-route", None).assert_error(404);
    server.api("GET", "/nothing/here", None).assert_error(404);
}

#[test]
fn metrics_count_connections_and_bytes_per_redirection() {
    let server = Server::start();
    let echo = TcpService::echo();
    let org = default_org(&server);
    let app = create_app(&server, &org, "metered", echo.addr());
    let added = server.api(
        "POST",
        &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"),
        Some(r#"{"namespace":"default"}"#),
    );
    let port = port_of(&added.ok_json());
    let payload = random_bytes(10_000);
    assert_same_bytes(&send_and_read_back(port, &payload), &payload, "echo through the redirection");

    let metrics = server.api("GET", "/metrics", None);
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    let text = metrics.text();
    let series = |name: &str, extra: &str| {
        let prefix =
            format!("{name}{{namespace=\"default\",port=\"{port}\",protocol=\"tcp\",app=\"{app}\",app_name=\"metered\"{extra}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no series {prefix} in:\n{text}"))
    };
    assert_eq!(series("tcp_redirs_connections_accepted_total", ""), 1.0);
    assert_eq!(series("tcp_redirs_bytes_total", ",direction=\"in\""), 10_000.0);
    assert_eq!(series("tcp_redirs_bytes_total", ",direction=\"out\""), 10_000.0);
    // The connect-time histogram: one observation, in exactly one bucket; buckets cumulative.
    assert_eq!(series("tcp_redirs_instance_connect_seconds_count", ""), 1.0);
    let infinity = format!("tcp_redirs_instance_connect_seconds_bucket{{le=\"+Inf\",namespace=\"default\",port=\"{port}\",protocol=\"tcp\",app=\"{app}\",app_name=\"metered\"}} 1");
    assert!(text.lines().any(|l| l == infinity), "no `{infinity}` in:\n{text}");
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("tcp_redirs_instance_connect_seconds_bucket{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]) && buckets.iter().all(|&n| n <= 1.0), "{buckets:?}");
    // The instances' health series name the instance's address (the operator's); no series
    // may be labelled by a client's address.
    let echo_addr = echo.addr().to_string();
    assert!(
        text.lines()
            .filter(|l| !l.contains(&format!("instance=\"{echo_addr}\"")))
            .all(|l| !l.contains("127.0.0.1")),
        "no series may be labelled by client address:\n{text}"
    );

    // The list carries the same figures (additive JSON fields).
    let listed = server.api("GET", &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"), None);
    let listed = listed.ok_json();
    assert_eq!(listed[0]["connections"], 1, "{listed}");
    assert_eq!(listed[0]["bytesIn"], 10_000, "{listed}");
    assert_eq!(listed[0]["bytesOut"], 10_000, "{listed}");

    // Without the admin credential, no metrics.
    http(server.addr, "GET", "/metrics", None, None).assert_error(401);
}

#[test]
fn guessing_credentials_is_slowed_down() {
    let server = Server::start();
    let mut statuses = Vec::new();
    for i in 0..14 {
        let wrong = format!("Bearer guess-{i}");
        let answer = http(server.addr, "GET", "/v2/organisations", Some(&wrong), None);
        statuses.push(answer.status);
        if answer.status == 429 {
            let message = answer.assert_error(429);
            assert!(message.contains("wait"), "{message}");
        }
    }
    assert!(statuses[..10].iter().all(|&s| s == 401), "the first failures answer 401: {statuses:?}");
    assert_eq!(statuses[10], 429, "then the address must wait: {statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 429 || s == 401), "{statuses:?}");
}

#[test]
fn the_admin_issues_and_revokes_organisation_credentials_that_see_only_their_organisation() {
    let server = Server::start();
    let default = default_org(&server);
    let echo = TcpService::echo();
    create_app(&server, &default, "admins-app", echo.addr());

    let org = server.api("POST", "/v2/organisations", Some(r#"{"name":"acme"}"#)).ok_json();
    let org_id = org["id"].as_str().expect("org id").to_owned();
    server.api("POST", "/v2/organisations", Some(r#"{"name":"acme"}"#)).assert_error(409);
    let issued =
        server.api("POST", &format!("/v2/organisations/{org_id}/tokens"), Some(r#"{"name":"ci"}"#)).ok_json();
    let (token, secret) = (issued["token"].as_str().unwrap(), issued["secret"].as_str().unwrap());
    let bearer = format!("Bearer {token}");
    let as_acme =
        |method: &str, path: &str, body: Option<&str>| http(server.addr, method, path, Some(&bearer), body);

    // The organisation's credential sees its organisation only.
    let seen = as_acme("GET", "/v2/organisations", None).ok_json();
    assert_eq!(seen, json!([{"id": org_id, "name": "acme"}]));
    as_acme("GET", &format!("/v2/organisations/{default}/applications"), None).assert_error(404);
    as_acme("POST", "/v2/organisations", Some(r#"{"name":"other"}"#)).assert_error(403);
    let body = json!({"name": "acme-app", "instances": [{"address": echo.addr().to_string()}]}).to_string();
    let app = as_acme("POST", &format!("/v2/organisations/{org_id}/applications"), Some(&body)).ok_json();
    let redirs = format!("/v2/organisations/{org_id}/applications/{}/tcpRedirs", app["id"].as_str().unwrap());
    let port = port_of(&as_acme("POST", &redirs, Some(r#"{"namespace":"default"}"#)).ok_json());
    let payload = random_bytes(1000);
    assert_same_bytes(
        &send_and_read_back(port, &payload),
        &payload,
        "the organisation's redirection forwards",
    );

    // Its OAuth form works too.
    let oauth =
        format!(r#"OAuth oauth_consumer_key="k", oauth_token="{token}", oauth_signature="cs%26{secret}""#);
    assert_eq!(http(server.addr, "GET", "/v2/organisations", Some(&oauth), None).status, 200);

    // The admin lists it (never its secret) and revokes it: it stops working at once.
    let listed = server.api("GET", &format!("/v2/organisations/{org_id}/tokens"), None).ok_json();
    assert_eq!(listed[0]["id"], issued["id"], "{listed}");
    assert!(!listed.to_string().contains(token) && !listed.to_string().contains(secret), "{listed}");
    let token_id = issued["id"].as_str().unwrap();
    server.api("DELETE", &format!("/v2/organisations/{org_id}/tokens/{token_id}"), None).ok_json();
    as_acme("GET", "/v2/organisations", None).assert_error(401);
}

#[test]
fn a_reserved_namespace_exists_only_for_its_organisations() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[[namespace]]\nname = \"private\"\norgs = [\"acme\"]\n").unwrap();
    let server = Server::builder().config(&config).start();
    let default = default_org(&server);
    let echo = TcpService::echo();
    let app = create_app(&server, &default, "outsider", echo.addr());
    let acme = server.api("POST", "/v2/organisations", Some(r#"{"name":"acme"}"#)).ok_json();
    let acme = acme["id"].as_str().unwrap();

    let names = |org: &str| {
        namespace_names(&server.api("GET", &format!("/v2/organisations/{org}/namespaces"), None).ok_json())
    };
    assert_eq!(names(acme), vec!["cleverapps", "default", "private"]);
    assert_eq!(names(&default), vec!["cleverapps", "default"]);
    let path = format!("/v2/organisations/{default}/applications/{app}/tcpRedirs");
    let refused = server.api("POST", &path, Some(r#"{"namespace":"private"}"#)).assert_error(404);
    assert!(refused.contains("private"), "{refused}");
}

#[test]
fn an_organisation_cannot_hold_more_redirections_than_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "max_redirections_per_org = 2\n").unwrap();
    let server = Server::builder().config(&config).start();
    let org = default_org(&server);
    let echo = TcpService::echo();
    let add = |app: &str, ns: &str| {
        let body = format!(r#"{{"namespace":"{ns}"}}"#);
        server.api("POST", &format!("/v2/organisations/{org}/applications/{app}/tcpRedirs"), Some(&body))
    };
    let (a, b) = (create_app(&server, &org, "a", echo.addr()), create_app(&server, &org, "b", echo.addr()));
    add(&a, "default").ok_json();
    add(&a, "cleverapps").ok_json();
    let refused = add(&b, "default").assert_error(409);
    assert!(refused.contains("quota of 2"), "{refused}");
}

#[test]
fn the_openapi_document_describes_every_route() {
    let server = Server::start();
    // Served without credentials: it holds no secret, and clients need it to start.
    let doc = http(server.addr, "GET", "/openapi.json", None, None).ok_json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{doc}");
    let routes = [
        ("get", "/v2/organisations"),
        ("post", "/v2/organisations"),
        ("get", "/v2/organisations/{org}/namespaces"),
        ("get", "/v2/organisations/{org}/tokens"),
        ("post", "/v2/organisations/{org}/tokens"),
        ("delete", "/v2/organisations/{org}/tokens/{token}"),
        ("get", "/v2/organisations/{org}/applications"),
        ("post", "/v2/organisations/{org}/applications"),
        ("get", "/v2/organisations/{org}/applications/{app}"),
        ("delete", "/v2/organisations/{org}/applications/{app}"),
        ("put", "/v2/organisations/{org}/applications/{app}/instances"),
        ("get", "/v2/organisations/{org}/applications/{app}/tcpRedirs"),
        ("post", "/v2/organisations/{org}/applications/{app}/tcpRedirs"),
        ("delete", "/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}"),
        ("patch", "/v2/organisations/{org}/applications/{app}/tcpRedirs/{port}"),
        ("post", "/v2/organisations/{org}/tcpRedirs"),
        ("get", "/v2/organisations/{org}/applications/{app}/udpRedirs"),
        ("post", "/v2/organisations/{org}/applications/{app}/udpRedirs"),
        ("delete", "/v2/organisations/{org}/applications/{app}/udpRedirs/{port}"),
        ("patch", "/v2/organisations/{org}/applications/{app}/udpRedirs/{port}"),
        ("patch", "/v2/organisations/{org}/applications/{app}"),
        ("get", "/v2/organisations/{org}/events"),
        ("get", "/v2/events"),
        ("get", "/v2/organisations/{org}/webhooks"),
        ("post", "/v2/organisations/{org}/webhooks"),
        ("delete", "/v2/organisations/{org}/webhooks/{webhook}"),
        ("get", "/metrics"),
        ("get", "/v2/nodes"),
        ("delete", "/v2/nodes/{node}"),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |m| m.len())).sum();
    for (method, path) in routes {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
        // And the route is really served: a request reaches it (401 without credentials, not 404).
        let concrete = path
            .replace("{org}", "o")
            .replace("{app}", "a")
            .replace("{token}", "t")
            .replace("{port}", "1")
            .replace("{node}", "n")
            .replace("{webhook}", "w");
        let body = matches!(method, "post" | "put" | "patch").then_some("{}");
        let status = http(server.addr, &method.to_uppercase(), &concrete, None, body).status;
        assert_eq!(status, 401, "{method} {concrete} must be served and need credentials");
    }
    assert_eq!(documented, routes.len(), "the document has operations this test does not know: {paths:?}");
    for schema in [
        "TcpRedir",
        "NewTcpRedir",
        "Namespace",
        "Application",
        "ApiError",
        "Node",
        "NewTcpRedirBatch",
        "NewTcpRedirItem",
        "TcpRedirBatch",
        "Protocol",
        "SettingsPatch",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
}
