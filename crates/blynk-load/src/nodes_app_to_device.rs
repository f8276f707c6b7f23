//! The row "app -> device across nodes": classic devices connected to node A, one app WebSocket
//! on node B writing at a fixed rate. Every write crosses the bus (node B asks the node holding
//! the device); latency from the app's send to the device receiving it, and to the app's
//! `stored` reply; CPU per write of each node's process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use blynk_client::events::{AppEvent, for_each_event};

use super::app_to_device::{DeviceReceivers, send_paced};
use super::cluster::{Cluster, device_view, wait_online};
use super::data_path::slot_of;
use super::links::{DeviceProtocol, UnderTest, connect_devices};
use super::measure::{CpuMeter, num, percentile_ms};
use super::{app_socket, nanos_since};

#[derive(Args, Clone, Debug)]
pub struct CrossWriteArgs {
    /// Classic devices on node A receiving the writes.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// App writes per second, from one app WebSocket on node B.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

/// Row "app -> device across nodes".
pub async fn app_to_device_across(
    cluster: &Cluster,
    args: &CrossWriteArgs,
) -> Result<Vec<(&'static str, String)>> {
    let [device_node, app_node, ..] = cluster.nodes.as_slice() else {
        bail!("two nodes are needed");
    };
    if args.devices == 0 || args.rate == 0 {
        bail!("the row needs devices and a rate");
    }
    let total = (args.rate as f64 * (args.warmup + args.seconds)) as usize;
    let measured_from = (args.rate as f64 * args.warmup) as usize;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
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

    let receivers = DeviceReceivers::spawn(devices, &sent_at, &stopped, epoch, measured_from);

    let pids = cluster.pids()?;
    let meters = pids
        .iter()
        .map(|pid| CpuMeter::start(*pid))
        .collect::<Result<Vec<_>>>()?;
    let (mut sender, mut receiver) = app_socket(app_node.http, &app_node.admin_key)
        .await?
        .split();
    let acks_sent_at = sent_at.clone();
    let mut acks_stopped = stopped.clone();
    let acks = tokio::spawn(async move {
        let (mut latencies, mut statuses) = (Vec::new(), std::collections::BTreeMap::new());
        let mut answered = 0usize;
        while answered < total {
            let text = tokio::select! {
                received = receiver.recv() => match received {
                    Ok(text) => text,
                    Err(_) => break,
                },
                _ = acks_stopped.changed() => break,
            };
            let now = nanos_since(epoch);
            for_each_event(text.as_bytes(), |event| {
                if let AppEvent::WriteReply { id, status } = event {
                    *statuses.entry(status.to_owned()).or_insert(0u64) += 1;
                    if matches!(status, "stored" | "pending") {
                        answered += 1;
                        let seq = id as usize;
                        if seq >= measured_from
                            && let Some(at) = acks_sent_at.get(seq)
                        {
                            latencies.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                        }
                    }
                }
            });
        }
        (latencies, statuses)
    });
    let started = Instant::now();
    send_paced(
        total,
        args.rate as f64,
        started,
        epoch,
        &sent_at,
        |seq, out: &mut Vec<String>| {
            let (index, pin) = slot_of(seq, args.devices);
            out.push(format!(
                r#"{{"type":"write","id":{seq},"device":{},"pin":"V{pin}","value":{seq}}}"#,
                ids[index]
            ));
        },
        async |out: &mut Vec<String>| {
            for text in out.drain(..) {
                sender.feed_text(text).await?;
            }
            Ok(sender.flush().await?)
        },
    )
    .await?;
    let finished = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let (mut ack_latencies, statuses) = acks.await.unwrap_or_default();
    let cpu: Vec<f64> = meters
        .iter()
        .map(|meter| meter.micros_per(total as u64))
        .collect::<Result<_>>()?;
    let (latencies, received) = receivers.collect().await?;
    ack_latencies.sort_unstable();
    let pending = statuses.get("pending").copied().unwrap_or(0);
    let refused: u64 = statuses
        .iter()
        .filter(|(status, _)| !matches!(status.as_str(), "stored" | "pending" | "delivered"))
        .map(|(_, count)| count)
        .sum();
    Ok(vec![
        ("nodes", cluster.nodes.len().to_string()),
        ("devices", args.devices.to_string()),
        ("rate", args.rate.to_string()),
        ("sent", total.to_string()),
        ("send_rate", num(total as f64 / finished.as_secs_f64())),
        ("received", received.to_string()),
        ("measured", latencies.len().to_string()),
        ("p50_ms", num(percentile_ms(&latencies, 0.50))),
        ("p99_ms", num(percentile_ms(&latencies, 0.99))),
        ("max_ms", num(percentile_ms(&latencies, 1.0))),
        ("acks", ack_latencies.len().to_string()),
        ("pending", pending.to_string()),
        ("refused", refused.to_string()),
        ("ack_p50_ms", num(percentile_ms(&ack_latencies, 0.50))),
        ("ack_p99_ms", num(percentile_ms(&ack_latencies, 0.99))),
        ("cpu_us_per_write_device_node", num(cpu[0])),
        ("cpu_us_per_write_app_node", num(cpu[1])),
        ("cpu_us_per_write", num(cpu.iter().sum())),
    ])
}
