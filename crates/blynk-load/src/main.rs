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
//! of their own, in the modules beside this file (`rows` lists them): device -> app as fast
//! as devices can and at fixed rates, app -> device, HTTP writes over a large history, memory
//! per idle classic connection and per watched device; the data-path rows run the same load
//! against Mosquitto too (`--system mosquitto`), and `per-protocol` runs device -> app and
//! app -> device with the server's devices speaking classic, native and MQTT in turn. They print
//! `figure:` lines, one per run.
//!
//! The rows of several nodes (`cargo xtask bench --nodes 2`) start a PostgreSQL, a nats-server
//! and the nodes (or reach nodes given by address), in the `nodes_*` modules and `cluster`.
//!
//! Every loop is bounded in time or count. In-process and child servers bind 127.0.0.1 only.
//! The server and this generator share the machine's cores: the figures say how many.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
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
use tokio::task::JoinSet;

mod app_clients;
mod app_to_device;
mod classic_conn;
mod cluster;
mod data_path;
mod history;
mod holder;
mod idle;
mod latency;
mod links;
mod measure;
mod memory;
mod mqtt;
mod native_conn;
mod nodes_app_to_device;
mod nodes_connections;
mod nodes_fan_out;
mod nodes_rows;
mod rows;
mod storm;
mod target;
mod throughput;
mod watch_links;

use app_clients::*;
use classic_conn::*;
use idle::*;
use latency::*;
use native_conn::*;
use storm::*;
use target::*;
use throughput::*;

/// The admin key of in-process and child servers.
pub(crate) const ADMIN_KEY: &str = "blynk-load-admin-key-0123456789";
/// Synced integer datastreams per device: V0..V15.
pub(crate) const PINS: u32 = 16;
/// How long setup steps (connecting, logging in, watching) may take before the run gives up.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "blynk-load",
    about = "Load generator for blynk-server: throughput, latency, idle memory, reconnect storm"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

