//! The row "app -> device at a fixed rate", run alike against blynk-server and Mosquitto: one app
//! writes at a fixed rate; latency to the device receiving it, and to the acknowledgement
//! (`stored` on the app WebSocket, PUBACK from Mosquitto).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use blynk_client::events::{AppEvent, for_each_event};
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinSet;

use super::links::{DeviceIncoming, DeviceLink, UnderTest, connect_devices};
use super::measure::{CpuMeter, num, percentile_ms};
use super::mqtt;
use super::{app_socket, nanos_since};

use super::data_path::*;

/// Row "app -> device at a fixed rate".
pub async fn app_to_device(
    under_test: &UnderTest,
    args: &AppWriteArgs,
) -> Result<Vec<(&'static str, String)>> {
    if args.devices == 0 || args.rate == 0 {
        bail!("the app-to-device row needs devices and a rate");
    }
    let total = (args.rate as f64 * (args.warmup + args.seconds)) as usize;
    let measured_from = (args.rate as f64 * args.warmup) as usize;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let devices = connect_devices(under_test, args.devices, true).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let epoch = Instant::now();

    // The devices: the latency of every app write they receive.
    let receivers = DeviceReceivers::spawn(devices, &sent_at, &stopped, epoch, measured_from);

    // The app: one connection, writes at the rate, acknowledgements timed.
    let cpu = CpuMeter::start(under_test.pid()?)?;
    let ids: Arc<Vec<i64>> = Arc::new(match under_test {
        UnderTest::Server(target, _) => target.devices.iter().map(|device| device.id).collect(),
        UnderTest::Mosquitto(_) => (0..args.devices as i64).collect(),
    });
    let started = Instant::now();
    let rate = args.rate as f64;
    let (ack_latencies, finished) = match under_test {
        UnderTest::Server(target, _) => {
            let (mut sender, mut receiver) =
                app_socket(target.http, &target.admin_key).await?.split();
            let acks_sent_at = sent_at.clone();
            let mut acks_stopped = stopped.clone();
            let acks = tokio::spawn(async move {
                let mut latencies = Vec::new();
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
                        if let AppEvent::WriteReply { id, status } = event
                            && matches!(status, "stored" | "pending")
                        {
                            answered += 1;
                            let seq = id as usize;
                            if seq >= measured_from
                                && let Some(at) = acks_sent_at.get(seq)
                            {
                                latencies.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                            }
                        }
                    });
                }
                latencies
            });
            send_paced(
                total,
                rate,
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
            (acks.await.unwrap_or_default(), finished)
        }
        UnderTest::Mosquitto(broker) => {
            let (mut reader, mut writer) = mqtt::connect_client(broker.address, "app").await?;
            let seq_of_packet: Arc<Vec<AtomicU64>> =
                Arc::new((0..=u16::MAX).map(|_| AtomicU64::new(0)).collect());
            let (acks_sent_at, acks_seq) = (sent_at.clone(), seq_of_packet.clone());
            let mut acks_stopped = stopped.clone();
            let acks = tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut answered = 0usize;
                while answered < total {
                    tokio::select! {
                        read = reader.fill() => if !matches!(read, Ok(count) if count > 0) { break },
                        _ = acks_stopped.changed() => break,
                    }
                    let now = nanos_since(epoch);
                    let _ = reader.drain(|packet| {
                        if let mqtt::Packet::PubAck(id) = packet {
                            answered += 1;
                            let seq = acks_seq[usize::from(id)].load(Ordering::Relaxed) as usize;
                            if seq >= measured_from
                                && let Some(at) = acks_sent_at.get(seq)
                            {
                                latencies.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                            }
                        }
                    });
                }
                latencies
            });
            send_paced(
                total,
                rate,
                started,
                epoch,
                &sent_at,
                |seq, out: &mut Vec<u8>| {
                    let (index, pin) = slot_of(seq, args.devices);
                    let packet_id = (seq % usize::from(u16::MAX)) as u16 + 1;
                    seq_of_packet[usize::from(packet_id)].store(seq as u64, Ordering::Relaxed);
                    let topic = format!("app/{}/V{pin}", ids[index]);
                    mqtt::publish(
                        out,
                        topic.as_bytes(),
                        seq.to_string().as_bytes(),
                        Some(packet_id),
                    );
                },
                async |out: &mut Vec<u8>| {
                    writer.write_all(out).await?;
                    out.clear();
                    Ok(())
                },
            )
            .await?;
            let finished = started.elapsed();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = stop.send(true);
            (acks.await.unwrap_or_default(), finished)
        }
    };
    let cpu_us = cpu.micros_per(total as u64)?;
    let (latencies, received) = receivers.collect().await?;
    let mut ack_latencies = ack_latencies;
    ack_latencies.sort_unstable();
    Ok(vec![
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
        ("ack_p50_ms", num(percentile_ms(&ack_latencies, 0.50))),
        ("ack_p99_ms", num(percentile_ms(&ack_latencies, 0.99))),
        ("cpu_us_per_write", num(cpu_us)),
    ])
}

