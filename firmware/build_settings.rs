//! Build-time settings of a board's firmware (Wi-Fi, server, device token), shared by the
//! boards' `build.rs` through `#[path]`: each setting comes from the environment or else from
//! the board's untracked `config.local.toml`, and reaches the firmware as a `rustc-env`
//! variable read with `env!`. Nothing secret is ever in the source.

use std::collections::BTreeMap;
use std::path::Path;

/// Reads `config.local.toml` (simple `KEY = "value"` lines) next to the board's `Cargo.toml`
/// and passes on each of `names`: the environment's value wins, then the file's. A setting
/// found nowhere is left unset, so the firmware's `env!` fails with its own message.
pub fn pass_on(names: &[&str]) {
    let file = Path::new("config.local.toml");
    println!("cargo:rerun-if-changed={}", file.display());
    let from_file = std::fs::read_to_string(file)
        .map(|text| parse(&text))
        .unwrap_or_default();
    for name in names {
        println!("cargo:rerun-if-env-changed={name}");
        if std::env::var_os(name).is_some() {
            continue; // Cargo passes the environment to rustc already.
        }
        if let Some(value) = from_file.get(*name) {
            println!("cargo:rustc-env={name}={value}");
        }
    }
}

/// `KEY = "value"` (or `KEY = value`) per line; `#` starts a comment line.
fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
                .unwrap_or(value);
            (key.trim().to_string(), value.to_string())
        })
        .collect()
}
