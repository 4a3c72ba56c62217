//! `tcp-redirs apply -f FILE`: make the server match a declarative file, idempotently.
//!
//! Applications of the file are created if missing and their instances set; each
//! application's redirections become exactly the file's: those that differ are removed and
//! added again (a re-added redirection gets its previous port back when it is free), those
//! that match are left alone. Applications absent from the file are not touched.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::manifest::{InstanceSpec, Manifest};
use crate::wire::NewApplication;

/// The options of `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The file to apply (TOML; `tcp-redirs export` writes one).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Say what would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    org: OrgArgs,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// One change made (or, with `--dry-run`, to be made).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    /// `create`, `update`, `add` or `remove`.
    action: &'static str,
    /// `application`, `instances` or `redirection`.
    kind: &'static str,
    application: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.action {
            "remove" => '-',
            "update" => '~',
            _ => '+',
        };
        write!(f, "{sign} {} {}", self.kind, self.application)?;
        match (&self.namespace, self.port) {
            (Some(ns), Some(port)) => write!(f, " {port} on {ns}"),
            (Some(ns), None) => write!(f, " on {ns}"),
            _ => Ok(()),
        }
    }
}

/// The JSON document of `apply -F json`.
#[derive(Serialize)]
struct Report {
    changes: Vec<Change>,
    #[serde(rename = "dryRun")]
    dry_run: bool,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let manifest: Manifest =
        crate::toml_file::parse(&text, &args.file).context("not a valid tcp-redirs file")?;
    check(&manifest)?;
    let client = conn.client()?;
    let org = args.org.resolve(&client).await?;
    let existing = client.applications(&org.id).await?;
    let mut changes = Vec::new();
    let change = |action, kind, app: &str, namespace: Option<&str>, port| Change {
        action,
        kind,
        application: app.to_owned(),
        namespace: namespace.map(str::to_owned),
        port,
    };

    for spec in &manifest.applications {
        let instances: Vec<_> = spec.instances.iter().map(InstanceSpec::to_wire).collect();
        let app = match existing.iter().find(|a| a.name == spec.name) {
            Some(app) => {
                let declared: Vec<_> =
                    spec.instances.iter().map(|i| (i.address.clone(), i.weight.unwrap_or(1))).collect();
                let running: Vec<_> =
                    app.instances.iter().map(|i| (i.address.clone(), i.weight.unwrap_or(1))).collect();
                if declared != running {
                    changes.push(change("update", "instances", &spec.name, None, None));
                    if !args.dry_run {
                        client.set_instances(app, &instances).await?;
                    }
                }
                Some(app.clone())
            }
            None => {
                changes.push(change("create", "application", &spec.name, None, None));
                if args.dry_run {
                    None
                } else {
                    let new = NewApplication { name: spec.name.clone(), instances };
                    Some(client.create_application(&org.id, &new).await?)
                }
            }
        };
        let running = match &app {
            Some(app) => client.redirections(app).await?,
            None => Vec::new(),
        };
        // Remove what the file does not declare as it runs, then add what is missing.
        let mut kept = Vec::new();
        for redir in &running {
            if spec.redirections.iter().any(|r| r.matches(redir)) {
                kept.push(redir.namespace.clone());
                continue;
            }
            changes.push(change(
                "remove",
                "redirection",
                &spec.name,
                Some(&redir.namespace),
                Some(redir.port),
            ));
            if let (Some(app), false) = (&app, args.dry_run) {
                client.remove_redirection(app, redir.port, &redir.namespace).await?;
            }
        }
        for wanted in spec.redirections.iter().filter(|r| !kept.contains(&r.namespace)) {
            let port = match (&app, args.dry_run) {
                (Some(app), false) => Some(client.add_redirection(app, &wanted.to_wire()).await?.port),
                _ => wanted.port,
            };
            changes.push(change("add", "redirection", &spec.name, Some(&wanted.namespace), port));
        }
    }

    match args.format.get() {
        Format::Json => print_json(&Report { changes, dry_run: args.dry_run }),
        Format::Human if changes.is_empty() => {
            print_text(format!("Nothing to change: the server matches {}", args.file.display()))
        }
        Format::Human => {
            let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
            let verb = if args.dry_run { "would be made (dry run: nothing was changed)" } else { "made" };
            print_text(format!("{}\n{} change(s) {verb}.", lines.join("\n"), changes.len()))
        }
    }
}

/// Refuses a file that cannot be applied before anything is changed.
fn check(manifest: &Manifest) -> Result<()> {
    for (i, app) in manifest.applications.iter().enumerate() {
        if manifest.applications[..i].iter().any(|a| a.name == app.name) {
            bail!("application `{}` is declared twice: merge its entries", app.name);
        }
        for (j, r) in app.redirections.iter().enumerate() {
            if app.redirections[..j].iter().any(|o| o.namespace == r.namespace) {
                bail!(
                    "application `{}` declares two redirections in namespace `{}`: an application has one per namespace",
                    app.name,
                    r.namespace
                );
            }
        }
    }
    Ok(())
}
