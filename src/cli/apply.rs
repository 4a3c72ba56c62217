//! `tcp-redirs apply -f FILE`: make the server match a declarative file, idempotently.
//!
//! Applications of the file are created if missing and their instances set; each
//! application's redirections become exactly the file's: one on the declared port (or any
//! port, when the file fixes none) whose settings differ is updated in place (`~`: its open
//! connections stay), one on another port is removed and added again (a re-added
//! redirection gets its previous port back when it is free), those that match are left
//! alone. Applications absent from the file are not touched.
//!
//! A file may name organisations (an admin's `export` of a whole server): those missing are
//! created (admin), and each application goes to its own; one without `organisation` goes
//! to the one `--org` names, or the only one the credential sees.
//!
//! The redirections to add are sent last, in batches (`POST /v2/organisations/{orgId}/tcpRedirs`,
//! up to [`wire::MAX_BATCH`] each): a file of 100,000 redirections makes a hundred calls
//! for them, not 100,000, and the server writes and waits once per batch. Each line of the
//! output keeps its place, its port filled in from the answer. A redirection the server
//! refuses does not stop the others; `apply` then fails with the first refusal, once every
//! batch is sent (applying again after a fix adds only what is missing).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::client::{Client, Failure};
use crate::manifest::{AppSpec, InstanceSpec, Manifest};
use crate::wire::{
    self, ApplicationPatch, HealthCheckPatch, NewApplication, NewOrganisation, NewTcpRedirBatch,
    NewTcpRedirItem, Organisation, Protocol,
};

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
    /// `organisation`, `application`, `instances`, `health checks` or `redirection`.
    kind: &'static str,
    /// The organisation, when the file names it (and for an organisation's own line).
    #[serde(skip_serializing_if = "Option::is_none")]
    organisation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// `udp` for a UDP redirection's line; absent for TCP and other kinds.
    #[serde(skip_serializing_if = "Protocol::is_tcp")]
    protocol: Protocol,
    /// The settings an update of a redirection or of health checks changes, as the file
    /// spells them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    settings: Vec<&'static str>,
}

impl Change {
    fn new(action: &'static str, kind: &'static str) -> Change {
        Change {
            action,
            kind,
            organisation: None,
            application: None,
            namespace: None,
            port: None,
            protocol: Protocol::Tcp,
            settings: Vec::new(),
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = match self.action {
            "remove" => '-',
            "update" => '~',
            _ => '+',
        };
        write!(f, "{sign} {}", self.kind)?;
        match (&self.organisation, &self.application) {
            (Some(org), Some(app)) => write!(f, " {org}/{app}")?,
            (None, Some(app)) => write!(f, " {app}")?,
            (Some(org), None) => write!(f, " {org}")?,
            (None, None) => {}
        }
        let udp = if self.protocol.is_tcp() { "" } else { "/udp" };
        match (&self.namespace, self.port) {
            (Some(ns), Some(port)) => write!(f, " {port}{udp} on {ns}"),
            (Some(ns), None) if udp.is_empty() => write!(f, " on {ns}"),
            (Some(ns), None) => write!(f, " udp on {ns}"),
            _ => Ok(()),
        }?;
        if !self.settings.is_empty() {
            write!(f, " ({})", self.settings.join(", "))?;
        }
        Ok(())
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
    let mut orgs = client.organisations().await?;
    let mut changes = Vec::new();

    // The organisations the file names, in its order, created when missing (admin).
    let mut named: Vec<&str> = manifest.organisations.iter().map(String::as_str).collect();
    named.extend(manifest.applications.iter().filter_map(|a| a.organisation.as_deref()));
    let mut seen = std::collections::HashSet::new();
    named.retain(|n| seen.insert(*n));
    // Checked before anything is created: applications without `organisation` need one
    // organisation to go to, counting those this file is about to create.
    let unassigned = manifest.applications.iter().any(|a| a.organisation.is_none());
    let missing = named.iter().filter(|n| find_org(&orgs, n).is_none());
    if unassigned && args.org.org.is_none() && orgs.len() + missing.clone().count() > 1 {
        let names: Vec<&str> = orgs.iter().map(|o| o.name.as_str()).chain(missing.copied()).collect();
        bail!(
            "{} has applications without `organisation` and your credential sees several organisations: choose theirs with --org ({}), or give each application `organisation = \"NAME\"` in the file",
            args.file.display(),
            names.join(", ")
        )
    }
    for name in &named {
        if find_org(&orgs, name).is_some() {
            continue;
        }
        changes
            .push(Change { organisation: Some(name.to_string()), ..Change::new("create", "organisation") });
        if !args.dry_run {
            let new = NewOrganisation { name: name.to_string() };
            let org = client
                .create_organisation(&new)
                .await
                .with_context(|| {
                    format!(
                        "cannot create organisation `{name}` of {} (creating organisations takes the admin's credential: use it, or drop `organisation` from the file and pass --org)",
                        args.file.display()
                    )
                })?;
            orgs.push(org);
        }
    }
    // Applications without one go to the organisation `--org` names, or the only one.
    let default_org = match unassigned {
        true => Some(args.org.resolve(&client).await?),
        false => None,
    };
    // Each organisation's applications, in the order the file first names it.
    let mut groups: Vec<(Option<&str>, Vec<&AppSpec>)> = Vec::new();
    for spec in &manifest.applications {
        let key = spec.organisation.as_deref();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, specs)) => specs.push(spec),
            None => groups.push((key, vec![spec])),
        }
    }
    for (key, specs) in groups {
        // `None` only in a dry run, for an organisation it would create.
        let org = match key {
            Some(name) => find_org(&orgs, name).cloned(),
            None => default_org.clone(),
        };
        apply_org(&client, org.as_ref(), key, &specs, args.dry_run, &mut changes).await?;
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

/// The organisation named `name` (or with that id) among `orgs`.
fn find_org<'a>(orgs: &'a [Organisation], name: &str) -> Option<&'a Organisation> {
    orgs.iter().find(|o| o.name == name || o.id == name)
}

