//! Prompts appear on a terminal, and only there: run under a pseudo-terminal (expectrl).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use expectrl::{Expect, Session};

fn on_a_terminal(server: &Server, config: &std::path::Path, args: &[&str]) -> expectrl::session::OsSession {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--server", &server.url])
        .env("TCP_REDIRS_TOKEN", &server.token)
        .env("TCP_REDIRS_CONFIG_DIR", config)
        .env("TERM", "xterm")
        .env_remove("TCP_REDIRS_APP");
    let mut session = Session::spawn(cmd).expect("spawn on a pseudo-terminal");
    session.set_expect_timeout(Some(Duration::from_secs(20)));
    session
}

#[test]
fn add_without_a_namespace_offers_the_choice_on_a_terminal() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("chooser", echo.addr());
    let config = tempfile::tempdir().unwrap();
    let mut p = on_a_terminal(&server, config.path(), &["add", "--app", "chooser"]);
    p.expect("Namespace of the new redirection").expect("the namespace prompt");
    p.send_line("").expect("accept the preselected namespace");
    p.expect("Successfully added tcp redirection on port:").expect("the redirection is added");
    let _ = p.get_process().wait();
    assert_eq!(server.list("chooser").iter().map(|(ns, _)| ns.as_str()).collect::<Vec<_>>(), ["default"]);
}

#[test]
fn without_a_terminal_add_uses_default_and_remove_does_not_ask() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("scripted", echo.addr());
    // Pipes, not a terminal: no prompt, no wait (the CLI runner would time out).
    let port = port_of(&server.cli_json(&["add", "--app", "scripted", "-F", "json"]));
    assert_eq!(server.list("scripted"), vec![("default".to_owned(), port)]);
    server.cli_ok(&["remove", &port.to_string(), "--app", "scripted", "--namespace", "default"]);
    assert_eq!(server.list("scripted"), vec![]);
}

#[test]
fn remove_asks_for_confirmation_on_a_terminal_unless_yes() {
    let server = Server::start();
    let echo = TcpService::echo();
    server.create_app("careful", echo.addr());
    let port = server.add("careful", "default");
    let config = tempfile::tempdir().unwrap();
    let port_text = port.to_string();
    let remove = ["remove", port_text.as_str(), "--app", "careful", "--namespace", "default"];

    let mut p = on_a_terminal(&server, config.path(), &remove);
    p.expect("Remove the TCP redirection").expect("the confirmation prompt");
    p.send("n").expect("answer no");
    p.expect("cancelled").expect("the refusal is reported");
    let _ = p.get_process().wait();
    assert_eq!(server.list("careful"), vec![("default".to_owned(), port)], "nothing removed");

    let mut with_yes = remove.to_vec();
    with_yes.push("--yes");
    let mut p = on_a_terminal(&server, config.path(), &with_yes);
    p.expect("Successfully removed tcp redirection.").expect("no prompt with --yes");
    let _ = p.get_process().wait();
    assert_eq!(server.list("careful"), vec![]);
}
