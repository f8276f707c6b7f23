//! Real clients: the public PyPI libraries `blynklib` 0.2.6 and `blynk-library-python` 0.2.0
//! (module `BlynkLib`), unchanged, as classic devices of this server (SPEC 4: existing Blynk
//! libraries must work unchanged).
//!
//! Each test runs a driver script from `server/tests/python/` in a virtualenv at
//! `<workspace>/target/python-venv`, created on first use from
//! `server/tests/python/requirements.txt` (exact versions and hashes). The driver prints one JSON
//! line per library event and takes one JSON command per stdin line. Neither library has
//! `sync_all`: the drivers send the empty HARDWARE_SYNC frame through each library's own
//! low-level send.
//!
//! Python 3 with `venv` and pip reaching PyPI is required: without it these tests fail and say so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::http::{self, AppSocket};
use crate::support::{PATIENCE, TestServer};

/// A Python Blynk library, with the driver script that runs it.
#[derive(Debug, Clone, Copy)]
enum Library {
    /// `blynklib` 0.2.6: logs in with LOGIN (2), reads only the first frame of each socket read.
    Blynklib,
    /// `blynk-library-python` 0.2.0: logs in with HW_LOGIN (29), crashes on a server PING.
    BlynkLibraryPython,
}

impl Library {
    fn script(self) -> &'static str {
        match self {
            Library::Blynklib => "blynklib_device.py",
            Library::BlynkLibraryPython => "blynk_library_python_device.py",
        }
    }
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// `<workspace>/target`, whatever `CARGO_TARGET_DIR` says: the virtualenv is shared by every
/// build of the workspace.
fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate is inside the workspace")
        .join("target")
}

/// The virtualenv's interpreter, the virtualenv made first if needed (once per process; a file
/// lock keeps concurrent test processes from building it twice). Panics with the reason when it
/// cannot be made.
fn venv_python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let requirements = python_dir().join("requirements.txt");
        blynk_testbed::python::ensure_venv(&requirements, &workspace_target())
    })
    .clone()
    .unwrap_or_else(|problem| panic!("python client tests: {problem}"))
}

/// A device: a driver process running one library against the server.
struct Device {
    library: Library,
    child: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
    /// What the driver and its library wrote to stderr (their logs), shown when a test fails.
    stderr: Arc<Mutex<String>>,
    /// Fences sent so far (each has its own value).
    fences: u32,
}

impl Device {
    /// Starts the driver and waits until the library says it is connected.
    async fn connect(library: Library, server: SocketAddr, token: &str) -> Device {
        Device::connect_with_heartbeat(library, server, token, 10).await
    }

    /// [`Device::connect`] with the library's heartbeat set (seconds).
    async fn connect_with_heartbeat(
        library: Library,
        server: SocketAddr,
        token: &str,
        heartbeat: u32,
    ) -> Device {
        let mut child = Command::new(venv_python())
            .arg("-B")
            .arg(python_dir().join(library.script()))
            .arg(server.ip().to_string())
            .arg(server.port().to_string())
            .arg(token)
            .arg(heartbeat.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("{library:?}: driver did not start: {error}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut device = Device {
            library,
            stdin: child.stdin.take().unwrap(),
            events: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            stderr,
            fences: 0,
        };
        let first = device.next().await;
        device.check(first == json!({ "event": "connected" }), || {
            format!("expected the connected event, got {first}")
        });
        device
    }

    /// Panics with `what` and the driver's exit status and stderr.
    fn fail(&mut self, what: String) -> ! {
        let exit = self.child.try_wait().ok().flatten();
        panic!(
            "{:?}: {what}\ndriver exit status: {exit:?}\ndriver stderr:\n{}",
            self.library,
            self.stderr.lock().unwrap()
        );
    }

    /// Fails unless `ok`.
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    async fn command(&mut self, command: Value) {
        let line = format!("{command}\n");
        let sent = self.stdin.write_all(line.as_bytes()).await;
        self.check(sent.is_ok(), || {
            format!("command {command} not sent: {sent:?}")
        });
    }

    /// The next event line, within [`PATIENCE`].
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.events.next_line()).await;
        let line = match line {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => self.fail("the driver closed its stdout".into()),
            Ok(Err(error)) => self.fail(format!("reading the driver's stdout: {error}")),
            Err(_) => self.fail(format!("no event within {PATIENCE:?}")),
        };
        match serde_json::from_str(&line) {
            Ok(event) => event,
            Err(_) => self.fail(format!("the driver printed a non-JSON line: {line}")),
        }
    }

    /// The next event, which must be a write: its pin and value parts.
    async fn next_write(&mut self) -> (String, Vec<String>) {
        let event = self.next().await;
        let value = serde_json::from_value(event["value"].clone());
        match (event["event"].as_str(), event["pin"].as_str(), value) {
            (Some("write"), Some(pin), Ok(value)) => (pin.to_owned(), value),
            _ => self.fail(format!("expected a write event, got {event}")),
        }
    }

    /// Expects a write of `pin` with one value part.
    async fn expect_write(&mut self, pin: &str, value: &str) {
        let write = self.next_write().await;
        let expected = (pin.to_owned(), vec![value.to_owned()]);
        self.check(write == expected, || {
            format!("expected the write {expected:?}, got {write:?}")
        });
    }

    /// The writes that answer a sync request: `at_least` of them, then any more up to a fence,
    /// an app write of a fresh value to V2 sent once those arrived. The server answers a sync
    /// in the loop that read it, so every reply comes before the fence. A pin twice fails.
    async fn sync_replies(
        &mut self,
        server: &TestServer,
        at_least: usize,
    ) -> BTreeMap<String, Vec<String>> {
        let mut writes = BTreeMap::new();
        let mut fence = None;
        loop {
            if fence.is_none() && writes.len() >= at_least {
                self.fences += 1;
                let value = 900_000 + self.fences;
                app_write(server, "V2", json!(value)).await;
                fence = Some(vec![value.to_string()]);
            }
            let (pin, value) = self.next_write().await;
            if pin == "V2" && Some(&value) == fence.as_ref() {
                return writes;
            }
            if writes.insert(pin.clone(), value).is_some() {
                self.fail(format!("{pin} received twice in one sync"));
            }
        }
    }

    async fn quit(mut self) {
        self.command(json!({ "cmd": "quit" })).await;
        let status = tokio::time::timeout(PATIENCE, self.child.wait()).await;
        let ok = matches!(&status, Ok(Ok(status)) if status.success());
        self.check(ok, || format!("driver did not quit cleanly: {status:?}"));
    }
}

