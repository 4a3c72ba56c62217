//! The command line: one file per subcommand, the options they share in this one.
//!
//! The commands mirror clever-tools 4.x (`clever tcp-redirs`): the list is the default
//! command, human output keeps clever's sentences, and `-F json` prints exactly one JSON
//! document on stdout (on every command, `add` and `remove` included, so that scripts can
//! read the port). Errors go to stderr as one line; stdout carries results only.

mod add;
mod apply;
mod apps;
mod export;
mod link;
mod list;
mod list_namespaces;
mod login;
mod orgs;
mod remove;
#[cfg(feature = "server")]
mod serve;
mod tokens;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::client::{Client, Failure};
use crate::wire::{Application, Organisation};

/// The exit codes, shown at the end of `--help` and in the man page.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (the message on stderr says which)
  2  usage error: bad arguments
  3  not found: no such application, namespace, redirection or organisation
  4  authentication failed: check --token or TCP_REDIRS_TOKEN
  5  server unreachable: check --server or TCP_REDIRS_URL, and that `tcp-redirs serve` runs";

/// Manage TCP redirections: public ports forwarded to your applications.
#[derive(Debug, Parser)]
#[command(name = "tcp-redirs", version, after_long_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: list the application's redirections.
    #[command(flatten)]
    list: list::Args,
    #[command(flatten)]
    conn: ConnArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the TCP redirections of an application (the default command).
    List(list::Args),
    /// List the namespaces you may add redirections in.
    ListNamespaces(list_namespaces::Args),
    /// Add a TCP redirection: a public port in a namespace, forwarded to the application.
    Add(add::Args),
    /// Remove a TCP redirection; its port stops accepting at once.
    Remove(remove::Args),
    /// Manage applications (operator): where a redirection's traffic goes.
    #[command(subcommand)]
    Apps(apps::Command),
    /// Make the server match a file of applications and redirections, idempotently.
    Apply(apply::Args),
    /// Write the applications and redirections in the format of `apply`.
    Export(export::Args),
    /// Link an application to this directory, under an alias.
    Link(link::LinkArgs),
    /// Remove an application's link from this directory.
    Unlink(link::UnlinkArgs),
    /// Save a server and its credential as a profile, after checking them.
    Login(login::LoginArgs),
    /// Forget a saved profile.
    Logout(login::LogoutArgs),
    /// List the saved profiles, or choose the current one.
    #[command(subcommand)]
    Profile(login::ProfileCommand),
    /// Manage organisations (admin).
    #[command(subcommand)]
    Orgs(orgs::Command),
    /// Manage an organisation's credentials (admin).
    #[command(subcommand)]
    Tokens(tokens::Command),
    /// Run the control server: the API, the port allocator, the store and the forwarding.
    #[cfg(feature = "server")]
    Serve(serve::Args),
}

impl Command {
    /// Takes `--app` and `-F` given before the subcommand (`tcp-redirs --app X add …`)
    /// when the subcommand itself does not set them.
    fn inherit(mut self, top: list::Args) -> Result<Command> {
        let app = match &mut self {
            Command::List(list::Args { app, format })
            | Command::ListNamespaces(list_namespaces::Args { app, format, .. })
            | Command::Add(add::Args { app, format, .. })
            | Command::Remove(remove::Args { app, format, .. }) => {
                format.format = format.format.or(top.format.format);
                Some(app)
            }
            Command::Apps(command) => {
                let format = command.format_mut();
                format.format = format.format.or(top.format.format);
                None
            }
            Command::Profile(command) => {
                let format = command.format_mut();
                format.format = format.format.or(top.format.format);
                None
            }
            Command::Link(link::LinkArgs { format, .. })
            | Command::Unlink(link::UnlinkArgs { format, .. })
            | Command::Login(login::LoginArgs { format, .. })
            | Command::Logout(login::LogoutArgs { format, .. })
            | Command::Apply(apply::Args { format, .. })
            | Command::Export(export::Args { format, .. }) => {
                format.format = format.format.or(top.format.format);
                None
            }
            Command::Orgs(command) => {
                let format = command.format_mut();
                format.format = format.format.or(top.format.format);
                None
            }
            Command::Tokens(command) => {
                let format = command.format_mut();
                format.format = format.format.or(top.format.format);
                None
            }
            #[cfg(feature = "server")]
            Command::Serve(_) => None,
        };
        // Commands without `--app` ignore one given before them, as they ignore
        // TCP_REDIRS_APP, which a CI job sets once for all its commands.
        if let Some(app) = app.filter(|a| !a.is_set()) {
            *app = top.app;
        }
        Ok(self)
    }
}

/// Which control server to talk to, and with which credential.
#[derive(Debug, Clone, Args)]
struct ConnArgs {
    /// The control server's URL [default: the profile's, else http://127.0.0.1:7070].
    #[arg(long, global = true, env = "TCP_REDIRS_URL", value_name = "URL")]
    server: Option<String>,
    /// The API token [default: the profile's].
    #[arg(long, global = true, env = "TCP_REDIRS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
}

impl ConnArgs {
    fn client(&self) -> Result<Client> {
        Client::new(self.server.as_deref(), self.token.as_deref())
    }
}

/// How to print results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Sentences and tables for people.
    #[default]
    Human,
    /// One JSON document, for scripts.
    Json,
}

