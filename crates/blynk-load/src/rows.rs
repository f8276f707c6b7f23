//! The rows of the performance table (`docs/performance.md`) as scenarios: each runs `--runs`
//! times, every run on a fresh child process (blynk-server or Mosquitto) bound to 127.0.0.1, and
//! prints one `figure:` line per run for `cargo xtask bench` to aggregate.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::app_to_device;
use super::data_path::{self, AppWriteArgs, FloodArgs, RateArgs};
use super::history::{self, HistoryArgs};
use super::links::{DeviceProtocol, System, UnderTest};
use super::measure::{Runs, Timing, print_figures};
use super::memory::{self, IdleClassicArgs, WatchArgs};
use super::{ServerMode, TargetArgs, on_server};

#[derive(Subcommand, Debug)]
pub enum Row {
    /// Device -> app: devices write as fast as they can, one app watches every device.
    DeviceToApp {
        #[command(flatten)]
        args: FloodArgs,
        /// Measurements, each on a fresh server or broker.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Device -> app at a fixed rate: send-to-watcher latency (the rate ladder's rungs too).
    DeviceToAppRate {
        #[command(flatten)]
        args: RateArgs,
        /// Measurements, each on a fresh server or broker.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// App -> device at a fixed rate: send-to-device and acknowledgement latency.
    AppToDevice {
        #[command(flatten)]
        args: AppWriteArgs,
        /// Measurements, each on a fresh server or broker.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// HTTP write latency over a store holding history (`--rows-per-pin 0`: none).
    HistoryWrites(HistoryArgs),
    /// Server memory per idle classic device connection.
    IdleClassic(IdleClassicArgs),
    /// Server memory per device watched by one app.
    WatchMemory(WatchArgs),
    /// Device -> app and app -> device at fixed rates, the server's devices speaking each
    /// protocol in turn (classic, native, MQTT), each measurement on a fresh server.
    PerProtocol(PerProtocolArgs),
}

#[derive(Args, Clone, Debug)]
pub struct PerProtocolArgs {
    /// The device protocols measured, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = [DeviceProtocol::Classic, DeviceProtocol::Native, DeviceProtocol::Mqtt]
    )]
    pub protocols: Vec<DeviceProtocol>,
    /// Devices writing, and receiving the app's writes.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Device writes per second in total, and app writes per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    // The seconds are measured in each direction.
    #[command(flatten)]
    pub timing: Timing,
    /// Measurements of each protocol and direction, each on a fresh server.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

/// The two directions of the per-protocol row, as the `row` of their figures.
const PROTOCOL_DEVICE_TO_APP: &str = "protocol-device-to-app";
const PROTOCOL_APP_TO_DEVICE: &str = "protocol-app-to-device";

impl Row {
    pub fn name(&self) -> &'static str {
        match self {
            Row::DeviceToApp { .. } => "device-to-app",
            Row::DeviceToAppRate { .. } => "device-to-app-rate",
            Row::AppToDevice { .. } => "app-to-device",
            Row::HistoryWrites(_) => "history-writes",
            Row::IdleClassic(_) => "idle-classic",
            Row::WatchMemory(_) => "watch-memory",
            Row::PerProtocol(_) => "per-protocol",
        }
    }
}

/// Runs one row and prints its `figure:` lines; returns a one-line summary.
pub fn run(target_args: &TargetArgs, row: &Row, load: &tokio::runtime::Runtime) -> Result<String> {
    let name = row.name();
    let (system, devices, runs) = match row {
        Row::DeviceToApp { args, runs } => (args.system, args.devices, *runs),
        Row::DeviceToAppRate { args, runs } => (args.system, args.devices, *runs),
        Row::AppToDevice { args, runs } => (args.system, args.devices, *runs),
        Row::PerProtocol(args) => return per_protocol(target_args, args, load),
        Row::HistoryWrites(_) | Row::IdleClassic(_) | Row::WatchMemory(_) => {
            print_figures(name, "server", &run_once(target_args, row, load)?);
            return Ok(format!("{name}: done"));
        }
    };
    let mut done = Runs::default();
    for run in 1..=runs.max(1) {
        let under_test = match UnderTest::start(system, target_args, devices, load) {
            Ok(under_test) => under_test,
            Err(error) => {
                done.failed(
                    format_args!("{name} run {run}: could not start {system:?}"),
                    &error,
                );
                continue;
            }
        };
        let figures = load.block_on(async {
            match row {
                Row::DeviceToApp { args, .. } => data_path::device_to_app(&under_test, args).await,
                Row::DeviceToAppRate { args, .. } => {
                    data_path::device_to_app_rate(&under_test, args).await
                }
                Row::AppToDevice { args, .. } => {
                    app_to_device::app_to_device(&under_test, args).await
                }
                _ => Err(anyhow::anyhow!("{name} is not a data-path row")),
            }
        });
        let (system_name, durability) = (under_test.name(), under_test.durability());
        under_test.stop();
        done.report(
            (name, system_name),
            format_args!("{name} run {run} on {system_name}"),
            vec![
                ("durability", durability.to_owned()),
                ("run", run.to_string()),
            ],
            figures,
        );
    }
    Ok(format!(
        "{name} on {system:?}: {runs} runs, {} failed",
        done.failed
    ))
}

/// The figures of a row measured once, on the server alone.
fn run_once(
    target_args: &TargetArgs,
    row: &Row,
    load: &tokio::runtime::Runtime,
) -> Result<Vec<(&'static str, String)>> {
    match row {
        Row::HistoryWrites(args) => {
            let mut pairs = vec![("durability", target_args.durability.name().to_owned())];
            pairs.extend(history::run(target_args, args, load)?);
            Ok(pairs)
        }
        Row::IdleClassic(IdleClassicArgs {
            connections: devices,
        })
        | Row::WatchMemory(WatchArgs { devices, .. }) => on_server(
            target_args,
            (ServerMode::Child, *devices, false),
            load,
            async |target| match row {
                Row::IdleClassic(args) => memory::idle_classic(target, args).await,
                Row::WatchMemory(args) => memory::watch_memory(target, args).await,
                _ => bail!("{} is not a memory row", row.name()),
            },
        ),
        _ => bail!("{} is measured more than once", row.name()),
    }
}

/// The per-protocol row: for each run and protocol, device -> app at the rate with one app
/// watcher, then app -> device at the rate, each on a fresh server. Figures carry `protocol`.
fn per_protocol(
    target_args: &TargetArgs,
    args: &PerProtocolArgs,
    load: &tokio::runtime::Runtime,
) -> Result<String> {
    let device_to_app = RateArgs {
        system: System::Server,
        devices: args.devices,
        rate: args.rate,
        timing: args.timing.clone(),
        drain_seconds: 5.0,
    };
    let app_to_device = AppWriteArgs {
        system: System::Server,
        devices: args.devices,
        rate: args.rate,
        timing: args.timing.clone(),
    };
    let mut done = Runs::default();
    for run in 1..=args.runs.max(1) {
        for &protocol in &args.protocols {
            for row in [PROTOCOL_DEVICE_TO_APP, PROTOCOL_APP_TO_DEVICE] {
                let what = format!("{row} {} run {run}", protocol.name());
                let under_test =
                    match UnderTest::start_server(target_args, args.devices, protocol, load) {
                        Ok(under_test) => under_test,
                        Err(error) => {
                            done.failed(format_args!("{what}: no server"), &error);
                            continue;
                        }
                    };
                let figures = load.block_on(async {
                    if row == PROTOCOL_DEVICE_TO_APP {
                        data_path::device_to_app_rate(&under_test, &device_to_app).await
                    } else {
                        app_to_device::app_to_device(&under_test, &app_to_device).await
                    }
                });
                let durability = under_test.durability();
                under_test.stop();
                let leading = vec![
                    ("protocol", protocol.name().to_owned()),
                    ("durability", durability.to_owned()),
                    ("run", run.to_string()),
                ];
                done.report((row, "server"), what, leading, figures);
            }
        }
    }
    Ok(format!(
        "per-protocol: {} protocols x 2 directions x {} runs, {} failed",
        args.protocols.len(),
        args.runs.max(1),
        done.failed
    ))
}
