//! `tcp-redirs login`, `logout` and `profile …`: the saved servers and credentials.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde::Serialize;

use super::{print_json, print_text, ConnArgs, Format, FormatArgs};
use crate::client::{Client, Failure};
use crate::profile::{Profile, ProfileFile, LOCAL};

/// The options of `login`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The profile to save (and make current).
    #[arg(long, default_value = "default", value_name = "NAME")]
    profile: String,
    /// The secret of the token (Clever's OAuth form), kept with it.
    #[arg(long, env = "TCP_REDIRS_SECRET", hide_env_values = true, value_name = "SECRET")]
    secret: Option<String>,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// The options of `logout`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogoutArgs {
    /// The profile to forget [default: the current one].
    #[arg(long, value_name = "NAME", add = super::complete::profiles())]
    profile: Option<String>,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProfileCommand {
    /// List the saved profiles (never their credentials).
    List {
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Make a saved profile the current one.
    Use {
        /// The profile's name.
        #[arg(add = super::complete::profiles())]
        name: String,
        #[command(flatten)]
        format: FormatArgs,
    },
}

impl ProfileCommand {
    /// The command's `-F` option.
    pub(super) fn format_mut(&mut self) -> &mut FormatArgs {
        match self {
            ProfileCommand::List { format } | ProfileCommand::Use { format, .. } => format,
        }
    }
}

/// A profile as listed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    name: String,
    server: String,
    current: bool,
    has_token: bool,
}

/// Checks the credential against the server, then saves it as a profile.
pub async fn login(conn: &ConnArgs, args: LoginArgs) -> Result<()> {
    let (Some(server), Some(token)) = (conn.server.clone(), conn.token.clone()) else {
        bail!("login needs the server and its token: tcp-redirs login --server URL --token TOKEN");
    };
    // With a secret, both are checked now, as every later call will send both.
    let client = match &args.secret {
        Some(secret) => Client::with_secret(&server, &token, secret)?,
        None => Client::new(Some(&server), Some(&token))?,
    };
    let orgs = client.organisations().await?;
    let mut file = ProfileFile::load()?;
    let profile = Profile {
        server: server.trim_end_matches('/').to_owned(),
        token: Some(token),
        secret: args.secret,
        data_dir: None,
    };
    file.profiles.insert(args.profile.clone(), profile);
    file.current = Some(args.profile.clone());
    let path = file.save()?;
    match args.format.get() {
        Format::Json => {
            print_json(&serde_json::json!({"profile": args.profile, "server": server, "organisations": orgs}))
        }
        Format::Human => print_text(format!(
            "Logged in to {server} as profile `{}` (saved in {}); {} organisation(s) visible.",
            args.profile,
            path.display(),
            orgs.len()
        )),
    }
}

/// Forgets a profile's credential.
pub async fn logout(args: LogoutArgs) -> Result<()> {
    let mut file = ProfileFile::load()?;
    let name = args.profile.or_else(|| file.current.clone()).unwrap_or_else(|| LOCAL.to_owned());
    if file.profiles.remove(&name).is_none() {
        return Err(
            Failure::NotFound.with(format!("no profile `{name}`: `tcp-redirs profile list` shows them"))
        );
    }
    if file.current.as_deref() == Some(name.as_str()) {
        file.current = None;
    }
    file.save()?;
    match args.format.get() {
        Format::Json => print_json(&serde_json::json!({"profile": name})),
        Format::Human => print_text(format!("Logged out: profile `{name}` forgotten.")),
    }
}

/// `profile list` and `profile use`.
pub async fn profile(command: ProfileCommand) -> Result<()> {
    let mut file = ProfileFile::load()?;
    let current = file.current.clone().unwrap_or_else(|| LOCAL.to_owned());
    match command {
        ProfileCommand::List { format } => {
            let listed: Vec<Listed> = file
                .profiles
                .iter()
                .map(|(name, p)| Listed {
                    name: name.clone(),
                    server: p.server.clone(),
                    current: *name == current,
                    has_token: p.token.is_some(),
                })
                .collect();
            match format.get() {
                Format::Json => print_json(&listed),
                Format::Human if listed.is_empty() => {
                    print_text("No profile: `tcp-redirs login --server URL --token TOKEN` saves one")
                }
                Format::Human => {
                    let lines: Vec<String> = listed
                        .iter()
                        .map(|l| format!("{} {} {}", if l.current { "*" } else { " " }, l.name, l.server))
                        .collect();
                    print_text(lines.join("\n"))
                }
            }
        }
        ProfileCommand::Use { name, format } => {
            if !file.profiles.contains_key(&name) {
                return Err(Failure::NotFound
                    .with(format!("no profile `{name}`: `tcp-redirs profile list` shows them")));
            }
            file.current = Some(name.clone());
            file.save()?;
            match format.get() {
                Format::Json => print_json(&serde_json::json!({"profile": name})),
                Format::Human => print_text(format!("Now using profile `{name}`.")),
            }
        }
    }
}
