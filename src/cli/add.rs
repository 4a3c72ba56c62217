//! `tcp-redirs add --namespace NS`: a new public port for the application.

use anyhow::Result;

use super::{interactive, print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::client::Client;

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
use crate::wire::{NewTcpRedir, ProxyProtocol, RedirAccess, RedirLimits, MAX_LIMIT_SECS, MAX_QUOTA};

fn parse_proxy_protocol(text: &str) -> Result<ProxyProtocol, String> {
    match text {
        "v1" | "1" => Ok(ProxyProtocol::V1),
        "v2" | "2" => Ok(ProxyProtocol::V2),
        _ => Err("use v1 (text header) or v2 (binary header)".into()),
    }
}

/// The options of `add`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The namespace to take a port in (`list-namespaces` shows them). Without it, a
    /// terminal offers the choice, and a script gets `default`.
    #[arg(long, value_name = "NS", add = super::complete::namespaces())]
    namespace: Option<String>,
    /// Seconds an instance may take to accept before the next is tried [default: the namespace's, 5].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS))]
    connect_timeout: Option<u64>,
    /// Seconds a connection may go without a byte before it is closed [default: the namespace's, 3600].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS))]
    idle_timeout: Option<u64>,
    /// Seconds a connection may stay half-closed [default: the namespace's, 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT_SECS))]
    half_close_timeout: Option<u64>,
    /// Ask for this precise port of the namespace's range instead of a random one.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// The most connections open at once; more are refused [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64))]
    max_connections: Option<u32>,
    /// The most new connections per second; more are refused [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_QUOTA as i64))]
    max_connections_per_second: Option<u32>,
    /// Send the PROXY protocol header (v1 or v2) to the instance, so it sees the client's address.
    #[arg(long, value_name = "VERSION", value_parser = parse_proxy_protocol)]
    proxy_protocol: Option<ProxyProtocol>,
    /// Only clients in this range may connect (CIDR or address; repeat for several).
    #[arg(long, value_name = "CIDR")]
    allow: Vec<String>,
    /// Refuse clients in this range, even when allowed (CIDR or address; repeat for several).
    #[arg(long, value_name = "CIDR")]
    deny: Vec<String>,
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
    let body = NewTcpRedir {
        namespace,
        port: args.port,
        limits: RedirLimits {
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
            half_close_timeout: args.half_close_timeout,
            max_connections: args.max_connections,
            max_connections_per_second: args.max_connections_per_second,
        },
        access: RedirAccess { proxy_protocol: args.proxy_protocol, allow: args.allow, deny: args.deny },
    };
    let redir = client.add_redirection(&app, &body).await?;
    match args.format.get() {
        Format::Json => print_json(&redir),
        Format::Human => print_text(format!("Successfully added tcp redirection on port: {}", redir.port)),
    }
}
