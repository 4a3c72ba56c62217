//! `tcp-redirs tokens …`: credentials scoped to one organisation (admin).

use anyhow::Result;
use clap::Subcommand;
use tabled::{Table, Tabled};

use super::{print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::wire::NewToken;

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Issue a credential for an organisation; its token and secret are shown this once.
    Create {
        /// What the credential is for.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// List an organisation's credentials (never their secrets).
    List {
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Revoke a credential; it stops working at once.
    Revoke {
        /// The credential's id (tok_…), as `tokens list` shows it.
        id: String,
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
}

impl Command {
    /// The command's `-F` option.
    pub(super) fn format_mut(&mut self) -> &mut FormatArgs {
        match self {
            Command::Create { format, .. }
            | Command::List { format, .. }
            | Command::Revoke { format, .. } => format,
        }
    }
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "NAME")]
    name: String,
}

pub async fn run(conn: &ConnArgs, command: Command) -> Result<()> {
    let client = conn.client()?;
    match command {
        Command::Create { name, org, format } => {
            let org = org.resolve(&client).await?;
            let issued = client.issue_token(&org.id, &NewToken { name }).await?;
            match format.get() {
                Format::Json => print_json(&issued),
                Format::Human => print_text(format!(
                    "Successfully issued credential {} for organisation {}.\n\
                     token:  {}\nsecret: {}\n\
                     They are shown only now: keep them (e.g. `tcp-redirs --token TOKEN …`, or Clever's OAuth form with the secret).",
                    issued.info.id, org.name, issued.token, issued.secret
                )),
            }
        }
        Command::List { org, format } => {
            let org = org.resolve(&client).await?;
            let tokens = client.tokens(&org.id).await?;
            match format.get() {
                Format::Json => print_json(&tokens),
                Format::Human if tokens.is_empty() => print_text("No credential for this organisation"),
                Format::Human => {
                    let rows = tokens.iter().map(|t| Row { id: t.id.clone(), name: t.name.clone() });
                    print_text(super::render(Table::new(rows)))
                }
            }
        }
        Command::Revoke { id, org, format } => {
            let org = org.resolve(&client).await?;
            let revoked = client.revoke_token(&org.id, &id).await?;
            match format.get() {
                Format::Json => print_json(&revoked),
                Format::Human => print_text(format!("Successfully revoked credential {}.", revoked.id)),
            }
        }
    }
}
