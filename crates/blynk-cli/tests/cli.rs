//! End-to-end tests of the `blynk` binary: a real server on 127.0.0.1:0 over a temporary data
//! directory, the built binary run as a subprocess for every command, and a classic Blynk
//! device over TCP where a command needs an online device.
//!
//! Longer than 600 lines because it is the one end-to-end suite of the CLI: every command's tests
//! share the helpers above them (server, device, running the binary), and a binary per command
//! would build and link the server once each.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use blynk_server::config::Config;
use blynk_server::test_util::{ADMIN_KEY, TestServer, http};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long anything that should happen at once may take.
const PATIENCE: Duration = Duration::from_secs(15);

/// A server (with its data directory) and an empty home directory for the client.
struct Setup {
    server: TestServer,
    home: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(change: impl FnOnce(&mut Config)) -> Self {
        Setup {
            server: TestServer::start_with(change).await,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.http())
    }

    fn demo_token(&self) -> String {
        self.server.demo_token()
    }

    /// `blynk` with a clean environment (no BLYNK_* variables, an empty home) and no settings.
    fn bare(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_blynk"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BLYNK_") {
                command.env_remove(&name);
            }
        }
        command
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// `blynk --server URL --key KEY ARGS`.
    fn blynk(&self, args: &[&str]) -> Command {
        let mut command = self.bare();
        command
            .args(["--server", &self.url(), "--key", ADMIN_KEY])
            .args(args);
        command
    }

    /// Runs `blynk ARGS` to the end.
    async fn run(&self, args: &[&str]) -> Run {
        run(self.blynk(args)).await
    }

    /// Runs `blynk --json ARGS`, asserts success and parses standard output.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all).await.success();
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", run.stdout))
    }

    /// A device API request (`GET /external/api/...`): status line and body.
    async fn device_api(&self, path_and_query: &str) -> (u16, String) {
        let response = http::get(self.server.http(), path_and_query).await;
        (response.status, response.body)
    }
}

/// A finished run of the binary.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "blynk failed: {self:?}");
        self.no_panic()
    }

    fn failure(self) -> Self {
        assert!(
            self.code.is_some_and(|code| code != 0),
            "blynk should fail: {self:?}"
        );
        self.no_panic()
    }

    fn no_panic(self) -> Self {
        assert!(!self.stderr.contains("panicked"), "{self:?}");
        self
    }
}

