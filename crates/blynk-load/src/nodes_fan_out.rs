//! The row "device -> app fan-out across nodes": classic devices connected to node A write at a
//! fixed total rate; one app on node B and one on node A watch every device. Every value reaches
//! node B over the bus. Per watcher: the changes delivered per second, latency from the
//! device's send to the watcher receiving the value, and pins whose last value never arrived
//! (lost); CPU per device message of each node's process.

use anyhow::{Result, bail};
use clap::Args;

use super::cluster::{Cluster, device_view};
use super::data_path::{Watched, send_to_watchers};
use super::links::{DeviceProtocol, UnderTest, connect_devices};
use super::measure::{SendTimes, Timing, num, percentile_ms};
use super::watch_links::open_watcher;

#[derive(Args, Clone, Debug)]
pub struct FanOutArgs {
    /// Classic devices on node A writing.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Device writes per second, in total.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[command(flatten)]
    pub timing: Timing,
    /// Seconds the watchers may take to hold every final value once the devices are done.
    #[arg(long, default_value_t = 10.0)]
    pub drain_seconds: f64,
}

/// Row "device -> app fan-out across nodes".
pub async fn fan_out_across(
    cluster: &Cluster,
    args: &FanOutArgs,
) -> Result<Vec<(&'static str, String)>> {
    let [device_node, other_node, ..] = cluster.nodes.as_slice() else {
        bail!("two nodes are needed");
    };
    let times = SendTimes::new("the row", args.devices, args.rate, &args.timing)?;
    let on_a = UnderTest::Server(device_view(device_node), DeviceProtocol::Classic);
    let on_b = UnderTest::Server(device_view(other_node), DeviceProtocol::Classic);
    let devices = connect_devices(&on_a, args.devices, false).await?;
    // The watchers: index 0 on node B (across the bus), index 1 on node A (beside the devices).
    let watchers = vec![open_watcher(&on_b).await?, open_watcher(&on_a).await?];
    let meters = cluster.cpu_meters()?;
    let Watched {
        watchers: results,
        sent,
        failures,
        send_seconds,
    } = send_to_watchers(devices, watchers, &times, args.drain_seconds).await?;
    let cpu = meters.micros_per(sent as u64)?;
    let mut figures = vec![
        ("nodes", cluster.nodes.len().to_string()),
        ("devices", args.devices.to_string()),
        ("rate", args.rate.to_string()),
        ("sent", sent.to_string()),
        ("send_rate", num(sent as f64 / send_seconds)),
        ("sender_failures", failures.to_string()),
    ];
    for ((timed, end), side) in results.iter().zip(["other", "same"]) {
        end.tell(&format!("the watcher on the {side} node"));
        let finals = &timed.finals;
        // Changes delivered (a coalesced value counts for the changes it stands for) per second
        // from the first send to the watcher's last value.
        let delivered_seconds = (finals.last_event_at as f64 / 1e9).max(1e-9);
        let latencies = &timed.latencies;
        let named: [(&'static str, &'static str, String); 8] = [
            (
                "other_delivered_rate",
                "same_delivered_rate",
                num(finals.changes as f64 / delivered_seconds),
            ),
            ("other_changes", "same_changes", finals.changes.to_string()),
            (
                "other_measured",
                "same_measured",
                latencies.len().to_string(),
            ),
            (
                "other_p50_ms",
                "same_p50_ms",
                num(percentile_ms(latencies, 0.50)),
            ),
            (
                "other_p99_ms",
                "same_p99_ms",
                num(percentile_ms(latencies, 0.99)),
            ),
            (
                "other_max_ms",
                "same_max_ms",
                num(percentile_ms(latencies, 1.0)),
            ),
            (
                "other_lost_pins",
                "same_lost_pins",
                finals.lost().to_string(),
            ),
            (
                "other_watcher_closed",
                "same_watcher_closed",
                u8::from(end.closed.is_some()).to_string(),
            ),
        ];
        for (other, same, value) in named {
            figures.push((if side == "other" { other } else { same }, value));
        }
    }
    figures.push(("cpu_us_per_msg_device_node", num(cpu[0])));
    figures.push(("cpu_us_per_msg_other_node", num(cpu[1])));
    figures.push(("cpu_us_per_msg", num(cpu.iter().sum())));
    Ok(figures)
}
