//! The row "device -> app fan-out across nodes": classic devices connected to node A write at a
//! fixed total rate; one app on node B and one on node A watch every device. Every value reaches
//! node B over the bus. Per watcher: the changes delivered per second, latency from the
//! device's send to the watcher receiving the value, and pins whose last value never arrived
//! (lost); CPU per device message of each node's process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::cluster::{Cluster, device_view};
use super::data_path::{
    FinalValues, PacedDevices, TimedValues, send_from_devices, slot_of, wait_complete,
};
use super::links::{DeviceProtocol, UnderTest, connect_devices};
use super::measure::{CpuMeter, num, percentile_ms};
use super::watch_links::{WatchEnd, open_watcher, run_watcher};
use super::{PINS, SETUP_TIMEOUT};

#[derive(Args, Clone, Debug)]
pub struct FanOutArgs {
    /// Classic devices on node A writing.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Device writes per second, in total.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
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
    if args.devices == 0 || args.rate == 0 {
        bail!("the row needs devices and a rate");
    }
    let total = (args.rate as f64 * (args.warmup + args.seconds)) as usize;
    let measured_from = (args.rate as f64 * args.warmup) as usize;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let on_a = UnderTest::Server(device_view(device_node), DeviceProtocol::Classic);
    let on_b = UnderTest::Server(device_view(other_node), DeviceProtocol::Classic);
    let devices = connect_devices(&on_a, args.devices, false).await?;
    // The watchers: index 0 on node B (across the bus), index 1 on node A (beside the devices).
    let watchers = [open_watcher(&on_b).await?, open_watcher(&on_a).await?];
    let mut expected = vec![None; args.devices * PINS as usize];
    for seq in 0..total {
        let (index, pin) = slot_of(seq, args.devices);
        expected[index * PINS as usize + pin as usize] = Some(seq as i64);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pids = cluster.pids()?;
    let meters = pids
        .iter()
        .map(|pid| CpuMeter::start(*pid))
        .collect::<Result<Vec<_>>>()?;
    let epoch = Instant::now();
    let mut watching = Vec::new();
    for watcher in watchers {
        let complete = Arc::new(AtomicBool::new(false));
        let sink = TimedValues {
            finals: FinalValues::new(expected.clone()),
            sent_at: sent_at.clone(),
            measured_from,
            latencies: Vec::with_capacity(total),
        };
        let task = tokio::spawn(run_watcher(
            watcher,
            sink,
            epoch,
            stopped.clone(),
            complete.clone(),
        ));
        watching.push((task, complete));
    }
    let send_limit = Duration::from_secs_f64(args.warmup + args.seconds) + SETUP_TIMEOUT;
    let PacedDevices {
        mut readers,
        connected,
        failures,
        send_seconds,
    } = send_from_devices(
        devices, &sent_at, total, args.rate, epoch, &stopped, send_limit,
    )
    .await;
    for (task, complete) in &watching {
        wait_complete(complete, task, Duration::from_secs_f64(args.drain_seconds)).await;
    }
    let _ = stop.send(true);
    let mut results: Vec<(TimedValues, WatchEnd)> = Vec::new();
    for (task, _) in watching {
        results.push(task.await.context("a watcher task")?);
    }
    readers.abort_all();
    drop(connected);
    let sent = sent_at
        .iter()
        .filter(|at| at.load(Ordering::Relaxed) > 0)
        .count();
    let cpu: Vec<f64> = meters
        .iter()
        .map(|meter| meter.micros_per(sent as u64))
        .collect::<Result<_>>()?;
    if let Some(failure) = failures.first() {
        eprintln!("  {} sender(s) failed: {failure}", failures.len());
    }
    let mut figures = vec![
        ("nodes", cluster.nodes.len().to_string()),
        ("devices", args.devices.to_string()),
        ("rate", args.rate.to_string()),
        ("sent", sent.to_string()),
        ("send_rate", num(sent as f64 / send_seconds)),
        ("sender_failures", failures.len().to_string()),
    ];
    for ((timed, end), side) in results.iter_mut().zip(["other", "same"]) {
        if let Some(closed) = &end.closed {
            eprintln!("  the watcher on the {side} node ended: {closed}");
        }
        timed.latencies.sort_unstable();
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
