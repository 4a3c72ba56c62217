//! `tcp-redirs add --namespace NS [--udp]`: a new public port for the application.

use anyhow::Result;

use super::{interactive, print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::client::{Client, Failure};
use crate::wire::RedirSettings;
use crate::wire::{NewTcpRedir, Protocol};

/// Asks which namespace to use, `default` first selected.
async fn choose_namespace(client: &Client, org: &str) -> Result<String> {
    let names: Vec<String> = client.namespaces(org).await?.into_iter().map(|n| n.namespace).collect();
    let selected = names.iter().position(|n| n == "default").unwrap_or(0);
    let chosen = dialoguer::Select::new()
        .with_prompt("Namespace of the new redirection")
        .items(&names)
        .default(selected)
        .interact_opt()?;
    match chosen {
        Some(i) => Ok(names[i].clone()),
        None => anyhow::bail!("cancelled: no redirection was added"),
    }
}
/// The options of `add`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The namespace to take a port in (`list-namespaces` shows them). Without it, a
    /// terminal offers the choice, and a script gets `default`.
    #[arg(long, value_name = "NS", add = super::complete::namespaces())]
    namespace: Option<String>,
    /// Ask for this precise port of the namespace's range instead of a random one.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Pick the random port from this one up (Clever's `minPort`) [default: the namespace's lowest].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "port")]
    min_port: Option<u16>,
    /// Pick the random port up to this one (Clever's `maxPort`) [default: the namespace's highest].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "port")]
    max_port: Option<u16>,
    /// Take a range of this many consecutive public ports (TCP): public port FIRST+i goes to
    /// each instance's port +i [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::wire::MAX_RANGE_PORTS)), conflicts_with = "last_port")]
    ports: Option<u16>,
    /// Take the range from --port up to this port (TCP), instead of --ports.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), requires = "port")]
    last_port: Option<u16>,
    /// A UDP redirection instead of a TCP one (UDP ports are a space of their own).
    #[arg(long)]
    udp: bool,
    #[command(flatten)]
    settings: RedirSettings,
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let app = args.app.resolve(&client).await?;
    let namespace = match args.namespace {
        Some(ns) => ns,
        None if interactive() => choose_namespace(&client, &app.owner_id).await?,
        None => "default".to_owned(),
    };
    let ports = match (args.port, args.last_port) {
        (Some(first), Some(last)) if last < first => {
            return Err(Failure::Usage.with(format!(
                "--last-port {last} is below --port {first}: the range goes from --port up to --last-port"
            )))
        }
        (Some(first), Some(last)) => Some(last - first + 1),
        _ => args.ports,
    };
    let body = NewTcpRedir {
        namespace,
        port: args.port,
        min_port: args.min_port,
        max_port: args.max_port,
        ports: ports.filter(|&n| n > 1),
        settings: args.settings,
    };
    let protocol = if args.udp { Protocol::Udp } else { Protocol::Tcp };
    let redir = client.add_redirection(&app, protocol, &body).await?;
    match args.format.get() {
        Format::Json => print_json(&redir),
        Format::Human if redir.last_port.is_some() => {
            print_text(format!("Successfully added {protocol} redirection on ports: {}", redir.ports_text()))
        }
        Format::Human => {
            print_text(format!("Successfully added {protocol} redirection on port: {}", redir.port))
        }
    }
}
