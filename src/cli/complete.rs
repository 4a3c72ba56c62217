//! Completion of values that only the server or the project knows: application names,
//! namespaces, ports, organisations, link aliases and profiles.
//!
//! This is clap_complete's dynamic completion: the shell script that
//! `COMPLETE=bash tcp-redirs` prints calls the binary back on every TAB, and these
//! functions answer. A completion never blocks the shell for long (one second to reach
//! the server, two for the whole answer) and never prints an error: no answer is an empty
//! list. The static scripts in `completions/` keep working without any of this.
//!
//! The server and credential are those of the command line being completed (`--server`,
//! `--token`), else of `TCP_REDIRS_URL`/`TCP_REDIRS_TOKEN`, else of the current profile,
//! exactly as when the command runs.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};

use super::AppArgs;
use crate::client::Client;
use crate::link_file;
use crate::profile::ProfileFile;
use crate::wire::{Application, Protocol};

/// How long completion may wait to reach the server, and for its whole answer.
const CONNECT: Duration = Duration::from_secs(1);
const TOTAL: Duration = Duration::from_secs(2);

/// The words of the command line being completed (those after `--`), without the program.
fn words() -> Vec<String> {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].iter().skip(1).cloned().collect(),
        None => Vec::new(),
    }
}

/// The value of the last `--name VALUE` or `--name=VALUE` among the words already typed
/// (the word being completed, the last one, is not a value yet).
fn option(words: &[String], names: &[&str]) -> Option<String> {
    let typed = &words[..words.len().saturating_sub(1)];
    let mut found = None;
    for (i, word) in typed.iter().enumerate() {
        for name in names {
            if word == name {
                if let Some(value) = typed.get(i + 1) {
                    found = Some(value.clone());
                }
            } else if let Some(value) = word.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
                found = Some(value.to_owned());
            }
        }
    }
    found
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs `ask` against the server of the command line being completed; nothing on failure.
fn from_server<F, Fut>(ask: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(Client, Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<CompletionCandidate>>>,
{
    let words = words();
    let server = option(&words, &["--server"]).or_else(|| env("TCP_REDIRS_URL"));
    let token = option(&words, &["--token"]).or_else(|| env("TCP_REDIRS_TOKEN"));
    let Ok(client) = Client::with_timeouts(server.as_deref(), token.as_deref(), CONNECT, TOTAL) else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return Vec::new();
    };
    runtime.block_on(ask(client, words)).unwrap_or_default()
}

/// The application the command line being completed names, as the command would choose it.
async fn chosen_app(client: &Client, words: &[String]) -> Option<Application> {
    let args = AppArgs { app: option(words, &["--app"]), alias: option(words, &["-a", "--alias"]) };
    args.resolve(client).await.ok()
}

async fn all_apps(client: &Client) -> Result<Vec<Application>> {
    let mut apps = Vec::new();
    for org in client.organisations().await? {
        apps.extend(client.applications(&org.id).await?);
    }
    Ok(apps)
}

/// A value with its one-line description.
fn candidate(value: &str, help: impl Into<String>) -> CompletionCandidate {
    CompletionCandidate::new(value).help(Some(help.into().into()))
}

/// Application names (and ids, offered once `app_` is typed, or when a name is ambiguous).
pub(super) fn apps() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        from_server(|client, _| async move {
            let apps = all_apps(&client).await?;
            let mut out = Vec::new();
            for app in &apps {
                let unique = apps.iter().filter(|other| other.name == app.name).count() == 1;
                if unique {
                    out.push(candidate(&app.name, app.id.clone()));
                }
                out.push(candidate(&app.id, app.name.clone()).hide(unique));
            }
            Ok(out)
        })
    })
}

/// The namespaces the chosen application's organisation may use (all the credential's
/// organisations' when no application is chosen yet).
pub(super) fn namespaces() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        from_server(|client, words| async move {
            let orgs = match chosen_app(&client, &words).await {
                Some(app) => vec![app.owner_id],
                None => client.organisations().await?.into_iter().map(|o| o.id).collect(),
            };
            let mut found = BTreeMap::new();
            for org in orgs {
                for ns in client.namespaces(&org).await? {
                    let help = ns.description.or(ns.public_host).unwrap_or_default();
                    found.entry(ns.namespace).or_insert(help);
                }
            }
            Ok(found.into_iter().map(|(name, help)| candidate(&name, help)).collect())
        })
    })
}

/// The chosen application's ports (in `--namespace` when it is given; UDP's after
/// `--udp`), for `remove`.
pub(super) fn ports() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        from_server(|client, words| async move {
            let app = chosen_app(&client, &words).await.context("no application chosen")?;
            let namespace = option(&words, &["--namespace"]);
            let protocol = if words.iter().any(|w| w == "--udp") { Protocol::Udp } else { Protocol::Tcp };
            let redirs = client.redirections(&app, protocol).await?;
            Ok(redirs
                .into_iter()
                .filter(|r| namespace.as_ref().is_none_or(|ns| *ns == r.namespace))
                .map(|r| candidate(&r.port.to_string(), format!("on {}", r.namespace)))
                .collect())
        })
    })
}

/// Organisation names (ids once `orga_` is typed).
pub(super) fn orgs() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        from_server(|client, _| async move {
            let orgs = client.organisations().await?;
            let mut out = Vec::new();
            for org in &orgs {
                out.push(candidate(&org.name, org.id.clone()));
                out.push(candidate(&org.id, org.name.clone()).hide(true));
            }
            Ok(out)
        })
    })
}

/// The aliases of the link file found from the current directory up (no server needed).
pub(super) fn aliases() -> ArgValueCandidates {
    ArgValueCandidates::new(|| match link_file::find() {
        Ok(Some((_, links))) => links.apps.iter().map(|l| candidate(&l.alias, l.name.clone())).collect(),
        _ => Vec::new(),
    })
}

/// The saved profiles, with their servers (never their credentials).
pub(super) fn profiles() -> ArgValueCandidates {
    ArgValueCandidates::new(|| match ProfileFile::load() {
        Ok(file) => file.profiles.iter().map(|(name, p)| candidate(name, p.server.clone())).collect(),
        Err(_) => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::option;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn options_are_read_from_the_words_already_typed() {
        let w = words("add --app api --server=http://h:1 --namespace ");
        assert_eq!(option(&w, &["--app"]).as_deref(), Some("api"));
        assert_eq!(option(&w, &["--server"]).as_deref(), Some("http://h:1"));
        assert_eq!(option(&w, &["--namespace"]), None, "the value being completed is not one yet");
        assert_eq!(option(&words("-a db add x"), &["-a", "--alias"]).as_deref(), Some("db"));
        assert_eq!(option(&words("add --app"), &["--app"]), None);
    }
}
