//! `tcp-redirs link APP` and `unlink`: the applications linked to a directory.
//!
//! As `clever link` does with `.clever.json`, a link file `.tcp-redirs.json` in a project's
//! directory names the applications it deploys, each under an alias; commands run anywhere
//! below that directory use them when neither `--app` nor `--alias` is given. The file
//! holds no credential, so it can be committed with the project.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{find_app, print_json, print_text, ConnArgs, Format, FormatArgs};
use crate::client::Failure;
use crate::wire::Application;

/// The link file's name.
pub const LINK_FILE: &str = ".tcp-redirs.json";

/// The link file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Links {
    /// The linked applications.
    pub apps: Vec<Link>,
}

/// One linked application.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The name commands use with `--alias`.
    pub alias: String,
    /// `app_…`
    pub app_id: String,
    /// `orga_…`
    pub org_id: String,
    /// The application's name when it was linked.
    pub name: String,
}

impl Link {
    /// The application the link names, without asking the server.
    pub fn application(&self) -> Application {
        Application {
            id: self.app_id.clone(),
            name: self.name.clone(),
            owner_id: self.org_id.clone(),
            instances: Vec::new(),
        }
    }
}

/// The nearest link file from the current directory up, and its content.
pub fn find() -> Result<Option<(PathBuf, Links)>> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    for dir in cwd.ancestors() {
        let path = dir.join(LINK_FILE);
        if path.is_file() {
            return Ok(Some((path.clone(), read(&path)?)));
        }
    }
    Ok(None)
}

fn read(path: &Path) -> Result<Links> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid link file: fix or delete it", path.display()))
}

/// The linked application to use: the one of `alias`, or the only one.
pub fn linked(alias: Option<&str>) -> Result<Application> {
    let Some((path, links)) = find()? else {
        bail!("no application selected: pass --app ID|NAME, --alias ALIAS, or run `tcp-redirs link APP` in your project");
    };
    match alias {
        Some(alias) => links.apps.iter().find(|l| l.alias == alias).map(Link::application).ok_or_else(|| {
            Failure::NotFound.with(format!(
                "no application linked as `{alias}` in {}: `tcp-redirs link APP --alias {alias}`",
                path.display()
            ))
        }),
        None => match links.apps.as_slice() {
            [one] => Ok(one.application()),
            [] => bail!("{} links no application: run `tcp-redirs link APP`", path.display()),
            several => {
                let aliases: Vec<_> = several.iter().map(|l| l.alias.as_str()).collect();
                bail!(
                    "several applications are linked here: choose one with --alias ({})",
                    aliases.join(", ")
                )
            }
        },
    }
}

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
