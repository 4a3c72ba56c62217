//! `tcp-redirs [list]`: the application's redirections, TCP then UDP.

use anyhow::Result;

use super::{print_json, print_text, AppArgs, ConnArgs, Format, FormatArgs};
use crate::wire::{InstanceState, Protocol, RedirState, TcpRedir};

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

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
    let mut redirs = client.redirections(&app, Protocol::Tcp).await?;
    redirs.extend(client.redirections(&app, Protocol::Udp).await?);
    redirs.sort_by(|a, b| (a.protocol, &a.namespace, a.port).cmp(&(b.protocol, &b.namespace, b.port)));
    match args.format.get() {
        Format::Json => print_json(&redirs),
        Format::Human if redirs.is_empty() => print_text("No active TCP redirection for this application"),
        Format::Human => {
            // clever's words for TCP; UDP's follow under their own heading.
            let mut text = String::new();
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                let mut of = redirs.iter().filter(|r| r.protocol == protocol).peekable();
                if of.peek().is_none() {
                    continue;
                }
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("Enabled {} redirections:", protocol.name().to_uppercase()));
                for redir in of {
                    text.push('\n');
                    text.push_str(&human_line(redir));
                    // The limits in force, the redirection's own or its namespace's.
                    text.push_str("\n  ");
                    text.push_str(&settings_line(redir));
                }
            }
            // Instance states are known once a redirection has carried traffic to them.
            if app.instances.iter().any(|i| i.state.is_some()) {
                text.push_str("\nInstances:");
                for i in &app.instances {
                    let state = match i.state {
                        Some(InstanceState::Up) => "up",
                        Some(InstanceState::Down) => "down",
                        None => "unknown",
                    };
                    let open = i.active_connections.unwrap_or(0);
                    text.push_str(&format!(
                        "\n  {} {state}, {open} open, weight {}",
                        i.address,
                        i.weight.unwrap_or(1)
                    ));
                    if let Some(at) = i.last_check {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        text.push_str(&format!(", checked {} s ago", (now - at).max(0)));
                    }
                }
            }
            print_text(text)
        }
    }
}

/// clever's `5123 on default`, followed by the address and, when not listening, why.
fn human_line(redir: &TcpRedir) -> String {
    // A range reads `5000-5099 on default`.
    let mut line = format!("{} on {}", redir.ports_text(), redir.namespace);
    if let Some(address) = &redir.address {
        line.push_str(&format!(" ({address})"));
    }
    if let Some(t) = &redir.traffic {
        line.push_str(&format!(
            ", {} open, {} in all, {} in, {} out",
            t.active_connections,
            t.connections,
            bytes(t.bytes_in),
            bytes(t.bytes_out)
        ));
    }
    if redir.state == Some(RedirState::Unbound) {
        line.push_str(" [not listening: the port is in use by another program; the server keeps retrying]");
    }
    line
}

/// The settings in force on a redirection, for people: `connect 5 s, idle 3600 s,
/// half-close 60 s, unlimited` then the quotas, access list and PROXY header that are set.
pub(super) fn settings_line(redir: &TcpRedir) -> String {
    let s = &redir.settings;
    let secs = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} s"));
    let mut parts = Vec::new();
    if redir.protocol == Protocol::Tcp {
        parts.push(format!("connect {}", secs(s.connect_timeout)));
    }
    parts.push(format!("idle {}", secs(s.idle_timeout)));
    if redir.protocol == Protocol::Tcp {
        parts.push(format!("half-close {}", secs(s.half_close_timeout)));
    }
    let open = if redir.protocol == Protocol::Udp { "flows" } else { "open" };
    parts.push(match s.max_connections {
        Some(n) => format!("at most {n} {open}"),
        None => format!("unlimited {open}"),
    });
    if let Some(n) = s.max_connections_per_second {
        parts.push(format!("at most {n} new/s"));
    }
    if let Some(n) = s.max_datagrams_per_second {
        parts.push(format!("at most {n} datagrams/s per client"));
    }
    if let Some(n) = s.max_connections_per_client {
        parts.push(format!("at most {n} {open} per client"));
    }
    if let Some(n) = s.max_connections_per_second_per_client {
        parts.push(format!("at most {n} new/s per client"));
    }
    if let Some(n) = s.bandwidth_limit {
        parts.push(format!("at most {}/s each way", bytes(n)));
    }
    if !s.allow.is_empty() {
        parts.push(format!("allow {}", s.allow.join(" ")));
    }
    if !s.deny.is_empty() {
        parts.push(format!("deny {}", s.deny.join(" ")));
    }
    if let Some(p) = s.proxy_protocol {
        parts.push(format!("PROXY {}", p.name()));
    }
    parts.join(", ")
}
