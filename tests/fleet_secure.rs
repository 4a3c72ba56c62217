//! A fleet on an etcd that checks who talks to it: TLS with client certificates
//! (`--client-cert-auth`) and etcd's users and roles. Certificates are made by the test
//! ([`common::pki`]). The fleet's own tests (`tests/fleet.rs`) run on such an etcd too.
//!
//! Every refusal ends the node's start, within seconds, with one `error:` line that says
//! what to check: an etcd that refuses is not waited for as one that is away. Two fleets under two
//! prefixes and two users cannot see each other's tables.

#![cfg(feature = "etcd")]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::etcd::Etcd;
use common::pki::{password_file, Pki};
use common::*;
use serde_json::json;

/// How long a node may take to refuse (it reads files and asks etcd once or twice).
const REFUSAL_LIMIT: Duration = Duration::from_secs(20);

/// `--store` and the TLS flags for `pki`'s node certificate (`cert`: which one).
fn tls_args(pki: &Pki, ca: &str, cert: Option<&str>) -> Vec<String> {
    let mut args = vec!["--store-ca".to_owned(), pki.path(ca).display().to_string()];
    if let Some(cert) = cert {
        args.extend([
            "--store-cert".to_owned(),
            pki.path(&format!("{cert}.pem")).display().to_string(),
            "--store-key".to_owned(),
            pki.path(&format!("{cert}-key.pem")).display().to_string(),
        ]);
    }
    args
}

/// Runs `serve` with `args`, which must refuse to start: its exit code is 1 within
/// [`REFUSAL_LIMIT`], and its stderr's last line is its one `error:` line, which must hold
/// every one of `expected`. (Under TLS 1.3 etcd's refusal of a client certificate may come
/// after a first connection that only broke: the node tries again, and then refuses.)
fn must_refuse(args: &[String], envs: &[(&str, &str)], expected: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        // Bound: as root, the default (auto) would steer in the machine's network namespace.
        .env("TCP_REDIRS_PORT_MODE", "bound")
        .args(["serve", "--listen", "127.0.9.2:0", "--public-bind", "127.0.9.2", "--node", "n"])
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env("TCP_REDIRS_CONFIG_DIR", config.path())
        .env_remove("TCP_REDIRS_STORE_PASSWORD")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let Some(status) = wait_for_child(&mut child, REFUSAL_LIMIT) else {
        let _ = child.kill();
        let _ = child.wait();
        let mut log = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut log);
        panic!("serve {args:?} did not refuse within {REFUSAL_LIMIT:?}; its log:\n{log}");
    };
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert_eq!(status.code(), Some(1), "serve {args:?} must exit 1:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{log}");
    assert!(log.trim_end().ends_with(errors[0]), "the error line is the last one:\n{log}");
    for text in expected {
        assert!(errors[0].contains(text), "the error must say `{text}`:\n{log}");
    }
    errors[0].to_owned()
}