/// An app write through the app API; returns its delivery status, `delivered` once the device
/// got it (the server waits up to a second for that).
async fn app_write(server: &TestServer, pin: &str, value: Value) -> String {
    app_write_waiting(server, pin, value, 1000).await
}

/// An app write to the offline device: the server answers `pending` without waiting.
async fn app_write_offline(server: &TestServer, pin: &str, value: Value) -> String {
    app_write_waiting(server, pin, value, 0).await
}

async fn app_write_waiting(server: &TestServer, pin: &str, value: Value, wait_ms: u64) -> String {
    let path = format!("/api/devices/demo/values/{pin}");
    let body = json!({ "value": value, "wait_ms": wait_ms });
    let response = http::app(server.http(), "PUT", &path, Some(body)).await;
    assert_eq!(response.status, 200, "app write {pin}: {}", response.body);
    response.json()["status"].as_str().unwrap().to_owned()
}

/// SPEC 4 and 3.1: the library logs in, and its `virtual_write` is stored and reaches an app.
async fn logs_in_and_virtual_write_reaches_the_app(library: Library) {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let mut device = Device::connect(library, server.http(), &server.demo_token()).await;
    device
        .command(json!({ "cmd": "virtual_write", "pin": 1, "value": [255] }))
        .await;
    let update = app
        .expect(|message| message["type"] == "value" && message["pin"] == "V1")
        .await;
    assert_eq!(update["value"], 255, "{update}");
    assert_eq!(update["origin"], "device", "{update}");
    let values = http::app(server.http(), "GET", "/api/devices/demo/values", None).await;
    assert_eq!(values.json()["V1"]["value"], 255, "{}", values.body);
    device.quit().await;
}

/// SPEC 3.2: app and HTTP device API writes reach the library's write handler.
async fn receives_app_and_http_writes(library: Library) {
    let server = TestServer::start().await;
    let token = server.demo_token();
    let mut device = Device::connect(library, server.http(), &token).await;
    let status = app_write(&server, "V0", json!(1)).await;
    device.expect_write("V0", "1").await;
    assert_eq!(status, "delivered");
    let response = http::get(
        server.http(),
        &format!("/external/api/update?token={token}&v0=0"),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    device.expect_write("V0", "0").await;
    device.quit().await;
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(pin, value)| ((*pin).to_owned(), vec![(*value).to_owned()]))
        .collect()
}

