//! The real `blynk-server` binary as a child process on loopback, over a data directory that
//! outlives restarts (alone, or as a node of several on a shared store and bus: extra arguments
//! such as `--store` and `--bus`), and a tiny HTTP/1.1 client (std `TcpStream`,
//! `Connection: close`) for the app API.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A running (or stopped) server.
pub struct Server {
    binary: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Arguments added to every start (a node's `--store` and `--bus`).
    extra: Vec<String>,
    child: Option<Child>,
    /// HTTP, app API and classic devices.
    pub http: SocketAddr,
    /// Native devices.
    pub native: SocketAddr,
    /// MQTT devices.
    pub mqtt: SocketAddr,
    /// The admin key, given to the server (`BLYNK_ADMIN_KEY`): it is printed on a first start
    /// only, and a case restarts its server.
    pub key: String,
    /// The demo device's token.
    pub token: String,
}

/// The server's output ended before its banner: it exited (its log's last lines).
#[derive(Debug)]
struct ExitedEarly(String);

impl std::fmt::Display for ExitedEarly {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "the server exited before its banner:\n{}",
            self.0
        )
    }
}

impl std::error::Error for ExitedEarly {}

/// What the banner says.
struct Banner {
    http: SocketAddr,
    native: SocketAddr,
    mqtt: SocketAddr,
    token: String,
}

impl Server {
    /// Starts the server over a fresh directory `data` (created).
    pub fn start(binary: &Path, data: &Path) -> Result<Server> {
        Self::start_with(binary, data, admin_key(), Vec::new())
    }

    /// Starts a server over a fresh directory `data` (created) with admin key `key` and `extra`
    /// arguments: the nodes of one cluster share the key, the store and the bus.
    pub fn start_with(
        binary: &Path,
        data: &Path,
        key: String,
        extra: Vec<String>,
    ) -> Result<Server> {
        std::fs::create_dir_all(data)?;
        let mut server = Server {
            binary: binary.to_path_buf(),
            data: data.join("data"),
            log: data.join("server.log"),
            extra,
            child: None,
            http: "127.0.0.1:1".parse()?,
            native: "127.0.0.1:1".parse()?,
            mqtt: "127.0.0.1:1".parse()?,
            key,
            token: String::new(),
        };
        server.launch()?;
        Ok(server)
    }

    /// Starts the process and reads its banner. The MQTT port was free a moment ago, but
    /// another server of the run may take it first: a server that exits before its banner is
    /// started again, twice at most, on another port.
    fn launch(&mut self) -> Result<()> {
        for _ in 0..2 {
            match self.launch_once() {
                Err(error) if error.downcast_ref::<ExitedEarly>().is_some() => {}
                other => return other,
            }
        }
        self.launch_once()
    }

    fn launch_once(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--http-port",
                "0",
                "--native-port",
                "0",
                // `--mqtt-port 0` turns MQTT off: a port free a moment ago instead.
                "--mqtt-port",
                &free_port()?.to_string(),
            ])
            .arg("--data")
            .arg(&self.data)
            .args(&self.extra)
            .env("BLYNK_LOG", "info")
            .env("BLYNK_ADMIN_KEY", &self.key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.child = Some(child);
        let (sender, receiver) = mpsc::channel();
        // The server logs to stdout too: everything after the banner goes to the log file.
        let copy = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        std::thread::spawn(move || read_banner(stdout, &sender, copy));
        let banner = match receiver.recv_timeout(Duration::from_secs(15)) {
            Ok(banner) => banner,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.kill();
                return Err(ExitedEarly(self.log_tail(3)).into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.kill();
                bail!("the server printed no banner within 15 s")
            }
        };
        self.http = banner.http;
        self.native = banner.native;
        self.mqtt = banner.mqtt;
        self.token = banner.token;
        Ok(())
    }

    /// Stops it gracefully (SIGTERM, SIGKILL after 5 s) and starts it again on the same data.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let mut exited = false;
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.launch()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it after [`Server::kill`].
    pub fn start_again(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An app API request with the admin key: (status, body).
    pub fn app(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        http(self.http, method, path, &self.key, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_banner(stdout: std::process::ChildStdout, sender: &mpsc::Sender<Banner>, mut log: File) {
    let mut http = None;
    let mut native = None;
    let mut mqtt = None;
    let mut sent = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["dashboard", url] => {
                http = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .ok();
            }
            ["native", "devices", address] => native = address.parse().ok(),
            ["MQTT", "devices", address, ..] => mqtt = address.parse().ok(),
            ["demo", "device", "token", token] if !sent => {
                if let (Some(http), Some(native), Some(mqtt)) = (http, native, mqtt) {
                    let _ = sender.send(Banner {
                        http,
                        native,
                        mqtt,
                        token: token.to_string(),
                    });
                    sent = true;
                }
            }
            _ => {}
        }
    }
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

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One HTTP/1.1 request; the body is JSON. Returns the status and the body.
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("{method} {path}: reading the response"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("{method} {path}: no status in `{head}`"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    for _ in 0..10_000 {
        let Some((size, rest)) = body.split_once("\r\n") else {
            break;
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The raw JSON text of the first `"field":` in `body` (a number, a quoted string unquoted,
/// `true`/`false`/`null`, or an array as written).
pub fn json_field(body: &str, field: &str) -> Option<String> {
    let needle = format!("\"{field}\":");
    let start = body.find(&needle)? + needle.len();
    let rest = body[start..].trim_start();
    if let Some(string) = rest.strip_prefix('"') {
        return string.split('"').next().map(str::to_string);
    }
    if rest.starts_with('[') {
        return rest.find(']').map(|end| rest[..=end].to_string());
    }
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Whether two values read alike: equal text, or equal numbers (`1` and `1.0`).
pub fn same_value(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().trim_matches('"'), b.trim().trim_matches('"'));
    if a == b {
        return true;
    }
    matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_fields() {
        let body = r#"{"value":1,"version":3,"online":true,"token":"ab-c","parts":["1","2"]}"#;
        assert_eq!(json_field(body, "value").as_deref(), Some("1"));
        assert_eq!(json_field(body, "online").as_deref(), Some("true"));
        assert_eq!(json_field(body, "token").as_deref(), Some("ab-c"));
        assert_eq!(json_field(body, "parts").as_deref(), Some(r#"["1","2"]"#));
        assert!(same_value("1.0", "1"));
        assert!(!same_value("0", "1"));
    }
}
