//! The client's profiles: which control server to talk to, with which credential.
//!
//! They live in `config.toml` in the user's config directory (`~/.config/tcp-redirs` on
//! Linux), or in the directory named by `TCP_REDIRS_CONFIG_DIR`, which tests and CI use to
//! stay isolated. The file is written with mode 0600 because it holds credentials.
//!
//! ```toml
//! current = "local"
//!
//! [profiles.local]
//! server = "http://127.0.0.1:7070"
//! token = "trt_…"
//! secret = "trs_…"
//! data_dir = "/home/me/.local/share/tcp-redirs"   # set when `serve` wrote it
//! ```
//!
//! `tcp-redirs serve` writes the `local` profile when there is none, so that the CLI on the
//! same machine works with no set-up.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The environment variable that moves the whole client configuration elsewhere.
pub const CONFIG_DIR_ENV: &str = "TCP_REDIRS_CONFIG_DIR";
/// The profile `serve` writes.
pub const LOCAL: &str = "local";

/// One control server and the credential to use with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The control API's base URL.
    pub server: String,
    /// The token, sent as `Authorization: Bearer TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The secret that goes with the token: sent with it in Clever's OAuth form, and checked
    /// by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The data directory of the server that wrote this profile, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// The whole `config.toml`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProfileFile {
    /// The profile used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every profile, by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// The client's config directory.
pub fn config_dir() -> Option<PathBuf> {
    match std::env::var_os(CONFIG_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => directories::ProjectDirs::from("", "", "tcp-redirs").map(|d| d.config_dir().to_path_buf()),
    }
}

impl ProfileFile {
    /// The path of `config.toml`.
    pub fn path() -> Result<PathBuf> {
        config_dir().map(|d| d.join("config.toml")).with_context(|| {
            format!("cannot find the user's config directory (is HOME set?): set {CONFIG_DIR_ENV}")
        })
    }

    /// Reads the file; an absent file is an empty one.
    pub fn load() -> Result<ProfileFile> {
        let path = Self::path()?;
        match fs::read_to_string(&path) {
            Ok(text) => {
                crate::toml_file::parse(&text, &path).context("invalid profile file (fix or delete it)")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProfileFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The profile in use: `current`, else `local`.
    pub fn active(&self) -> Option<&Profile> {
        let name = self.current.as_deref().unwrap_or(LOCAL);
        self.profiles.get(name)
    }

    /// Writes the file atomically with mode 0600, returning its path.
    pub fn save(&self) -> Result<PathBuf> {
        let path = Self::path()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string(self)?;
        let tmp = dir.join(format!(".config.toml.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file =
                fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write()
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
