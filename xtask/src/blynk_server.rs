//! What xtask's commands share about a `blynk-server` child: starting it with a ready file and
//! reading the file (`docs/operations.md`, "Ready file"), and requests to its app API (ureq, a
//! small blocking client; no TLS, since the children listen on plain loopback or a test's own
//! network namespace).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a child server may take to write its ready file (a loaded machine, a first start).
pub const START_WITHIN: Duration = Duration::from_secs(20);

/// What the server's ready file says.
#[derive(Debug, Clone)]
pub struct Ready {
    /// HTTP, the app API and classic devices.
    pub http: SocketAddr,
    /// Native devices.
    pub native: SocketAddr,
    /// MQTT devices, unless MQTT is off.
    pub mqtt: Option<SocketAddr>,
    /// The demo device's token, while it exists.
    pub demo_token: Option<String>,
}

impl Ready {
    /// The demo device's token, or an error naming what is missing.
    pub fn demo_token(&self) -> Result<String> {
        self.demo_token
            .clone()
            .context("the server's ready file has no demo device token")
    }

    /// The MQTT address, or an error when MQTT is off.
    pub fn mqtt(&self) -> Result<SocketAddr> {
        self.mqtt
            .context("the server's ready file has no MQTT address (its port was taken?)")
    }

    /// Parses the file's text; `pid` is the process it must come from.
    fn parse(text: &str, pid: u32) -> Result<Option<Ready>> {
        let json: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
        if json["pid"].as_u64() != Some(u64::from(pid)) {
            return Ok(None); // An earlier run's.
        }
        let address = |name: &str| -> Result<Option<SocketAddr>> {
            match json[name].as_str() {
                Some(text) => Ok(Some(text.parse().with_context(|| format!("`{name}`"))?)),
                None => Ok(None),
            }
        };
        Ok(Some(Ready {
            http: address("http")?.context("no `http` address")?,
            native: address("native")?.context("no `native` address")?,
            mqtt: address("mqtt")?,
            demo_token: json["demo_token"].as_str().map(str::to_owned),
        }))
    }
}

/// The server ended before it wrote its ready file (a port taken meanwhile, say).
#[derive(Debug)]
pub struct EndedEarly(std::process::ExitStatus);

impl std::fmt::Display for EndedEarly {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "blynk-server ended before it was ready ({})",
            self.0
        )
    }
}

impl std::error::Error for EndedEarly {}

/// Starts `command` (the server binary with its flags) with its ready file at `ready_file`
/// (through `BLYNK_READY_FILE`, which fits any place of a subcommand) and waits at most `within`
/// for it. A file left by an earlier run is removed first; the child is killed when it fails.
pub fn spawn(command: &mut Command, ready_file: &Path, within: Duration) -> Result<(Child, Ready)> {
    let _ = std::fs::remove_file(ready_file);
    let mut child = command
        .env("BLYNK_READY_FILE", ready_file)
        .spawn()
        .context("starting blynk-server")?;
    match wait(&mut child, ready_file, within) {
        Ok(ready) => Ok((child, ready)),
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(error)
        }
    }
}

/// Waits until `child` has written its ready file (polled every 20 ms: the server writes it by a
/// rename, so it is whole once it is there), or ended, or `within` passed.
fn wait(child: &mut Child, ready_file: &Path, within: Duration) -> Result<Ready> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(EndedEarly(status).into());
        }
        match std::fs::read_to_string(ready_file) {
            Ok(text) => {
                let ready = Ready::parse(&text, child.id())
                    .with_context(|| format!("in the ready file {}", ready_file.display()))?;
                if let Some(ready) = ready {
                    return Ok(ready);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).context("reading the server's ready file"),
        }
        if Instant::now() >= deadline {
            bail!(
                "blynk-server wrote no ready file within {} s",
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ready_file_of_its_own_child_only() {
        let text = r#"{"pid": 7, "tls": false, "http": "127.0.0.1:8080",
            "native": "127.0.0.1:8441", "mqtt": null, "demo_token": "abc"}"#;
        let ready = Ready::parse(text, 7).unwrap().unwrap();
        assert_eq!(ready.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(ready.native, "127.0.0.1:8441".parse().unwrap());
        assert_eq!(ready.mqtt, None);
        assert_eq!(ready.demo_token().unwrap(), "abc");
        assert!(
            Ready::parse(text, 8).unwrap().is_none(),
            "another run's file"
        );
        assert!(Ready::parse("{", 7).is_err());
    }
}
