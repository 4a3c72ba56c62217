//! `tcp-redirs add --namespace NS`: a new public port for the application.

use anyhow::Result;

use super::{print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::wire::{NewTcpRedir, RedirLimits, MAX_LIMIT_SECS};

/// The options of `add`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The namespace to take a port in (`list-namespaces` shows them).
    #[arg(long, value_name = "NS")]
    namespace: String,
    /// Seconds an instance may take to accept before the next is tried [default: the namespace's, 5].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS))]
    connect_timeout: Option<u64>,
    /// Seconds a connection may go without a byte before it is closed [default: the namespace's, 3600].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS))]
    idle_timeout: Option<u64>,
    /// Seconds a connection may stay half-closed [default: the namespace's, 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS))]
    half_close_timeout: Option<u64>,
    #[command(flatten)]
    pub(super) app: AppArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let app = args.app.resolve(&client).await?;
    let body = NewTcpRedir {
        namespace: args.namespace,
        limits: RedirLimits {
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
            half_close_timeout: args.half_close_timeout,
        },
    };
    let redir = client.add_redirection(&app, &body).await?;
    match args.format.get() {
        Format::Json => print_json(&redir),
        Format::Human => print_text(format!("Successfully added tcp redirection on port: {}", redir.port)),
    }
}
