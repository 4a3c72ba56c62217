//! `tcp-redirs add --namespace NS`: a new public port for the application.

use anyhow::Result;

use super::{print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};

/// The options of `add`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The namespace to take a port in (`list-namespaces` shows them).
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
    let redir = client.add_redirection(&app, &args.namespace).await?;
    match args.format.get() {
        Format::Json => print_json(&redir),
        Format::Human => print_text(format!(
            "Successfully added tcp redirection on port: {}",
            redir.port
        )),
    }
}
