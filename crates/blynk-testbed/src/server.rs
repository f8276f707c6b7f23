//! A `blynk-server` child process, started the same way by the tests and tools that start one
//! (the server's process tests, xtask's commands, the load generator): [`ServerCommand`] writes
//! its command line (one host, the HTTP and native ports picked by the system, MQTT off or on a
//! port free a moment ago, a data directory, a log level and an admin key through the
//! environment, no standard input, the banner discarded), [`spawn`] starts it and waits for its
//! ready file (`docs/operations.md`, "Ready file"), which says where it listens, and
//! [`terminate`] stops it as a supervisor does. [`crate::Killed`] kills it on every other path.
//!
//! Where its logs (standard error) go is the caller's: a file, a pipe it drains, or its own
//! standard error.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Error, free_port};

/// How long a child server may take to write its ready file (a loaded machine, a first start).
pub const START_WITHIN: Duration = Duration::from_secs(20);

/// The command line of a `blynk-server` child: built with [`ServerCommand::new`] and the
/// setters, then turned into a [`Command`] the caller may add to (flags such as `--store`, a
/// subcommand, where standard error goes).
#[derive(Debug, Clone)]
pub struct ServerCommand {
    binary: OsString,
    data: PathBuf,
    bind: String,
    http_port: u16,
    native_port: u16,
    mqtt_port: u16,
    log: String,
    admin_key: Option<String>,
}

impl ServerCommand {
    /// `binary` on 127.0.0.1 over the data directory `data`: the HTTP and native ports picked
    /// by the system, MQTT off, `BLYNK_LOG=warn`, no admin key given.
    pub fn new(binary: impl AsRef<OsStr>, data: impl AsRef<Path>) -> Self {
        ServerCommand {
            binary: binary.as_ref().to_owned(),
            data: data.as_ref().to_owned(),
            bind: "127.0.0.1".to_owned(),
            http_port: 0,
            native_port: 0,
            mqtt_port: 0,
            log: "warn".to_owned(),
            admin_key: None,
        }
    }

    /// Listens on `host` instead (a test's own interface or network namespace).
    pub fn bind(mut self, host: &str) -> Self {
        self.bind = host.to_owned();
        self
    }

    /// Fixed HTTP and native ports instead of the system's pick.
    pub fn ports(mut self, http: u16, native: u16) -> Self {
        self.http_port = http;
        self.native_port = native;
        self
    }

    /// MQTT on a loopback port free a moment ago (`--mqtt-port 0` turns MQTT off rather than
    /// picking one; another process may take the port first, so the server may end before it
    /// is ready: see [`StartError::EndedEarly`]).
    pub fn mqtt_on_a_free_port(mut self) -> Result<Self, Error> {
        self.mqtt_port = free_port()?;
        Ok(self)
    }

    /// `BLYNK_LOG`: `error`, `warn`, `info`, ... or a filter.
    pub fn log(mut self, level: &str) -> Self {
        self.log = level.to_owned();
        self
    }

    /// `BLYNK_ADMIN_KEY`: the key the app API takes (only its hash is stored).
    pub fn admin_key(mut self, key: &str) -> Self {
        self.admin_key = Some(key.to_owned());
        self
    }

    /// The command: the binary with its flags and environment, standard input and output null.
    pub fn command(self) -> Command {
        let mut command = Command::new(&self.binary);
        self.add_to(&mut command);
        command
    }

    /// The binary and its flags appended to `wrapper` (`sh -c '...; exec "$@"' sh`, say, which
    /// keeps the server's process id), with the environment and standard streams of
    /// [`ServerCommand::command`].
    pub fn wrapped_in(self, mut wrapper: Command) -> Command {
        wrapper.arg(&self.binary);
        self.add_to(&mut wrapper);
        wrapper
    }

