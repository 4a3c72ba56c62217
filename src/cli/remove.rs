//! `tcp-redirs remove PORT --namespace NS [--udp]`: close a public port.

use anyhow::Result;

use super::{interactive, print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::wire::Protocol;

/// The options of `remove`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The public port to remove (clever-tools accepts 70000; we do not).
    #[arg(value_parser = clap::value_parser!(u16).range(1..), add = super::complete::ports())]
    port: u16,
    /// The namespace the port belongs to.
    #[arg(long, value_name = "NS", add = super::complete::namespaces())]
    namespace: String,
    /// The port is a UDP redirection's (TCP's and UDP's ports are separate).
    #[arg(long)]
    udp: bool,
    /// Do not ask for confirmation (only a terminal asks).
    #[arg(short = 'y', long)]
    yes: bool,
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let app = args.app.resolve(&client).await?;
    let protocol = if args.udp { Protocol::Udp } else { Protocol::Tcp };
    if interactive() && !args.yes {
        let question = format!(
            "Remove the {} redirection on port {} ({}) of {}?",
            protocol.name().to_uppercase(),
            args.port,
            args.namespace,
            app.name
        );
        if !dialoguer::Confirm::new().with_prompt(question).default(false).interact()? {
            anyhow::bail!("cancelled: nothing was removed");
        }
    }
    let removed = client.remove_redirection(&app, protocol, args.port, &args.namespace).await?;
    match args.format.get() {
        Format::Json => print_json(&removed),
        Format::Human => print_text(format!("Successfully removed {protocol} redirection.")),
    }
}