async fn run(mut command: Command) -> Run {
    let output: Output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("blynk took too long")
        .unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A classic Blynk frame: command, message id, body length (big-endian), body.
fn frame(command: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![command];
    bytes.extend(id.to_be_bytes());
    bytes.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
    bytes.extend(body);
    bytes
}

/// A classic Blynk device on the server's HTTP port: logged in and announced, so it is online
/// and the server pushes app writes to it.
struct ClassicDevice {
    stream: TcpStream,
}

impl ClassicDevice {
    async fn connect(address: std::net::SocketAddr, token: &str) -> Self {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(&frame(29, 1, token.as_bytes()))
            .await
            .unwrap();
        let mut device = ClassicDevice { stream };
        assert_eq!(device.read_frame().await, (0, 1, 200, Vec::new()), "login");
        let info = b"ver\x001.4.0\x00h-beat\x0060\x00buff-in\x001024\x00dev\x00cli-test";
        device.stream.write_all(&frame(17, 2, info)).await.unwrap();
        assert_eq!(device.read_frame().await, (0, 2, 200, Vec::new()), "info");
        device
    }

    /// Reads one frame: command, id, length or status, body.
    async fn read_frame(&mut self) -> (u8, u16, u16, Vec<u8>) {
        let mut header = [0u8; 5];
        tokio::time::timeout(PATIENCE, self.stream.read_exact(&mut header))
            .await
            .expect("no frame from the server")
            .unwrap();
        let id = u16::from_be_bytes([header[1], header[2]]);
        let length = u16::from_be_bytes([header[3], header[4]]);
        let mut body = Vec::new();
        if header[0] != 0 {
            body = vec![0u8; usize::from(length)];
            self.stream.read_exact(&mut body).await.unwrap();
        }
        (header[0], id, length, body)
    }

    /// The next HARDWARE frame's body parts.
    async fn next_hardware(&mut self) -> Vec<String> {
        loop {
            let (command, _, _, body) = self.read_frame().await;
            if command == 20 {
                return String::from_utf8(body)
                    .unwrap()
                    .split('\0')
                    .map(str::to_owned)
                    .collect();
            }
        }
    }
}

/// A running `blynk watch` whose standard output is read line by line.
struct Watch {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Watch {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watch { child, lines }
    }

    async fn next_line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("no line from blynk watch")
            .unwrap()
            .expect("blynk watch ended early")
    }

    /// Waits for the process to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("blynk watch did not exit")
            .unwrap()
            .code()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_lists_presence_and_last_seen() {
    let setup = Setup::start().await;
    let offline = setup.run(&["devices"]).await.success();
    let lines: Vec<&str> = offline.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", offline.stdout);
    assert!(
        lines[0].starts_with("ID  NAME  TEMPLATE  STATUS"),
        "{lines:?}"
    );
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields, ["1", "demo", "light", "offline", "never"]);

    let _device = ClassicDevice::connect(setup.server.http(), &setup.demo_token()).await;
    let online = setup.run(&["devices"]).await.success();
    assert!(
        online.stdout.contains("online (classic)") && online.stdout.contains("now"),
        "{}",
        online.stdout
    );
    let json = setup.json(&["devices"]).await;
    assert_eq!(json[0]["name"], "demo");
    assert_eq!(json[0]["online"], true);

    // Offline again: "last seen" becomes a relative time.
    drop(_device);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let run = setup.run(&["devices"]).await.success();
        if run.stdout.contains("offline") {
            assert!(run.stdout.contains("just now"), "{}", run.stdout);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", run.stdout);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_value_version_origin_and_defaults() {
    let setup = Setup::start().await;
    let token = setup.demo_token();
    let (status, _) = setup
        .device_api(&format!("/external/api/update?token={token}&v1=7"))
        .await;
    assert_eq!(status, 200);

    let run = setup.run(&["get", "demo", "V1"]).await.success();
    assert!(
        run.stdout.starts_with("V1 = 7  (version ") && run.stdout.contains("set by http"),
        "{}",
        run.stdout
    );
    // A pin never set shows its default; the device by id works like by name.
    let run = setup.run(&["get", "1", "v3"]).await.success();
    assert_eq!(run.stdout.trim(), "V3 = auto  (default, never set)");

    let json = setup.json(&["get", "demo", "V1"]).await;
    assert_eq!(json["value"], 7);
    assert_eq!(json["origin"], "http");
    assert!(json["version"].as_u64().unwrap() >= 1);

    // Without a pin: every datastream.
    let run = setup.run(&["get", "demo"]).await.success();
    assert!(run.stdout.contains("V1   LED"), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("V3") && line.contains("auto")),
        "{}",
        run.stdout
    );
    let json = setup.json(&["get", "demo"]).await;
    assert_eq!(json["V1"]["value"], 7);

    // A pin with neither value nor default.
    let run = setup.run(&["get", "demo", "V2"]).await.failure();
    assert!(run.stderr.contains("not found"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_to_an_online_device_is_delivered() {
    let setup = Setup::start().await;
    let mut device = ClassicDevice::connect(setup.server.http(), &setup.demo_token()).await;

    let run = setup.run(&["set", "demo", "V1", "200"]).await.success();
    assert!(
        run.stdout.contains("V1 = 200: delivered to demo"),
        "{}",
        run.stdout
    );
    assert_eq!(device.next_hardware().await, ["vw", "1", "200"]);

    // Several arguments: a multi-part value (V3 is a string datastream: every part fits).
    let json = setup.json(&["set", "demo", "V3", "1", "2.5", "abc"]).await;
    assert_eq!(json["status"], "delivered");
    assert_eq!(json["device_online"], true);
    assert_eq!(device.next_hardware().await, ["vw", "3", "1", "2.5", "abc"]);
    let stored = setup.json(&["get", "demo", "V3"]).await;
    // A string datastream keeps every part as text.
    assert_eq!(stored["value"], serde_json::json!(["1", "2.5", "abc"]));
    assert_eq!(stored["origin"], "app");

    // A negative number is a value, not a flag (V1 clamps it to 0).
    let run = setup.run(&["set", "demo", "V1", "-5"]).await.success();
    assert!(run.stdout.contains("delivered"), "{}", run.stdout);
    assert_eq!(device.next_hardware().await, ["vw", "1", "0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_to_an_offline_device_is_pending() {
    let setup = Setup::start().await;
    let run = setup
        .run(&["set", "--wait", "100", "demo", "V0", "1"])
        .await
        .success();
    assert!(
        run.stdout.contains("pending") && run.stdout.contains("offline"),
        "{}",
        run.stdout
    );
    // A command to an offline device waits for it too.
    let json = setup
        .json(&["set", "--wait", "100", "demo", "V4", "1"])
        .await;
    assert_eq!(json["status"], "pending");
    assert_eq!(json["command"], true);
    assert_eq!(json["device_online"], false);

    // The device gets the pending command when it connects, and the stored value when it
    // asks (classic devices sync on request).
    let mut device = ClassicDevice::connect(setup.server.http(), &setup.demo_token()).await;
    assert_eq!(device.next_hardware().await, ["vw", "4", "1"]);
    device
        .stream
        .write_all(&frame(16, 3, b"vr\x000"))
        .await
        .unwrap();
    assert_eq!(device.next_hardware().await, ["vw", "0", "1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_command_exits_with_3() {
    let setup = Setup::start().await;
    let template: blynk_server::model::Template = toml::from_str(
        "name = \"door\"\n[[datastream]]\npin = \"V0\"\nname = \"Open\"\n\
         type = \"integer\"\nkind = \"command\"\nttl = 1\n",
    )
    .unwrap();
    let engine = setup.server.server().engine();
    let template = engine.create_template(template).await.unwrap();
    engine.create_device("garage", &template).await.unwrap();
    let run = setup
        .run(&["set", "--wait", "5000", "garage", "V0", "1"])
        .await;
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stdout.contains("V0 = 1: expired") && run.stdout.contains("not delivered"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_exit_non_zero_with_the_server_message() {
    let setup = Setup::start().await;
    let run = setup.run(&["set", "demo", "V1", "bright"]).await.failure();
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("refused:") && run.stderr.contains("V1"),
        "{}",
        run.stderr
    );
    let run = setup.run(&["set", "demo", "V99", "1"]).await.failure();
    assert!(
        run.stderr.contains("refused:") && run.stderr.contains("V99"),
        "{}",
        run.stderr
    );
    let run = setup.run(&["set", "demo", "X1", "1"]).await.failure();
    assert!(run.stderr.contains("pin `X1`"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_the_snapshot_then_live_changes() {
    let setup = Setup::start().await;
    let token = setup.demo_token();
    setup
        .device_api(&format!("/external/api/update?token={token}&v0=1"))
        .await;

    // JSON: the snapshot line, then one line per event.
    let mut watch = Watch::start(setup.blynk(&["--json", "watch", "demo", "--count", "4"]));
    let snapshot: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["devices"][0]["name"], "demo");
    assert_eq!(snapshot["devices"][0]["values"]["V0"]["value"], 1);
    let (status, _) = setup
        .device_api(&format!("/external/api/update?token={token}&v1=5"))
        .await;
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(value["type"], "value");
    assert_eq!(value["pin"], "V1");
    assert_eq!(value["value"], 5);
    assert_eq!(value["origin"], "http");
    let mut device = ClassicDevice::connect(setup.server.http(), &token).await;
    let presence: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(presence["type"], "presence");
    assert_eq!(presence["online"], true);
    // setProperty(V1, "color", "#FF0000") and logEvent("overheat", "too hot").
    device
        .stream
        .write_all(&frame(19, 3, b"1\x00color\x00#FF0000"))
        .await
        .unwrap();
    let property: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(property["type"], "property");
    assert_eq!(
        (&property["name"], &property["value"]),
        (&"color".into(), &"#FF0000".into())
    );
    device
        .stream
        .write_all(&frame(64, 4, b"overheat\x00too hot"))
        .await
        .unwrap();
    let event: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(event["type"], "event");
    assert_eq!(event["code"], "overheat");
    assert_eq!(watch.exit_code().await, Some(0), "--count 4 ends it");

    // Human lines for presence, properties and events.
    let mut watch = Watch::start(setup.blynk(&["watch", "1", "--count", "3"]));
    while !watch.next_line().await.starts_with("  V1") {}
    device
        .stream
        .write_all(&frame(19, 5, b"1\x00label\x00Kitchen light"))
        .await
        .unwrap();
    assert_eq!(
        watch.next_line().await,
        "demo: V1 property label = \"Kitchen light\""
    );
    device
        .stream
        .write_all(&frame(64, 6, b"overheat\x00too hot"))
        .await
        .unwrap();
    assert_eq!(watch.next_line().await, "demo: event overheat: too hot");
    drop(device);
    assert_eq!(watch.next_line().await, "demo is offline");
    assert_eq!(watch.exit_code().await, Some(0));

    // Human: the snapshot's values, then a line per change.
    let mut watch = Watch::start(setup.blynk(&["watch", "demo", "--count", "1"]));
    let header = watch.next_line().await;
    assert!(
        header.starts_with("demo (id 1, template light): "),
        "{header}"
    );
    let mut snapshot = vec![watch.next_line().await, watch.next_line().await];
    snapshot.sort();
    assert!(
        snapshot[0].starts_with("  V0 Power = 1  (version"),
        "{snapshot:?}"
    );
    assert!(
        snapshot[1].starts_with("  V1 LED = 5  (version"),
        "{snapshot:?}"
    );
    setup
        .device_api(&format!("/external/api/update?token={token}&v1=9"))
        .await;
    let line = watch.next_line().await;
    assert!(
        line.starts_with("demo: V1 LED = 9  (version") && line.ends_with("set by http)"),
        "{line}"
    );
    assert_eq!(watch.exit_code().await, Some(0));

    // --for ends a quiet watch.
    let started = std::time::Instant::now();
    let mut watch = Watch::start(setup.blynk(&["watch", "demo", "--for", "0.5"]));
    assert_eq!(watch.exit_code().await, Some(0));
    assert!(started.elapsed() >= Duration::from_millis(500));

    // A reader that goes away (`blynk watch demo | head -1`) ends it quietly, without a panic.
    let mut watch = Watch::start(setup.blynk(&["--json", "watch", "demo"]));
    watch.next_line().await;
    let Watch { mut child, lines } = watch;
    drop(lines);
    setup
        .device_api(&format!("/external/api/update?token={token}&v1=10"))
        .await;
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // An unknown device is an error.
    let run = setup.run(&["watch", "nope", "--for", "5"]).await.failure();
    assert!(
        run.stderr.contains("not found: device `nope`"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_add_prints_a_token_that_works() {
    let setup = Setup::start().await;
    let run = setup
        .run(&["device", "add", "--template", "light", "--name", "kitchen"])
        .await
        .success();
    assert!(
        run.stdout
            .starts_with("created kitchen (id 2, template light)"),
        "{}",
        run.stdout
    );
    let token = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32);
    let (status, _) = setup
        .device_api(&format!("/external/api/update?token={token}&v1=42"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = setup
        .device_api(&format!("/external/api/get?token={token}&v1"))
        .await;
    assert_eq!((status, body.as_str()), (200, "42"));

    // `device show` has the token, the datastreams and the value.
    let show = setup.run(&["device", "show", "kitchen"]).await.success();
    assert!(
        show.stdout.contains(&format!("token:     {token}")),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("V4   Identify"), "{}", show.stdout);
    assert!(show.stdout.contains("V1 = 42  (version"), "{}", show.stdout);
    let json = setup.json(&["device", "show", "kitchen"]).await;
    assert_eq!(json["token"], token.as_str());
    assert_eq!(json["datastreams"].as_array().unwrap().len(), 5);

    // JSON output of `device add`; a name too long is refused.
    let json = setup
        .json(&["device", "add", "--template", "light", "--name", "hall way"])
        .await;
    assert_eq!(json["name"], "hall way");
    assert_eq!(json["token"].as_str().unwrap().len(), 32);
    let run = setup.run(&["get", "hall way", "V3"]).await.success();
    assert!(run.stdout.contains("auto"), "{}", run.stdout);
    let long = "x".repeat(1000);
    let run = setup
        .run(&["device", "add", "--template", "light", "--name", &long])
        .await
        .failure();
    assert!(
        run.stderr
            .contains("refused: `name`: a device name is 1 to"),
        "{}",
        run.stderr
    );
    let run = setup
        .run(&["device", "add", "--template", "nope", "--name", "x"])
        .await
        .failure();
    assert!(
        run.stderr.contains("not found: template `nope`"),
        "{}",
        run.stderr
    );

    // Templates, and deleting a device.
    let run = setup.run(&["templates"]).await.success();
    assert!(run.stdout.starts_with("light (id 1)"), "{}", run.stdout);
    assert!(run.stdout.contains("V1   LED"), "{}", run.stdout);
    assert!(run.stdout.contains("command, ttl 60 s"), "{}", run.stdout);
    let json = setup.json(&["templates"]).await;
    assert_eq!(json[0]["name"], "light");
    let run = setup.run(&["device", "delete", "kitchen"]).await.success();
    assert_eq!(run.stdout.trim(), "deleted kitchen");
    let run = setup.run(&["device", "show", "kitchen"]).await.failure();
    assert!(
        run.stderr.contains("not found: device `kitchen`"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_environment_and_config_files() {
    let setup = Setup::start().await;
    let url = setup.url();

    // No key anywhere: a clear error before any request.
    let mut command = setup.bare();
    command.arg("devices");
    let run = run_command(command).await.failure();
    assert!(run.stderr.contains("no admin key"), "{}", run.stderr);

    // Environment.
    let mut command = setup.bare();
    command
        .env("BLYNK_SERVER", &url)
        .env("BLYNK_KEY", ADMIN_KEY)
        .arg("devices");
    assert!(run_command(command).await.success().stdout.contains("demo"));

    // The default config file, ~/.config/blynk/config.toml.
    let dir = setup.home.path().join(".config/blynk");
    std::fs::create_dir_all(&dir).unwrap();
    write_config(&dir.join("config.toml"), &url, ADMIN_KEY);
    let mut command = setup.bare();
    command.arg("devices");
    assert!(run_command(command).await.success().stdout.contains("demo"));

    // $BLYNK_CONFIG names another file; the environment beats the file, flags beat both.
    let other = setup.home.path().join("other.toml");
    write_config(&other, &url, "wrong-key");
    let mut command = setup.bare();
    command.env("BLYNK_CONFIG", &other).arg("devices");
    let refused = run_command(command).await.failure();
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    let mut command = setup.bare();
    command
        .env("BLYNK_CONFIG", &other)
        .env("BLYNK_KEY", ADMIN_KEY)
        .arg("devices");
    run_command(command).await.success();
    let mut command = setup.bare();
    command
        .env("BLYNK_KEY", "wrong-key")
        .args(["--key", ADMIN_KEY, "devices"]);
    run_command(command).await.success();

    // A named config file that does not exist, or is not valid, is an error.
    let mut command = setup.bare();
    command.args(["--config", "/nonexistent/blynk.toml", "devices"]);
    let run = run_command(command).await.failure();
    assert!(
        run.stderr.contains("/nonexistent/blynk.toml"),
        "{}",
        run.stderr
    );
    std::fs::write(&other, "server = 5\n").unwrap();
    let mut command = setup.bare();
    command.env("BLYNK_CONFIG", &other).arg("devices");
    let run = run_command(command).await.failure();
    assert!(run.stderr.contains("is not valid"), "{}", run.stderr);
}

fn write_config(path: &Path, server: &str, key: &str) {
    std::fs::write(path, format!("server = \"{server}\"\nkey = \"{key}\"\n")).unwrap();
}

async fn run_command(command: Command) -> Run {
    run(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_never_panics() {
    let setup = Setup::start().await;

    // Wrong key: 401 with a hint.
    let mut command = setup.bare();
    command.args(["--server", &setup.url(), "--key", "wrong", "devices"]);
    let run = run_command(command).await.failure();
    assert!(
        run.stderr.contains("refused the key") && run.stderr.contains("blynk-server key rotate"),
        "{}",
        run.stderr
    );
    let mut command = setup.bare();
    command.args(["--server", &setup.url(), "--key", "wrong", "watch", "demo"]);
    let run = run_command(command).await.failure();
    assert!(run.stderr.contains("refused the key"), "{}", run.stderr);

    // Unknown device: 404.
    let run = setup.run(&["get", "nope", "V1"]).await.failure();
    assert!(
        run.stderr.contains("not found: device `nope`"),
        "{}",
        run.stderr
    );
    let run = setup.run(&["set", "nope", "V1", "1"]).await.failure();
    assert!(
        run.stderr.contains("not found: device `nope`"),
        "{}",
        run.stderr
    );

    // Unreachable server: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    for args in [["devices"].as_slice(), ["watch", "demo"].as_slice()] {
        let mut command = setup.bare();
        command
            .args(["--server", &format!("http://{address}"), "--key", ADMIN_KEY])
            .args(args);
        let run = run_command(command).await.failure();
        assert!(
            run.stderr.contains("cannot reach the server at"),
            "{}",
            run.stderr
        );
    }

    // Bad URL, and a usage error.
    let mut command = setup.bare();
    command.args(["--server", "ftp://x", "--key", ADMIN_KEY, "devices"]);
    let run = run_command(command).await.failure();
    assert!(run.stderr.contains("http:// or https://"), "{}", run.stderr);
    let run = setup.run(&["set", "demo", "V1"]).await.failure();
    assert_eq!(run.code, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_file() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let setup = Setup::start_with(|config| {
        config.tls = Some(blynk_server::config::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let url = format!("https://localhost:{}", setup.server.http().port());
    let ca = cert.to_str().unwrap();

    let mut command = setup.bare();
    command.args(["--server", &url, "--key", ADMIN_KEY, "--ca", ca, "devices"]);
    assert!(run_command(command).await.success().stdout.contains("demo"));

    // The WebSocket over TLS.
    let mut command = setup.bare();
    command.args(["--server", &url, "--key", ADMIN_KEY, "--ca", ca, "--json"]);
    command.args(["watch", "demo", "--count", "1"]);
    let mut watch = Watch::start(command);
    let snapshot: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    let mut command = setup.bare();
    command.args(["--server", &url, "--key", ADMIN_KEY, "--ca", ca]);
    command.args(["set", "demo", "V1", "3"]);
    run_command(command).await.success();
    let value: Value = serde_json::from_str(&watch.next_line().await).unwrap();
    assert_eq!(
        (value["pin"].as_str(), value["value"].as_i64()),
        (Some("V1"), Some(3))
    );
    assert_eq!(watch.exit_code().await, Some(0));

    // Without the CA the self-signed certificate is refused, clearly.
    let mut command = setup.bare();
    command.args(["--server", &url, "--key", ADMIN_KEY, "devices"]);
    let run = run_command(command).await.failure();
    assert!(run.stderr.contains("TLS handshake"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_prints_the_values_of_the_range_oldest_first_as_text_csv_and_json() {
    let setup = Setup::start().await;
    let token = setup.demo_token();
    for value in [11, 22, 33] {
        let (status, _) = setup
            .device_api(&format!("/external/api/update?token={token}&v2={value}"))
            .await;
        assert_eq!(status, 200);
    }
    let run = setup
        .run(&["history", "demo", "V2", "--since", "1h"])
        .await
        .success();
    let values: Vec<&str> = run
        .stdout
        .lines()
        .map(|line| line.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(values, ["11", "22", "33"], "{}", run.stdout);
    assert!(run.stdout.lines().all(|line| line.ends_with("http")));

    let csv = setup
        .run(&["history", "demo", "V2", "--csv"])
        .await
        .success();
    let mut lines = csv.stdout.lines();
    assert_eq!(lines.next(), Some("time,at_ms,value,version,origin"));
    let values: Vec<&str> = lines.map(|line| line.split(',').nth(2).unwrap()).collect();
    assert_eq!(values, ["11", "22", "33"]);

    let json = setup
        .json(&["history", "demo", "V2", "--since", "2w"])
        .await;
    let values: Vec<i64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [11, 22, 33]);

    // Nothing in the range says so; a bad `--since` is refused before any request.
    let empty = setup
        .run(&["history", "demo", "V1", "--since", "1m"])
        .await
        .success();
    assert!(
        empty.stdout.starts_with("no values of V1"),
        "{}",
        empty.stdout
    );
    let bad = setup
        .run(&["history", "demo", "V2", "--since", "yesterday"])
        .await
        .failure();
    assert!(bad.stderr.contains("--since"), "{}", bad.stderr);
}
