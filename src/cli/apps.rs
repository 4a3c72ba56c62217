//! `tcp-redirs apps …`: the applications redirections lead to (for the operator).

use anyhow::{bail, Result};
use clap::Subcommand;
use tabled::settings::Style;
use tabled::{Table, Tabled};

use super::{find_app, print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::wire::{check_instance_address, Application, Instance, NewApplication};

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create an application with its instances.
    Create {
        /// The application's name, unique within its organisation.
        name: String,
        /// An address where the application listens, HOST:PORT (repeat for several).
        #[arg(long = "instance", value_name = "HOST:PORT", value_parser = parse_instance)]
        instances: Vec<String>,
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// List the applications.
    List {
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Remove an application and all its redirections.
    Remove {
        /// The application, by id (app_…) or name.
        app: String,
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
            | Command::Remove { format, .. } => format,
        }
    }
}

fn parse_instance(text: &str) -> Result<String, String> {
    check_instance_address(text).map(|()| text.to_owned())
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "NAME")]
    name: String,
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "INSTANCES")]
    instances: String,
}

pub async fn run(conn: &ConnArgs, command: Command) -> Result<()> {
    let client = conn.client()?;
    match command {
        Command::Create { name, instances, org, format } => {
            let org = org.resolve(&client).await?;
            let new = NewApplication {
                name,
                instances: instances
                    .into_iter()
                    .map(|address| Instance { address, ..Default::default() })
                    .collect(),
            };
            let app = client.create_application(&org.id, &new).await?;
            match format.get() {
                Format::Json => print_json(&app),
                Format::Human => print_text(format!(
                    "Successfully created application {} ({}) in organisation {} ({})",
                    app.name, app.id, org.name, org.id
                )),
            }
        }
        Command::List { org, format } => {
            let org = org.resolve(&client).await?;
            let apps = client.applications(&org.id).await?;
            match format.get() {
                Format::Json => print_json(&apps),
                Format::Human if apps.is_empty() => print_text(
                    "No application yet: create one with `tcp-redirs apps create NAME --instance HOST:PORT`",
                ),
                Format::Human => print_text(table(&apps)),
            }
        }
        Command::Remove { app, format } => {
            let app = find_app(&client, &app).await?;
            let removed = client.remove_application(&app).await?;
            if removed.id != app.id {
                bail!("the server removed {} instead of {}", removed.id, app.id);
            }
            match format.get() {
                Format::Json => print_json(&removed),
                Format::Human => {
                    print_text(format!("Successfully removed application {} ({}).", removed.name, removed.id))
                }
            }
        }
    }
}

fn table(apps: &[Application]) -> String {
    let rows = apps.iter().map(|a| Row {
        name: a.name.clone(),
        id: a.id.clone(),
        instances: a.instances.iter().map(|i| i.address.as_str()).collect::<Vec<_>>().join(", "),
    });
    Table::new(rows).with(Style::blank()).to_string()
}
