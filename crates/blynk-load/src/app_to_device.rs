//! The row "app -> device at a fixed rate", run alike against blynk-server and Mosquitto: one app
//! writes at a fixed rate; latency to the device receiving it, and to the acknowledgement
//! (`stored` on the app WebSocket, PUBACK from Mosquitto).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use blynk_client::events::{AppEvent, for_each_event};
use blynk_client::{AppReceiver, AppSender};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::links::{DeviceIncoming, DeviceLink, UnderTest, connect_devices};
use super::measure::{CpuMeter, SendTimes, all_received, num, percentile_ms, unless_stopped};
use super::mqtt;
use super::{app_socket, nanos_since};

use super::data_path::*;

/// Row "app -> device at a fixed rate".
pub async fn app_to_device(
    under_test: &UnderTest,
    args: &AppWriteArgs,
) -> Result<Vec<(&'static str, String)>> {
    let times = SendTimes::new(
        "the app-to-device row",
        args.devices,
        args.rate,
        &args.timing,
    )?;
    let total = times.total;
    let devices = connect_devices(under_test, args.devices, true).await?;
    let (stop, stopped) = watch::channel(false);
    let epoch = Instant::now();

    // The devices: the latency of every app write they receive.
    let receivers = DeviceReceivers::spawn(devices, &times, &stopped, epoch);

    // The app: one connection, writes at the rate, acknowledgements timed.
    let cpu = CpuMeter::start(under_test.pid()?)?;
    let ids: Arc<Vec<i64>> = Arc::new(match under_test {
        UnderTest::Server(target, _) => target.devices.iter().map(|device| device.id).collect(),
        UnderTest::Mosquitto(_) => (0..args.devices as i64).collect(),
    });
    let paced = Paced::from_now(&times, epoch);
    let app = match under_test {
        UnderTest::Server(target, _) => {
            let socket = app_socket(target.http, &target.admin_key).await?;
            write_from_app(socket.split(), &ids, args.devices, &paced, &stop).await?
        }
        UnderTest::Mosquitto(broker) => {
            let (mut reader, mut writer) = mqtt::connect_client(broker.address, "app").await?;
            let seq_of_packet: Arc<Vec<AtomicU64>> =
                Arc::new((0..=u16::MAX).map(|_| AtomicU64::new(0)).collect());
            let (acks_times, acks_seq) = (times.clone(), seq_of_packet.clone());
            let mut acks_stopped = stopped.clone();
            let acks = tokio::spawn(async move {
                let mut acks = AckTimes::new(acks_times);
                while acks.waiting() {
                    match unless_stopped(&mut acks_stopped, reader.fill()).await {
                        Some(Ok(count)) if count > 0 => {}
                        _ => break,
                    }
                    let now = nanos_since(epoch);
                    let _ = reader.drain(|packet| {
                        if let mqtt::Packet::PubAck(id) = packet {
                            let seq = acks_seq[usize::from(id)].load(Ordering::Relaxed) as usize;
                            acks.answered(seq, now);
                        }
                    });
                }
                acks
            });
            send_paced(
                &paced,
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
            last_replies(&paced, &stop, acks).await
        }
    };
    let cpu_us = cpu.micros_per(total as u64)?;
    let (latencies, received) = receivers.collect().await?;
    let run = AppWriteRun {
        devices: args.devices,
        rate: args.rate,
        sent: total,
        app,
        received,
        latencies,
    };
    let mut figures = run.delivery_figures();
    figures.extend(run.ack_figures());
    figures.push(("cpu_us_per_write", num(cpu_us)));
    Ok(figures)
}

/// The writes of an app -> device row: `0..times.total` at the rate of `times` from `started`,
/// their send times in nanoseconds since `epoch`.
#[derive(Clone, Copy)]
pub(crate) struct Paced<'a> {
    pub times: &'a SendTimes,
    pub started: Instant,
    pub epoch: Instant,
}

impl<'a> Paced<'a> {
    /// The writes of `times`, starting now.
    pub(crate) fn from_now(times: &'a SendTimes, epoch: Instant) -> Self {
        Paced {
            times,
            started: Instant::now(),
            epoch,
        }
    }
}

/// Replies to an app's writes: how many came, their latency (nanoseconds), and their statuses.
pub(crate) struct AckTimes {
    times: SendTimes,
    answered: usize,
    pub latencies: Vec<u64>,
    pub statuses: BTreeMap<String, u64>,
}

impl AckTimes {
    fn new(times: SendTimes) -> Self {
        AckTimes {
            times,
            answered: 0,
            latencies: Vec::new(),
            statuses: BTreeMap::new(),
        }
    }

    /// Not every write is answered yet.
    fn waiting(&self) -> bool {
        self.answered < self.times.total
    }

    /// Write `seq` is answered (acknowledged) at `now`.
    fn answered(&mut self, seq: usize, now: u64) {
        self.answered += 1;
        if let Some(latency) = self.times.latency(seq, now) {
            self.latencies.push(latency);
        }
    }

    /// A reply of the app WebSocket with `status`: `stored` and `pending` answer write `seq`.
    fn replied(&mut self, seq: usize, status: &str, now: u64) {
        match self.statuses.get_mut(status) {
            Some(count) => *count += 1,
            None => {
                self.statuses.insert(status.to_owned(), 1);
            }
        }
        if matches!(status, "stored" | "pending") {
            self.answered(seq, now);
        }
    }
}

