//! `tcp-redirs link APP` and `unlink`: the commands that write the link file
//! ([`crate::link_file`]), which names the applications linked to a directory.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{find_app, print_json, print_text, ConnArgs, Format, FormatArgs};
use crate::client::Failure;
use crate::link_file::{find, Link, Links, LINK_FILE};

/// The options of `link`.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// The application, by id (app_…) or name.
    #[arg(add = super::complete::apps())]
    app: String,
    /// The name to use it by [default: the application's name].
    #[arg(long, value_name = "ALIAS")]
    alias: Option<String>,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// The options of `unlink`.
#[derive(Debug, Clone, clap::Args)]
pub struct UnlinkArgs {
    /// The alias to unlink [default: the only linked application].
    #[arg(add = super::complete::aliases())]
    alias: Option<String>,
    #[command(flatten)]
    pub(super) format: FormatArgs,
}

/// Links an application to the current directory (or the nearest linked parent).
pub async fn link(conn: &ConnArgs, args: LinkArgs) -> Result<()> {
    let app = find_app(&conn.client()?, &args.app).await?;
    let (path, mut links) = match find()? {
        Some(found) => found,
        None => (std::env::current_dir()?.join(LINK_FILE), Links::default()),
    };
    let alias = args.alias.unwrap_or_else(|| app.name.clone());
    links.apps.retain(|l| l.alias != alias);
    let link = Link { alias, app_id: app.id.clone(), org_id: app.owner_id.clone(), name: app.name.clone() };
    links.apps.push(link.clone());
    write(&path, &links)?;
    match args.format.get() {
        Format::Json => print_json(&link),
        Format::Human => {
            print_text(format!("Linked application {} as `{}` in {}", app.name, link.alias, path.display()))
        }
    }
}

/// Removes a link.
pub async fn unlink(args: UnlinkArgs) -> Result<()> {
    let Some((path, mut links)) = find()? else { bail!("no link file here or above: nothing to unlink") };
    let alias = match (args.alias, links.apps.as_slice()) {
        (Some(alias), _) => alias,
        (None, [one]) => one.alias.clone(),
        (None, several) => {
            let aliases: Vec<_> = several.iter().map(|l| l.alias.as_str()).collect();
            bail!("several applications are linked here: say which alias to unlink ({})", aliases.join(", "))
        }
    };
    let before = links.apps.len();
    links.apps.retain(|l| l.alias != alias);
    if links.apps.len() == before {
        return Err(
            Failure::NotFound.with(format!("no application linked as `{alias}` in {}", path.display()))
        );
    }
    if links.apps.is_empty() {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    } else {
        write(&path, &links)?;
    }
    match args.format.get() {
        Format::Json => print_json(&serde_json::json!({"alias": alias})),
        Format::Human => print_text(format!("Unlinked `{alias}`.")),
    }
}

fn write(path: &Path, links: &Links) -> Result<()> {
    let text = serde_json::to_string_pretty(links)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
