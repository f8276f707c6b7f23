//! `blynk-load`: the load generator behind `cargo xtask bench`. It prints figures, not verdicts.
//!
//! It prepares a server (in this process, as a child `blynk-server` process, or an external one
//! given by flags), a template of 16 synced integer datastreams and N devices, then runs one
//! scenario or all of them, each printing one line of figures:
//!
//! - `throughput`: native devices (and optionally classic ones) write as fast as they are
//!   acknowledged (pipelined) while app WebSocket watchers watch every device;
//! - `latency`: app writes (WebSocket or REST) at a fixed rate, timed until the device receives
//!   the `Update` frame;
//! - `idle-rss`: the server's resident memory per idle native or classic connection (child
//!   process);
//! - `reconnect-storm`: every device connects at once with the automatic sync and waits for its
//!   `SyncComplete` (child process).
//!
//! The rows of the performance table (`cargo xtask bench`, `docs/performance.md`) are scenarios
//! of their own, in the modules under `blynk-load/` (`rows` lists them): device -> app as fast
//! as devices can and at fixed rates, app -> device, HTTP writes over a large history, memory
//! per idle classic connection and per watched device; the data-path rows run the same load
//! against Mosquitto too (`--system mosquitto`), and `per-protocol` runs device -> app and
//! app -> device with the server's devices speaking classic, native and MQTT in turn. They print
//! `figure:` lines, one per run.
//!
//! Every loop is bounded in time or count. In-process and child servers bind 127.0.0.1 only.
//! The server and this generator share the machine's cores: the figures say how many.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use blynk_proto::native::{
    self, Decoded, DeviceInfo, HEADER_LEN, Login, LoginResult, MAX_FRAME, Message,
    PROTOCOL_VERSION, Write,
};
use blynk_proto::text::{BoundedStr, Token};
use blynk_proto::{DatastreamType, Pin, Scalar, Value};
use blynk_server::config::{Config, DurabilitySetting, MqttPort};
use blynk_server::engine::Engine;
use blynk_server::model::{DatastreamDef, KindDef, Origin, Template};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinSet;

// Modules of the table's rows, beside this file (a crate root in `src/bin` would look for them
// in `src/bin/`, where Cargo takes every file for a binary of its own).
#[path = "blynk-load/app_events.rs"]
mod app_events;
#[path = "blynk-load/data_path.rs"]
mod data_path;
#[path = "blynk-load/history.rs"]
mod history;
#[path = "blynk-load/links.rs"]
mod links;
#[path = "blynk-load/measure.rs"]
mod measure;
#[path = "blynk-load/memory.rs"]
mod memory;
#[path = "blynk-load/mqtt.rs"]
mod mqtt;
#[path = "blynk-load/rows.rs"]
mod rows;

/// The admin key of in-process and child servers.
const ADMIN_KEY: &str = "blynk-load-admin-key-0123456789";
/// Synced integer datastreams per device: V0..V15.
const PINS: u32 = 16;
/// How long setup steps (connecting, logging in, watching) may take before the run gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "blynk-load",
    about = "Load generator for blynk-server: throughput, latency, idle memory, reconnect storm"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Args, Clone, Debug)]
