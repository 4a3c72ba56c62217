//! `tcp-redirs apps …`: the applications redirections lead to (for the operator), with
//! their instances and how those are health-checked (`--check…` at `create`, and in place
//! with `update`, which follows `tcp-redirs update`: a flag sets, `--unset` takes a setting
//! back to the node's).

use anyhow::{bail, Result};
use clap::Subcommand;
use tabled::{Table, Tabled};

use super::{find_app, print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::client::Failure;
use crate::wire::{
    check_instance_address, Application, ApplicationPatch, HealthCheck, HealthCheckPatch, Instance,
    InstanceState, NewApplication, NewInstance, MAX_WEIGHT,
};

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Create an application with its instances.
    Create {
        /// The application's name, unique within its organisation: 1 to 128 ASCII letters,
        /// digits, `-`, `_` or `.`, not starting with `app_`.
        #[arg(value_parser = crate::wire::check_app_name)]
        name: String,
        /// An address where the application listens, HOST:PORT, optionally =WEIGHT (0 takes
        /// no new connection; 1 by default). Repeat for several.
        #[arg(long = "instance", value_name = "HOST:PORT[=WEIGHT]", value_parser = parse_instance)]
        instances: Vec<NewInstance>,
        #[command(flatten)]
        check: HealthCheck,
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Change an application's health checks in place: every node follows when the
    /// command returns; its ports, connections and instances stay.
    Update {
        /// The application, by id (app_…) or name.
        #[arg(add = super::complete::apps())]
        app: String,
        /// Take a setting back to the node's `[health_checks]` (repeat for several).
        #[arg(long, value_name = "SETTING", value_enum)]
        unset: Vec<CheckSetting>,
        #[command(flatten)]
        check: HealthCheck,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Replace an application's instances, live: open connections stay where they are.
    SetInstances {
        /// The application, by id (app_…) or name.
        #[arg(add = super::complete::apps())]
        app: String,
        /// HOST:PORT[=WEIGHT], repeated for each instance.
        #[arg(long = "instance", value_name = "HOST:PORT[=WEIGHT]", value_parser = parse_instance, required = true)]
        instances: Vec<NewInstance>,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// List the applications.
    List {
        #[command(flatten)]
        org: OrgArgs,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// Remove an application and all its redirections.
    Remove {
        /// The application, by id (app_…) or name.
        #[arg(add = super::complete::apps())]
        app: String,
        #[command(flatten)]
        format: FormatArgs,
    },
}

impl Command {
    /// The command's `-F` option.
    pub(super) fn format_mut(&mut self) -> &mut FormatArgs {
        match self {
            Command::Create { format, .. }
            | Command::Update { format, .. }
            | Command::SetInstances { format, .. }
            | Command::List { format, .. }
            | Command::Remove { format, .. } => format,
        }
    }
}

/// A health-check setting `--unset` takes back to the node's (its flag's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckSetting {
    /// --check
    Check,
    /// --check-interval-ms
    CheckIntervalMs,
    /// --check-timeout-ms
    CheckTimeoutMs,
    /// --check-rise
    CheckRise,
    /// --check-fall
    CheckFall,
    /// --check-send
    CheckSend,
    /// --check-expect
    CheckExpect,
}

/// The change the flags ask for; a usage error when one setting is both set and unset, or
/// when nothing is asked.
fn patch(check: &HealthCheck, unset: &[CheckSetting]) -> Result<HealthCheckPatch, String> {
    let mut patch = HealthCheckPatch {
        kind: check.kind.map(Some),
        interval_ms: check.interval_ms.map(Some),
        timeout_ms: check.timeout_ms.map(Some),
        rise: check.rise.map(Some),
        fall: check.fall.map(Some),
        send: check.send.clone().map(Some),
        expect: check.expect.clone().map(Some),
    };
    for setting in unset {
        let taken = match setting {
            CheckSetting::Check => patch.kind.replace(None).is_some(),
            CheckSetting::CheckIntervalMs => patch.interval_ms.replace(None).is_some(),
            CheckSetting::CheckTimeoutMs => patch.timeout_ms.replace(None).is_some(),
            CheckSetting::CheckRise => patch.rise.replace(None).is_some(),
            CheckSetting::CheckFall => patch.fall.replace(None).is_some(),
            CheckSetting::CheckSend => patch.send.replace(None).is_some(),
            CheckSetting::CheckExpect => patch.expect.replace(None).is_some(),
        };
        if taken {
            return Err(super::set_and_unset(setting));
        }
    }
    if patch.is_empty() {
        return Err(
            "nothing to change: give the settings to change (such as --check-interval-ms 1000) or --unset SETTING"
                .into(),
        );
    }
    Ok(patch)
}

fn parse_instance(text: &str) -> Result<NewInstance, String> {
    let (address, weight) = match text.rsplit_once('=') {
        Some((address, weight)) => {
            let weight = weight
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= MAX_WEIGHT)
                .ok_or_else(|| format!("weight `{weight}` must be a number from 0 to {MAX_WEIGHT}"))?;
            (address, Some(weight))
        }
        None => (text, None),
    };
    check_instance_address(address)?;
    Ok(NewInstance { address: address.to_owned(), weight })
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "NAME")]
    name: String,
    #[tabled(rename = "ID")]
    id: String,
    #[tabled(rename = "INSTANCES")]
    instances: String,
    #[tabled(rename = "CHECKS")]
    checks: String,
}

