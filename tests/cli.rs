//! The CLI end to end: `tcp-redirs serve` and the client as real processes, traffic through
//! real public ports on 127.0.0.1.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The quick start, with traffic: create an app whose instance is an echo server, add a
/// redirection, push 1 MiB through it, half-close, list, survive `kill -9`, remove.
#[test]
fn end_to_end_forwarding_survives_kill_and_restart() {
    let echo = TcpService::echo();
    let server = Server::start();

    let app = server.create_app("my-db", echo.addr());
    assert_eq!(app["name"], "my-db", "apps create -F json: {app}");
    assert!(app["id"].as_str().is_some_and(|id| id.starts_with("app_")), "app id: {app}");
    assert!(app["ownerId"].as_str().is_some_and(|id| id.starts_with("orga_")), "ownerId: {app}");
    assert_eq!(app["instances"][0]["address"], echo.addr().to_string(), "instances: {app}");

    let port = server.add("my-db", "default");

    let mib = random_bytes(1 << 20);
    assert_same_bytes(&send_and_read_back(port, &mib), &mib, "1 MiB echoed through the redirection");

    let message = b"the client is done writing; the answer must still arrive";
    assert_same_bytes(&half_close_exchange(port, message), message, "echo after a half-close");

    assert_eq!(server.list("my-db"), vec![("default".to_owned(), port)]);

    let server = server.crash_and_restart();
    assert_eq!(
        server.list("my-db"),
        vec![("default".to_owned(), port)],
        "the redirection must come back after kill -9"
    );
    let data = random_bytes(64 * 1024);
    assert_same_bytes(&send_and_read_back(port, &data), &data, "echo on the same port after restart");

    let port_arg = port.to_string();
    server.cli_ok(&["remove", &port_arg, "--app", "my-db", "--namespace", "default"]);
    assert_refuses(port);
    assert_eq!(server.cli_json(&["list", "--app", "my-db", "-F", "json"]), json!([]));
    let human = server.cli_ok(&["list", "--app", "my-db"]);
    assert!(human.contains("No active TCP redirection for this application"), "empty human list:\n{human}");
}

/// The other side answers only after the client's EOF: the half-close must be passed on
/// while the opposite direction stays open.
#[test]
fn half_closed_client_gets_an_answer_sent_after_its_eof() {
    let service = TcpService::answer_after_eof();
    let server = Server::start();
    server.create_app("replier", service.addr());
    let port = server.add("replier", "default");

    let request = random_bytes(200_000);
    let answer = half_close_exchange(port, &request);
    assert_same_bytes(&answer, &answer_after_eof_for(&request), "answer sent after the client's EOF");
}