    fn add_to(self, command: &mut Command) {
        command
            .arg("--bind")
            .arg(&self.bind)
            .args(["--http-port", &self.http_port.to_string()])
            .args(["--native-port", &self.native_port.to_string()])
            .args(["--mqtt-port", &self.mqtt_port.to_string()])
            .arg("--data")
            .arg(&self.data)
            .env("BLYNK_LOG", &self.log)
            .stdin(Stdio::null())
            // The start banner is for people; the ready file says the same to programs.
            .stdout(Stdio::null());
        if let Some(key) = &self.admin_key {
            command.env("BLYNK_ADMIN_KEY", key);
        }
    }
}

/// What the server's ready file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The server's process id.
    pub pid: u32,
    /// Whether every listener speaks TLS.
    pub tls: bool,
    /// HTTP, the app API and classic devices.
    pub http: SocketAddr,
    /// Native devices.
    pub native: SocketAddr,
    /// MQTT devices, unless MQTT is off.
    pub mqtt: Option<SocketAddr>,
    /// The admin key, when this start made it (a first start without one given).
    pub admin_key: Option<String>,
    /// The demo device's token, while it exists.
    pub demo_token: Option<String>,
}

impl Ready {
    /// The demo device's token, or an error when it is gone.
    pub fn demo_token(&self) -> Result<String, Error> {
        self.demo_token
            .clone()
            .ok_or_else(|| Error::new("the server's ready file has no demo device token"))
    }

    /// The MQTT address, or an error when MQTT is off.
    pub fn mqtt(&self) -> Result<SocketAddr, Error> {
        self.mqtt.ok_or_else(|| {
            Error::new("the server's ready file has no MQTT address (its port was taken?)")
        })
    }

    /// Parses the file's text; `pid` is the process it must come from (`None`: an earlier
    /// run's file).
    fn parse(text: &str, pid: u32) -> Result<Option<Ready>, String> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        if json["pid"].as_u64() != Some(u64::from(pid)) {
            return Ok(None);
        }
        let address = |name: &str| -> Result<Option<SocketAddr>, String> {
            match json[name].as_str() {
                Some(text) => text
                    .parse()
                    .map(Some)
                    .map_err(|error| format!("`{name}`: {error}")),
                None => Ok(None),
            }
        };
        let text = |name: &str| json[name].as_str().map(str::to_owned);
        Ok(Some(Ready {
            pid,
            tls: json["tls"].as_bool().unwrap_or(false),
            http: address("http")?.ok_or("no `http` address")?,
            native: address("native")?.ok_or("no `native` address")?,
            mqtt: address("mqtt")?,
            admin_key: text("admin_key"),
            demo_token: text("demo_token"),
        }))
    }
}

/// Why a child server is not running.
#[derive(Debug)]
pub enum StartError {
    /// It ended before it was ready (a port taken meanwhile, say): worth another try.
    EndedEarly(ExitStatus),
    /// It did not start, its ready file did not make sense, or it came too late.
    Failed(Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::EndedEarly(status) => {
                write!(
                    formatter,
                    "blynk-server ended before it was ready ({status})"
                )
            }
            StartError::Failed(error) => error.fmt(formatter),
        }
    }
}

impl std::error::Error for StartError {}

impl From<StartError> for Error {
    fn from(error: StartError) -> Error {
        Error::new(error.to_string())
    }
}

/// Starts `command` (the server binary with its flags) with its ready file at `ready_file`
/// (through `BLYNK_READY_FILE`, which fits any place of a subcommand) and waits at most `within`
/// for it. A file left by an earlier run is removed first; the child is killed when it fails.
pub fn spawn(
    command: &mut Command,
    ready_file: &Path,
    within: Duration,
) -> Result<(Child, Ready), StartError> {
    spawn_then(command, ready_file, within, |_| {})
}