/// Makes one organisation's applications of the file what it declares (`org` is `None`
/// in a dry run for one that would be created: everything in it is to be made);
/// `label` is the organisation's name when the file names it, shown on each line.
async fn apply_org(
    client: &Client,
    org: Option<&Organisation>,
    label: Option<&str>,
    specs: &[&AppSpec],
    dry_run: bool,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let existing = match org {
        Some(org) => client.applications(&org.id).await?,
        None => Vec::new(),
    };
    // The redirections to add, each with the place of its line in `changes`.
    let mut adds: Vec<(usize, NewTcpRedirItem)> = Vec::new();
    let change = |action, kind, app: &str, namespace: Option<&str>, port| Change {
        application: Some(app.to_owned()),
        organisation: label.map(str::to_owned),
        namespace: namespace.map(str::to_owned),
        port,
        ..Change::new(action, kind)
    };

    for spec in specs {
        let instances: Vec<_> = spec.instances.iter().map(InstanceSpec::to_wire).collect();
        let mut created = false;
        let app = match existing.iter().find(|a| a.name == spec.name) {
            Some(app) => {
                let declared: Vec<_> =
                    spec.instances.iter().map(|i| (i.address.clone(), i.weight.unwrap_or(1))).collect();
                let running: Vec<_> =
                    app.instances.iter().map(|i| (i.address.clone(), i.weight.unwrap_or(1))).collect();
                if declared != running {
                    changes.push(change("update", "instances", &spec.name, None, None));
                    if !dry_run {
                        client.set_instances(app, &instances).await?;
                    }
                }
                let checks = HealthCheckPatch::between(&app.health_check, &spec.health_check);
                if !checks.is_empty() {
                    changes.push(Change {
                        settings: checks.names(),
                        ..change("update", "health checks", &spec.name, None, None)
                    });
                    if !dry_run {
                        client
                            .update_application(app, &ApplicationPatch { health_check: Some(checks) })
                            .await?;
                    }
                }
                Some(app.clone())
            }
            None => {
                changes.push(change("create", "application", &spec.name, None, None));
                match (org, dry_run) {
                    (Some(org), false) => {
                        let new = NewApplication {
                            name: spec.name.clone(),
                            instances,
                            health_check: spec.health_check.clone(),
                        };
                        created = true;
                        Some(client.create_application(&org.id, &new).await?)
                    }
                    _ => None,
                }
            }
        };
        let running = match &app {
            // A new application has no redirection yet: no call to list them.
            Some(app) if !created => {
                let mut both = client.redirections(app, Protocol::Tcp).await?;
                both.extend(client.redirections(app, Protocol::Udp).await?);
                both
            }
            _ => Vec::new(),
        };
        // Update in place what runs on the declared port, remove what the file does not
        // declare as it runs, then add what is missing.
        let mut kept = Vec::new();
        for redir in &running {
            // The same port with other settings changes in place: its connections stay.
            if let Some(wanted) = spec.redirections.iter().find(|r| r.same_port(redir)) {
                kept.push((redir.namespace.clone(), redir.protocol));
                if let Some(patch) = wanted.patch_for(redir) {
                    changes.push(Change {
                        protocol: redir.protocol,
                        settings: patch.names(),
                        ..change(
                            "update",
                            "redirection",
                            &spec.name,
                            Some(&redir.namespace),
                            Some(redir.port),
                        )
                    });
                    if let (Some(app), false) = (&app, dry_run) {
                        client
                            .update_redirection(app, redir.protocol, redir.port, &redir.namespace, &patch)
                            .await?;
                    }
                }
                continue;
            }
            changes.push(Change {
                protocol: redir.protocol,
                ..change("remove", "redirection", &spec.name, Some(&redir.namespace), Some(redir.port))
            });
            if let (Some(app), false) = (&app, dry_run) {
                client.remove_redirection(app, redir.protocol, redir.port, &redir.namespace).await?;
            }
        }
        for wanted in spec.redirections.iter().filter(|r| !kept.contains(&(r.namespace.clone(), r.protocol)))
        {
            let port = match (&app, dry_run) {
                (Some(app), false) => {
                    let item = NewTcpRedirItem {
                        application: app.id.clone(),
                        protocol: wanted.protocol,
                        redirection: wanted.to_wire(),
                    };
                    adds.push((changes.len(), item));
                    None
                }
                _ => wanted.port,
            };
            changes.push(Change {
                protocol: wanted.protocol,
                ..change("add", "redirection", &spec.name, Some(&wanted.namespace), port)
            });
        }
    }
    match org {
        Some(org) => add_all(client, &org.id, adds, changes).await,
        None => Ok(()),
    }
}

