//! `tcp-redirs remove PORT --namespace NS`: close a public port.

use anyhow::Result;

use super::{print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};

/// The options of `remove`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The public port to remove (clever-tools accepts 70000; we do not).
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The namespace the port belongs to.
    #[arg(long, value_name = "NS")]
    namespace: String,
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let app = args.app.resolve(&client).await?;
    let removed = client.remove_redirection(&app, args.port, &args.namespace).await?;
    match args.format.get() {
        Format::Json => print_json(&removed),
        Format::Human => print_text("Successfully removed tcp redirection."),
    }
}