/// [`spawn`], with `started` run on the child as soon as it runs, before the wait: to drain a
/// piped standard error, say, whose first lines tell why a server did not start.
pub fn spawn_then(
    command: &mut Command,
    ready_file: &Path,
    within: Duration,
    started: impl FnOnce(&mut Child),
) -> Result<(Child, Ready), StartError> {
    let _ = std::fs::remove_file(ready_file);
    let mut child = command
        .env("BLYNK_READY_FILE", ready_file)
        .spawn()
        .map_err(|error| {
            StartError::Failed(Error::new(format!(
                "starting {}: {error}",
                command.get_program().to_string_lossy()
            )))
        })?;
    started(&mut child);
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
fn wait(child: &mut Child, ready_file: &Path, within: Duration) -> Result<Ready, StartError> {
    let failed = |message: String| StartError::Failed(Error::new(message));
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(StartError::EndedEarly(status)),
            Ok(None) => {}
            Err(error) => return Err(failed(format!("polling blynk-server: {error}"))),
        }
        match std::fs::read_to_string(ready_file) {
            Ok(text) => {
                let ready = Ready::parse(&text, child.id()).map_err(|error| {
                    failed(format!("the ready file {}: {error}", ready_file.display()))
                })?;
                if let Some(ready) = ready {
                    return Ok(ready);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(failed(format!(
                    "reading the ready file {}: {error}",
                    ready_file.display()
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "blynk-server wrote no ready file within {} s",
                within.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` as a supervisor does: SIGTERM (through `kill(1)`: the standard library sends
/// only SIGKILL), then at most `within` for it to end, SIGKILL after that. Its exit status when
/// it ended by itself in time.
pub fn terminate(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
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
        assert!(ready.mqtt().is_err());
        assert_eq!(ready.admin_key, None);
        assert_eq!(ready.demo_token().unwrap(), "abc");
        assert!(
            Ready::parse(text, 8).unwrap().is_none(),
            "another run's file"
        );
        assert!(Ready::parse("{", 7).is_err());
        assert!(Ready::parse(r#"{"pid": 7, "http": "nowhere"}"#, 7).is_err());
    }

    #[test]
    fn the_command_line_listens_on_the_host_with_ports_the_system_picks() {
        let binary = "blynk-server";
        let command = ServerCommand::new(binary, "/data")
            .log("info")
            .admin_key("key")
            .command();
        let args: Vec<&OsStr> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "--bind",
                "127.0.0.1",
                "--http-port",
                "0",
                "--native-port",
                "0",
                "--mqtt-port",
                "0",
                "--data",
                "/data"
            ]
        );
        let env: Vec<_> = command.get_envs().collect();
        assert!(env.contains(&(OsStr::new("BLYNK_LOG"), Some(OsStr::new("info")))));
        assert!(env.contains(&(OsStr::new("BLYNK_ADMIN_KEY"), Some(OsStr::new("key")))));

        let wrapped = ServerCommand::new(binary, "/data")
            .bind("10.0.0.1")
            .ports(8080, 8441)
            .wrapped_in(Command::new("sh"));
        let args: Vec<&OsStr> = wrapped.get_args().collect();
        assert_eq!(
            args[..5],
            ["blynk-server", "--bind", "10.0.0.1", "--http-port", "8080"]
        );
        assert_eq!(wrapped.get_program(), "sh");
    }

    #[test]
    fn a_server_that_ends_at_once_ended_early_and_one_that_never_writes_is_late() {
        let dir = crate::process::temporary_directory("server-test").unwrap();
        let ready_file = dir.join("ready.json");
        let mut exits = Command::new("sh");
        exits.args(["-c", "exit 3"]);
        let ended = spawn(&mut exits, &ready_file, START_WITHIN);
        assert!(matches!(ended, Err(StartError::EndedEarly(_))), "{ended:?}");
        let mut sleeper = Command::new("sh");
        sleeper.args(["-c", "exec sleep 5"]);
        let late = spawn(&mut sleeper, &ready_file, Duration::from_millis(100));
        assert!(matches!(late, Err(StartError::Failed(_))), "{late:?}");
        let mut sleeping = sleeper.spawn().unwrap();
        let status = terminate(&mut sleeping, START_WITHIN).expect("ended by SIGTERM");
        assert!(!status.success());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
