//! `tcp-redirs export`: the current applications and redirections, in the format of `apply`.

use anyhow::Result;

use super::{print_json, print_text, ConnArgs, Format, FormatArgs, OrgArgs};
use crate::manifest::{AppSpec, InstanceSpec, Manifest, RedirSpec};
use crate::wire::Protocol;

/// The options of `export`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    org: OrgArgs,
    /// `human` writes the TOML file `apply -f` reads; `json` the same content as JSON.
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

pub async fn run(conn: &ConnArgs, args: Args) -> Result<()> {
    let client = conn.client()?;
    let org = args.org.resolve(&client).await?;
    let mut manifest = Manifest::default();
    for app in client.applications(&org.id).await? {
        let mut running = client.redirections(&app, Protocol::Tcp).await?;
        running.extend(client.redirections(&app, Protocol::Udp).await?);
        let redirections = running.iter().map(RedirSpec::from_wire).collect();
        manifest.applications.push(AppSpec {
            instances: app.instances.iter().map(InstanceSpec::from_wire).collect(),
            name: app.name,
            redirections,
        });
    }
    match args.format.get() {
        Format::Json => print_json(&manifest),
        Format::Human => print_text(toml::to_string(&manifest)?.trim_end()),
    }
}
