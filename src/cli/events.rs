//! `tcp-redirs events`: the audit trail (issue 35), who changed what and when; `--follow`
//! keeps printing new events as they happen.
//!
//! Following is a long poll (`after=ID&wait=…`): the command keeps the id of the last event
//! it printed and asks for the events after it, so a break (the server restarting, the
//! network) costs nothing: it retries, and resumes exactly after that id, with no gap and
//! no duplicate. With `-F json` a page is one JSON document; following prints one event per
//! line (JSON lines), as each arrives.

use std::time::Duration;

use anyhow::Result;
use tabled::{Table, Tabled};

use super::{find_app, print_json, print_text, ConnArgs, Format, FormatArgs};
use crate::client::Failure;
use crate::wire::{AuditEvent, EventKind, EventPage};

/// How long one long poll waits on the server for a new event.
const POLL_WAIT: u64 = 25;
/// The longest pause between two tries to reach a server that is away.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The options of `events`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The organisation, by id (orga_…) or name [default: the only one the credential sees].
    #[arg(long, value_name = "ID|NAME", conflicts_with = "all", add = super::complete::orgs())]
    org: Option<String>,
    /// Every organisation's events, and the admin's own (admin).
    #[arg(long)]
    all: bool,
    /// Only events of this application, by id (app_…) or name.
    #[arg(long, value_name = "ID|NAME")]
    app: Option<String>,
    /// Only events of these kinds (repeat, or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    kind: Vec<EventKind>,
    /// Only events of the last DURATION (`90s`, `15m`, `2h`, `7d`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<Duration>,
    /// How many events to show (the newest), 1 to 1000.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Keep printing new events as they happen, until interrupted.
    #[arg(long, short = 'f')]
    follow: bool,
    /// With --follow: start after this event id (the last one a previous run printed) instead
    /// of the newest events.
    #[arg(long, value_name = "ID", requires = "follow")]
    after: Option<i64>,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// `90s`, `15m`, `2h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 =
        number.parse().map_err(|_| format!("`{text}`: write a number and a unit, like 15m or 2h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d, like 15m or 2h")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "ID")]
    id: i64,
    #[tabled(rename = "TIME (UTC)")]
    at: String,
    #[tabled(rename = "KIND")]
    kind: &'static str,
    #[tabled(rename = "ACTOR")]
    actor: String,
    #[tabled(rename = "FROM")]
    client: String,
    #[tabled(rename = "WHAT")]
    what: String,
}

fn row(e: &AuditEvent) -> Row {
    let record = e.after.as_ref().or(e.before.as_ref());
    let field = |name: &str| record.and_then(|r| r.get(name)).and_then(|v| v.as_str().map(str::to_owned));
    let what = match e.kind {
        EventKind::RedirectionAdded | EventKind::RedirectionUpdated | EventKind::RedirectionRemoved => {
            let port = record.and_then(|r| r.get("port")).map(|p| p.to_string()).unwrap_or_default();
            let namespace = field("namespace").unwrap_or_default();
            let udp = if field("protocol").as_deref() == Some("udp") { "udp/" } else { "" };
            format!("{}/{udp}{port} -> {}", namespace, e.app_id.clone().unwrap_or_default())
        }
        EventKind::TokenIssued | EventKind::TokenRevoked => {
            format!("{} ({})", field("id").unwrap_or_default(), field("name").unwrap_or_default())
        }
        _ => field("name").or_else(|| e.app_id.clone()).unwrap_or_default(),
    };
    let actor = match &e.actor.id {
        Some(id) => format!("{} ({id})", e.actor.name),
        None => e.actor.name.clone(),
    };
    Row {
        id: e.id,
        at: utc(e.at),
        kind: e.kind.name(),
        actor,
        client: e.client.clone().unwrap_or_else(|| "-".into()),
        what,
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` in UTC (the civil calendar from days, as
/// Howard Hinnant's `civil_from_days`).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let mut filters = Vec::new();
    let mut org = None;
    if let Some(wanted) = &args.app {
        let app = find_app(&client, wanted).await?;
        filters.push(format!("app={}", app.id));
        org = Some(app.owner_id);
    }
    if !args.all && org.is_none() {
        org = Some(super::OrgArgs { org: args.org.clone() }.resolve(&client).await?.id);
    }
    if !args.kind.is_empty() {
        let kinds: Vec<_> = args.kind.iter().map(|k| k.name()).collect();
        filters.push(format!("kind={}", kinds.join(",")));
    }
    if let Some(since) = args.since {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        filters.push(format!("since={}", now.saturating_sub(since).as_millis()));
    }
    let format = args.format.get();
    let page = |extra: String| {
        let mut query = filters.clone();
        query.push(extra);
        query.join("&")
    };
    if !args.follow {
        let found = client.events(org.as_deref(), &page(format!("limit={}", args.limit))).await?;
        return match format {
            Format::Json => print_json(&found),
            Format::Human if found.events.is_empty() => print_text("No event recorded yet"),
            Format::Human => print_text(super::render(Table::new(found.events.iter().map(row)))),
        };
    }
    let mut cursor = match args.after {
        Some(after) => after,
        None => {
            // The newest events first, oldest of them on top, then what comes after them.
            let found = client.events(org.as_deref(), &page(format!("limit={}", args.limit))).await?;
            let mut shown = found.events;
            shown.reverse();
            show(format, &shown, true)?;
            shown.last().map_or(0, |e| e.id)
        }
    };
    let mut retry = Duration::from_millis(100);
    let mut away = false;
    loop {
        let asked = page(format!("after={cursor}&wait={POLL_WAIT}&limit=1000"));
        match client.events(org.as_deref(), &asked).await {
            Ok(EventPage { events, .. }) => {
                if away {
                    eprintln!("reconnected; resuming after event {cursor}");
                    away = false;
                }
                retry = Duration::from_millis(100);
                show(format, &events, false)?;
                if let Some(last) = events.last() {
                    cursor = last.id;
                }
            }
            Err(err) if Failure::of(&err) == Some(Failure::Unreachable) => {
                if !away {
                    eprintln!("{err:#}; retrying, to resume after event {cursor}");
                    away = true;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Prints followed events: one JSON line each, or table rows (the heading with the first).
fn show(format: Format, events: &[AuditEvent], heading: bool) -> Result<()> {
    match format {
        Format::Json => {
            for event in events {
                print_text(serde_json::to_string(event)?)?;
            }
        }
        Format::Human => {
            for e in events {
                let r = row(e);
                print_text(format!("{}  {}  {}  {}  {}  {}", r.id, r.at, r.kind, r.actor, r.client, r.what))?;
            }
            if heading && events.is_empty() {
                eprintln!("No event recorded yet; waiting for the next one");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("15m"), Ok(std::time::Duration::from_secs(900)));
        assert!(super::parse_duration("15").is_err());
        assert!(super::parse_duration("m").is_err());
    }
}