/// Clever's sentences on every command without `-F`.
#[test]
fn human_outputs_keep_clevers_sentences() {
    let echo = TcpService::echo();
    let server = Server::start();
    server.create_app("my-app", echo.addr());

    let added = server.cli_ok(&["add", "--app", "my-app", "--namespace", "default"]);
    let prefix = "Successfully added tcp redirection on port: ";
    let port: u16 = added
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}PORT` line in:\n{added}"));
    drop(connect(port));

    let expected_line = format!("{port} on default");
    for listing in [server.cli_ok(&["list", "--app", "my-app"]), server.cli_ok(&["--app", "my-app"])] {
        let lines: Vec<&str> = listing.lines().map(str::trim).collect();
        let header = lines.iter().position(|l| *l == "Enabled TCP redirections:");
        let entry = lines.iter().position(|l| l.starts_with(&expected_line));
        assert!(
            matches!((header, entry), (Some(h), Some(e)) if h < e),
            "expected `Enabled TCP redirections:` then a line starting with `{expected_line}`:\n{listing}"
        );
    }

    let namespaces = server.cli_ok(&["list-namespaces"]);
    let lines: Vec<&str> = namespaces.lines().map(str::trim).collect();
    for expected in [
        "Available namespaces:",
        "- cleverapps: for redirections used with 'cleverapps.io' domain",
        "- default: for redirections used with custom domains",
    ] {
        assert!(lines.contains(&expected), "missing line `{expected}` in:\n{namespaces}");
    }

    let port_arg = port.to_string();
    let removed = server.cli_ok(&["remove", &port_arg, "--app", "my-app", "--namespace", "default"]);
    assert!(removed.contains("Successfully removed tcp redirection."), "remove's output:\n{removed}");
    let empty = server.cli_ok(&["--app", "my-app"]);
    assert!(empty.contains("No active TCP redirection for this application"), "empty list:\n{empty}");
}

/// `-F json` on list-namespaces: the built-in namespaces, sorted by name.
#[test]
fn list_namespaces_json_is_sorted() {
    let server = Server::start();
    let namespaces = server.cli_json(&["list-namespaces", "-F", "json"]);
    assert_eq!(namespace_names(&namespaces), ["cleverapps", "default"]);
}

/// `--app` takes the application's id as well as its name, on every command.
#[test]
fn app_is_chosen_by_id_or_by_name() {
    let echo = TcpService::echo();
    let server = Server::start();
    let app = server.create_app("by-id", echo.addr());
    let id = app["id"].as_str().expect("app id").to_owned();

    let port = server.add(&id, "default");
    let expected = vec![("default".to_owned(), port)];
    assert_eq!(server.list("by-id"), expected, "listed by name");
    assert_eq!(server.list(&id), expected, "listed by id");
    assert_eq!(
        redirections(&server.cli_json(&["--app", &id, "-F", "json"])),
        expected,
        "default command, by id"
    );

    let port_arg = port.to_string();
    server.cli_ok(&["remove", &port_arg, "--app", &id, "--namespace", "default"]);
    assert_refuses(port);
    assert_eq!(server.list("by-id"), Vec::<(String, u16)>::new());
}

/// An instance that refuses connections: the client's connection is closed promptly and
/// the server keeps serving, both its API and other redirections.
#[test]
fn unreachable_instance_closes_the_client_promptly() {
    let server = Server::start();
    let dead = std::net::SocketAddr::from((LOCALHOST, refused_port()));
    server.create_app("down", dead);
    let port = server.add("down", "default");

    for attempt in 1..=2 {
        let mut client = connect(port);
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        match client.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("attempt {attempt}: read {n} bytes from a redirection to a dead instance"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "attempt {attempt}: connection still open after {:?}\n--- server stderr ---\n{}",
                started.elapsed(),
                server.log()
            ),
            Err(_) => {} // reset or aborted: closed, as wanted
        }
    }

    assert_eq!(server.list("down"), vec![("default".to_owned(), port)]);
    let echo = TcpService::echo();
    server.create_app("alive", echo.addr());
    let alive = server.add("alive", "default");
    assert_same_bytes(&send_and_read_back(alive, b"still serving"), b"still serving", "other app");
}

// ---------------------------------------------------------------------------------------
// Error paths: non-zero exit code, nothing on stdout, one `error: …` line on stderr.
// ---------------------------------------------------------------------------------------

#[test]
fn add_in_an_unknown_namespace_fails() {
    let echo = TcpService::echo();
    let server = Server::start();
    server.create_app("my-db", echo.addr());
    server
        .cli(&["add", "--app", "my-db", "--namespace", "nope", "-F", "json"])
        .assert_error(3, &["nope", "namespace"]);
    assert_eq!(server.list("my-db"), Vec::<(String, u16)>::new());
}

#[test]
fn an_unknown_application_fails() {
    let server = Server::start();
    server.cli(&["add", "--app", "ghost", "--namespace", "default"]).assert_error(3, &["ghost"]);
    server.cli(&["list", "--app", "ghost", "-F", "json"]).assert_error(3, &["ghost"]);
    server.cli(&["remove", "5123", "--app", "ghost", "--namespace", "default"]).assert_error(3, &["ghost"]);
}

#[test]
fn a_second_add_in_the_same_namespace_names_the_existing_port() {
    let echo = TcpService::echo();
    let server = Server::start();
    server.create_app("my-db", echo.addr());
    let port = server.add("my-db", "default");

    server
        .cli(&["add", "--app", "my-db", "--namespace", "default", "-F", "json"])
        .assert_error(1, &[&port.to_string(), "already"]);
    assert_eq!(server.list("my-db"), vec![("default".to_owned(), port)]);
}

#[test]
fn a_wrong_token_fails_authentication() {
    let server = Server::start();
    run_cli(&server.url, "not-the-token", &["list-namespaces", "-F", "json"])
        .assert_error(4, &["authentication failed"]);
    run_cli(&server.url, "not-the-token", &["apps", "list", "-F", "json"])
        .assert_error(4, &["authentication failed"]);
}

#[test]
fn a_server_that_is_down_is_reported() {
    let closed = format!("http://127.0.0.1:{}", refused_port());
    for url in ["http://127.0.0.1:1", closed.as_str()] {
        run_cli(url, "any-token", &["list-namespaces", "-F", "json"])
            .assert_error(5, &["cannot reach the control server"]);
        run_cli(url, "any-token", &["add", "--app", "my-db", "--namespace", "default"])
            .assert_error(5, &["cannot reach the control server"]);
    }
}

#[test]
fn remove_rejects_a_port_outside_1_to_65535_as_a_usage_error() {
    let server = Server::start();
    for port in ["70000", "0"] {
        let out = server.cli(&["remove", port, "--app", "my-db", "--namespace", "default"]);
        assert_eq!(out.code, 2, "remove {port} must be a usage error\n{out}");
        assert!(out.stdout.is_empty(), "nothing on stdout for a usage error\n{out}");
        assert!(out.stderr.starts_with("error: "), "clap's `error: …` on stderr\n{out}");
    }
}

#[test]
fn apps_create_list_and_remove() {
    let echo = TcpService::echo();
    let server = Server::start();
    let zeta = server.create_app("zeta", echo.addr());
    let alpha = server.create_app("alpha", echo.addr());
    assert_ne!(zeta["id"], alpha["id"]);

    let apps = server.cli_json(&["apps", "list", "-F", "json"]);
    let names: Vec<&str> = apps
        .as_array()
        .unwrap_or_else(|| panic!("apps list -F json must be an array: {apps}"))
        .iter()
        .map(|a| a["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["alpha", "zeta"], "sorted by name: {apps}");

    let port = server.add("zeta", "default");
    server.cli_ok(&["apps", "remove", "zeta"]);
    assert_refuses(port);
    let apps = server.cli_json(&["apps", "list", "-F", "json"]);
    assert_eq!(apps.as_array().map(Vec::len), Some(1), "one app left: {apps}");
    assert_eq!(apps[0]["name"], "alpha");
    server.cli(&["list", "--app", "zeta", "-F", "json"]).assert_error(3, &["zeta"]);
}

/// A namespace from the config file with a two-port range: two apps get a port in it, the
/// third gets `no free port`.
#[test]
fn an_exhausted_namespace_range_reports_no_free_port() {
    let (low, high) = free_port_pair();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("tcp-redirs.toml");
    std::fs::write(
        &config,
        format!(
            "[[namespace]]\nname = \"tiny\"\nports = \"{low}-{high}\"\npublic_host = \"tiny.example.test\"\n"
        ),
    )
    .unwrap();
    let echo = TcpService::echo();
    let server = Server::builder().config(&config).start();

    let names = namespace_names(&server.cli_json(&["list-namespaces", "-F", "json"]));
    assert_eq!(names, ["cleverapps", "default", "tiny"]);

    for app in ["first", "second", "third"] {
        server.create_app(app, echo.addr());
    }
    let first = server.add("first", "tiny");
    let second = server.add("second", "tiny");
    let mut taken = [first, second];
    taken.sort();
    assert_eq!(taken, [low, high], "both ports of the range handed out once each");

    server
        .cli(&["add", "--app", "third", "--namespace", "tiny", "-F", "json"])
        .assert_error(1, &["no free port"]);
    assert_same_bytes(&send_and_read_back(first, b"tiny"), b"tiny", "a port of the tiny namespace");
}

#[test]
fn a_removed_redirection_added_again_gets_its_port_back() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("sticky", echo.addr());
    let first = server.add("sticky", "default");
    server.cli_ok(&["remove", &first.to_string(), "--app", "sticky", "--namespace", "default"]);
    assert_refuses(first);
    let again = server.add("sticky", "default");
    assert_eq!(again, first, "the same application gets its previous port back when it is free");
    let payload = random_bytes(1000);
    assert_same_bytes(&send_and_read_back(again, &payload), &payload, "echo through the port given back");
}

#[test]
fn the_admin_manages_organisations_and_their_credentials_from_the_cli() {
    let server = Server::start();
    let org = server.cli_json(&["orgs", "create", "acme", "-F", "json"]);
    assert_eq!(org["name"], "acme", "{org}");
    let issued = server.cli_json(&["tokens", "create", "--org", "acme", "--name", "ci", "-F", "json"]);
    let token = issued["token"].as_str().expect("token").to_owned();
    let listed = server.cli_json(&["tokens", "list", "--org", "acme", "-F", "json"]);
    assert_eq!(listed[0]["id"], issued["id"]);
    assert!(!listed.to_string().contains(&token), "a list never shows a token: {listed}");

    // The new credential sees acme only.
    let seen = run_cli(&server.url, &token, &["orgs", "list", "-F", "json"]);
    assert_eq!(seen.code, 0, "{}", seen.stderr);
    let seen: serde_json::Value = serde_json::from_str(&seen.stdout).unwrap();
    assert_eq!(seen.as_array().map(|a| a.len()), Some(1), "{seen}");
    assert_eq!(seen[0]["name"], "acme");
    run_cli(&server.url, &token, &["orgs", "create", "evil"]).assert_error(1, &["admin"]);

    server.cli_ok(&["tokens", "revoke", issued["id"].as_str().unwrap(), "--org", "acme"]);
    run_cli(&server.url, &token, &["orgs", "list"]).assert_error(4, &["authentication failed"]);
}

#[test]
fn apply_makes_the_server_match_a_file_idempotently_and_export_round_trips() {
    let server = Server::start();
    let echo = TcpService::echo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let declare = |extra: &str| {
        let text = format!(
            "[[application]]\nname = \"web\"\ninstances = [{{ address = \"{}\" }}]\n\n\
             [[application.redirection]]\nnamespace = \"default\"\n\n{extra}",
            echo.addr()
        );
        std::fs::write(&file, text).unwrap();
    };
    let apply = |dry: bool| {
        let mut args = vec!["apply", "-f", file.to_str().unwrap(), "-F", "json"];
        if dry {
            args.push("--dry-run");
        }
        server.cli_json(&args)
    };
    declare("[[application.redirection]]\nnamespace = \"cleverapps\"\nidle_timeout = 600\nallow = [\"127.0.0.0/8\"]\n");

    let planned = apply(true);
    assert_eq!(planned["dryRun"], true);
    assert_eq!(planned["changes"].as_array().unwrap().len(), 3, "{planned}");
    server.cli(&["list", "--app", "web"]).assert_error(3, &["web"]);

    let applied = apply(false);
    let actions: Vec<(String, String)> = applied["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action"].as_str().unwrap().to_owned(), c["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        actions,
        [("create", "application"), ("add", "redirection"), ("add", "redirection")]
            .map(|(a, k)| (a.into(), k.into()))
    );
    let listed = server.list("web");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (_, port) in &listed {
        let payload = random_bytes(1000);
        assert_same_bytes(&send_and_read_back(*port, &payload), &payload, "a redirection made by apply");
    }
    assert_eq!(apply(false)["changes"], serde_json::json!([]), "a second apply changes nothing");
    let human = server.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(human.starts_with("Nothing to change"), "{human}");

    // Dropping a redirection from the file removes it; the other one keeps its port.
    declare("");
    let applied = apply(false);
    assert_eq!(applied["changes"].as_array().unwrap().len(), 1, "{applied}");
    assert_eq!(applied["changes"][0]["action"], "remove");
    let remaining = server.list("web");
    assert_eq!(remaining, listed.iter().filter(|(ns, _)| ns == "default").cloned().collect::<Vec<_>>());

    // The export, applied to a fresh server, rebuilds the same ports.
    let exported = server.cli_ok(&["export"]);
    let fresh = Server::start();
    std::fs::write(&file, exported).unwrap();
    drop(server);
    fresh.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(fresh.list("web"), remaining);
}

#[test]
fn a_reader_that_leaves_early_is_not_an_error() {
    let server = Server::start();
    let mut child = std::process::Command::new(BIN)
        .args(["list-namespaces", "--server", &server.url])
        .env("TCP_REDIRS_TOKEN", &server.token)
        .env("TCP_REDIRS_CONFIG_DIR", tempfile::tempdir().unwrap().path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `tcp-redirs … | head -0`: the reader is gone before the first byte is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn exit_codes_tell_not_found_authentication_and_unreachable_apart() {
    let server = Server::start();
    assert_eq!(server.cli(&["--app", "ghost"]).code, 3);
    assert_eq!(run_cli(&server.url, "wrong-token", &["list-namespaces"]).code, 4);
    assert_eq!(run_cli(&format!("http://127.0.0.1:{}", refused_port()), "t", &["list-namespaces"]).code, 5);
    assert_eq!(server.cli(&["remove", "70000", "--app", "x", "--namespace", "default"]).code, 2);
    let help = server.cli_ok(&["--help"]);
    assert!(help.contains("Exit codes:") && help.contains("5  server unreachable"), "{help}");
}

#[test]
fn tcp_redirs_app_selects_the_application_for_ci_jobs() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("from-env", echo.addr());
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .args(["--server", &server.url])
            .env("TCP_REDIRS_TOKEN", &server.token)
            .env("TCP_REDIRS_APP", "from-env")
            .env("TCP_REDIRS_CONFIG_DIR", tempfile::tempdir().unwrap().path())
            .output()
            .unwrap()
    };
    let added = run(&["add", "--namespace", "default", "-F", "json"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let port = port_of(&serde_json::from_slice(&added.stdout).unwrap());
    assert_eq!(server.list("from-env"), vec![("default".to_owned(), port)]);
    let apps = run(&["apps", "list", "-F", "json"]);
    assert!(apps.status.success(), "TCP_REDIRS_APP must not break commands without --app");
}

#[test]
fn login_saves_a_private_profile_that_later_commands_use_and_logout_forgets() {
    let server = Server::start();
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| cli_with_config(config.path(), args);
    let (code, _, err) = run(&["login", "--server", &server.url, "--token", "not-the-token"]);
    assert_eq!(code, 4, "a wrong token is refused before anything is saved: {err}");
    assert!(!config.path().join("config.toml").exists());

    let (code, out, err) =
        run(&["login", "--server", &server.url, "--token", &server.token, "--profile", "lab"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lab"), "{out}");
    let file = config.path().join("config.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    let (code, out, err) = run(&["list-namespaces", "-F", "json"]);
    assert_eq!(code, 0, "the saved profile is used: {err}");
    assert!(out.contains("cleverapps"), "{out}");
    let (_, listed, _) = run(&["profile", "list", "-F", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "lab");
    assert_eq!(listed[0]["current"], true);
    assert!(!listed.to_string().contains(&server.token), "a list never shows a token: {listed}");
    assert_eq!(run(&["profile", "use", "nowhere"]).0, 3);

    let (code, _, err) = run(&["logout"]);
    assert_eq!(code, 0, "{err}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&server.token), "logout forgets the token");
}

#[test]
fn applications_linked_to_a_directory_are_found_from_below_it() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("api", echo.addr());
    server.create_app("db", echo.addr());
    let project = tempfile::tempdir().unwrap();
    let deep = project.path().join("src/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let run = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .args(["--server", &server.url])
            .current_dir(dir)
            .env("TCP_REDIRS_TOKEN", &server.token)
            .env("TCP_REDIRS_CONFIG_DIR", project.path().join("cfg"))
            .env_remove("TCP_REDIRS_APP")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(project.path(), &["link", "api"]);
    assert_eq!(code, 0, "{err}");
    assert!(project.path().join(".tcp-redirs.json").is_file());
    // The only linked application is the default one, from any directory below.
    let (code, out, err) = run(&deep, &["add", "--namespace", "default", "-F", "json"]);
    assert_eq!(code, 0, "{err}");
    let port = port_of(&serde_json::from_str(&out).unwrap());
    assert_eq!(server.list("api"), vec![("default".to_owned(), port)]);

    run(project.path(), &["link", "db", "--alias", "database"]);
    let (code, _, err) = run(&deep, &["list"]);
    assert_eq!(code, 1, "two links and no alias: {err}");
    assert!(err.contains("api") && err.contains("database"), "the aliases are listed: {err}");
    let (code, out, err) = run(&deep, &["-a", "database", "-F", "json"]);
    assert_eq!((code, out.trim()), (0, "[]"), "{err}");
    assert_eq!(
        run(&deep, &["--app", "api", "--alias", "database"]).0,
        2,
        "--app with --alias is a usage error"
    );
    assert_eq!(run(&deep, &["-a", "nope"]).0, 3);

    assert_eq!(run(&deep, &["unlink", "database"]).0, 0);
    assert_eq!(run(&deep, &["unlink"]).0, 0);
    assert!(!project.path().join(".tcp-redirs.json").exists(), "the last unlink removes the file");
}

#[test]
fn a_broken_toml_file_is_one_error_line_with_its_place() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("setup.toml");
    std::fs::write(&file, "[[application]]\nname = \"db\"\ninstances = [{ address = 42 }]\n").unwrap();
    let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out}");
    assert!(out.stderr.starts_with("error: ") && out.stderr.contains("setup.toml:3:"), "{out}");
    // A misspelt key of a redirection is reported at its own line, not at its table's.
    std::fs::write(
        &file,
        "[[application]]\nname = \"db\"\n\n[[application.redirection]]\nnamespace = \"default\"\nidle_timout = 600\n",
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", file.to_str().unwrap()]);
    out.assert_error(1, &["setup.toml:6:1: unknown field `idle_timout`"]);
    // The server's config file alike.
    let (code, stderr) = serve_with_config(dir.path(), "[[namespace]\nname = \"x\"\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: invalid config file: ") && stderr.contains("config.toml:1:"),
        "{stderr}"
    );
}

/// Runs `serve` with `text` as its config file (in `dir`, with its data and client config
/// there too) until it exits: its exit code and stderr.
fn serve_with_config(dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("TCP_REDIRS_CONFIG_DIR", dir)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A namespace's settings in the config file are checked as a redirection's are, and one
/// that only a redirection can have is refused with where to set it instead.
#[test]
fn a_namespace_setting_out_of_bounds_or_not_a_namespaces_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |body: &str| serve_with_config(dir.path(), &format!("[[namespace]]\nname = \"x\"\n{body}\n"));
    let (code, stderr) = serve("allow = [\"10.0.0.0/8\"]");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("namespace `x`: `allow` is a redirection's setting") && stderr.contains("--allow"),
        "{stderr}"
    );
    let (code, stderr) = serve("idle_timeout = 0");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("namespace `x`: the idle timeout must be from 1 to"), "{stderr}");
    let (code, stderr) = serve("idleTimeout = 5");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("unknown field `idleTimeout`"), "the files spell settings snake_case: {stderr}");
}

#[test]
fn a_profile_secret_is_sent_with_its_token_and_checked() {
    let server = Server::start();
    // An organisation's credential: a token and its secret.
    let org = server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
    let issued =
        server.api("POST", &format!("/v2/organisations/{org}/tokens"), Some(r#"{"name":"ci"}"#)).ok_json();
    let (token, secret) = (issued["token"].as_str().unwrap(), issued["secret"].as_str().unwrap());
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let (code, _, err) = cli_with_config(config.path(), args);
        (code, err)
    };
    // A wrong secret is refused at login: the server checks it.
    let (code, err) = run(&["login", "--server", &server.url, "--token", token, "--secret", "trs_wrong"]);
    assert_eq!(code, 4, "{err}");
    let (code, err) = run(&["login", "--server", &server.url, "--token", token, "--secret", secret]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run(&["list-namespaces"]).0, 0, "later calls send the token with its secret");
    // The saved secret is really sent: spoil it, and the server refuses the pair.
    let file = config.path().join("config.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace(secret, "trs_spoiled");
    std::fs::write(&file, text).unwrap();
    assert_eq!(run(&["list-namespaces"]).0, 4, "a profile whose secret is wrong is refused");
}

/// The CLI with `config` as its config directory and no server or token from the
/// environment: (exit code, stdout, stderr).
fn cli_with_config(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("TCP_REDIRS_CONFIG_DIR", config)
        .env_remove("TCP_REDIRS_URL")
        .env_remove("TCP_REDIRS_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_organisations_round_trip_through_export_and_apply_with_every_port_kept() {
    let server = Server::start();
    let echo = TcpService::echo();
    let udp_echo = UdpEcho::start();
    let (tcp, udp) = (echo.addr().to_string(), udp_echo.addr().to_string());
    server.cli_ok(&["orgs", "create", "acme"]);
    server.cli_ok(&["orgs", "create", "empty"]);
    // A command that needs one organisation says which flag to add.
    server.cli(&["apps", "create", "db", "--instance", &tcp]).assert_error(1, &["--org", "acme", "default"]);
    server.cli(&["apps", "list"]).assert_error(1, &["--org"]);
    server.cli_ok(&["apps", "create", "db", "--instance", &tcp, "--org", "default"]);
    server.cli_ok(&["apps", "create", "mqtt", "--instance", &tcp, "--org", "acme"]);
    // The same name in two organisations: two applications.
    server.cli_ok(&["apps", "create", "db", "--instance", &udp, "--org", "acme"]);
    let db = server.cli_json(&["apps", "list", "--org", "default", "-F", "json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let acme_apps = server.cli_json(&["apps", "list", "--org", "acme", "-F", "json"]);
    let id_of = |name: &str| {
        acme_apps.as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (mqtt, acme_db) = (id_of("mqtt"), id_of("db"));
    let mut ports = vec![
        ("default-db", server.add(&db, "default")),
        (
            "mqtt",
            port_of(&server.cli_json(&[
                "add",
                "--app",
                &mqtt,
                "--namespace",
                "cleverapps",
                "--idle-timeout",
                "600",
                "-F",
                "json",
            ])),
        ),
        (
            "acme-db",
            port_of(&server.cli_json(&[
                "add",
                "--app",
                &acme_db,
                "--namespace",
                "default",
                "--udp",
                "-F",
                "json",
            ])),
        ),
    ];
    ports.sort();

    // The admin's export holds every organisation, each application naming its own.
    let exported = server.cli_ok(&["export"]);
    assert!(exported.starts_with("organisations = [\"acme\", \"default\", \"empty\"]\n"), "{exported}");
    assert_eq!(exported.matches("organisation = \"acme\"").count(), 2, "{exported}");
    assert_eq!(exported.matches("organisation = \"default\"").count(), 1, "{exported}");
    // `--org` names one: a single-organisation file, as before.
    let one = server.cli_ok(&["export", "--org", "acme"]);
    assert!(!one.contains("organisation"), "{one}");
    assert_eq!(one.matches("[[application]]").count(), 2, "{one}");
    // A single-organisation file on a server of several: say which flag to add.
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("one.toml");
    std::fs::write(&single, &one).unwrap();
    server.cli(&["apply", "-f", single.to_str().unwrap()]).assert_error(1, &["--org", "organisation ="]);
    let same = server.cli_ok(&["apply", "-f", single.to_str().unwrap(), "--org", "acme"]);
    assert!(same.starts_with("Nothing to change"), "{same}");

    // Applied to a fresh server: the organisations made, every port kept, bytes through.
    let file = dir.path().join("all.toml");
    std::fs::write(&file, &exported).unwrap();
    drop(server);
    let fresh = Server::start();
    let dry = fresh.cli_ok(&["apply", "-f", file.to_str().unwrap(), "--dry-run"]);
    assert!(dry.starts_with("+ organisation acme\n+ organisation empty\n+ application acme/db\n"), "{dry}");
    let out = fresh.cli_ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("+ redirection acme/mqtt "), "{out}");
    assert_eq!(fresh.cli_ok(&["export"]), exported, "the fresh server exports the same file");
    let orgs = fresh.cli_json(&["orgs", "list", "-F", "json"]);
    let names: Vec<&str> = orgs.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme", "default", "empty"]);
    for (what, port) in &ports {
        if *what == "acme-db" {
            let socket = udp_client(LOCALHOST.into(), *port);
            assert_eq!(udp_round_trip(&socket, b"dgram").unwrap(), b"dgram", "{what} on {port}");
        } else {
            let payload = random_bytes(512);
            assert_same_bytes(&send_and_read_back(*port, &payload), &payload, what);
        }
    }
    let again = fresh.cli_json(&["apply", "-f", file.to_str().unwrap(), "-F", "json"]);
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
}

/// The human list shows, under each redirection, the settings in force: its own, else its
/// namespace's, else the server's defaults.
#[test]
fn the_human_list_shows_the_limits_in_force() {
    let echo = TcpService::echo();
    let server = Server::start();
    server.create_app("limited", echo.addr());
    let port = port_of(&server.cli_json(&[
        "add",
        "--app",
        "limited",
        "--namespace",
        "default",
        "--idle-timeout",
        "600",
        "--max-connections",
        "5",
        "--allow",
        "127.0.0.1",
        "--proxy-protocol",
        "v2",
        "-F",
        "json",
    ]));
    let listing = server.cli_ok(&["list", "--app", "limited"]);
    let lines: Vec<&str> = listing.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(&format!("{port} on default"))).expect(&listing);
    assert_eq!(
        lines[at + 1],
        "  connect 5 s, idle 600 s, half-close 60 s, at most 5 open, allow 127.0.0.1, PROXY v2",
        "{listing}"
    );
}

/// Bad input on the command line is a usage error (exit 2), found before any request:
/// an application's name the server would refuse says what to write instead.
#[test]
fn an_application_name_with_a_space_is_a_usage_error() {
    let server = Server::start();
    let out = server.cli(&["apps", "create", "my db", "--instance", "127.0.0.1:4040"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("invalid application name `my db`") && out.stderr.contains("my-db"), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(server.cli(&["apps", "create", "app_x", "--instance", "127.0.0.1:4040"]).code, 2);
    assert!(server.cli_json(&["apps", "list", "-F", "json"]).as_array().unwrap().is_empty());
}
