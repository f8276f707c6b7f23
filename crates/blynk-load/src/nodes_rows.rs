//! The rows of several nodes (`cargo xtask bench --nodes N`, the "Several nodes" section of
//! `docs/performance.md`): each runs `--runs` times, every run on fresh nodes (or on the nodes
//! given by address), and prints one `figure:` line per run with `system=nodes`.

use anyhow::Result;
use clap::Subcommand;

use super::TargetArgs;
use super::cluster::{Cluster, NodesArgs};
use super::holder::{self, HoldArgs};
use super::measure::Runs;
use super::nodes_app_to_device::{self, CrossWriteArgs};
use super::nodes_connections::{self, HeldArgs, NODE_LIMITS};
use super::nodes_fan_out::{self, FanOutArgs};

#[derive(Subcommand, Debug)]
pub enum NodesRow {
    /// App -> device across nodes: devices on node A, the app WebSocket on node B.
    NodesAppToDevice {
        #[command(flatten)]
        args: CrossWriteArgs,
        #[command(flatten)]
        nodes: NodesArgs,
        /// Measurements, each on fresh nodes.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Device -> app fan-out across nodes: devices on node A, watchers on node B and node A.
    NodesFanOut {
        #[command(flatten)]
        args: FanOutArgs,
        #[command(flatten)]
        nodes: NodesArgs,
        /// Measurements, each on fresh nodes.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Idle classic device connections held by the nodes together, then presence and writes.
    NodesConnections {
        #[command(flatten)]
        args: HeldArgs,
        #[command(flatten)]
        nodes: NodesArgs,
        /// Measurements, each on fresh nodes.
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// A helper of `nodes-connections`: holds classic connections to one node.
    #[command(hide = true)]
    HoldClassic(HoldArgs),
}

impl NodesRow {
    pub fn name(&self) -> &'static str {
        match self {
            NodesRow::NodesAppToDevice { .. } => "nodes-app-to-device",
            NodesRow::NodesFanOut { .. } => "nodes-fan-out",
            NodesRow::NodesConnections { .. } => "nodes-connections",
            NodesRow::HoldClassic(_) => "hold-classic",
        }
    }
}

/// Runs one row and prints its `figure:` lines; returns a one-line summary.
pub fn run(
    target_args: &TargetArgs,
    row: &NodesRow,
    load: &tokio::runtime::Runtime,
) -> Result<String> {
    let name = row.name();
    let (nodes, runs, devices, limits): (&NodesArgs, usize, usize, &[&str]) = match row {
        NodesRow::HoldClassic(args) => return holder::hold(args, load),
        NodesRow::NodesAppToDevice { args, nodes, runs } => (nodes, *runs, args.devices, &[]),
        NodesRow::NodesFanOut { args, nodes, runs } => (nodes, *runs, args.devices, &[]),
        NodesRow::NodesConnections { args, nodes, runs } => (
            nodes,
            *runs,
            // One device per node kept apart for the end's write check.
            args.connections + nodes.nodes.max(nodes.external.len()),
            NODE_LIMITS,
        ),
    };
    let mut done = Runs::default();
    for run in 1..=runs.max(1) {
        let cluster = match Cluster::start(target_args, nodes, devices, limits, load) {
            Ok(cluster) => cluster,
            Err(error) => {
                done.failed(
                    format_args!("{name} run {run}: could not start the nodes"),
                    &error,
                );
                continue;
            }
        };
        let figures = match row {
            NodesRow::NodesAppToDevice { args, .. } => {
                load.block_on(nodes_app_to_device::app_to_device_across(&cluster, args))
            }
            NodesRow::NodesFanOut { args, .. } => {
                load.block_on(nodes_fan_out::fan_out_across(&cluster, args))
            }
            NodesRow::NodesConnections { args, .. } => {
                nodes_connections::connections_held(&cluster, args, load)
            }
            NodesRow::HoldClassic(_) => Err(anyhow::anyhow!("hold-classic is not a row")),
        };
        let durability = cluster.nodes[0].durability;
        cluster.stop();
        done.report(
            (name, "nodes"),
            format_args!("{name} run {run}"),
            vec![("store", durability.to_owned()), ("run", run.to_string())],
            figures,
        );
    }
    Ok(format!("{name}: {runs} runs, {} failed", done.failed))
}
