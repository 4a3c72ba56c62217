//! The command line's conveniences: dynamic completion from the server, the order in which
//! the application is chosen, exit codes in every help, tables that fit the terminal, and
//! no colour where there should be none.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use expectrl::Session;

/// `tcp-redirs` with nothing of the caller's environment that could change its behaviour.
fn bin(config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TCP_REDIRS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TCP_REDIRS_CONFIG_DIR", config).env_remove("COMPLETE").stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the shell's completion script asks the binary: `COMPLETE=fish tcp-redirs -- WORDS`.
/// Fish's answer is one candidate a line, `VALUE\tHELP`; returns the values.
fn complete(server: &Server, dir: &Path, words: &[&str]) -> Vec<String> {
    let config = tempfile::tempdir().unwrap();
    let out = bin(config.path())
        .current_dir(dir)
        .env("COMPLETE", "fish")
        .env("TCP_REDIRS_URL", &server.url)
        .env("TCP_REDIRS_TOKEN", &server.token)
        .arg("--")
        .arg("tcp-redirs")
        .args(words)
        .output()
        .unwrap();
    assert!(out.status.success(), "completion failed: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "a completion prints nothing on stderr: {}", text(&out.stderr));
    text(&out.stdout).lines().map(|l| l.split('\t').next().unwrap().to_owned()).collect()
}

#[test]
fn dynamic_completion_offers_namespaces_applications_and_ports_from_the_server() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("api", echo.addr());
    server.create_app("db", echo.addr());
    let port = server.add("api", "default");
    let dir = tempfile::tempdir().unwrap();

    // clever's own namespace completion is broken; ours asks the server.
    assert_eq!(complete(&server, dir.path(), &["add", "--namespace", ""]), ["cleverapps", "default"]);
    assert_eq!(complete(&server, dir.path(), &["add", "--app", "api", "--namespace", "d"]), ["default"]);
    let mut apps = complete(&server, dir.path(), &["list", "--app", ""]);
    apps.sort();
    assert_eq!(apps, ["api", "db"]);
    assert_eq!(complete(&server, dir.path(), &["link", "d"]), ["db"]);
    let ids = complete(&server, dir.path(), &["--app", "app_"]);
    assert_eq!(ids.len(), 2, "ids are offered once `app_` is typed: {ids:?}");
    let ports = complete(&server, dir.path(), &["remove", "--app", "api", ""]);
    assert_eq!(ports.first(), Some(&port.to_string()), "remove completes the application's ports: {ports:?}");
    assert_eq!(
        complete(&server, dir.path(), &["remove", "--app", "api", "--namespace", "cleverapps", "1"]),
        [""; 0]
    );
    assert_eq!(complete(&server, dir.path(), &["list-namespaces", "--org", ""]), ["default"]);

    // Aliases come from the link file, found from the current directory up.
    std::fs::write(
        dir.path().join(".tcp-redirs.json"),
        r#"{"apps":[{"alias":"backend","appId":"app_x","orgId":"orga_x","name":"api"}]}"#,
    )
    .unwrap();
    let below = dir.path().join("src");
    std::fs::create_dir(&below).unwrap();
    assert_eq!(complete(&server, &below, &["list", "-a", ""]), ["backend"]);
    assert_eq!(complete(&server, &below, &["unlink", "b"]), ["backend"]);
}

#[test]
fn dynamic_completion_without_a_server_answers_nothing_at_once() {
    let config = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = bin(config.path())
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", "3")
        .args(["--", "tcp-redirs", "add", "--namespace", ""])
        .args(["--server", &format!("http://127.0.0.1:{}", refused_port())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "no error in the middle of the shell's line: {}", text(&out.stderr));
    assert!(text(&out.stdout).trim().is_empty(), "no candidates: {}", text(&out.stdout));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // The registration script that `source <(COMPLETE=bash tcp-redirs)` evaluates.
    let script = bin(config.path()).env("COMPLETE", "bash").output().unwrap();
    assert!(script.status.success());
    assert!(text(&script.stdout).contains("complete "), "{}", text(&script.stdout));
}

#[test]
fn an_alias_on_the_command_line_wins_over_tcp_redirs_app() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("api", echo.addr());
    server.create_app("db", echo.addr());
    let port = server.add("db", "default");
    let project = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| -> Output {
        bin(&project.path().join("cfg"))
            .current_dir(project.path())
            .args(args)
            .args(["--server", &server.url])
            .env("TCP_REDIRS_TOKEN", &server.token)
            .env("TCP_REDIRS_APP", "api")
            .output()
            .unwrap()
    };
    let linked = run(&["link", "db", "--alias", "database"]);
    assert!(linked.status.success(), "{}", text(&linked.stderr));

    let listed = run(&["-a", "database", "-F", "json"]);
    assert!(
        listed.status.success(),
        "TCP_REDIRS_APP must not conflict with --alias: {}",
        text(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(redirections(&listed), [("default".to_owned(), port)]);

    // Without --alias, TCP_REDIRS_APP wins over the link file.
    let listed: serde_json::Value = serde_json::from_slice(&run(&["-F", "json"]).stdout).unwrap();
    assert_eq!(redirections(&listed), []);
    // --app and --alias together remain a usage error.
    assert_eq!(run(&["--app", "db", "-a", "database"]).status.code(), Some(2));
}

#[test]
fn not_found_is_exit_3_for_organisations_and_links_too() {
    let server = Server::start();
    server.cli(&["list-namespaces", "--org", "nowhere"]).assert_error(3, &["nowhere", "orgs list"]);
    server.cli(&["tokens", "list", "--org", "nowhere"]).assert_error(3, &["nowhere"]);

    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join(".tcp-redirs.json"),
        r#"{"apps":[{"alias":"one","appId":"app_1","orgId":"orga_1","name":"one"},
                    {"alias":"two","appId":"app_2","orgId":"orga_2","name":"two"}]}"#,
    )
    .unwrap();
    let unlink = bin(&project.path().join("cfg")).current_dir(project.path()).arg("unlink").output().unwrap();
    assert_eq!(unlink.status.code(), Some(1));
    let err = text(&unlink.stderr);
    assert!(err.contains("one") && err.contains("two"), "the aliases are listed: {err}");
    let unlink = bin(&project.path().join("cfg"))
        .current_dir(project.path())
        .args(["unlink", "three"])
        .output()
        .unwrap();
    assert_eq!(unlink.status.code(), Some(3), "{}", text(&unlink.stderr));
}