/// `-F/--format`, shared by every command.
#[derive(Debug, Clone, Args)]
struct FormatArgs {
    /// Output format [default: human].
    #[arg(short = 'F', long, value_enum)]
    format: Option<Format>,
}

impl FormatArgs {
    fn get(&self) -> Format {
        self.format.unwrap_or_default()
    }
}

/// `--app`, shared by the commands that act on one application.
#[derive(Debug, Clone, Args)]
struct AppArgs {
    /// The application, by id (app_…) or name.
    #[arg(long, env = "TCP_REDIRS_APP", value_name = "ID|NAME", conflicts_with = "alias")]
    app: Option<String>,
    /// The application linked to this directory under ALIAS (`tcp-redirs link`).
    #[arg(short = 'a', long, value_name = "ALIAS")]
    alias: Option<String>,
}

impl AppArgs {
    /// The application: `--app`, else `--alias`, else the one linked to this directory.
    async fn resolve(&self, client: &Client) -> Result<Application> {
        match &self.app {
            Some(wanted) => find_app(client, wanted).await,
            None => link::linked(self.alias.as_deref()),
        }
    }

    fn is_set(&self) -> bool {
        self.app.is_some() || self.alias.is_some()
    }
}

/// Finds an application by id or name in every organisation the credential sees.
async fn find_app(client: &Client, wanted: &str) -> Result<Application> {
    let mut by_name = Vec::new();
    for org in client.organisations().await? {
        for app in client.applications(&org.id).await? {
            if app.id == wanted {
                return Ok(app);
            }
            if app.name == wanted {
                by_name.push(app);
            }
        }
    }
    match by_name.len() {
        0 => Err(Failure::NotFound.with(format!(
            "application `{wanted}` not found: `tcp-redirs apps list` shows the applications you can use"
        ))),
        1 => Ok(by_name.remove(0)),
        _ => {
            let ids: Vec<_> =
                by_name.iter().map(|a| format!("{} (organisation {})", a.id, a.owner_id)).collect();
            bail!(
                "several applications are named `{wanted}`: pass one of their ids with --app: {}",
                ids.join(", ")
            )
        }
    }
}

/// `--org`, for the commands that act on an organisation rather than an application.
#[derive(Debug, Clone, Args)]
struct OrgArgs {
    /// The organisation, by id (orga_…) or name [default: the only one the credential sees].
    #[arg(long, value_name = "ID|NAME")]
    org: Option<String>,
}

impl OrgArgs {
    async fn resolve(&self, client: &Client) -> Result<Organisation> {
        let orgs = client.organisations().await?;
        match &self.org {
            Some(wanted) => {
                orgs.into_iter().find(|o| &o.id == wanted || &o.name == wanted).ok_or_else(|| {
                    anyhow::anyhow!("organisation `{wanted}` not found among those your credential sees")
                })
            }
            None if orgs.len() == 1 => Ok(orgs.into_iter().next().unwrap()),
            None if orgs.is_empty() => {
                bail!("your credential sees no organisation: ask the server's operator for access")
            }
            None => {
                let names: Vec<_> = orgs.iter().map(|o| o.name.as_str()).collect();
                bail!(
                    "your credential sees several organisations: choose one with --org ({})",
                    names.join(", ")
                )
            }
        }
    }
}

/// Whether a person is at the keyboard: prompts appear only then, so a script never blocks.
fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// A table for people: no borders, and wrapped to the terminal's width when stdout is one
/// (a pipe gets whole lines, for grep). Tables carry no colour, so `NO_COLOR` has nothing to do.
fn render(mut table: tabled::Table) -> String {
    use tabled::settings::{Style, Width};
    table.with(Style::blank());
    if let Some((terminal_size::Width(width), _)) = terminal_size::terminal_size_of(std::io::stdout()) {
        table.with(Width::wrap(usize::from(width)).keep_words(true));
    }
    table.to_string()
}

/// Prints `value` as one JSON document, indented like clever-tools.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints human text followed by a newline.
fn print_text(text: impl std::fmt::Display) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let command = match cli.command {
        None => Command::List(cli.list),
        Some(command) => command.inherit(cli.list)?,
    };
    #[cfg(feature = "server")]
    if let Command::Serve(args) = command {
        return serve::run(args).map(|()| ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let conn = cli.conn;
    runtime.block_on(async move {
        match command {
            Command::List(args) => list::run(&conn, args).await,
            Command::ListNamespaces(args) => list_namespaces::run(&conn, args).await,
            Command::Add(args) => add::run(&conn, args).await,
            Command::Remove(args) => remove::run(&conn, args).await,
            Command::Apps(command) => apps::run(&conn, command).await,
            Command::Orgs(command) => orgs::run(&conn, command).await,
            Command::Apply(args) => apply::run(&conn, args).await,
            Command::Login(args) => login::login(&conn, args).await,
            Command::Link(args) => link::link(&conn, args).await,
            Command::Unlink(args) => link::unlink(args).await,
            Command::Logout(args) => login::logout(args).await,
            Command::Profile(command) => login::profile(command).await,
            Command::Export(args) => export::run(&conn, args).await,
            Command::Tokens(command) => tokens::run(&conn, command).await,
            #[cfg(feature = "server")]
            Command::Serve(_) => unreachable!("handled above"),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
