//! The row "app -> device across nodes": classic devices connected to node A, one app WebSocket
//! on node B writing at a fixed rate. Every write crosses the bus (node B asks the node holding
//! the device); latency from the app's send to the device receiving it, and to the app's
//! `stored` reply; CPU per write of each node's process.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use super::app_socket;
use super::app_to_device::{AppWriteRun, DeviceReceivers, Paced, write_from_app};
use super::cluster::{Cluster, device_view, wait_online};
use super::links::{DeviceProtocol, UnderTest, connect_devices};
use super::measure::{SendTimes, Timing, num};

#[derive(Args, Clone, Debug)]
pub struct CrossWriteArgs {
    /// Classic devices on node A receiving the writes.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// App writes per second, from one app WebSocket on node B.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    #[command(flatten)]
    pub timing: Timing,
}

/// Row "app -> device across nodes".
pub async fn app_to_device_across(
    cluster: &Cluster,
    args: &CrossWriteArgs,
) -> Result<Vec<(&'static str, String)>> {
    let [device_node, app_node, ..] = cluster.nodes.as_slice() else {
        bail!("two nodes are needed");
    };
    let times = SendTimes::new("the row", args.devices, args.rate, &args.timing)?;
    let on_a = UnderTest::Server(device_view(device_node), DeviceProtocol::Classic);
    let devices = connect_devices(&on_a, args.devices, true).await?;
    let ids: Vec<i64> = device_node.devices[..args.devices]
        .iter()
        .map(|device| device.id)
        .collect();
    // Node B must know where the devices are before it is asked to write to them.
    wait_online(app_node, &[ids[0], ids[ids.len() - 1]]).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let epoch = Instant::now();

    let receivers = DeviceReceivers::spawn(devices, &times, &stopped, epoch);

    let meters = cluster.cpu_meters()?;
    let socket = app_socket(app_node.http, &app_node.admin_key).await?;
    let paced = Paced::from_now(&times, epoch);
    let app = write_from_app(socket.split(), &ids, args.devices, &paced, &stop).await?;
    let cpu = meters.micros_per(times.total as u64)?;
    let (latencies, received) = receivers.collect().await?;
    let statuses = &app.0.statuses;
    let pending = statuses.get("pending").copied().unwrap_or(0);
    let refused: u64 = statuses
        .iter()
        .filter(|(status, _)| !matches!(status.as_str(), "stored" | "pending" | "delivered"))
        .map(|(_, count)| count)
        .sum();
    let run = AppWriteRun {
        devices: args.devices,
        rate: args.rate,
        sent: times.total,
        app,
        received,
        latencies,
    };
    let mut figures = vec![("nodes", cluster.nodes.len().to_string())];
    figures.extend(run.delivery_figures());
    figures.push(("pending", pending.to_string()));
    figures.push(("refused", refused.to_string()));
    figures.extend(run.ack_figures());
    figures.push(("cpu_us_per_write_device_node", num(cpu[0])));
    figures.push(("cpu_us_per_write_app_node", num(cpu[1])));
    figures.push(("cpu_us_per_write", num(cpu.iter().sum())));
    Ok(figures)
}
