//! `tcp-redirs [list]`: the application's redirections.

use anyhow::Result;

use super::{print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::wire::{RedirState, TcpRedir};

/// The options of the list.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let app = args.app.resolve(&client).await?;
    let mut redirs = client.redirections(&app).await?;
    redirs.sort_by(|a, b| (&a.namespace, a.port).cmp(&(&b.namespace, b.port)));
    match args.format.get() {
        Format::Json => print_json(&redirs),
        Format::Human if redirs.is_empty() => print_text("No active TCP redirection for this application"),
        Format::Human => {
            let lines: Vec<String> = redirs.iter().map(human_line).collect();
            print_text(format!("Enabled TCP redirections:\n{}", lines.join("\n")))
        }
    }
}

/// clever's `5123 on default`, followed by the address and, when not listening, why.
fn human_line(redir: &TcpRedir) -> String {
    let mut line = format!("{} on {}", redir.port, redir.namespace);
    if let Some(address) = &redir.address {
        line.push_str(&format!(" ({address})"));
    }
    if redir.state == Some(RedirState::Unbound) {
        line.push_str(" [not listening: the port is in use by another program; the server keeps retrying]");
    }
    line
}