#[derive(Args, Clone, Debug)]
pub(crate) struct TargetArgs {
    /// Where the server runs. Default: in-process for throughput and latency, a child process
    /// for idle-rss and reconnect-storm (they need its memory and file descriptors apart).
    #[arg(long, global = true, value_enum)]
    pub(crate) server: Option<ServerMode>,
    /// Durability of in-process and child servers.
    #[arg(long, global = true, value_enum, default_value_t = Durability::Full)]
    pub(crate) durability: Durability,
    /// The `blynk-server` binary for child servers (default: beside this binary).
    #[arg(long, global = true)]
    pub(crate) server_bin: Option<PathBuf>,
    /// External server: HTTP, app API and classic port.
    #[arg(long, global = true)]
    pub(crate) http: Option<SocketAddr>,
    /// External server: native device port.
    #[arg(long, global = true)]
    pub(crate) native: Option<SocketAddr>,
    /// External server: admin key of the app API. Its per-connection rate limit
    /// (`limits.messages_per_second`, `message_burst`) must be raised for `throughput`: writes
    /// over it are dropped without a reply and stall the writers' windows.
    #[arg(long, global = true)]
    pub(crate) admin_key: Option<String>,
    /// External server: its process id, for idle-rss.
    #[arg(long, global = true)]
    pub(crate) server_pid: Option<u32>,
    /// Child servers open their MQTT port (a free loopback port): set by the rows whose devices
    /// speak MQTT; the others keep it off.
    #[arg(skip)]
    pub(crate) mqtt: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServerMode {
    /// `blynk_server::start` in this process, on its own runtime.
    InProcess,
    /// The `blynk-server` binary as a child process.
    Child,
    /// A server started elsewhere (--http, --native, --admin-key).
    External,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Durability {
    /// Fsync every commit (the server's default).
    Full,
    /// Commits reach the OS, not the disk.
    Process,
}

impl Durability {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Process => "process",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum Scenario {
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
    /// The rows of several nodes.
    #[command(flatten)]
    Nodes(nodes_rows::NodesRow),
}

#[derive(Args, Clone, Debug)]
pub(crate) struct ThroughputArgs {
    /// Native device connections writing.
    #[arg(long, default_value_t = 200)]
    pub(crate) devices: usize,
    /// Classic Blynk device connections writing (on the HTTP port).
    #[arg(long, default_value_t = 0)]
    pub(crate) classic: usize,
    /// App WebSocket clients each watching every device.
    #[arg(long, default_value_t = 4)]
    pub(crate) watchers: usize,
    /// Unacknowledged writes per native connection.
    #[arg(long, default_value_t = 32)]
    pub(crate) window: usize,
    #[command(flatten)]
    pub(crate) timing: measure::Timing,
    /// Print the rates of every second on stderr.
    #[arg(long)]
    pub(crate) progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Via {
    /// `{"type":"write",..}` on app WebSockets.
    Ws,
    /// `PUT /api/devices/{id}/values/{pin}` on keep-alive HTTP connections.
    Rest,
}

#[derive(Args, Clone, Debug)]
pub(crate) struct LatencyArgs {
    /// Native devices receiving the writes.
    #[arg(long, default_value_t = 4)]
    pub(crate) devices: usize,
    /// App writes per second, in total.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rate: u64,
    /// App connections the writes are spread over.
    #[arg(long, default_value_t = 8)]
    pub(crate) senders: usize,
    /// How apps write.
    #[arg(long, value_enum, default_value_t = Via::Ws)]
    pub(crate) via: Via,
    #[command(flatten)]
    pub(crate) timing: measure::Timing,
}

#[derive(Args, Clone, Debug)]
pub(crate) struct IdleArgs {
    /// Idle device connections held.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) connections: usize,
    /// The protocol the idle devices speak.
    #[arg(long, value_enum, default_value_t = IdleProtocol::Native)]
    pub(crate) protocol: IdleProtocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum IdleProtocol {
    /// The native protocol, on the native port.
    Native,
    /// The classic protocol (login, then the INFO frame), on the shared port.
    Classic,
}

#[derive(Args, Clone, Debug)]
pub(crate) struct StormArgs {
    /// Devices connecting at once.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) devices: usize,
    /// Storms in a row (the first on a freshly started server, the next after all left).
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
    /// Seconds a storm may take before the stragglers count as failed.
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout: u64,
}

pub(crate) fn main() -> Result<()> {
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
pub(crate) trait Defaults: Sized {
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
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Scenario::Throughput(_) => "throughput",
            Scenario::Latency(_) => "latency",
            Scenario::IdleRss(_) => "idle-rss",
            Scenario::ReconnectStorm(_) => "reconnect-storm",
            Scenario::All => "all",
            Scenario::Row(row) => row.name(),
            Scenario::Nodes(row) => row.name(),
        }
    }
}

pub(crate) fn run_scenario(
    target_args: &TargetArgs,
    scenario: &Scenario,
    load: &tokio::runtime::Runtime,
) -> Result<String> {
    match scenario {
        Scenario::Throughput(args) => on_server(
            target_args,
            (ServerMode::InProcess, args.devices + args.classic, false),
            load,
            async |target| throughput(target, args).await,
        ),
        Scenario::Latency(args) => on_server(
            target_args,
            (ServerMode::InProcess, args.devices, false),
            load,
            async |target| latency(target, args).await,
        ),
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
            on_server(
                target_args,
                (ServerMode::Child, args.connections, false),
                load,
                async |target| idle_rss(target, args).await,
            )
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
            on_server(
                target_args,
                (ServerMode::Child, args.devices, true),
                load,
                async |target| reconnect_storm(target, args).await,
            )
        }
        Scenario::All => bail!("`all` is not a single scenario"),
        Scenario::Row(row) => rows::run(target_args, row, load),
        Scenario::Nodes(row) => nodes_rows::run(target_args, row, load),
    }
}

/// Prepares the server of a scenario or row (`(default mode, devices, preset)`, as [`prepare`]
/// takes them), runs `scenario` on it and stops it.
pub(crate) fn on_server<T>(
    target_args: &TargetArgs,
    (mode, devices, preset): (ServerMode, usize, bool),
    load: &tokio::runtime::Runtime,
    scenario: impl AsyncFnOnce(&Target) -> Result<T>,
) -> Result<T> {
    let target = prepare(target_args, mode, devices, preset, load)?;
    let result = load.block_on(scenario(&target));
    target.stop();
    result
}

/// Waits up to `limit` for our own `child` to end (after it was asked to), then kills it.
pub(crate) fn wait_or_kill(child: &mut Child, limit: Duration, poll: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(poll);
    }
    let _ = child.kill();
    let _ = child.wait();
}
