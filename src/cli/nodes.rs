//! `tcp-redirs nodes`: the gateway nodes that share the server's store; `nodes forget NAME`
//! removes one gone for good (admin).

use anyhow::Result;
use tabled::{Table, Tabled};

use super::{print_json, print_text, ConnArgs, Format, FormatArgs};
use crate::wire::{Node, NodeLiveness, PortMode};

/// The options of `nodes`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub(super) command: Option<Command>,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// What `nodes` does besides listing.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Forget a node that is gone for good (admin): ports freed while it was away stop
    /// waiting for it. Refused while the node is up; a node that comes back is listed again.
    Forget {
        /// The node's name, as `tcp-redirs nodes` lists it.
        name: String,
        #[command(flatten)]
        format: FormatArgs,
    },
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "NODE")]
    name: String,
    #[tabled(rename = "STATE")]
    state: &'static str,
    #[tabled(rename = "PUBLIC ADDRESS")]
    address: String,
    #[tabled(rename = "PORTS")]
    ports: String,
    #[tabled(rename = "MODE")]
    mode: &'static str,
    #[tabled(rename = "LAST SEEN")]
    last_seen: String,
    #[tabled(rename = "NAMESPACES")]
    namespaces: String,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    if let Some(Command::Forget { name, format }) = args.command {
        let forgotten = conn.client()?.forget_node(&name).await?;
        return match format.format.or(args.format.format).unwrap_or_default() {
            Format::Json => print_json(&forgotten),
            Format::Human => print_text(format!(
                "Successfully forgot node {}: no port waits for it any more.",
                forgotten.name
            )),
        };
    }
    let nodes: Vec<Node> = conn.client()?.nodes().await?;
    match args.format.get() {
        Format::Json => print_json(&nodes),
        Format::Human if nodes.is_empty() => print_text("No gateway node has published its state yet"),
        Format::Human => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let rows = nodes.iter().map(|n| Row {
                name: n.name.clone(),
                state: match n.state {
                    NodeLiveness::Up => "up",
                    NodeLiveness::Down => "down",
                },
                address: n.public_address.clone(),
                ports: match n.unbound {
                    0 => n.ports.to_string(),
                    unbound => format!("{} ({unbound} unbound)", n.ports),
                },
                mode: match n.port_mode {
                    Some(PortMode::Steered) => "steered",
                    Some(PortMode::Bound) => "bound",
                    None => "-",
                },
                last_seen: format!("{}s ago", (now - n.last_seen).max(0)),
                namespaces: n.namespaces.join(", "),
            });
            print_text(super::render(Table::new(rows)))
        }
    }
}