struct TargetArgs {
    /// Where the server runs. Default: in-process for throughput and latency, a child process
    /// for idle-rss and reconnect-storm (they need its memory and file descriptors apart).
    #[arg(long, global = true, value_enum)]
    server: Option<ServerMode>,
    /// Durability of in-process and child servers.
    #[arg(long, global = true, value_enum, default_value_t = Durability::Full)]
    durability: Durability,
    /// The `blynk-server` binary for child servers (default: beside this binary).
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// External server: HTTP, app API and classic port.
    #[arg(long, global = true)]
    http: Option<SocketAddr>,
    /// External server: native device port.
    #[arg(long, global = true)]
    native: Option<SocketAddr>,
    /// External server: admin key of the app API. Its per-connection rate limit
    /// (`limits.messages_per_second`, `message_burst`) must be raised for `throughput`: writes
    /// over it are dropped without a reply and stall the writers' windows.
    #[arg(long, global = true)]
    admin_key: Option<String>,
    /// External server: its process id, for idle-rss.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Child servers open their MQTT port (a free loopback port): set by the rows whose devices
    /// speak MQTT; the others keep it off.
    #[arg(skip)]
    mqtt: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ServerMode {
    /// `blynk_server::start` in this process, on its own runtime.
    InProcess,
    /// The `blynk-server` binary as a child process.
    Child,
    /// A server started elsewhere (--http, --native, --admin-key).
    External,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Durability {
    /// Fsync every commit (the server's default).
    Full,
    /// Commits reach the OS, not the disk.
    Process,
}

impl Durability {
    fn name(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Process => "process",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Device writes -> acks and watcher messages, per second.
    Throughput(ThroughputArgs),
    /// App write -> device `Update` latency at a fixed rate.
    Latency(LatencyArgs),
    /// Server resident memory per idle device connection (native, or classic with --protocol).
    IdleRss(IdleArgs),
    /// Every device connects at once and syncs; time until all have their SyncComplete.
    ReconnectStorm(StormArgs),
    /// Every scenario with its defaults, each on a fresh server.
    All,
    /// The rows of the performance table.
    #[command(flatten)]
    Row(rows::Row),
}

#[derive(Args, Clone, Debug)]
struct ThroughputArgs {
    /// Native device connections writing.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Classic Blynk device connections writing (on the HTTP port).
    #[arg(long, default_value_t = 0)]
    classic: usize,
    /// App WebSocket clients each watching every device.
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Unacknowledged writes per native connection.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Print the rates of every second on stderr.
    #[arg(long)]
    progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Via {
    /// `{"type":"write",..}` on app WebSockets.
    Ws,
    /// `PUT /api/devices/{id}/values/{pin}` on keep-alive HTTP connections.
    Rest,
}

#[derive(Args, Clone, Debug)]
struct LatencyArgs {
    /// Native devices receiving the writes.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// App writes per second, in total.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// App connections the writes are spread over.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// How apps write.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    via: Via,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Args, Clone, Debug)]
struct IdleArgs {
    /// Idle device connections held.
    #[arg(long, default_value_t = 5_000)]
    connections: usize,
    /// The protocol the idle devices speak.
    #[arg(long, value_enum, default_value_t = IdleProtocol::Native)]
    protocol: IdleProtocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum IdleProtocol {
    /// The native protocol, on the native port.
    Native,
    /// The classic protocol (login, then the INFO frame), on the shared port.
    Classic,
}

#[derive(Args, Clone, Debug)]
struct StormArgs {
    /// Devices connecting at once.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Storms in a row (the first on a freshly started server, the next after all left).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Seconds a storm may take before the stragglers count as failed.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "blynk-load: {cores} cores shared by the server and the load generator; durability {}",
        cli.target.durability.name()
    );
    let load = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("load")
        .build()?;
    let mut lines = Vec::new();
    let scenarios: Vec<Scenario> = match cli.scenario {
        Scenario::All => vec![
            Scenario::Throughput(ThroughputArgs::parse_defaults()),
            Scenario::Latency(LatencyArgs::parse_defaults()),
            Scenario::IdleRss(IdleArgs::parse_defaults()),
            Scenario::ReconnectStorm(StormArgs::parse_defaults()),
        ],
        one => vec![one],
    };
    for scenario in scenarios {
        let line = match run_scenario(&cli.target, &scenario, &load) {
            Ok(line) => line,
            Err(error) => format!("{}: FAILED to run: {error:#}", scenario.name()),
        };
        println!("{line}");
        lines.push(line);
    }
    if lines.len() > 1 {
        println!("\nsummary ({cores} cores shared by server and load generator):");
        for line in &lines {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Default arguments of a scenario, as if given no flags.
trait Defaults: Sized {
    fn parse_defaults() -> Self;
}

macro_rules! defaults {
    ($type:ty) => {
        impl Defaults for $type {
            fn parse_defaults() -> Self {
                #[derive(Parser)]
                struct Wrapper {
                    #[command(flatten)]
                    inner: $type,
                }
                Wrapper::parse_from(["blynk-load"]).inner
            }
        }
    };
}
defaults!(ThroughputArgs);
defaults!(LatencyArgs);
defaults!(IdleArgs);
defaults!(StormArgs);

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Throughput(_) => "throughput",
            Scenario::Latency(_) => "latency",
            Scenario::IdleRss(_) => "idle-rss",
            Scenario::ReconnectStorm(_) => "reconnect-storm",
            Scenario::All => "all",
            Scenario::Row(row) => row.name(),
        }
    }
}

fn run_scenario(
    target_args: &TargetArgs,
    scenario: &Scenario,
    load: &tokio::runtime::Runtime,
) -> Result<String> {
    match scenario {
        Scenario::Throughput(args) => {
            let target = prepare(
                target_args,
                ServerMode::InProcess,
                args.devices + args.classic,
                false,
                load,
            )?;
            let line = load.block_on(throughput(&target, args));
            target.stop();
            line
        }
        Scenario::Latency(args) => {
            let target = prepare(
                target_args,
                ServerMode::InProcess,
                args.devices,
                false,
                load,
            )?;
            let line = load.block_on(latency(&target, args));
            target.stop();
            line
        }
        Scenario::IdleRss(args) => {
            if let Some(limit) = open_file_limit()
                && limit < args.connections as u64 + 500
            {
                bail!(
                    "idle-rss: {} connections need as many sockets here, and the open-file limit \
                     is {limit}: raise it (ulimit -n) or pass fewer --connections",
                    args.connections
                );
            }
            let target = prepare(
                target_args,
                ServerMode::Child,
                args.connections,
                false,
                load,
            )?;
            let line = load.block_on(idle_rss(&target, args));
            target.stop();
            line
        }
        Scenario::ReconnectStorm(args) => {
            if target_args.server == Some(ServerMode::InProcess) && args.devices > 9_000 {
                bail!(
                    "reconnect-storm: {} devices need as many client and server sockets, over the \
                     20,000 descriptors of one process; use --server child or fewer --devices",
                    args.devices
                );
            }
            if let Some(limit) = open_file_limit()
                && limit < args.devices as u64 + 500
            {
                bail!(
                    "reconnect-storm: {} devices need as many sockets here, and the open-file \
                     limit is {limit}: raise it (ulimit -n) or pass fewer --devices",
                    args.devices
                );
            }
            let target = prepare(target_args, ServerMode::Child, args.devices, true, load)?;
            let line = load.block_on(reconnect_storm(&target, args));
            target.stop();
            line
        }
        Scenario::All => bail!("`all` is not a single scenario"),
        Scenario::Row(row) => rows::run(target_args, row, load),
    }
}

// ---------------------------------------------------------------------------------------------
// The server under test.

/// A device prepared for the run.
#[derive(Clone, Debug)]
struct DeviceRef {
    id: i64,
    token: String,
}

/// A data directory under the system temp dir, removed on drop.
struct TempData(PathBuf);

impl TempData {
    fn new() -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "blynk-load-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempData(path))
    }
}

impl Drop for TempData {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Running {
    InProcess {
        runtime: tokio::runtime::Runtime,
        server: Box<blynk_server::Server>,
        _data: TempData,
    },
    Child {
        child: Child,
        _data: TempData,
    },
    External {
        pid: Option<u32>,
    },
}

struct Target {
    http: SocketAddr,
    native: SocketAddr,
    /// The MQTT device port, when the server opened one.
    mqtt: Option<SocketAddr>,
    admin_key: String,
    devices: Vec<DeviceRef>,
    running: Running,
    /// `full`, `process`, or "the external server's".
    durability: &'static str,
}

impl Target {
    fn mode(&self) -> &'static str {
        match self.running {
            Running::InProcess { .. } => "in-process server",
            Running::Child { .. } => "child-process server",
            Running::External { .. } => "external server",
        }
    }

    fn server_pid(&self) -> Option<u32> {
        match &self.running {
            Running::InProcess { .. } => None,
            Running::Child { child, .. } => Some(child.id()),
            Running::External { pid } => *pid,
        }
    }

    fn stop(self) {
        match self.running {
            Running::InProcess {
                runtime,
                server,
                _data,
            } => {
                runtime.block_on((*server).shutdown());
                runtime.shutdown_timeout(Duration::from_secs(2));
            }
            Running::Child { mut child, _data } => {
                // Our own child, by its id: SIGTERM first for a graceful stop, then SIGKILL.
                let _ = Command::new("kill")
                    .arg(child.id().to_string())
                    .stderr(Stdio::null())
                    .status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::External { .. } => {}
        }
    }
}

fn load_template(name: &str) -> Template {
    Template {
        id: 0,
        name: name.to_owned(),
        datastreams: (0..PINS)
            .map(|number| DatastreamDef {
                pin: virtual_pin(number),
                name: datastream_name(number),
                value_type: DatastreamType::Integer,
                min: None,
                max: None,
                default: None,
                sync: true,
                kind: KindDef::State,
                ttl: None,
            })
            .collect(),
    }
}

/// The name of the load template's datastream on virtual pin `number` (MQTT topics use it).
fn datastream_name(number: u32) -> String {
    format!("value{number}")
}

fn virtual_pin(number: u32) -> Pin {
    Pin::virtual_pin(number % PINS).unwrap_or(Pin::Virtual(0))
}

fn server_config(data: &Path, durability: Durability) -> Config {
    let mut config = Config {
        data_dir: data.to_path_buf(),
        bind: "127.0.0.1".parse().expect("an address"),
        http_port: 0,
        native_port: 0,
        mqtt_port: MqttPort::Ephemeral,
        durability: match durability {
            Durability::Full => DurabilitySetting::Full,
            Durability::Process => DurabilitySetting::Process,
        },
        ..Config::default()
    };
    config.limits.messages_per_second = 10_000_000;
    config.limits.message_burst = 10_000_000;
    config.limits.failed_logins_per_minute = 1_000_000;
    // Every simulated device connects from loopback.
    config.limits.max_connections_per_address = 0;
    config
}

/// Starts (or reaches) the server and creates the template, `count` devices, and with
/// `preset`, a value for each of their 16 pins.
fn prepare(
    args: &TargetArgs,
    default_mode: ServerMode,
    count: usize,
    preset: bool,
    load: &tokio::runtime::Runtime,
) -> Result<Target> {
    let mode = args.server.unwrap_or(
        if args.http.is_some() && args.native.is_some() && args.admin_key.is_some() {
            ServerMode::External
        } else {
            default_mode
        },
    );
    let started = Instant::now();
    let target = match mode {
        ServerMode::External => {
            let http = args
                .http
                .context("--http is needed for an external server")?;
            let native = args
                .native
                .context("--native is needed for an external server")?;
            let admin_key = args
                .admin_key
                .clone()
                .context("--admin-key is needed for an external server")?;
            let devices = load.block_on(populate_rest(http, &admin_key, count, preset))?;
            Target {
                http,
                native,
                mqtt: None,
                admin_key,
                devices,
                running: Running::External {
                    pid: args.server_pid,
                },
                durability: "the external server's",
            }
        }
        ServerMode::InProcess | ServerMode::Child => {
            let data = TempData::new()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("server")
                .build()?;
            let server = runtime.block_on(blynk_server::start_with_admin_key(
                server_config(&data.0, args.durability),
                Some(ADMIN_KEY),
            ))?;
            let engine = server.engine().clone();
            let devices = runtime.block_on(populate(&engine, count, preset))?;
            if mode == ServerMode::InProcess {
                Target {
                    http: server.http_address,
                    native: server.native_address,
                    mqtt: server.mqtt_address,
                    admin_key: server.admin_key.clone(),
                    devices,
                    running: Running::InProcess {
                        runtime,
                        server: Box::new(server),
                        _data: data,
                    },
                    durability: args.durability.name(),
                }
            } else {
                runtime.block_on(server.shutdown());
                drop(engine);
                runtime.shutdown_timeout(Duration::from_secs(2));
                let (child, addresses, admin_key) = spawn_child(args, &data.0)?;
                Target {
                    http: addresses.http,
                    native: addresses.native,
                    mqtt: addresses.mqtt,
                    admin_key,
                    devices,
                    running: Running::Child { child, _data: data },
                    durability: args.durability.name(),
                }
            }
        }
    };
    eprintln!(
        "  prepared the {} with {} devices{} in {:.1} s",
        target.mode(),
        target.devices.len(),
        if preset { " and 16 values each" } else { "" },
        started.elapsed().as_secs_f64()
    );
    Ok(target)
}

/// Creates the template and devices through the engine, a few hundred at a time so the store
/// commits them in batches.
async fn populate(engine: &Arc<Engine>, count: usize, preset: bool) -> Result<Vec<DeviceRef>> {
    let template = engine.create_template(load_template("load")).await?;
    let mut devices = Vec::with_capacity(count);
    let indices: Vec<usize> = (0..count).collect();
    for chunk in indices.chunks(500) {
        let created = futures_util::future::join_all(chunk.iter().map(|index| {
            let (engine, template) = (engine.clone(), template.clone());
            async move {
                engine
                    .create_device(&format!("load-{index}"), &template)
                    .await
            }
        }))
        .await;
        let mut slots = Vec::with_capacity(created.len());
        for slot in created {
            let slot = slot?;
            devices.push(DeviceRef {
                id: slot.device.id,
                token: slot.device.token.clone(),
            });
            slots.push(slot);
        }
        if preset {
            let writes = slots.iter().flat_map(|slot| {
                (0..PINS).map(move |number| {
                    let engine = engine.clone();
                    async move {
                        let value = Value::int(slot.device.id * 100 + i64::from(number));
                        engine
                            .app_write(slot, virtual_pin(number), &value, Origin::Http)
                            .await
                    }
                })
            });
            for written in futures_util::future::join_all(writes).await {
                written.map_err(|error| anyhow!("presetting a value: {error}"))?;
            }
        }
    }
    Ok(devices)
}

/// Creates the template and devices through the app REST API of an external server.
async fn populate_rest(
    http: SocketAddr,
    admin_key: &str,
    count: usize,
    preset: bool,
) -> Result<Vec<DeviceRef>> {
    let name = format!(
        "load-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or_default()
    );
    let template = serde_json::to_value(load_template(&name))?;
    let mut client = HttpClient::connect(http, admin_key).await?;
    let (status, body) = client
        .request("POST", "/api/templates", Some(&template.to_string()))
        .await?;
    if status != 201 {
        bail!("creating the template: HTTP {status}: {body}");
    }
    let workers = 8.min(count.max(1));
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let (name, admin_key) = (name.clone(), admin_key.to_owned());
        tasks.spawn(async move {
            let mut client = HttpClient::connect(http, &admin_key).await?;
            let mut made = Vec::new();
            for index in (worker..count).step_by(workers) {
                let body =
                    serde_json::json!({ "name": format!("{name}-{index}"), "template": name });
                let (status, reply) = client
                    .request("POST", "/api/devices", Some(&body.to_string()))
                    .await?;
                if status != 201 {
                    bail!("creating a device: HTTP {status}: {reply}");
                }
                let reply: serde_json::Value = serde_json::from_str(&reply)?;
                let device = DeviceRef {
                    id: reply["id"].as_i64().context("device id")?,
                    token: reply["token"].as_str().context("device token")?.to_owned(),
                };
                if preset {
                    for number in 0..PINS {
                        let body = serde_json::json!({
                            "value": device.id * 100 + i64::from(number),
                            "wait_ms": 0,
                        });
                        let path = format!("/api/devices/{}/values/V{number}", device.id);
                        let (status, reply) = client
                            .request("PUT", &path, Some(&body.to_string()))
                            .await?;
                        if status != 200 {
                            bail!("presetting a value: HTTP {status}: {reply}");
                        }
                    }
                }
                made.push((index, device));
            }
            Ok::<_, anyhow::Error>(made)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    all.sort_by_key(|(index, _)| *index);
    Ok(all.into_iter().map(|(_, device)| device).collect())
}

/// Where a child server listens, read from its start banner.
#[derive(Clone, Copy, Debug)]
struct ChildAddresses {
    http: SocketAddr,
    native: SocketAddr,
    mqtt: Option<SocketAddr>,
}

/// A free loopback port, for a child server's MQTT listener (its command line takes a port
/// number; 0 there turns MQTT off).
fn free_loopback_port() -> Result<u16> {
    Ok(
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
    )
}

/// Starts `blynk-server` over the prepared data directory on ephemeral loopback ports and reads
/// its addresses from the start banner.
fn spawn_child(args: &TargetArgs, data: &Path) -> Result<(Child, ChildAddresses, String)> {
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("blynk-server"),
    };
    if !binary.exists() {
        bail!(
            "no server binary at {} (build it: cargo build --release -p blynk-server --bins, or \
             pass --server-bin)",
            binary.display()
        );
    }
    let config = data.join("load.toml");
    std::fs::write(
        &config,
        "[limits]\nmessages_per_second = 10000000\nmessage_burst = 10000000\n\
         failed_logins_per_minute = 1000000\nmax_connections_per_address = 0\n",
    )?;
    // Never the standard port: 1883 may be taken by another server. Off unless a row needs it.
    let mqtt_port = if args.mqtt { free_loopback_port()? } else { 0 };
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(data)
        .args([
            "--bind",
            "127.0.0.1",
            "--http-port",
            "0",
            "--native-port",
            "0",
        ])
        .args(["--mqtt-port", &mqtt_port.to_string()])
        .args(["--durability", args.durability.name(), "serve"])
        .env("BLYNK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (found, banner) = std::sync::mpsc::channel();
    // Reads the banner, then keeps draining the output so the server never blocks on it.
    std::thread::spawn(move || {
        let (mut http, mut native, mut mqtt, mut key) = (None, None, None, None);
        let mut echoed = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let trimmed = line.trim();
            let last = trimmed.split_whitespace().last().unwrap_or_default();
            if trimmed.starts_with("HTTP API") {
                http = last
                    .trim_start_matches("http://")
                    .trim_end_matches("/api")
                    .parse::<SocketAddr>()
                    .ok();
            } else if trimmed.starts_with("native devices") {
                native = last.parse::<SocketAddr>().ok();
            } else if let Some(rest) = trimmed.strip_prefix("MQTT devices") {
                // "MQTT devices     127.0.0.1:PORT (user `device`, ...)": printed before the key.
                mqtt = rest
                    .split_whitespace()
                    .next()
                    .and_then(|address| address.parse::<SocketAddr>().ok());
            } else if trimmed.starts_with("admin key") {
                key = Some(last.to_owned());
            } else if (line.contains("WARN") || line.contains("ERROR")) && echoed < 20 {
                echoed += 1;
                eprintln!("  server: {line}");
            }
            if let (Some(http), Some(native), Some(k)) = (http, native, key.clone()) {
                let _ = found.send((ChildAddresses { http, native, mqtt }, k));
                key = None;
            }
        }
    });
    match banner.recv_timeout(Duration::from_secs(60)) {
        Ok((addresses, key)) => {
            if args.mqtt && addresses.mqtt.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the child server printed no MQTT address (its port was taken?)");
            }
            Ok((child, addresses, key))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the child server printed no addresses within 60 s")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Native protocol client.

/// What the load generator looks at in a server message.
#[derive(Debug)]
enum Incoming {
    LoginAccepted,
    LoginRejected(String),
    Ack,
    Update(Option<i64>),
    Synced,
    SyncComplete(u16),
    Error(String),
    Other,
}

struct NativeConn {
    stream: TcpStream,
    buffer: Vec<u8>,
    start: usize,
}

/// Appends one encoded frame to `out`.
fn push_frame(out: &mut Vec<u8>, message: &Message<'_>) -> Result<()> {
    let at = out.len();
    out.resize(at + HEADER_LEN + MAX_FRAME, 0);
    let written = native::encode(message, &mut out[at..])
        .map_err(|error| anyhow!("encoding: {error}"))?
        .len();
    out.truncate(at + written);
    Ok(())
}

impl NativeConn {
    async fn connect(address: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(NativeConn {
            stream,
            buffer: Vec::with_capacity(1024),
            start: 0,
        })
    }

    /// Connects and logs in; with `sync` the server's automatic sync follows.
    async fn login(address: SocketAddr, token: &str, sync: bool, heartbeat: u16) -> Result<Self> {
        let mut conn = Self::connect(address).await?;
        let mut out = Vec::new();
        push_frame(
            &mut out,
            &Message::Login(Login {
                protocol: PROTOCOL_VERSION,
                token: Token::new(token).map_err(|error| anyhow!("token: {error}"))?,
                info: DeviceInfo {
                    firmware: BoundedStr::new("blynk-load").map_err(|e| anyhow!("{e}"))?,
                    rx_buffer: 2048,
                    heartbeat_seconds: heartbeat,
                    sync_on_connect: sync,
                    known_version: None,
                },
            }),
        )?;
        conn.stream.write_all(&out).await?;
        match conn.recv().await? {
            Some(Incoming::LoginAccepted) => Ok(conn),
            Some(Incoming::LoginRejected(reason)) => bail!("login rejected: {reason}"),
            other => bail!("expected a login result, got {other:?}"),
        }
    }

    /// Reads more bytes; 0 when the server closed the connection.
    async fn fill(&mut self) -> Result<usize> {
        read_more(
            &mut self.stream,
            &mut self.buffer,
            &mut self.start,
            8 * 1024,
        )
        .await
    }

    /// The next whole message already buffered.
    fn next(&mut self) -> Result<Option<Incoming>> {
        let (incoming, consumed) = match native::decode(&self.buffer[self.start..]) {
            Ok(Decoded::NeedMore) => return Ok(None),
            Ok(Decoded::Frame { message, consumed }) => (summarize(&message), consumed),
            Err(error) => bail!("bad frame from the server: {error}"),
        };
        self.start += consumed;
        Ok(Some(incoming))
    }

    /// The next message; `None` when the server closed the connection.
    async fn recv(&mut self) -> Result<Option<Incoming>> {
        loop {
            if let Some(incoming) = self.next()? {
                return Ok(Some(incoming));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }
}

fn summarize(message: &Message<'_>) -> Incoming {
    match message {
        Message::LoginResult(LoginResult::Accepted { .. }) => Incoming::LoginAccepted,
        Message::LoginResult(LoginResult::Rejected(reason)) => {
            Incoming::LoginRejected(reason.to_string())
        }
        Message::Ack(_) => Incoming::Ack,
        Message::Update(update) => Incoming::Update(match update.value.first() {
            Some(Scalar::Int(int)) => Some(*int),
            _ => None,
        }),
        Message::SyncedValue(_) => Incoming::Synced,
        Message::SyncComplete(complete) => Incoming::SyncComplete(complete.count),
        Message::Error(error) => Incoming::Error(format!("{:?}: {}", error.code, error.detail)),
        _ => Incoming::Other,
    }
}

// ---------------------------------------------------------------------------------------------
// Classic protocol client (raw frames: command, id, length, body).

fn classic_frame(out: &mut Vec<u8>, command: u8, id: u16, body: &[u8]) {
    out.push(command);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// A classic frame's header in `buffer`: (command, id, length, whole frame length).
fn classic_header(buffer: &[u8]) -> Option<(u8, u16, u16, usize)> {
    let header = buffer.get(..5)?;
    let command = header[0];
    let id = u16::from_be_bytes([header[1], header[2]]);
    let length = u16::from_be_bytes([header[3], header[4]]);
    let body = if command == 0 { 0 } else { usize::from(length) };
    (buffer.len() >= 5 + body).then_some((command, id, length, 5 + body))
}

async fn classic_login(address: SocketAddr, token: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    classic_frame(&mut out, 29, 1, token.as_bytes());
    classic_frame(
        &mut out,
        17,
        2,
        b"ver\x001.0.0\x00h-beat\x00600\x00buff-in\x001024\x00dev\x00blynk-load",
    );
    stream.write_all(&out).await?;
    let mut buffer = Vec::new();
    let mut answered = 0;
    while answered < 2 {
        if let Some((command, id, status, len)) = classic_header(&buffer) {
            if command == 0 && (id == 1 || id == 2) {
                if status != 200 {
                    bail!("classic login: status {status}");
                }
                answered += 1;
            }
            buffer.drain(..len);
            continue;
        }
        if stream.read_buf(&mut buffer).await? == 0 {
            bail!("classic login: connection closed");
        }
    }
    Ok(stream)
}

// ---------------------------------------------------------------------------------------------
// Minimal WebSocket and HTTP/1.1 clients (the server crate has no client libraries).

/// A WebSocket client: masked text frames out, unmasked frames in.
struct WsReader {
    read: OwnedReadHalf,
    buffer: Vec<u8>,
    start: usize,
}

async fn ws_connect(http: SocketAddr, admin_key: &str) -> Result<(WsReader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(http).await?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let request = format!(
        "GET /api/ws?key={admin_key} HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    write.write_all(request.as_bytes()).await?;
    let mut buffer = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if read.read_buf(&mut buffer).await? == 0 {
            bail!("WebSocket upgrade: connection closed");
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        bail!(
            "WebSocket upgrade refused: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok((
        WsReader {
            read,
            buffer,
            start: head_end,
        },
        write,
    ))
}

/// Appends a masked text frame.
fn ws_text(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x3c, 0x96, 0x0f];
    out.extend_from_slice(&mask);
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4]),
    );
}

/// One received WebSocket frame.
enum WsFrame<'a> {
    Text(&'a [u8]),
    Close,
    Other,
}

impl WsReader {
    /// Calls `each` for every whole frame buffered; `false` from it stops early.
    fn drain(&mut self, mut each: impl FnMut(WsFrame<'_>) -> bool) -> Result<()> {
        loop {
            let pending = &self.buffer[self.start..];
            let Some((opcode, payload, consumed)) = ws_parse(pending)? else {
                return Ok(());
            };
            let frame = match opcode {
                1 => WsFrame::Text(payload),
                8 => WsFrame::Close,
                _ => WsFrame::Other,
            };
            let more = each(frame);
            self.start += consumed;
            if !more {
                return Ok(());
            }
        }
    }

    async fn fill(&mut self) -> Result<usize> {
        read_more(&mut self.read, &mut self.buffer, &mut self.start, 64 * 1024).await
    }
}

/// (opcode, payload, frame length) of the first whole frame.
fn ws_parse(buffer: &[u8]) -> Result<Option<(u8, &[u8], usize)>> {
    let (Some(&first), Some(&second)) = (buffer.first(), buffer.get(1)) else {
        return Ok(None);
    };
    let opcode = first & 0x0f;
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7f {
        126 => match buffer.get(2..4) {
            Some(bytes) => (usize::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match buffer.get(2..10) {
            Some(bytes) => {
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                (usize::try_from(u64::from_be_bytes(word))?, 10)
            }
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    // A snapshot of 19,000 devices is about 40 MiB.
    if len > 256 * 1024 * 1024 {
        bail!("WebSocket frame of {len} bytes");
    }
    if masked {
        at += 4; // Servers do not mask; tolerate it without unmasking (the counts do not read it).
    }
    match buffer.get(at..at + len) {
        Some(payload) => Ok(Some((opcode, payload, at + len))),
        None => Ok(None),
    }
}

/// The values an app WebSocket message accounts for, whether it is one event or a batch: each
/// value event, plus the older values of its pin it replaced (`"coalesced":N`).
fn count_values(text: &[u8]) -> u64 {
    let (value, coalesced) = (b"\"type\":\"value\"", b"\"coalesced\":");
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = find(rest, value) {
        count += 1;
        rest = &rest[at + value.len()..];
    }
    let mut rest = text;
    while let Some(at) = find(rest, coalesced) {
        rest = &rest[at + coalesced.len()..];
        let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
        count += std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|number| number.parse::<u64>().ok())
            .unwrap_or(0);
    }
    count
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A keep-alive HTTP/1.1 client for the app API.
struct HttpClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    host: SocketAddr,
    auth: String,
}

impl HttpClient {
    async fn connect(host: SocketAddr, admin_key: &str) -> Result<Self> {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(HttpClient {
            stream,
            buffer: Vec::with_capacity(4096),
            host,
            auth: format!("Bearer {admin_key}"),
        })
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.auth,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("HTTP: connection closed");
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("HTTP status line")?;
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if head.contains("transfer-encoding: chunked") {
            bail!("HTTP: chunked responses are not supported by this client");
        }
        while self.buffer.len() < head_end + length {
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                bail!("HTTP: connection closed in a body");
            }
        }
        let body = String::from_utf8_lossy(&self.buffer[head_end..head_end + length]).into_owned();
        self.buffer.drain(..head_end + length);
        Ok((status, body))
    }
}

/// Waits for `tasks` with a deadline; each must succeed.
async fn join_all_ok<T: 'static>(tasks: &mut JoinSet<Result<T>>, what: &str) -> Result<Vec<T>> {
    let mut results = Vec::with_capacity(tasks.len());
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(done)) => results.push(done.map_err(|error| anyhow!("{what}: {error}"))??),
            Ok(None) => break,
            Err(_) => bail!("{what}: not done within {SETUP_TIMEOUT:?}"),
        }
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    errors: AtomicU64,
    classic_accepted: AtomicU64,
    watcher_values: AtomicU64,
    watchers_closed: AtomicU64,
    devices_closed: AtomicU64,
}

struct Snapshot {
    at: Instant,
    acked: u64,
    classic: u64,
    watched: u64,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            acked: self.acked.load(Ordering::Relaxed),
            classic: self.classic_accepted.load(Ordering::Relaxed),
            watched: self.watcher_values.load(Ordering::Relaxed),
        }
    }
}

async fn throughput(target: &Target, args: &ThroughputArgs) -> Result<String> {
    let counters = Arc::new(Counters::default());
    let ids: Vec<i64> = target.devices.iter().map(|device| device.id).collect();
    let watch = serde_json::json!({ "type": "watch", "devices": ids }).to_string();

    // Watchers first, so every write from the first on has its audience.
    let mut setup: JoinSet<Result<(WsReader, OwnedWriteHalf)>> = JoinSet::new();
    for _ in 0..args.watchers {
        let (http, key, watch) = (target.http, target.admin_key.clone(), watch.clone());
        setup.spawn(async move {
            let (mut reader, mut writer) = ws_connect(http, &key).await?;
            let mut out = Vec::new();
            ws_text(&mut out, watch.as_bytes());
            writer.write_all(&out).await?;
            let mut snapshot = false;
            while !snapshot {
                if reader.fill().await? == 0 {
                    bail!("watcher closed before its snapshot");
                }
                reader.drain(|frame| {
                    if let WsFrame::Text(text) = frame
                        && find(text, b"\"snapshot\"").is_some()
                    {
                        snapshot = true;
                    }
                    !snapshot
                })?;
            }
            Ok((reader, writer))
        });
    }
    let watchers = join_all_ok(&mut setup, "watchers").await?;
    let mut running = JoinSet::new();
    for (mut reader, writer) in watchers {
        let counters = counters.clone();
        running.spawn(async move {
            let _writer = writer;
            loop {
                match reader.fill().await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let mut values = 0;
                let mut closed = false;
                let _ = reader.drain(|frame| {
                    match frame {
                        WsFrame::Text(text) => values += count_values(text),
                        WsFrame::Close => closed = true,
                        _ => {}
                    }
                    true
                });
                counters.watcher_values.fetch_add(values, Ordering::Relaxed);
                if closed {
                    break;
                }
            }
            counters.watchers_closed.fetch_add(1, Ordering::Relaxed);
        });
    }

    // Native devices log in, then write in a window of unacknowledged writes.
    let (native_devices, classic_devices) = target.devices.split_at(args.devices);
    let mut logins: JoinSet<Result<NativeConn>> = JoinSet::new();
    for device in native_devices {
        let (address, token) = (target.native, device.token.clone());
        logins.spawn(async move { NativeConn::login(address, &token, false, 600).await });
    }
    let natives = join_all_ok(&mut logins, "native logins").await?;
    let mut classic_logins: JoinSet<Result<TcpStream>> = JoinSet::new();
    for device in classic_devices {
        let (address, token) = (target.http, device.token.clone());
        classic_logins.spawn(async move { classic_login(address, &token).await });
    }
    let classics = join_all_ok(&mut classic_logins, "classic logins").await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (index, mut conn) in natives.into_iter().enumerate() {
        let (counters, stop, window) = (counters.clone(), stop.clone(), args.window.max(1));
        writers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(window * 16);
            let (mut outstanding, mut id, mut value) = (0usize, 0u16, index as i64 * 1_000_000);
            let result: Result<()> = async {
                while !stop.load(Ordering::Relaxed) {
                    while outstanding < window {
                        id = id.wrapping_add(1);
                        value += 1;
                        push_frame(
                            &mut out,
                            &Message::Write(Write {
                                id,
                                pin: virtual_pin(value as u32),
                                value: Value::int(value),
                                age_ms: None,
                            }),
                        )?;
                        outstanding += 1;
                    }
                    if !out.is_empty() {
                        conn.stream.write_all(&out).await?;
                        out.clear();
                    }
                    if conn.fill().await? == 0 {
                        bail!("closed by the server");
                    }
                    let (mut acks, mut errors) = (0u64, 0u64);
                    while let Some(incoming) = conn.next()? {
                        match incoming {
                            Incoming::Ack => acks += 1,
                            Incoming::Error(_) => errors += 1,
                            _ => {}
                        }
                    }
                    outstanding = outstanding.saturating_sub((acks + errors) as usize);
                    counters.acked.fetch_add(acks, Ordering::Relaxed);
                    counters.errors.fetch_add(errors, Ordering::Relaxed);
                }
                Ok(())
            }
            .await;
            if result.is_err() {
                counters.devices_closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Classic devices have no write acks: a PING after every batch of writes is answered once
    // the server has read the batch, so "accepted" means read and handed to the engine.
    const BATCH: u64 = 32;
    for (index, mut stream) in classics.into_iter().enumerate() {
        let (counters, stop) = (counters.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(2048);
            let mut buffer = Vec::with_capacity(4096);
            let (mut id, mut value, mut batches_out) = (10u16, index as i64 * 1_000_000, 0);
            let result: Result<()> = async {
                while !stop.load(Ordering::Relaxed) {
                    while batches_out < 2 {
                        for _ in 0..BATCH {
                            id = id.wrapping_add(1).max(10);
                            value += 1;
                            let body = format!("vw\0{}\0{value}", value.rem_euclid(16));
                            classic_frame(&mut out, 20, id, body.as_bytes());
                        }
                        id = id.wrapping_add(1).max(10);
                        classic_frame(&mut out, 6, id, &[]);
                        batches_out += 1;
                    }
                    stream.write_all(&out).await?;
                    out.clear();
                    if stream.read_buf(&mut buffer).await? == 0 {
                        bail!("closed by the server");
                    }
                    let mut consumed = 0;
                    while let Some((command, _, status, len)) = classic_header(&buffer[consumed..])
                    {
                        if command == 0 && status == 200 {
                            batches_out -= 1;
                            counters
                                .classic_accepted
                                .fetch_add(BATCH, Ordering::Relaxed);
                        } else if command == 0 {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        consumed += len;
                    }
                    buffer.drain(..consumed);
                }
                Ok(())
            }
            .await;
            if result.is_err() {
                counters.devices_closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let progress = args.progress.then(|| {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut previous = counters.snapshot();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = counters.snapshot();
                let seconds = now.at.duration_since(previous.at).as_secs_f64();
                eprintln!(
                    "  acked {:.0}/s, classic {:.0}/s, watcher values {:.0}/s, watchers closed {}",
                    (now.acked - previous.acked) as f64 / seconds,
                    (now.classic - previous.classic) as f64 / seconds,
                    (now.watched - previous.watched) as f64 / seconds,
                    counters.watchers_closed.load(Ordering::Relaxed),
                );
                previous = now;
            }
        })
    });
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let first = counters.snapshot();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let last = counters.snapshot();
    if let Some(progress) = progress {
        progress.abort();
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers.drain(..) {
        writer.abort();
    }
    // How far behind the watchers were: let them catch up (up to 10 s) with the writes acked.
    let drain_started = Instant::now();
    let mut behind = counters.snapshot();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.snapshot();
        if now.watched == behind.watched || drain_started.elapsed() > Duration::from_secs(10) {
            break;
        }
        behind = now;
    }
    let caught_up = counters.snapshot();
    running.abort_all();
    while running.join_next().await.is_some() {}

    let seconds = last.at.duration_since(first.at).as_secs_f64();
    let rate = |from: u64, to: u64| (to - from) as f64 / seconds;
    let native_rate = rate(first.acked, last.acked);
    let classic_rate = rate(first.classic, last.classic);
    let watched_rate = rate(first.watched, last.watched);
    let classic = if args.classic > 0 {
        format!(
            ", classic {} conns: {:.0} writes/s read",
            args.classic, classic_rate
        )
    } else {
        String::new()
    };
    Ok(format!(
        "throughput: {} native devices (window {}){}, {} watchers of every device, {} durability, \
         {} over {:.1} s after {:.1} s warm-up: device writes acked {:.0}/s{}; watcher value \
         messages received {:.0}/s in total ({:.0}/s per watcher); after the writers stopped \
         the watchers took {:.1} s more to reach {:.1}% of all writes; errors {}, watchers \
         dropped {}, devices dropped {} [target >= 200,000 msgs/s]",
        args.devices,
        args.window,
        classic,
        args.watchers,
        durability_of(target),
        target.mode(),
        seconds,
        args.warmup,
        native_rate,
        if args.classic > 0 {
            format!(" (+ {classic_rate:.0}/s classic)")
        } else {
            String::new()
        },
        watched_rate,
        watched_rate / args.watchers.max(1) as f64,
        caught_up.at.duration_since(last.at).as_secs_f64(),
        if args.watchers == 0 {
            0.0
        } else {
            100.0 * caught_up.watched as f64
                / args.watchers as f64
                / (caught_up.acked + caught_up.classic).max(1) as f64
        },
        counters.errors.load(Ordering::Relaxed),
        counters.watchers_closed.load(Ordering::Relaxed),
        counters.devices_closed.load(Ordering::Relaxed),
    ))
}

fn durability_of(target: &Target) -> &'static str {
    target.durability
}

/// Nanoseconds since `epoch`, as stored send times.
/// Reads more bytes into `buffer`, whose bytes before `start` are parsed: those are dropped
/// first (all of them, or once they pass two chunks), and room for a `chunk` is made when less
/// than a quarter of one is left. Every client of the generator reads this way; 0 when the
/// peer closed.
async fn read_more(
    read: &mut (impl tokio::io::AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
    start: &mut usize,
    chunk: usize,
) -> Result<usize> {
    if *start == buffer.len() {
        buffer.clear();
        *start = 0;
    } else if *start > 2 * chunk {
        buffer.drain(..*start);
        *start = 0;
    }
    if buffer.capacity() - buffer.len() < chunk / 4 {
        buffer.reserve(chunk);
    }
    Ok(read.read_buf(buffer).await?)
}

fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

async fn latency(target: &Target, args: &LatencyArgs) -> Result<String> {
    let devices = &target.devices[..args.devices.min(target.devices.len())];
    if devices.is_empty() || args.senders == 0 || args.rate == 0 {
        bail!("latency needs devices, senders and a rate");
    }
    let total = (args.rate as f64 * (args.warmup + args.seconds)) as usize;
    let warmup_count = (args.rate as f64 * args.warmup) as usize;
    let epoch = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());

    // The devices, recording the latency of each update they receive.
    let mut logins: JoinSet<Result<NativeConn>> = JoinSet::new();
    for device in devices {
        let (address, token) = (target.native, device.token.clone());
        logins.spawn(async move { NativeConn::login(address, &token, false, 600).await });
    }
    let conns = join_all_ok(&mut logins, "native logins").await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut receivers = JoinSet::new();
    for mut conn in conns {
        let (sent_at, mut stopped) = (sent_at.clone(), stopped.clone());
        receivers.spawn(async move {
            let mut latencies: Vec<u64> = Vec::with_capacity(total);
            let mut received = 0u64;
            loop {
                tokio::select! {
                    read = conn.fill() => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                    _ = stopped.changed() => break,
                }
                let now = nanos_since(epoch);
                while let Ok(Some(incoming)) = conn.next() {
                    if let Incoming::Update(Some(seq)) = incoming {
                        received += 1;
                        let seq = seq as usize;
                        if seq >= warmup_count
                            && let Some(at) = sent_at.get(seq)
                        {
                            latencies.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                        }
                    }
                }
            }
            (latencies, received)
        });
    }

    // The senders: seq s goes from sender s % senders, to device s % devices, pin (s / devices) % 16.
    let errors = Arc::new(AtomicU64::new(0));
    let rate_each = args.rate as f64 / args.senders as f64;
    let ids: Arc<Vec<i64>> = Arc::new(devices.iter().map(|device| device.id).collect());
    let mut senders = JoinSet::new();
    let started = Instant::now();
    for sender in 0..args.senders {
        let mine = (sender..total)
            .step_by(args.senders)
            .collect::<Vec<usize>>();
        let (sent_at, ids, errors) = (sent_at.clone(), ids.clone(), errors.clone());
        let (http, key, via) = (target.http, target.admin_key.clone(), args.via);
        senders.spawn(async move {
            let write_of = |seq: usize| {
                let device = ids[seq % ids.len()];
                let pin = (seq / ids.len()) % PINS as usize;
                (device, pin)
            };
            match via {
                Via::Ws => {
                    let (mut reader, mut writer) = ws_connect(http, &key).await?;
                    let (drain_errors, replies_sent_at) = (errors.clone(), sent_at.clone());
                    let expected = mine.len();
                    let replies_deadline = tokio::time::Instant::from_std(started)
                        + Duration::from_secs_f64(mine.len() as f64 / rate_each)
                        + Duration::from_secs(3);
                    // Replies: "stored" (or "pending") once durable, timed; then "delivered".
                    let replies = tokio::spawn(async move {
                        let mut stored: Vec<u64> = Vec::with_capacity(expected);
                        let mut answered = 0;
                        while answered < expected {
                            match tokio::time::timeout_at(replies_deadline, reader.fill()).await {
                                Ok(Ok(count)) if count > 0 => {}
                                _ => break,
                            }
                            let now = nanos_since(epoch);
                            let _ = reader.drain(|frame| {
                                let WsFrame::Text(text) = frame else {
                                    return true;
                                };
                                if find(text, b"\"error\"").is_some() {
                                    drain_errors.fetch_add(1, Ordering::Relaxed);
                                    answered += 1;
                                } else if find(text, b"\"stored\"").is_some()
                                    || find(text, b"\"pending\"").is_some()
                                {
                                    answered += 1;
                                    let reply: serde_json::Value =
                                        serde_json::from_slice(text).unwrap_or_default();
                                    if let Some(seq) = reply["id"].as_u64()
                                        && seq as usize >= warmup_count
                                        && let Some(at) = replies_sent_at.get(seq as usize)
                                    {
                                        stored.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                                    }
                                }
                                true
                            });
                        }
                        stored
                    });
                    let mut out = Vec::with_capacity(4096);
                    let mut next = 0;
                    while next < mine.len() {
                        let due = ((started.elapsed().as_secs_f64() * rate_each) as usize + 1)
                            .min(mine.len());
                        let batch = next..due.max(next);
                        for &seq in &mine[batch.clone()] {
                            let (device, pin) = write_of(seq);
                            let text = format!(
                                r#"{{"type":"write","id":{seq},"device":{device},"pin":"V{pin}","value":{seq}}}"#
                            );
                            ws_text(&mut out, text.as_bytes());
                        }
                        if !out.is_empty() {
                            let now = nanos_since(epoch);
                            for &seq in &mine[batch.clone()] {
                                sent_at[seq].store(now, Ordering::Relaxed);
                            }
                            writer.write_all(&out).await?;
                            out.clear();
                        }
                        next = batch.end;
                        // Until the next write of this sender is due.
                        let at = started + Duration::from_secs_f64(next as f64 / rate_each);
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let finished = started.elapsed();
                    let stored = replies.await.unwrap_or_default();
                    Ok::<_, anyhow::Error>((stored, finished))
                }
                Via::Rest => {
                    let mut client = HttpClient::connect(http, &key).await?;
                    let mut stored = Vec::with_capacity(mine.len());
                    for (k, &seq) in mine.iter().enumerate() {
                        let due = started + Duration::from_secs_f64(k as f64 / rate_each);
                        tokio::time::sleep_until(due.into()).await;
                        let (device, pin) = write_of(seq);
                        let body = format!(r#"{{"value":{seq},"wait_ms":0}}"#);
                        let sent = nanos_since(epoch);
                        sent_at[seq].store(sent, Ordering::Relaxed);
                        let (status, _) = client
                            .request("PUT", &format!("/api/devices/{device}/values/V{pin}"), Some(&body))
                            .await?;
                        if status != 200 {
                            errors.fetch_add(1, Ordering::Relaxed);
                        } else if seq >= warmup_count {
                            stored.push(nanos_since(epoch).saturating_sub(sent));
                        }
                    }
                    Ok((stored, started.elapsed()))
                }
            }
        });
    }
    let mut sender_failures = Vec::new();
    let mut stored_latencies: Vec<u64> = Vec::with_capacity(total);
    let mut finished = Duration::ZERO;
    let send_deadline = Duration::from_secs_f64(args.warmup + args.seconds) + SETUP_TIMEOUT;
    while let Ok(Some(done)) = tokio::time::timeout(send_deadline, senders.join_next()).await {
        match done {
            Ok(Ok((stored, sender_finished))) => {
                stored_latencies.extend(stored);
                finished = finished.max(sender_finished);
            }
            Ok(Err(error)) => sender_failures.push(error.to_string()),
            Err(error) => sender_failures.push(error.to_string()),
        }
    }
    let sending = finished.as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    let mut latencies = Vec::with_capacity(total);
    let mut received = 0;
    while let Some(done) = receivers.join_next().await {
        let (mine, count) = done?;
        latencies.extend(mine);
        received += count;
    }
    latencies.sort_unstable();
    stored_latencies.sort_unstable();
    let percentile_of = |values: &[u64], p: f64| -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let index = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
        values[index] as f64 / 1e6
    };
    let percentile = |p: f64| percentile_of(&latencies, p);
    if !sender_failures.is_empty() {
        eprintln!("  latency senders failed: {sender_failures:?}");
    }
    Ok(format!(
        "latency: {} app writes/s via {} over {} connections to {} native devices (16 pins), {} \
         durability, {}; {} measured over {:.1} s after {:.1} s warm-up (sending took {:.1} s): \
         send -> device Update p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; send -> \
         \"stored\" reply p50 {:.3} ms, p99 {:.3} ms; received {}/{} sent (an older value is not \
         sent once a newer one of its pin was), {} errors [target p99 <= 1 ms at 10k msg/s]",
        args.rate,
        match args.via {
            Via::Ws => "app WebSocket",
            Via::Rest => "REST PUT",
        },
        args.senders,
        devices.len(),
        durability_of(target),
        target.mode(),
        latencies.len(),
        args.seconds,
        args.warmup,
        sending,
        percentile(0.50),
        percentile(0.99),
        percentile(0.999),
        latencies.last().map_or(f64::NAN, |max| *max as f64 / 1e6),
        percentile_of(&stored_latencies, 0.50),
        percentile_of(&stored_latencies, 0.99),
        received,
        total,
        errors.load(Ordering::Relaxed) + sender_failures.len() as u64,
    ))
}

/// This process's soft limit of open files, from /proc.
fn open_file_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// VmRSS of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS line")
}

/// Logs in `devices` in batches of `parallel`.
async fn login_many(
    native: SocketAddr,
    devices: &[DeviceRef],
    parallel: usize,
) -> Result<Vec<NativeConn>> {
    let mut conns = Vec::with_capacity(devices.len());
    for chunk in devices.chunks(parallel.max(1)) {
        let mut logins: JoinSet<Result<NativeConn>> = JoinSet::new();
        for device in chunk {
            let token = device.token.clone();
            logins.spawn(async move { NativeConn::login(native, &token, false, 3600).await });
        }
        conns.extend(join_all_ok(&mut logins, "native logins").await?);
    }
    Ok(conns)
}

async fn idle_rss(target: &Target, args: &IdleArgs) -> Result<String> {
    let pid = target.server_pid().context(
        "idle-rss measures the server process: use a child server (the default) or --server-pid",
    )?;
    let settle = Duration::from_secs(2);
    tokio::time::sleep(settle).await;
    let before = vm_rss_kib(pid)?;
    let half = args.connections / 2;
    let mut held = idle_logins(target, &target.devices[..half], args.protocol).await?;
    tokio::time::sleep(settle).await;
    let at_half = vm_rss_kib(pid)?;
    let second = &target.devices[half..args.connections];
    held.extend(idle_logins(target, second, args.protocol).await?);
    tokio::time::sleep(settle).await;
    let after = vm_rss_kib(pid)?;
    // Every connection is still open and logged in: nothing was closed by the server.
    let mut closed = 0;
    for stream in &mut held {
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_micros(1), stream.peek(&mut probe)).await
        {
            closed += 1;
        }
    }
    let count = args.connections as f64;
    let second_half = (args.connections - half) as f64;
    drop(held);
    Ok(format!(
        "idle-rss: {} idle {} connections (logged in, no sync) to the {} (pid {pid}): server \
         VmRSS {} KiB before, {} KiB at {}, {} KiB at {}: {:.2} KiB per connection overall, {:.2} \
         KiB per connection over the second half; {} closed [target <= {} KiB]",
        args.connections,
        match args.protocol {
            IdleProtocol::Native => "native",
            IdleProtocol::Classic => "classic",
        },
        target.mode(),
        before,
        at_half,
        half,
        after,
        args.connections,
        after.saturating_sub(before) as f64 / count,
        after.saturating_sub(at_half) as f64 / second_half,
        closed,
        match args.protocol {
            IdleProtocol::Native => 4,
            IdleProtocol::Classic => 1,
        },
    ))
}

/// Logs in `devices` with `protocol` and keeps their sockets.
async fn idle_logins(
    target: &Target,
    devices: &[DeviceRef],
    protocol: IdleProtocol,
) -> Result<Vec<TcpStream>> {
    if protocol == IdleProtocol::Native {
        let conns = login_many(target.native, devices, 250).await?;
        return Ok(conns.into_iter().map(|conn| conn.stream).collect());
    }
    let mut streams = Vec::with_capacity(devices.len());
    for chunk in devices.chunks(250) {
        let mut logins: JoinSet<Result<TcpStream>> = JoinSet::new();
        for device in chunk {
            let (address, token) = (target.http, device.token.clone());
            logins.spawn(async move { classic_login(address, &token).await });
        }
        streams.extend(join_all_ok(&mut logins, "classic logins").await?);
    }
    Ok(streams)
}

async fn reconnect_storm(target: &Target, args: &StormArgs) -> Result<String> {
    let devices = &target.devices[..args.devices.min(target.devices.len())];
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        let mut storm = JoinSet::new();
        for device in devices {
            let (native, token) = (target.native, device.token.clone());
            storm.spawn(async move {
                let attempt = async {
                    let mut conn = NativeConn::login(native, &token, true, 600).await?;
                    let mut synced = 0u32;
                    loop {
                        match conn.recv().await? {
                            Some(Incoming::Synced) => synced += 1,
                            Some(Incoming::SyncComplete(count)) => {
                                return Ok::<_, anyhow::Error>((
                                    started.elapsed(),
                                    synced,
                                    u32::from(count),
                                    conn,
                                ));
                            }
                            Some(Incoming::Error(error)) => bail!("error: {error}"),
                            Some(_) => {}
                            None => bail!("closed before SyncComplete"),
                        }
                    }
                };
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(result) => result,
                    Err(_) => bail!("no SyncComplete within the storm's timeout"),
                }
            });
        }
        let mut times = Vec::with_capacity(devices.len());
        let mut held = Vec::with_capacity(devices.len());
        let (mut incomplete, mut failures) = (0usize, Vec::new());
        while let Some(done) = storm.join_next().await {
            match done {
                Ok(Ok((elapsed, synced, count, conn))) => {
                    if synced != PINS || count != PINS {
                        incomplete += 1;
                    }
                    times.push(elapsed);
                    held.push(conn);
                }
                Ok(Err(error)) => failures.push(error.to_string()),
                Err(error) => failures.push(error.to_string()),
            }
        }
        let all_done = started.elapsed();
        times.sort_unstable();
        let at = |p: f64| -> f64 {
            if times.is_empty() {
                return f64::NAN;
            }
            let index = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[index].as_secs_f64()
        };
        failures.sort();
        failures.dedup();
        rounds.push(format!(
            "round {}: all synced in {:.3} s (p50 {:.3} s, p99 {:.3} s), {} synced, {} with \
             fewer than 16 values, {} failed{}",
            round + 1,
            all_done.as_secs_f64(),
            at(0.5),
            at(0.99),
            times.len(),
            incomplete,
            devices.len() - times.len(),
            if failures.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    failures
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ));
        measure::print_figures(
            "reconnect-storm",
            "server",
            &[
                ("durability", durability_of(target).to_owned()),
                ("run", (round + 1).to_string()),
                ("devices", devices.len().to_string()),
                ("all_synced_seconds", measure::num(all_done.as_secs_f64())),
                ("p99_seconds", measure::num(at(0.99))),
                ("failed", (devices.len() - times.len()).to_string()),
                ("incomplete", incomplete.to_string()),
            ],
        );
        drop(held);
        // Let the server see every connection go before the next storm.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(format!(
        "reconnect-storm: {} native devices with 16 synced pins each log in at once with \
         sync_on_connect, {} durability, {}: {} [target < 1 s]",
        devices.len(),
        durability_of(target),
        target.mode(),
        rounds.join("; "),
    ))
}