#[test]
fn every_command_documents_its_exit_codes() {
    let config = tempfile::tempdir().unwrap();
    for command in [&["--help"][..], &["add", "--help"], &["remove", "--help"], &["login", "--help"]] {
        let out = bin(config.path()).args(command).output().unwrap();
        assert!(out.status.success());
        let help = text(&out.stdout);
        assert!(
            help.contains("Exit codes:")
                && help.contains("3  not found")
                && help.contains("5  server unreachable"),
            "`{}` lacks the exit codes:\n{help}",
            command.join(" ")
        );
    }
}

/// Runs `tcp-redirs ARGS` on a pseudo-terminal COLUMNS wide and returns all it printed.
fn on_a_terminal(server: &Server, columns: u16, env: &[(&str, &str)], args: &[&str]) -> String {
    let config = tempfile::tempdir().unwrap();
    // The pty library sizes the terminal 80x24 from both sides of its fork, the parent's
    // possibly last: the shell waits for a line from the test, sent once the spawn returned,
    // then sizes the terminal, so the program finds the width it was given.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("stty -echo; read -r _; stty cols {columns} rows 50 echo && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .args(["--server", &server.url])
        .env("TCP_REDIRS_TOKEN", &server.token)
        .env("TCP_REDIRS_CONFIG_DIR", config.path())
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("TCP_REDIRS_APP");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut session = Session::spawn(cmd).expect("spawn on a pseudo-terminal");
    expectrl::Expect::send_line(&mut session, "").expect("start the program");
    // Everything until the terminal closes (Linux answers EIO once the program has exited).
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = std::io::Read::read(&mut session, &mut chunk) {
        out.extend_from_slice(&chunk[..n]);
    }
    let _ = session.get_process().wait();
    text(&out).replace("\r\n", "\n")
}

#[test]
fn tables_fit_the_terminal_and_stay_whole_in_a_pipe() {
    let server = Server::start();
    let instances: Vec<String> = (0..6).map(|i| format!("127.0.0.1:{}", 4040 + i)).collect();
    let mut args = vec!["apps", "create", "a-rather-long-application-name"];
    for i in &instances {
        args.extend(["--instance", i.as_str()]);
    }
    server.cli_ok(&args);

    let shown = on_a_terminal(&server, 100, &[], &["apps", "list"]);
    for word in ["NAME", "ID", "INSTANCES", "a-rather-long-application-name", &instances[5]] {
        assert!(shown.contains(word), "`{word}` is missing:\n{shown}");
    }
    assert!(shown.lines().count() > 2, "the instances wrap on a 100-column terminal:\n{shown}");
    for line in shown.lines() {
        assert!(line.chars().count() <= 100, "a line wider than the terminal: {line:?}\n{shown}");
    }

    let piped = server.cli_ok(&["apps", "list"]);
    assert!(
        piped.lines().any(|l| l.contains("a-rather-long-application-name") && l.contains(&instances[5])),
        "a pipe gets whole lines, for grep:\n{piped}"
    );
}