/// Sends messages `0..total` at `rate` per second from `started`, all those due at once:
/// `encode(seq, out)` adds message `seq` to the batch `out`, `send(out)` sends the batch (and
/// empties it), and the batch's send time (nanoseconds since `epoch`) goes into `sent_at`.
pub(crate) async fn send_paced<Batch: Default>(
    total: usize,
    rate: f64,
    started: Instant,
    epoch: Instant,
    sent_at: &[AtomicU64],
    mut encode: impl FnMut(usize, &mut Batch),
    mut send: impl AsyncFnMut(&mut Batch) -> Result<()>,
) -> Result<()> {
    let mut out = Batch::default();
    let mut next = 0usize;
    while next < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1)
            .min(total)
            .max(next);
        for seq in next..due {
            encode(seq, &mut out);
        }
        if due > next {
            let now = nanos_since(epoch).max(1);
            for at in &sent_at[next..due] {
                at.store(now, Ordering::Relaxed);
            }
            send(&mut out).await?;
        }
        next = due;
        let at = started + Duration::from_secs_f64(next as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
    }
    Ok(())
}

/// The devices' side of an app -> device row: one task per device timing every app write it
/// receives (the value is the write's sequence number) against its send time in `sent_at`.
pub(crate) struct DeviceReceivers(JoinSet<(Vec<u64>, u64)>);

impl DeviceReceivers {
    /// Starts the tasks; they end when `stopped` changes or their connection closes. Writes
    /// before `measured_from` (the warm-up) are counted but not timed.
    pub(crate) fn spawn(
        devices: Vec<DeviceLink>,
        sent_at: &Arc<Vec<AtomicU64>>,
        stopped: &tokio::sync::watch::Receiver<bool>,
        epoch: Instant,
        measured_from: usize,
    ) -> Self {
        let mut receivers = JoinSet::new();
        for mut device in devices {
            let (sent_at, mut stopped) = (sent_at.clone(), stopped.clone());
            receivers.spawn(async move {
                let mut latencies = Vec::new();
                let mut received = 0u64;
                loop {
                    let mut values = Vec::new();
                    tokio::select! {
                        open = device.read(|incoming| {
                            if let DeviceIncoming::AppWrite(value) = incoming {
                                values.push(value);
                            }
                        }) => if !matches!(open, Ok(true)) { break },
                        _ = stopped.changed() => break,
                    }
                    let now = nanos_since(epoch);
                    for value in values {
                        received += 1;
                        if let Ok(seq) = usize::try_from(value)
                            && seq >= measured_from
                            && let Some(at) = sent_at.get(seq)
                        {
                            latencies.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                        }
                    }
                }
                (latencies, received)
            });
        }
        DeviceReceivers(receivers)
    }

    /// Waits for every task: the measured latencies (nanoseconds, sorted) and the writes
    /// received.
    pub(crate) async fn collect(mut self) -> Result<(Vec<u64>, u64)> {
        let mut latencies = Vec::new();
        let mut received = 0;
        while let Some(done) = self.0.join_next().await {
            let (mine, count) = done?;
            latencies.extend(mine);
            received += count;
        }
        latencies.sort_unstable();
        Ok((latencies, received))
    }
}