/// Writes from one app WebSocket (write `seq` to device `ids[seq mod devices]`, pin
/// `(seq / devices) mod 16`, value `seq`), timing its `stored` (or `pending`) replies; `stop` is
/// sent a second after the last write. The replies, and the time the writing took.
pub(crate) async fn write_from_app(
    (mut sender, mut receiver): (AppSender, AppReceiver),
    ids: &[i64],
    devices: usize,
    paced: &Paced<'_>,
    stop: &watch::Sender<bool>,
) -> Result<(AckTimes, Duration)> {
    let (acks_times, epoch) = (paced.times.clone(), paced.epoch);
    let mut acks_stopped = stop.subscribe();
    let acks = tokio::spawn(async move {
        let mut acks = AckTimes::new(acks_times);
        while acks.waiting() {
            let Some(Ok(text)) = unless_stopped(&mut acks_stopped, receiver.recv()).await else {
                break;
            };
            let now = nanos_since(epoch);
            for_each_event(text.as_bytes(), |event| {
                if let AppEvent::WriteReply { id, status } = event {
                    acks.replied(id as usize, status, now);
                }
            });
        }
        acks
    });
    send_paced(
        paced,
        |seq, out: &mut Vec<String>| {
            let (index, pin) = slot_of(seq, devices);
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
    Ok(last_replies(paced, stop, acks).await)
}

/// After the last write of `paced`: the time the writing took; a second later `stop`, and the
/// replies the task gathered (none if it failed).
async fn last_replies(
    paced: &Paced<'_>,
    stop: &watch::Sender<bool>,
    acks: JoinHandle<AckTimes>,
) -> (AckTimes, Duration) {
    let finished = paced.started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let mut acks = acks
        .await
        .unwrap_or_else(|_| AckTimes::new(paced.times.clone()));
    acks.latencies.sort_unstable();
    (acks, finished)
}

/// What an app -> device row saw: the app's side, and the devices'.
pub(crate) struct AppWriteRun {
    pub devices: usize,
    pub rate: u64,
    pub sent: usize,
    /// The app's replies, and the time its writing took.
    pub app: (AckTimes, Duration),
    /// Writes the devices received, and the latency of those measured (sorted).
    pub received: u64,
    pub latencies: Vec<u64>,
}

impl AppWriteRun {
    /// From `devices` to `acks`: what was sent, and what the devices received when.
    pub(crate) fn delivery_figures(&self) -> Vec<(&'static str, String)> {
        let (acks, finished) = &self.app;
        let latencies = &self.latencies;
        vec![
            ("devices", self.devices.to_string()),
            ("rate", self.rate.to_string()),
            ("sent", self.sent.to_string()),
            ("send_rate", num(self.sent as f64 / finished.as_secs_f64())),
            ("received", self.received.to_string()),
            ("measured", latencies.len().to_string()),
            ("p50_ms", num(percentile_ms(latencies, 0.50))),
            ("p99_ms", num(percentile_ms(latencies, 0.99))),
            ("max_ms", num(percentile_ms(latencies, 1.0))),
            ("acks", acks.latencies.len().to_string()),
        ]
    }

    /// The latency of the app's acknowledgements.
    pub(crate) fn ack_figures(&self) -> [(&'static str, String); 2] {
        let acks = &self.app.0.latencies;
        [
            ("ack_p50_ms", num(percentile_ms(acks, 0.50))),
            ("ack_p99_ms", num(percentile_ms(acks, 0.99))),
        ]
    }
}

/// Sends the messages of `paced`, all those due at once: `encode(seq, out)` adds message `seq`
/// to the batch `out`, `send(out)` sends the batch (and empties it), and the batch's send time
/// goes into the send times.
async fn send_paced<Batch: Default>(
    paced: &Paced<'_>,
    mut encode: impl FnMut(usize, &mut Batch),
    mut send: impl AsyncFnMut(&mut Batch) -> Result<()>,
) -> Result<()> {
    let Paced {
        times,
        started,
        epoch,
    } = *paced;
    let (total, rate) = (times.total, times.rate as f64);
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
            times.stamp(next..due, nanos_since(epoch).max(1));
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
    /// of the warm-up are counted but not timed.
    pub(crate) fn spawn(
        devices: Vec<DeviceLink>,
        times: &SendTimes,
        stopped: &watch::Receiver<bool>,
        epoch: Instant,
    ) -> Self {
        let mut receivers = JoinSet::new();
        for mut device in devices {
            let (times, mut stopped) = (times.clone(), stopped.clone());
            receivers.spawn(async move {
                let mut latencies = Vec::new();
                let mut received = 0u64;
                loop {
                    let mut values = Vec::new();
                    let read = device.read(|incoming| {
                        if let DeviceIncoming::AppWrite(value) = incoming {
                            values.push(value);
                        }
                    });
                    if !matches!(unless_stopped(&mut stopped, read).await, Some(Ok(true))) {
                        break;
                    }
                    let now = nanos_since(epoch);
                    for value in values {
                        received += 1;
                        if let Ok(seq) = usize::try_from(value)
                            && let Some(latency) = times.latency(seq, now)
                        {
                            latencies.push(latency);
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
    pub(crate) async fn collect(self) -> Result<(Vec<u64>, u64)> {
        all_received(self.0).await
    }
}
