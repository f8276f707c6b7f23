//! Build-time settings of a board's firmware (Wi-Fi, server, device token), shared by the
//! boards' `build.rs` and by xtask (`xtask/src/boards.rs`) through `#[path]`, so the settings
//! file has one reader: each setting comes from the environment or else from the board's
//! untracked `config.local.toml`, and reaches the firmware as a `rustc-env` variable read with
//! `env!`. Nothing secret is ever in the source.

use std::collections::BTreeMap;
use std::path::Path;

/// The board's settings file, beside its `Cargo.toml`.
pub const FILE: &str = "config.local.toml";

/// Reads `config.local.toml` next to the board's `Cargo.toml` and passes on each of `names`:
/// the environment's value wins, then the file's. A setting found nowhere is left unset, so the
/// firmware's `env!` fails with its own message.
#[allow(dead_code)] // xtask reads the file and leaves the passing on to the build scripts.
pub fn pass_on(names: &[&str]) {
    let file = Path::new(FILE);
    println!("cargo:rerun-if-changed={}", file.display());
    let from_file = match read(file) {
        Ok(settings) => settings,
        Err(error) => panic!("{error}"),
    };
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

/// The settings of the file at `path` (`KEY = "value"` lines, as TOML): none when there is no
/// file; an error naming the file when it is not TOML or a value is not a string or a number.
pub fn read(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(format!("reading {}: {error}", path.display())),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|error| format!("{} is not valid TOML: {error}", path.display()))?;
    table
        .into_iter()
        .map(|(key, value)| match value {
            toml::Value::String(text) => Ok((key, text)),
            toml::Value::Integer(number) => Ok((key, number.to_string())),
            _ => Err(format!(
                "{}: `{key}` must be a quoted string",
                path.display()
            )),
        })
        .collect()
}
