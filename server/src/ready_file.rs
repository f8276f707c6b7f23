//! `--ready-file PATH`: once the server listens and its store is open, a JSON document saying
//! where it listens, for the programs that start it (test runners, supervisors) instead of
//! parsing the start banner, which is written for people.
//!
//! The file is written to a temporary name in the same directory and renamed, so a reader sees
//! all of it or nothing, with mode 0600 since it may hold the admin key. It is removed on a clean
//! stop. A program that starts the server removes any file left by an earlier run first, and
//! can check that `pid` is its child's.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the ready file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyFile {
    /// The server's process id.
    pub pid: u32,
    /// Whether every listener speaks TLS (`--tls-cert`): `https`, `wss`, TLS device ports.
    pub tls: bool,
    /// The bound address of HTTP, the WebSockets and classic Blynk hardware.
    pub http: SocketAddr,
    /// The bound address of the native device protocol.
    pub native: SocketAddr,
    /// The bound address of the MQTT device API; `null` when MQTT is off.
    pub mqtt: Option<SocketAddr>,
    /// The admin key, only when this start made it (the first start); a key given with
    /// `--admin-key` is not repeated, and later starts know only its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// The demo device's token, while the demo device exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_token: Option<String>,
}

impl ReadyFile {
    /// The document for `server`, started by this process; `key_given` says the admin key came
    /// from the operator (so it is left out).
    pub fn of(server: &crate::Server, tls: bool, key_given: bool) -> ReadyFile {
        ReadyFile {
            pid: std::process::id(),
            tls,
            http: server.http_address,
            native: server.native_address,
            mqtt: server.mqtt_address,
            admin_key: server.admin_key.clone().filter(|_| !key_given),
            demo_token: server.demo_token.clone(),
        }
    }

    /// Writes the document to `path`: a temporary file beside it (mode 0600), then a rename.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let temporary = temporary_path(path);
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temporary)?;
            let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            std::fs::rename(&temporary, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }
}

/// `DIR/.NAME.PID.tmp`: in the same directory, so the rename stays on one file system.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ready".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReadyFile {
        ReadyFile {
            pid: 42,
            tls: false,
            http: "127.0.0.1:8080".parse().unwrap(),
            native: "127.0.0.1:8441".parse().unwrap(),
            mqtt: None,
            admin_key: Some("secret-admin-key-0123".into()),
            demo_token: Some("token".into()),
        }
    }

    #[test]
    fn the_ready_file_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        assert!(!path.exists());
        sample().write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(serde_json::from_str::<ReadyFile>(&text).unwrap(), sample());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the document is left: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn the_ready_file_names_its_fields_for_other_languages() {
        let mut ready = sample();
        ready.admin_key = None;
        let json: serde_json::Value = serde_json::to_value(&ready).unwrap();
        assert_eq!(json["http"], "127.0.0.1:8080");
        assert_eq!(json["native"], "127.0.0.1:8441");
        assert_eq!(json["mqtt"], serde_json::Value::Null);
        assert_eq!(json["demo_token"], "token");
        assert!(json.get("admin_key").is_none());
    }
}
