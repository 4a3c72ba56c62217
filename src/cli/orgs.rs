//! `tcp-redirs orgs …`: organisations (admin).

use anyhow::Result;
use clap::Subcommand;
use tabled::{Table, Tabled};

use super::{print_json, print_text, ConnArgs, Format, FormatArgs};
use crate::wire::NewOrganisation;

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create an organisation (admin only).
    Create {
        /// Its name, unique on the server.
        name: String,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// List the organisations your credential sees.
    List {
        #[command(flatten)]
        format: FormatArgs,
    },
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "NAME")]
    name: String,
    #[tabled(rename = "ID")]
    id: String,
}

impl Command {
    /// The command's `-F` option.
    pub(super) fn format_mut(&mut self) -> &mut FormatArgs {
        match self {
            Command::Create { format, .. } | Command::List { format } => format,
        }
    }
}

pub async fn run(conn: &ConnArgs, command: Command) -> Result<()> {
    let client = conn.client()?;
    match command {
        Command::Create { name, format } => {
            let org = client.create_organisation(&NewOrganisation { name }).await?;
            match format.get() {
                Format::Json => print_json(&org),
                Format::Human => {
                    print_text(format!("Successfully created organisation {} ({})", org.name, org.id))
                }
            }
        }
        Command::List { format } => {
            let orgs = client.organisations().await?;
            match format.get() {
                Format::Json => print_json(&orgs),
                Format::Human => {
                    let rows = orgs.iter().map(|o| Row { name: o.name.clone(), id: o.id.clone() });
                    print_text(super::render(Table::new(rows)))
                }
            }
        }
    }
}
