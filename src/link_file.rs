//! The link file, `.tcp-redirs.json`: the applications linked to a project's directory.
//!
//! As `clever link` does with `.clever.json`, a link file in a project's directory names
//! the applications it deploys, each under an alias; commands run anywhere below that
//! directory use them when neither `--app` nor `--alias` is given. The file holds no
//! credential, so it can be committed with the project. `tcp-redirs link` and `unlink`
//! (`cli/link.rs`) write it; the commands and the shell completion (`cli/complete.rs`)
//! read it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

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
            health_check: Default::default(),
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
