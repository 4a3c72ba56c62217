//! `tcp-redirs list-namespaces`: where redirections can be added.

use anyhow::Result;

use super::{find_app, print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs, OrgArgs};

/// The options of `list-namespaces`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Show the namespaces this application's organisation may use.
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    org: OrgArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let org_id = match &args.app.app {
        Some(app) => find_app(&client, app).await?.owner_id,
        None => args.org.resolve(&client).await?.id,
    };
    let mut namespaces = client.namespaces(&org_id).await?;
    namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    match args.format.get() {
        Format::Json => print_json(&namespaces),
        Format::Human => {
            let mut text = String::from("Available namespaces:");
            for ns in &namespaces {
                text.push_str(&format!("\n- {}", ns.namespace));
                if let Some(description) = &ns.description {
                    text.push_str(&format!(": {description}"));
                }
            }
            print_text(text)
        }
    }
}
