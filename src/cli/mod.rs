//! The command line: one file per subcommand, the options they share in this one.
//!
//! The commands mirror clever-tools 4.x (`clever tcp-redirs`): the list is the default
//! command, human output keeps clever's sentences, and `-F json` prints exactly one JSON
//! document on stdout (on every command, `add` and `remove` included, so that scripts can
//! read the port). Errors go to stderr as one line; stdout carries results only.

mod add;
mod apply;
mod apps;
mod complete;
mod events;
mod export;
mod link;
mod list;
mod list_namespaces;
mod login;
mod nodes;
mod orgs;
mod remove;
#[cfg(feature = "server")]
mod serve;
mod tokens;
mod update;
mod webhooks;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::client::{Client, Failure};
use crate::link_file;
use crate::wire::{Application, Organisation};

/// The exit codes, so that a script can tell failures apart: shown at the end of `--help`
/// and in every man page's EXIT STATUS section. The codes of the failures a script may tell
/// apart are [`Failure::exit_code`]'s; 1 and 2 are `main`'s and clap's.
pub const EXIT_CODES: [(u8, &str); 6] = [
    (0, "success"),
    (1, "error (the message on stderr says which)"),
    (Failure::Usage.exit_code(), "usage error: bad arguments"),
    (
        Failure::NotFound.exit_code(),
        "not found: no such application, namespace, redirection, organisation, profile or link",
    ),
    (Failure::Auth.exit_code(), "authentication failed: check --token or TCP_REDIRS_TOKEN"),
    (
        Failure::Unreachable.exit_code(),
        "server unreachable: check --server or TCP_REDIRS_URL, and that `tcp-redirs serve` runs",
    ),
];

/// [`EXIT_CODES`] as the end of `--help`.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:");
    for (code, meaning) in EXIT_CODES {
        text.push_str(&format!("\n  {code}  {meaning}"));
    }
    text
}