pub async fn run(conn: &ConnArgs, command: Command) -> Result<()> {
    let client = conn.client()?;
    match command {
        Command::Update { app, unset, check, format } => {
            let change = patch(&check, &unset).map_err(|message| Failure::Usage.with(message))?;
            let app = find_app(&client, &app).await?;
            let patch = ApplicationPatch { health_check: Some(change) };
            let updated = client.update_application(&app, &patch).await?;
            match format.get() {
                Format::Json => print_json(&updated),
                Format::Human => print_text(format!(
                    "Successfully updated application {}: health checks {}",
                    updated.name,
                    checks_line(&updated.health_check)
                )),
            }
        }
        Command::Create { name, instances, check, org, format } => {
            let org = org.resolve(&client).await?;
            let new = NewApplication { name, instances, health_check: check };
            let app = client.create_application(&org.id, &new).await?;
            match format.get() {
                Format::Json => print_json(&app),
                Format::Human => print_text(format!(
                    "Successfully created application {} ({}) in organisation {} ({})",
                    app.name, app.id, org.name, org.id
                )),
            }
        }
        Command::SetInstances { app, instances, format } => {
            let app = find_app(&client, &app).await?;
            let updated = client.set_instances(&app, &instances).await?;
            match format.get() {
                Format::Json => print_json(&updated),
                Format::Human => print_text(format!(
                    "Successfully set {} instance(s) of application {}.",
                    updated.instances.len(),
                    updated.name
                )),
            }
        }
        Command::List { org, format } => {
            let org = org.resolve(&client).await?;
            let apps = client.applications(&org.id).await?;
            match format.get() {
                Format::Json => print_json(&apps),
                Format::Human if apps.is_empty() => print_text(
                    "No application yet: create one with `tcp-redirs apps create NAME --instance HOST:PORT`",
                ),
                Format::Human => print_text(table(&apps)),
            }
        }
        Command::Remove { app, format } => {
            let app = find_app(&client, &app).await?;
            let removed = client.remove_application(&app).await?;
            if removed.id != app.id {
                bail!("the server removed {} instead of {}", removed.id, app.id);
            }
            match format.get() {
                Format::Json => print_json(&removed),
                Format::Human => {
                    print_text(format!("Successfully removed application {} ({}).", removed.name, removed.id))
                }
            }
        }
    }
}

fn table(apps: &[Application]) -> String {
    let rows: Vec<Row> = apps
        .iter()
        .map(|a| Row {
            name: a.name.clone(),
            id: a.id.clone(),
            instances: a.instances.iter().map(describe).collect::<Vec<_>>().join(", "),
            checks: checks_line(&a.health_check),
        })
        .collect();
    let widest = rows.iter().map(|r| r.instances.chars().count()).max().unwrap_or(0);
    // INSTANCES is the third column.
    super::render_wrapping(Table::new(rows), 2, widest.max("INSTANCES".len()))
}

/// An application's health-check settings as the list shows them: its own, and `node's`
/// for the rest (`expect every 1000 ms, send 50494e47, expect 2b504f4e47; node's for the rest`).
fn checks_line(check: &HealthCheck) -> String {
    if check.is_default() {
        "node's".into()
    } else {
        format!("{}; node's for the rest", check.summary())
    }
}

/// `10.0.0.5:4040`, with its weight when not 1 and its state once known: `10.0.0.5:4040 (w=2, down)`.
fn describe(instance: &Instance) -> String {
    let mut notes = Vec::new();
    if let Some(w) = instance.weight.filter(|&w| w != 1) {
        notes.push(format!("w={w}"));
    }
    if let Some(state) = instance.state {
        notes.push(if state == InstanceState::Up { "up".into() } else { "down".into() });
    }
    if notes.is_empty() {
        instance.address.clone()
    } else {
        format!("{} ({})", instance.address, notes.join(", "))
    }
}