/// SPEC 3.4, 3.5, 3.6: `sync_virtual` returns any listed pin that has a value, unsynced V2
/// included; `sync_all` returns the `sync` pins set (V0, V1) and V3's default, never V2.
async fn sync_virtual_any_pin_and_sync_all_only_sync_pins(library: Library) {
    let server = TestServer::start().await;
    for (pin, value) in [("V0", 1), ("V1", 255), ("V2", 7)] {
        assert_eq!(
            app_write_offline(&server, pin, json!(value)).await,
            "pending"
        );
    }
    let mut device = Device::connect(library, server.http(), &server.demo_token()).await;
    device
        .command(json!({ "cmd": "sync_virtual", "pins": [2, 0] }))
        .await;
    let synced = device.sync_replies(&server, 2).await;
    assert_eq!(
        synced,
        values(&[("V0", "1"), ("V2", "7")]),
        "{library:?}: sync_virtual(V2, V0)"
    );
    device.command(json!({ "cmd": "sync_all" })).await;
    let synced = device.sync_replies(&server, 3).await;
    assert_eq!(
        synced,
        values(&[("V0", "1"), ("V1", "255"), ("V3", "auto")]),
        "{library:?}: sync_all"
    );
    device.quit().await;
}

/// SPEC 3.3 and 3.10: app writes made before a server restart come back to the device, started
/// again against the restarted server, when it calls `sync_all`.
async fn gets_its_state_back_after_a_server_restart(library: Library) {
    let mut server = TestServer::start().await;
    let mut device = Device::connect(library, server.http(), &server.demo_token()).await;
    assert_eq!(app_write(&server, "V0", json!(1)).await, "delivered");
    device.expect_write("V0", "1").await;
    assert_eq!(app_write(&server, "V1", json!(200)).await, "delivered");
    device.expect_write("V1", "200").await;
    drop(device); // killed, as a device losing power
    server.restart().await;
    let mut device = Device::connect(library, server.http(), &server.demo_token()).await;
    device.command(json!({ "cmd": "sync_all" })).await;
    let synced = device.sync_replies(&server, 3).await;
    assert_eq!(
        synced,
        values(&[("V0", "1"), ("V1", "200"), ("V3", "auto")]),
        "{library:?}: sync_all after the restart"
    );
    device.quit().await;
}

/// SPEC 3.9 and 4: with a 1 s heartbeat the library pings the server after 1 s without
/// traffic and gives up after 1.5 s without an answer; the server answers its pings and never
/// pings it (`blynk-library-python` 0.2.0 crashes answering one), so the device stays online
/// past the server's own 2.3 x heartbeat limit and still gets writes.
async fn stays_online_past_its_heartbeat(library: Library) {
    let server = TestServer::start().await;
    let mut app = AppSocket::connect(server.http()).await;
    app.watch(json!(["demo"])).await;
    let mut device =
        Device::connect_with_heartbeat(library, server.http(), &server.demo_token(), 1).await;
    app.expect(|message| message["type"] == "presence" && message["online"] == true)
        .await;
    let offline = tokio::time::timeout(
        Duration::from_millis(3500),
        app.expect(|message| message["type"] == "presence"),
    )
    .await;
    assert!(offline.is_err(), "{library:?} went offline: {offline:?}");
    assert_eq!(app_write(&server, "V0", json!(1)).await, "delivered");
    device.expect_write("V0", "1").await;
    device.quit().await;
}

macro_rules! for_both_libraries {
    ($scenario:ident: $blynklib:ident, $blynk_library_python:ident) => {
        #[tokio::test]
        async fn $blynklib() {
            $scenario(Library::Blynklib).await;
        }

        #[tokio::test]
        async fn $blynk_library_python() {
            $scenario(Library::BlynkLibraryPython).await;
        }
    };
}

for_both_libraries!(logs_in_and_virtual_write_reaches_the_app:
    spec_4_blynklib_logs_in_and_virtual_write_reaches_the_app,
    spec_4_blynk_library_python_logs_in_and_virtual_write_reaches_the_app);
for_both_libraries!(receives_app_and_http_writes:
    spec_3_2_blynklib_receives_app_and_http_writes,
    spec_3_2_blynk_library_python_receives_app_and_http_writes);
for_both_libraries!(sync_virtual_any_pin_and_sync_all_only_sync_pins:
    spec_3_4_blynklib_sync_virtual_any_pin_and_sync_all_only_sync_pins,
    spec_3_4_blynk_library_python_sync_virtual_any_pin_and_sync_all_only_sync_pins);
for_both_libraries!(gets_its_state_back_after_a_server_restart:
    spec_3_10_blynklib_gets_its_state_back_after_a_server_restart,
    spec_3_10_blynk_library_python_gets_its_state_back_after_a_server_restart);
for_both_libraries!(stays_online_past_its_heartbeat:
    spec_3_9_blynklib_stays_online_past_its_heartbeat,
    spec_3_9_blynk_library_python_stays_online_past_its_heartbeat);