/// Manage TCP redirections: public ports forwarded to your applications.
#[derive(Debug, Parser)]
#[command(name = "tcp-redirs", version, after_long_help = exit_codes_help())]
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
    #[command(after_long_help = exit_codes_help())]
    List(list::Args),
    /// List the namespaces you may add redirections in.
    #[command(after_long_help = exit_codes_help())]
    ListNamespaces(list_namespaces::Args),
    /// Add a TCP redirection: a public port in a namespace, forwarded to the application.
    #[command(after_long_help = exit_codes_help())]
    Add(add::Args),
    /// Remove a TCP redirection; its port stops accepting at once.
    #[command(after_long_help = exit_codes_help())]
    Remove(remove::Args),
    /// Change a redirection's settings in place: open connections keep theirs, new ones get
    /// the new settings at once.
    #[command(after_long_help = exit_codes_help())]
    Update(update::Args),
    /// Manage applications (operator): where a redirection's traffic goes.
    #[command(subcommand, after_long_help = exit_codes_help())]
    Apps(apps::Command),
    /// Make the server match a file of applications and redirections, idempotently.
    #[command(after_long_help = exit_codes_help())]
    Apply(apply::Args),
    /// Write the applications and redirections in the format of `apply`.
    #[command(after_long_help = exit_codes_help())]
    Export(export::Args),
    /// Link an application to this directory, under an alias.
    #[command(after_long_help = exit_codes_help())]
    Link(link::LinkArgs),
    /// Remove an application's link from this directory.
    #[command(after_long_help = exit_codes_help())]
    Unlink(link::UnlinkArgs),
    /// Save a server and its credential as a profile, after checking them.
    #[command(after_long_help = exit_codes_help())]
    Login(login::LoginArgs),
    /// Forget a saved profile.
    #[command(after_long_help = exit_codes_help())]
    Logout(login::LogoutArgs),
    /// List the saved profiles, or choose the current one.
    #[command(subcommand, after_long_help = exit_codes_help())]
    Profile(login::ProfileCommand),
    /// List the gateway nodes sharing the server's store, up or down.
    #[command(after_long_help = exit_codes_help())]
    Nodes(nodes::Args),
    /// Show the audit trail: who changed what, when, from where; --follow streams new events.
    #[command(after_long_help = exit_codes_help())]
    Events(events::Args),
    /// Manage webhooks: where the organisation's events are posted as they happen.
    #[command(subcommand, after_long_help = exit_codes_help())]
    Webhooks(webhooks::Command),
    /// Manage organisations (admin).
    #[command(subcommand, after_long_help = exit_codes_help())]
    Orgs(orgs::Command),
    /// Manage an organisation's credentials (admin).
    #[command(subcommand, after_long_help = exit_codes_help())]
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
            | Command::Remove(remove::Args { app, format, .. })
            | Command::Update(update::Args { app, format, .. }) => {
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
            | Command::Export(export::Args { format, .. })
            | Command::Nodes(nodes::Args { format, .. })
            | Command::Events(events::Args { format, .. }) => {
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
            Command::Webhooks(command) => {
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

/// The environment variable a CI job sets once to choose the application of every command.
pub const APP_ENV: &str = "TCP_REDIRS_APP";

/// `--app`, shared by the commands that act on one application.
#[derive(Debug, Clone, Args)]
struct AppArgs {
    /// The application, by id (app_…) or name [env: TCP_REDIRS_APP].
    // TCP_REDIRS_APP is read in `resolve`, not by clap: an `--alias` on the command line
    // must win over it, not conflict with it.
    #[arg(long, value_name = "ID|NAME", conflicts_with = "alias", add = complete::apps())]
    app: Option<String>,
    /// The application linked to this directory under ALIAS (`tcp-redirs link`).
    #[arg(short = 'a', long, value_name = "ALIAS", add = complete::aliases())]
    alias: Option<String>,
}

impl AppArgs {
    /// The application: `--app`, else `--alias`, else `TCP_REDIRS_APP`, else the one linked
    /// to this directory.
    async fn resolve(&self, client: &Client) -> Result<Application> {
        let from_env = || std::env::var(APP_ENV).ok().filter(|a| !a.is_empty());
        match (&self.app, &self.alias) {
            (Some(wanted), _) => find_app(client, wanted).await,
            (None, Some(alias)) => link_file::linked(Some(alias)),
            (None, None) => match from_env() {
                Some(wanted) => find_app(client, &wanted).await,
                None => link_file::linked(None),
            },
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
    #[arg(long, value_name = "ID|NAME", add = complete::orgs())]
    org: Option<String>,
}

impl OrgArgs {
    async fn resolve(&self, client: &Client) -> Result<Organisation> {
        let orgs = client.organisations().await?;
        match &self.org {
            Some(wanted) => {
                orgs.into_iter().find(|o| &o.id == wanted || &o.name == wanted).ok_or_else(|| {
                    Failure::NotFound.with(format!(
                        "organisation `{wanted}` not found among those your credential sees: `tcp-redirs orgs list` shows them"
                    ))
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

/// The refusal of a setting given both a value and `--unset`, as `update` and `apps update`
/// word it.
fn set_and_unset(setting: &impl clap::ValueEnum) -> String {
    let name = setting.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    format!("--{name} and --unset {name} ask for opposite things: keep one")
}

/// A table for people: no borders, and wrapped to the terminal's width when stdout is one
/// (a pipe gets whole lines, for grep). Tables carry no colour, so `NO_COLOR` has nothing to do.
fn render(table: tabled::Table) -> String {
    let width = terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0));
    fit(table, width)
}

/// Like [`render`], but column `first` (whose widest line is `natural` characters) wraps
/// before the others give way, down to 16 characters: a list of instances wraps where a
/// name or an id would be cut.
fn render_wrapping(mut table: tabled::Table, first: usize, natural: usize) -> String {
    use tabled::settings::{object::Columns, Modify, Style, Width};
    let width = terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0));
    table.with(Style::blank());
    if let Some(width) = width {
        let over = table.total_width().saturating_sub(width);
        if over > 0 {
            let target = natural.saturating_sub(over).max(16);
            table.with(Modify::new(Columns::one(first)).with(Width::wrap(target).keep_words(true)));
        }
    }
    fit(table, width)
}

/// `table` without borders, at most `width` columns wide: the widest columns give way
/// first, so that no column disappears.
fn fit(mut table: tabled::Table, width: Option<usize>) -> String {
    use tabled::settings::{peaker::Priority, Style, Width};
    table.with(Style::blank());
    if let Some(width) = width {
        table.with(Width::wrap(width).priority(Priority::max(true)).keep_words(true));
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
            Command::Update(args) => update::run(&conn, args).await,
            Command::Apps(command) => apps::run(&conn, command).await,
            Command::Orgs(command) => orgs::run(&conn, command).await,
            Command::Nodes(args) => nodes::run(&conn, args).await,
            Command::Events(args) => events::run(&conn, args).await,
            Command::Webhooks(command) => webhooks::run(&conn, command).await,
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

#[cfg(test)]
mod tests {
    use tabled::Table;

    #[test]
    fn a_table_fits_a_narrow_terminal_without_losing_a_column() {
        let rows = vec![
            ["NAME", "ID", "INSTANCES"],
            [
                "a-rather-long-application-name",
                "app_0396a536-7e13-4cb8-9e30-3e44087cb7a9",
                "127.0.0.1:4040, 127.0.0.1:4041, 127.0.0.1:4042, 127.0.0.1:4043",
            ],
        ];
        let wide = super::fit(Table::from_iter(rows.clone()), None);
        assert_eq!(wide.lines().count(), 2, "{wide}");
        for width in [60, 80, 100] {
            let text = super::fit(Table::from_iter(rows.clone()), Some(width));
            assert!(text.lines().all(|l| l.chars().count() <= width), "wider than {width}:\n{text}");
            for heading in rows[0] {
                assert!(text.contains(heading), "{heading} is gone at {width} columns:\n{text}");
            }
            let letters: String = text.split_whitespace().collect();
            assert!(letters.contains("127.0.0.1:4043"), "{text}");
        }
    }
}
