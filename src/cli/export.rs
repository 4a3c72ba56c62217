//! `tcp-redirs export`: the current applications and redirections, in the format of `apply`:
//! of every organisation the credential sees (an admin's: the whole server, each
//! application naming its organisation), or of the one `--org` names.

use anyhow::Result;

use super::{print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::manifest::{AppSpec, InstanceSpec, Manifest, RedirSpec};
use crate::wire::Protocol;

/// The options of `export`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Only this organisation, by id (orga_…) or name [default: every one the credential sees].
    #[arg(long, value_name = "ID|NAME", add = super::complete::orgs())]
    org: Option<String>,
    /// `human` writes the TOML file `apply -f` reads; `json` the same content as JSON.
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    // `--org`, or a credential that sees one organisation: a single-organisation file, which
    // applies to any organisation. Several (the admin's): every one, each application
    // naming its own.
    let orgs = match args.org {
        Some(org) => vec![OrgArgs { org: Some(org) }.resolve(&client).await?],
        None => client.organisations().await?,
    };
    let several = orgs.len() > 1;
    let mut manifest = Manifest::default();
    for org in &orgs {
        if several {
            manifest.organisations.push(org.name.clone());
        }
        for app in client.applications(&org.id).await? {
            let mut running = client.redirections(&app, Protocol::Tcp).await?;
            running.extend(client.redirections(&app, Protocol::Udp).await?);
            let redirections = running.iter().map(RedirSpec::from_wire).collect();
            manifest.applications.push(AppSpec {
                organisation: several.then(|| org.name.clone()),
                instances: app.instances.iter().map(InstanceSpec::from_wire).collect(),
                name: app.name,
                health_check: app.health_check,
                redirections,
            });
        }
    }
    match args.format.get() {
        Format::Json => print_json(&manifest),
        Format::Human => print_text(toml::to_string(&manifest)?.trim_end()),
    }
}
