//! What xtask's commands share about a `blynk-server` child beyond starting it (which is
//! `blynk_testbed::server`, shared with the server's tests and the load generator): its debug
//! build, an admin key, and requests to its app API (ureq, a small blocking client; no TLS, since
//! the children listen on plain loopback or a test's own network namespace).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::workspace::{cargo, workspace_root};

/// Where cargo puts this workspace's builds: `CARGO_TARGET_DIR`, else `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the debug `blynk-server` and what `also` names (what follows `cargo build`: `-p
/// blynk-device --example host_light`, say); returns the directory of the debug builds.
pub fn build_debug(also: &[&[&str]]) -> Result<PathBuf> {
    let server: &[&str] = &["-p", "blynk-server", "--bin", "blynk-server"];
    for args in std::iter::once(server).chain(also.iter().copied()) {
        if !cargo().arg("build").args(args).status()?.success() {
            bail!("cargo build {} failed", args.join(" "));
        }
    }
    Ok(target_dir().join("debug"))
}

/// An app API request with the admin key and a JSON body: (status, body). Error statuses are
/// answers too; only a failed exchange is an error.
pub fn app_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Loopback or a test's namespace: never through a proxy from the environment.
        .proxy(None)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .body(body.unwrap_or_default().to_owned())
        .with_context(|| format!("{method} {path}"))?;
    let mut response = agent
        .run(request)
        .with_context(|| format!("{method} {path} to {address}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("{method} {path}: reading the answer"))?;
    Ok((status, body))
}

/// An admin key for a test server on loopback: unique per process and moment, which is all
/// a server that lives for one case and listens on loopback needs.
pub fn admin_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("xtask-admin-{}-{nanos}", std::process::id())
}