#[test]
fn no_colour_in_a_pipe_nor_under_no_color() {
    let server = Server::start();
    let has_colour = |s: &str| s.contains("\u{1b}[");
    // A pipe: no escape sequence anywhere, help and errors included.
    let piped = server.cli(&["--help"]);
    assert!(!has_colour(&piped.stdout), "{}", piped.stdout);
    let failed = server.cli(&["remove", "70000", "--namespace", "default", "--app", "x"]);
    assert!(!has_colour(&failed.stderr), "{}", failed.stderr);

    // A terminal colours the help unless NO_COLOR is set.
    let coloured = on_a_terminal(&server, 100, &[], &["--help"]);
    assert!(has_colour(&coloured), "help on a terminal is coloured, so the next check means something");
    let plain = on_a_terminal(&server, 100, &[("NO_COLOR", "1")], &["--help"]);
    assert!(!has_colour(&plain), "NO_COLOR: {plain:?}");
    let listed = on_a_terminal(&server, 100, &[("NO_COLOR", "1")], &["list-namespaces"]);
    assert!(listed.contains("Available namespaces:") && !has_colour(&listed), "{listed:?}");
}

#[test]
fn a_reader_that_stops_after_one_line_is_not_an_error() {
    let server = Server::start();
    // Over 100 KiB of table: more than a pipe holds, so the writer meets the closed pipe.
    let orgs = server.api("GET", "/v2/organisations", None).ok_json();
    let org = orgs[0]["id"].as_str().unwrap();
    let instances: Vec<String> =
        (0..64).map(|i| format!(r#"{{"address":"127.0.0.1:{}"}}"#, 40000 + i)).collect();
    for i in 0..100 {
        let body =
            format!(r#"{{"name":"app-{i:03}-{}","instances":[{}]}}"#, "x".repeat(100), instances.join(","));
        server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
    }
    let config = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$0\" apps list --server \"$1\" | head -1")
        .arg(BIN)
        .arg(&server.url)
        .env("TCP_REDIRS_TOKEN", &server.token)
        .env("TCP_REDIRS_CONFIG_DIR", config.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "`tcp-redirs apps list | head -1` exits 0: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert!(out.stderr.is_empty(), "a broken pipe is quiet: {}", text(&out.stderr));
}

#[test]
fn a_name_that_several_applications_share_lists_their_ids() {
    let server = Server::start();
    let echo = TcpService::echo();
    let instance = echo.addr().to_string();
    let first = server.create_app("shared", echo.addr());
    server.cli_ok(&["orgs", "create", "acme"]);
    let second = server.cli_json(&[
        "apps",
        "create",
        "shared",
        "--org",
        "acme",
        "--instance",
        &instance,
        "-F",
        "json",
    ]);
    let out = server.cli(&["--app", "shared"]);
    let (a, b) = (first["id"].as_str().unwrap(), second["id"].as_str().unwrap());
    out.assert_error(1, &["several applications", a, b]);
    // Either id chooses one.
    server.cli_ok(&["--app", b]);
}

#[test]
fn environment_variables_override_the_profile_whose_token_goes_only_to_its_server() {
    use std::io::{Read, Write};
    let server = Server::start();
    let config = tempfile::tempdir().unwrap();
    // A profile for another server, with its own token.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere_url = format!("http://{}", elsewhere.local_addr().unwrap());
    std::fs::write(
        config.path().join("config.toml"),
        format!("current = \"other\"\n\n[profiles.other]\nserver = \"{elsewhere_url}\"\ntoken = \"profile-secret-token\"\n"),
    )
    .unwrap();

    // TCP_REDIRS_URL and TCP_REDIRS_TOKEN win over the profile.
    let out = bin(config.path())
        .args(["list-namespaces", "-F", "json"])
        .env("TCP_REDIRS_URL", &server.url)
        .env("TCP_REDIRS_TOKEN", &server.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cleverapps"));

    // --server elsewhere with no token: the profile's token is not sent to a server it was not made for.
    let catcher = std::thread::spawn(move || {
        let (mut stream, _) = elsewhere.accept().unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let body = r#"{"type":"error","id":4010,"message":"missing credentials"}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(&request).into_owned()
    });
    let decoy = tempfile::tempdir().unwrap();
    std::fs::write(
        decoy.path().join("config.toml"),
        format!("[profiles.local]\nserver = \"{}\"\ntoken = \"profile-secret-token\"\n", server.url),
    )
    .unwrap();
    let out = bin(decoy.path()).args(["list-namespaces", "--server", &elsewhere_url]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let request = catcher.join().unwrap();
    assert!(request.starts_with("GET /v2/organisations"), "{request}");
    assert!(!request.contains("profile-secret-token"), "the token leaked to another server:\n{request}");
}
