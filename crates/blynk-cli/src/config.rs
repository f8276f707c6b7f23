//! Where to connect: the server URL, the admin key and an optional extra CA certificate.
//!
//! Each setting comes from the first of: a flag (`--server`, `--key`, `--ca`), the environment
//! (`BLYNK_SERVER`, `BLYNK_KEY`, `BLYNK_CA`; clap reads these into the flags), the config file,
//! the default. The config file is `--config FILE` or `$BLYNK_CONFIG` (which must exist), else
//! `$XDG_CONFIG_HOME/blynk/config.toml` or `~/.config/blynk/config.toml` (read when present):
//!
//! ```toml
//! server = "https://iot.example.com"
//! key = "the admin key"
//! ca = "/etc/blynk/ca.pem"   # optional
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::Global;

/// The server used when nothing names one.
pub const DEFAULT_SERVER: &str = "http://localhost:8080";

/// The settings of one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's base URL, as given.
    pub server: String,
    /// The admin key.
    pub key: String,
    /// An extra CA certificate file (PEM) trusted for TLS.
    pub ca: Option<PathBuf>,
}

/// The config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    key: Option<String>,
    ca: Option<PathBuf>,
}

/// The default config file path, if a home directory is known.
fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").filter(|dir| !dir.is_empty())?).join(".config")
        }
    };
    Some(base.join("blynk").join("config.toml"))
}

fn read_file(path: &Path, must_exist: bool) -> Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(FileConfig::default());
        }
        Err(error) => bail!("cannot read the config file {}: {error}", path.display()),
    };
    let mut config: FileConfig = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid", path.display()))?;
    // A relative `ca` path is relative to the config file.
    if let (Some(ca), Some(dir)) = (config.ca.as_mut(), path.parent())
        && ca.is_relative()
    {
        *ca = dir.join(&*ca);
    }
    Ok(config)
}

/// Resolves the settings from the flags (and environment, through clap) and the config file.
pub fn resolve(global: &Global) -> Result<Settings> {
    let file = match &global.config {
        Some(path) => read_file(path, true)?,
        None => match default_path() {
            Some(path) => read_file(&path, false)?,
            None => FileConfig::default(),
        },
    };
    let nonempty = |value: &Option<String>| value.clone().filter(|text| !text.trim().is_empty());
    let server = nonempty(&global.server)
        .or(nonempty(&file.server))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let Some(key) = nonempty(&global.key).or(nonempty(&file.key)) else {
        bail!(
            "no admin key: pass --key KEY, set BLYNK_KEY, or put `key = \"..\"` in {} \
             (the server prints its admin key on first start; `blynk-server key rotate` prints a new one)",
            global
                .config
                .clone()
                .or_else(default_path)
                .map(|path| path.display().to_string())
                .unwrap_or_else(|| "~/.config/blynk/config.toml".into())
        );
    };
    Ok(Settings {
        server: server.trim().to_string(),
        key: key.trim().to_string(),
        ca: global.ca.clone().or(file.ca),
    })
}