/// Starts a node of the fleet under `prefix` as `user`.
fn node(etcd: &Etcd, pki: &Pki, ip: &str, name: &str, prefix: &str, user: &str, password: &Path) -> Server {
    let store = format!("{}/{prefix}", etcd.url());
    let mut args =
        vec!["--store".to_owned(), store, "--node".into(), name.into(), "--node-ttl".into(), "2".into()];
    args.extend(tls_args(pki, "ca.pem", Some("node")));
    args.extend([
        "--store-user".into(),
        user.into(),
        "--store-password-file".into(),
        password.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::builder().ip(ip).args(&args).start()
}

#[test]
fn a_fleet_on_etcd_with_tls_and_users_refuses_every_wrong_credential_and_keeps_to_its_prefix() {
    let pki = Pki::make();
    let etcd = Etcd::start_tls(pki.etcd_files());
    etcd.enable_auth("root-password");
    etcd.add_user("gw-a", "password-a", Some("fleet-a/"));
    etcd.add_user("gw-b", "password-b", Some("fleet-b/"));
    etcd.add_user("nobody", "password-n", None);
    let secrets = tempfile::tempdir().unwrap();
    let pass_a = password_file(secrets.path(), "a", "password-a");
    let pass_b = password_file(secrets.path(), "b", "password-b");
    let pass_wrong = password_file(secrets.path(), "wrong", "not-the-password");
    let pass_n = password_file(secrets.path(), "n", "password-n");
    let store = |prefix: &str| vec!["--store".to_owned(), format!("{}/{prefix}", etcd.url())];
    let login = |user: &str, file: &Path| {
        vec![
            "--store-user".to_owned(),
            user.to_owned(),
            "--store-password-file".into(),
            file.display().to_string(),
        ]
    };
    let with = |parts: &[Vec<String>]| parts.concat();

    // etcd's certificate is checked against --store-ca.
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "stranger-ca.pem", Some("node")), login("gw-a", &pass_a)]),
        &[],
        &["has a certificate that --store-ca", "did not sign"],
    );
    // No client certificate, or one etcd's CA did not sign.
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "ca.pem", None), login("gw-a", &pass_a)]),
        &[],
        &["asks for a client certificate", "--store-cert"],
    );
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "ca.pem", Some("stranger")), login("gw-a", &pass_a)]),
        &[],
        &["refused this node's client certificate", "stranger.pem"],
    );
    // A wrong password, one given without a user, a user without its password.
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "ca.pem", Some("node")), login("gw-a", &pass_wrong)]),
        &[],
        &["refused user `gw-a` and its password"],
    );
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "ca.pem", Some("node"))]),
        &[("TCP_REDIRS_STORE_PASSWORD", "password-a")],
        &["but no user: give --store-user"],
    );
    must_refuse(
        &with(&[
            store("fleet-a"),
            tls_args(&pki, "ca.pem", Some("node")),
            vec!["--store-user".into(), "gw-a".into()],
        ]),
        &[],
        &["--store-user `gw-a` needs its password"],
    );
    // A user without rights, and one with rights on another fleet's prefix only.
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "ca.pem", Some("node")), login("nobody", &pass_n)]),
        &[],
        &["does not let user `nobody` read and write", "grant-permission"],
    );
    must_refuse(
        &with(&[store("fleet-b"), tls_args(&pki, "ca.pem", Some("node")), login("gw-a", &pass_a)]),
        &[],
        &["does not let user `gw-a` read and write"],
    );
    // No user at all: etcd takes the certificate's common name, which is no user of it.
    must_refuse(
        &with(&[store("fleet-a"), tls_args(&pki, "ca.pem", Some("node"))]),
        &[],
        &["refused this node", "--store-user"],
    );

    // The right credentials: two fleets, each in its own prefix, blind to the other.
    let a = node(&etcd, &pki, "127.0.9.3", "a", "fleet-a", "gw-a", &pass_a);
    let b = node(&etcd, &pki, "127.0.9.4", "b", "fleet-b", "gw-b", &pass_b);
    let echo = TcpService::echo();
    let made = |server: &Server, name: &str| -> (String, u16) {
        let org =
            server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
        let body = json!({"name": name, "instances": [{"address": echo.addr().to_string()}]}).to_string();
        let app = server.api("POST", &format!("/v2/organisations/{org}/applications"), Some(&body)).ok_json();
        let app = app["id"].as_str().unwrap().to_owned();
        let path = format!("/v2/organisations/{org}/applications/{app}/tcpRedirs");
        let redir = server.api("POST", &path, Some(r#"{"namespace":"default"}"#)).ok_json();
        (app, port_of(&redir))
    };
    let (app_a, port_a) = made(&a, "only-in-a");
    let (app_b, _) = made(&b, "only-in-b");
    let mut stream = std::net::TcpStream::connect((a.ip(), port_a)).expect("connect to a's port");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut stream, b"through the secured fleet").unwrap();
    let mut back = [0u8; 25];
    stream.read_exact(&mut back).expect("the echo through a");
    assert_eq!(&back, b"through the secured fleet");
    let names = |server: &Server| -> Vec<String> {
        let org =
            server.api("GET", "/v2/organisations", None).ok_json()[0]["id"].as_str().unwrap().to_owned();
        let apps = server.api("GET", &format!("/v2/organisations/{org}/applications"), None).ok_json();
        apps.as_array().unwrap().iter().map(|app| app["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&a), ["only-in-a"], "fleet a sees its own applications only");
    assert_eq!(names(&b), ["only-in-b"], "fleet b sees its own applications only");
    assert_ne!(app_a, app_b);
    // The password is read from its file and never written to the log.
    for (server, password) in [(&a, "password-a"), (&b, "password-b")] {
        assert!(!server.log().contains(password), "the password must not be logged:\n{}", server.log());
    }
}

/// An etcd without authentication is refused a user: the operator believes it checks one.
#[test]
fn a_user_for_an_etcd_without_authentication_is_refused() {
    let etcd = Etcd::start();
    let secrets = tempfile::tempdir().unwrap();
    let pass = password_file(secrets.path(), "p", "some-password");
    let args = vec![
        "--store".to_owned(),
        etcd.url(),
        "--store-user".into(),
        "gw".into(),
        "--store-password-file".into(),
        pass.display().to_string(),
    ];
    must_refuse(&args, &[], &["has authentication off", "--store-user `gw` protects nothing"]);
}
