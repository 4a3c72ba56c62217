//! `tcp-redirs webhooks …`: where an organisation's events are posted as they happen
//! (issue 35), and how their deliveries stand.

use anyhow::Result;
use clap::Subcommand;
use tabled::{Table, Tabled};

use super::{print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::wire::{EventKind, NewWebhook, Webhook};

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Register a webhook: the organisation's events from now on are posted to URL, signed;
    /// the signing secret is shown this once.
    Create {
        /// https://HOST/PATH, or http:// to a loopback address.
        #[arg(long)]
        url: String,
        /// Only events of these kinds (repeat, or separate with commas) [default: every kind].
        #[arg(long, value_enum, value_delimiter = ',')]
        kind: Vec<EventKind>,
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// List the organisation's webhooks and how their deliveries stand.
    List {
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Remove a webhook; its deliveries stop.
    Remove {
        /// The webhook's id (whk_…), as `webhooks list` shows it.
        id: String,
        #[command(flatten)]
        org: OrgArgs,
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

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "URL")]
    url: String,
    #[tabled(rename = "KINDS")]
    kinds: String,
    #[tabled(rename = "DELIVERED UP TO")]
    delivered: i64,
    #[tabled(rename = "STATE")]
    state: String,
}

fn row(w: &Webhook) -> Row {
    let kinds: Vec<_> = w.kinds.iter().map(|k| k.name()).collect();
    let state = match &w.delivery.pending {
        Some(p) => format!("retrying event {} ({} attempts): {}", p.event_id, p.attempts, p.last_error),
        None if w.delivery.failed.is_empty() => "ok".into(),
        None => format!("ok; {} given up (see -F json)", w.delivery.failed.len()),
    };
    Row {
        id: w.id.clone(),
        url: w.url.clone(),
        kinds: if kinds.is_empty() { "all".into() } else { kinds.join(",") },
        delivered: w.delivery.delivered,
        state,
    }
}

pub async fn run(conn: &ConnArgs, command: Command) -> Result<()> {
    let client = conn.client()?;
    match command {
        Command::Create { url, kind, org, format } => {
            let org = org.resolve(&client).await?;
            let created = client.create_webhook(&org.id, &NewWebhook { url, kinds: kind }).await?;
            match format.get() {
                Format::Json => print_json(&created),
                Format::Human => print_text(format!(
                    "Successfully registered webhook {} for organisation {}.\nsecret: {}\n\
                     It is shown only now: the receiver checks X-Tcp-Redirs-Signature (sha256=HMAC-SHA256 of TIMESTAMP.BODY with it).",
                    created.webhook.id, org.name, created.secret
                )),
            }
        }
        Command::List { org, format } => {
            let org = org.resolve(&client).await?;
            let hooks = client.webhooks(&org.id).await?;
            match format.get() {
                Format::Json => print_json(&hooks),
                Format::Human if hooks.is_empty() => print_text("No webhook for this organisation"),
                Format::Human => print_text(super::render(Table::new(hooks.iter().map(row)))),
            }
        }
        Command::Remove { id, org, format } => {
            let org = org.resolve(&client).await?;
            let removed = client.remove_webhook(&org.id, &id).await?;
            match format.get() {
                Format::Json => print_json(&removed),
                Format::Human => print_text(format!("Successfully removed webhook {}.", removed.id)),
            }
        }
    }
}