/// Adds the redirections in batches of at most [`wire::MAX_BATCH`] and
/// [`wire::MAX_BATCH_BODY`] bytes, filling in the port of each one's line; fails with the
/// first refusal once all are sent.
async fn add_all(
    client: &Client,
    org: &str,
    adds: Vec<(usize, NewTcpRedirItem)>,
    changes: &mut [Change],
) -> Result<()> {
    // What the body holds besides its items, and a margin for the separators.
    const ROOM: usize = wire::MAX_BATCH_BODY - 64;
    let mut refused: Vec<(usize, wire::ApiError)> = Vec::new();
    let mut adds = adds.into_iter().peekable();
    while adds.peek().is_some() {
        let (mut lines, mut items, mut size) = (Vec::new(), Vec::new(), 0);
        while let Some((line, item)) = adds.peek() {
            let len = serde_json::to_vec(item)?.len() + 1;
            if items.len() == wire::MAX_BATCH || (!items.is_empty() && size + len > ROOM) {
                break;
            }
            size += len;
            lines.push(*line);
            items.push(item.clone());
            adds.next();
        }
        let answer = client.add_redirections(org, &NewTcpRedirBatch { redirections: items }).await?;
        if answer.redirections.len() != lines.len() {
            bail!(
                "the server answered {} outcomes for a batch of {} redirections: is it a tcp-redirs server of the same version?",
                answer.redirections.len(),
                lines.len()
            );
        }
        for (line, outcome) in lines.into_iter().zip(answer.redirections) {
            match (outcome.redirection, outcome.error) {
                (Some(made), _) => changes[line].port = Some(made.port),
                (None, Some(error)) => refused.push((line, error)),
                (None, None) => {
                    bail!("the server answered neither a redirection nor an error for one of a batch")
                }
            }
        }
    }
    let Some((line, error)) = refused.first() else { return Ok(()) };
    let what = &changes[*line];
    let others = match refused.len() {
        1 => String::new(),
        n => format!(" ({} more were refused too)", n - 1),
    };
    let message = format!(
        "cannot add the redirection of `{}` in `{}`: {}{others}; every other change was made: fix the file and apply it again",
        what.application.as_deref().unwrap_or_default(),
        what.namespace.as_deref().unwrap_or_default(),
        error.message
    );
    // An unknown application or namespace exits as "not found", as a single `add` does.
    Err(if (4040..4050).contains(&error.id) {
        Failure::NotFound.with(message)
    } else {
        anyhow::anyhow!(message)
    })
}

/// Refuses a file that cannot be applied before anything is changed.
fn check(manifest: &Manifest) -> Result<()> {
    for (i, app) in manifest.applications.iter().enumerate() {
        if manifest.applications[..i].iter().any(|a| a.name == app.name && a.organisation == app.organisation)
        {
            match &app.organisation {
                Some(org) => bail!(
                    "application `{}` of organisation `{org}` is declared twice: merge its entries",
                    app.name
                ),
                None => bail!("application `{}` is declared twice: merge its entries", app.name),
            }
        }
        for (j, r) in app.redirections.iter().enumerate() {
            if app.redirections[..j].iter().any(|o| o.namespace == r.namespace && o.protocol == r.protocol) {
                bail!(
                    "application `{}` declares two {} redirections in namespace `{}`: an application has one per namespace and protocol",
                    app.name,
                    r.protocol.name().to_uppercase(),
                    r.namespace
                );
            }
        }
    }
    Ok(())
}
