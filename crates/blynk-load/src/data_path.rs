//! The data-path rows of the performance table, run alike against blynk-server and Mosquitto:
//!
//! - `device-to-app`: every device writes a fixed number of values as fast as its system takes
//!   them; one app watches every device. Reached = the watcher holds the last value written to
//!   every pin (a coalesced value counts), lost = pins where it does not;
//! - `device-to-app-rate`: devices write at a fixed total rate; latency from a device's send to
//!   the watcher receiving that value (the rate ladder is this row at several rates);
//! - `app-to-device`: one app writes at a fixed rate; latency to the device receiving it, and
//!   to the acknowledgement (`stored` on the app WebSocket, PUBACK from Mosquitto).
//!
//! Each value written is unique (a sequence number, or device and counter), so the receiving
//! side knows which send it answers. CPU is the system's own process (`/proc/<pid>/stat`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinSet;

use super::links::{DeviceIncoming, DeviceLink, DeviceWriter, System, UnderTest, connect_devices};
use super::measure::{CpuMeter, SendTimes, Timing, num, percentile_ms, unless_stopped};
use super::watch_links::{ValueSink, WatchEnd, WatcherLink, open_watcher, run_watcher};
use super::{PINS, SETUP_TIMEOUT, nanos_since};

/// Messages in flight per device in the flood: classic devices send a PING after every
/// [`CLASSIC_BATCH`] writes and keep two batches unanswered; MQTT devices keep this many
/// PUBACKs outstanding.
const WINDOW: usize = 64;
const CLASSIC_BATCH: usize = 32;

#[derive(Args, Clone, Debug)]
pub struct FloodArgs {
    /// The system measured.
    #[arg(long, value_enum, default_value_t = System::Server)]
    pub system: System,
    /// Devices writing (classic Blynk on the server, MQTT clients on Mosquitto).
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Values each device writes, spread over its 16 pins.
    #[arg(long, default_value_t = 200)]
    pub per_device: usize,
    /// Seconds the watcher may take to hold every final value once the devices are done.
    #[arg(long, default_value_t = 20.0)]
    pub drain_seconds: f64,
}

#[derive(Args, Clone, Debug)]
pub struct RateArgs {
    /// The system measured.
    #[arg(long, value_enum, default_value_t = System::Server)]
    pub system: System,
    /// Devices writing.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Device writes per second, in total.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    #[command(flatten)]
    pub timing: Timing,
    /// Seconds the watcher may take to hold every final value once the devices are done.
    #[arg(long, default_value_t = 5.0)]
    pub drain_seconds: f64,
}

#[derive(Args, Clone, Debug)]
pub struct AppWriteArgs {
    /// The system measured.
    #[arg(long, value_enum, default_value_t = System::Server)]
    pub system: System,
    /// Devices receiving the writes.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// App writes per second, from one app connection.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    #[command(flatten)]
    pub timing: Timing,
}

/// The final value expected on every (device, pin) and what the watcher holds.
pub(crate) struct FinalValues {
    expected: Vec<Option<i64>>,
    latest: Vec<Option<i64>>,
    wanted: usize,
    matched: usize,
    pub(crate) reached_at: Option<u64>,
    pub(crate) last_event_at: u64,
    pub(crate) events: u64,
    pub(crate) changes: u64,
}

impl FinalValues {
    pub(crate) fn new(expected: Vec<Option<i64>>) -> Self {
        let wanted = expected.iter().filter(|value| value.is_some()).count();
        FinalValues {
            latest: vec![None; expected.len()],
            expected,
            wanted,
            matched: 0,
            reached_at: None,
            last_event_at: 0,
            events: 0,
            changes: 0,
        }
    }

    fn record(&mut self, now: u64, index: usize, pin: u32, value: i64, coalesced: u64) {
        self.events += 1;
        self.changes += coalesced;
        self.last_event_at = now;
        let slot = index * PINS as usize + pin as usize;
        let (Some(expected), Some(latest)) = (self.expected.get(slot), self.latest.get_mut(slot))
        else {
            return;
        };
        let was = expected.is_some() && *latest == *expected;
        *latest = Some(value);
        let is = expected.is_some() && *latest == *expected;
        match (was, is) {
            (false, true) => self.matched += 1,
            (true, false) => self.matched -= 1,
            _ => {}
        }
        if self.matched == self.wanted && self.reached_at.is_none() {
            self.reached_at = Some(now);
        }
    }

    pub(crate) fn lost(&self) -> usize {
        self.wanted - self.matched
    }
}

impl ValueSink for FinalValues {
    fn value(&mut self, now: u64, index: usize, pin: u32, value: i64, coalesced: u64) {
        self.record(now, index, pin, value, coalesced);
    }

    fn complete(&self) -> bool {
        self.matched == self.wanted
    }
}

/// Final values plus the latency of every value whose send time is known.
pub(crate) struct TimedValues {
    pub(crate) finals: FinalValues,
    times: SendTimes,
    pub(crate) latencies: Vec<u64>,
}

impl ValueSink for TimedValues {
    fn value(&mut self, now: u64, index: usize, pin: u32, value: i64, coalesced: u64) {
        self.finals.record(now, index, pin, value, coalesced);
        if let Ok(seq) = usize::try_from(value)
            && let Some(at) = self.times.measured(seq)
            && at > 0
        {
            self.latencies.push(now.saturating_sub(at));
        }
    }

    fn complete(&self) -> bool {
        self.finals.complete()
    }
}

/// Waits until `complete` is set, the watcher task ends, or `limit` passes.
async fn wait_complete<T>(
    complete: &AtomicBool,
    watcher: &tokio::task::JoinHandle<T>,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while !complete.load(Ordering::Relaxed) && !watcher.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Row "device -> app, as fast as they can".
pub async fn device_to_app(
    under_test: &UnderTest,
    args: &FloodArgs,
) -> Result<Vec<(&'static str, String)>> {
    let per_device = args.per_device.max(PINS as usize);
    let devices = connect_devices(under_test, args.devices, false).await?;
    let watcher = open_watcher(under_test).await?;
    let mut expected = vec![None; args.devices * PINS as usize];
    for index in 0..args.devices {
        for pin in 0..PINS as usize {
            let last = pin + PINS as usize * ((per_device - 1 - pin) / PINS as usize);
            expected[index * PINS as usize + pin] = Some(flood_value(index, last));
        }
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let complete = Arc::new(AtomicBool::new(false));
    let cpu = CpuMeter::start(under_test.pid()?)?;
    let epoch = Instant::now();
    let watching = tokio::spawn(run_watcher(
        watcher,
        FinalValues::new(expected),
        epoch,
        stopped,
        complete.clone(),
    ));
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT * 2;
    // Each task hands its connection back: devices stay connected until the watcher is done,
    // as real ones would, so that no write is cut short by its connection closing.
    let mut writers: JoinSet<Result<(usize, DeviceLink)>> = JoinSet::new();
    for mut device in devices {
        writers.spawn(async move {
            match tokio::time::timeout_at(deadline, flood(&mut device, per_device)).await {
                Ok(result) => result.map(|sent| (sent, device)),
                Err(_) => bail!("the device's writes were not all taken within the deadline"),
            }
        });
    }
    let (mut sent, mut failures, mut connected) = (0usize, Vec::new(), Vec::new());
    while let Some(done) = writers.join_next().await {
        match done {
            Ok(Ok((count, device))) => {
                sent += count;
                connected.push(device);
            }
            Ok(Err(error)) => failures.push(error.to_string()),
            Err(error) => failures.push(error.to_string()),
        }
    }
    let send_seconds = epoch.elapsed().as_secs_f64();
    wait_complete(
        &complete,
        &watching,
        Duration::from_secs_f64(args.drain_seconds),
    )
    .await;
    let _ = stop.send(true);
    let (finals, end) = watching.await.context("the watcher task")?;
    let cpu_us = cpu.micros_per(sent as u64)?;
    drop(connected);
    let reach_seconds = finals.reached_at.map(|at| at as f64 / 1e9);
    let delivered_seconds = (finals.last_event_at as f64 / 1e9).max(1e-9);
    failures.sort();
    failures.dedup();
    if let Some(failure) = failures.first() {
        eprintln!("  {} device(s) failed: {failure}", failures.len());
    }
    end.tell("the watcher");
    Ok(vec![
        ("devices", args.devices.to_string()),
        ("sent", sent.to_string()),
        ("send_rate", num(sent as f64 / send_seconds)),
        ("reached", u8::from(reach_seconds.is_some()).to_string()),
        (
            "reached_rate",
            num(reach_seconds.map_or(f64::NAN, |seconds| sent as f64 / seconds)),
        ),
        ("reach_seconds", num(reach_seconds.unwrap_or(f64::NAN))),
        ("value_events", finals.events.to_string()),
        ("event_rate", num(finals.events as f64 / delivered_seconds)),
        ("changes", finals.changes.to_string()),
        ("lost_pins", finals.lost().to_string()),
        ("watcher_closed", u8::from(end.closed.is_some()).to_string()),
        ("device_failures", failures.len().to_string()),
        ("cpu_us_per_msg", num(cpu_us)),
    ])
}

/// Writes `per_device` values from one device as fast as its system takes them (a window of
/// unanswered writes); the number written.
async fn flood(device: &mut DeviceLink, per_device: usize) -> Result<usize> {
    let mut out = Vec::with_capacity(WINDOW * 24);
    let (mut sent, mut outstanding, mut in_batch) = (0usize, 0usize, 0usize);
    let mut batches = std::collections::VecDeque::new();
    while sent < per_device || outstanding > 0 {
        while outstanding < WINDOW && sent < per_device {
            device.writer.push_write(
                &mut out,
                (sent % PINS as usize) as u32,
                flood_value(device.index(), sent),
            )?;
            sent += 1;
            outstanding += 1;
            in_batch += 1;
            if (in_batch == CLASSIC_BATCH || sent == per_device)
                && device.writer.push_ping(&mut out)?
            {
                batches.push_back(in_batch);
            }
            if in_batch == CLASSIC_BATCH || sent == per_device {
                in_batch = 0;
            }
        }
        if !out.is_empty() {
            device.writer.write.write_all(&out).await?;
            out.clear();
        }
        let mut refused = 0;
        let open = device
            .read(|incoming| match incoming {
                DeviceIncoming::Acknowledged => {
                    // A PING answers its batch; a PUBACK (no batches) its one write.
                    outstanding = outstanding.saturating_sub(batches.pop_front().unwrap_or(1));
                }
                DeviceIncoming::Refused => refused += 1,
                _ => {}
            })
            .await?;
        if !open {
            bail!("closed by the system after {sent} writes");
        }
        if refused > 0 {
            bail!("{refused} writes refused");
        }
    }
    Ok(sent)
}

fn flood_value(index: usize, counter: usize) -> i64 {
    (index * 1_000_000 + counter) as i64
}

/// Sequence `seq` of a fixed-rate run goes to this (device index, pin).
pub(crate) fn slot_of(seq: usize, devices: usize) -> (usize, u32) {
    (seq % devices, ((seq / devices) % PINS as usize) as u32)
}

/// Row "device -> app at a fixed rate" (and each rung of the rate ladder).
pub async fn device_to_app_rate(
    under_test: &UnderTest,
    args: &RateArgs,
) -> Result<Vec<(&'static str, String)>> {
    let times = SendTimes::new("the rate row", args.devices, args.rate, &args.timing)?;
    let devices = connect_devices(under_test, args.devices, false).await?;
    let watcher = open_watcher(under_test).await?;
    let cpu = CpuMeter::start(under_test.pid()?)?;
    let watched = send_to_watchers(devices, vec![watcher], &times, args.drain_seconds).await?;
    let (sent, send_seconds) = (watched.sent, watched.send_seconds);
    let cpu_us = cpu.micros_per(sent as u64)?;
    let (timed, end) = watched.watchers.into_iter().next().context("the watcher")?;
    let latencies = &timed.latencies;
    end.tell("the watcher");
    Ok(vec![
        ("devices", args.devices.to_string()),
        ("rate", args.rate.to_string()),
        ("sent", sent.to_string()),
        ("send_rate", num(sent as f64 / send_seconds)),
        ("measured", latencies.len().to_string()),
        ("p50_ms", num(percentile_ms(latencies, 0.50))),
        ("p99_ms", num(percentile_ms(latencies, 0.99))),
        ("p999_ms", num(percentile_ms(latencies, 0.999))),
        ("max_ms", num(percentile_ms(latencies, 1.0))),
        ("value_events", timed.finals.events.to_string()),
        ("changes", timed.finals.changes.to_string()),
        ("lost_pins", timed.finals.lost().to_string()),
        (
            "all_delivered",
            u8::from(timed.finals.complete()).to_string(),
        ),
        ("watcher_closed", u8::from(end.closed.is_some()).to_string()),
        ("cpu_us_per_msg", num(cpu_us)),
    ])
}

/// What [`send_to_watchers`] saw: each watcher's values (latencies sorted) and how it ended,
/// in the order of the watchers; the writes sent, the senders that failed, and the time the
/// sending took.
pub(crate) struct Watched {
    pub watchers: Vec<(TimedValues, WatchEnd)>,
    pub sent: usize,
    pub failures: usize,
    pub send_seconds: f64,
}

/// The device -> app rows at a fixed rate: sends the writes of `times` at its rate
/// from `devices` (see [`send_from_devices`]) while each of `watchers` times every value it
/// receives, then gives each watcher `drain_seconds` to hold every final value (the last write
/// to each pin).
pub(crate) async fn send_to_watchers(
    devices: Vec<DeviceLink>,
    watchers: Vec<WatcherLink>,
    times: &SendTimes,
    drain_seconds: f64,
) -> Result<Watched> {
    let count = devices.len();
    let mut expected = vec![None; count * PINS as usize];
    for seq in 0..times.total {
        let (index, pin) = slot_of(seq, count);
        expected[index * PINS as usize + pin as usize] = Some(seq as i64);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let epoch = Instant::now();
    let mut watching = Vec::new();
    for watcher in watchers {
        let complete = Arc::new(AtomicBool::new(false));
        let sink = TimedValues {
            finals: FinalValues::new(expected.clone()),
            times: times.clone(),
            latencies: Vec::with_capacity(times.total),
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
    let PacedDevices {
        mut readers,
        connected,
        failures,
        send_seconds,
    } = send_from_devices(devices, times, epoch, &stopped).await;
    for (task, complete) in &watching {
        wait_complete(complete, task, Duration::from_secs_f64(drain_seconds)).await;
    }
    let _ = stop.send(true);
    let mut watched = Vec::new();
    for (task, _) in watching {
        let (mut timed, end): (TimedValues, WatchEnd) = task.await.context("a watcher task")?;
        timed.latencies.sort_unstable();
        watched.push((timed, end));
    }
    readers.abort_all();
    drop(connected);
    if let Some(failure) = failures.first() {
        eprintln!("  {} sender(s) failed: {failure}", failures.len());
    }
    Ok(Watched {
        watchers: watched,
        sent: times.sent(),
        failures: failures.len(),
        send_seconds,
    })
}

/// What [`send_from_devices`] leaves: the tasks draining what the devices receive (abort them
/// when done), the connections of the senders that finished (held open until the watchers are
/// done), the senders' failures and the time the sending took.
struct PacedDevices {
    readers: JoinSet<()>,
    connected: Vec<DeviceWriter>,
    failures: Vec<String>,
    send_seconds: f64,
}

/// Sends writes `0..times.total` at its rate in all from `devices` (write `seq` from device
/// `seq mod devices`, its value `seq`), stamping each send time in `times`; what the devices
/// receive is read and dropped until `stopped` changes. Senders still sending
/// [`SETUP_TIMEOUT`] after the run's duration are aborted and counted as failed.
async fn send_from_devices(
    devices: Vec<DeviceLink>,
    times: &SendTimes,
    epoch: Instant,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> PacedDevices {
    let (total, rate) = (times.total, times.rate);
    let send_limit = times.duration + SETUP_TIMEOUT;
    let started = Instant::now() + Duration::from_millis(50);
    let seconds_per_message = 1.0 / rate as f64;
    let count = devices.len();
    let mut senders: JoinSet<Result<DeviceWriter>> = JoinSet::new();
    let mut readers = JoinSet::new();
    for device in devices {
        let times = times.clone();
        let DeviceLink {
            mut writer,
            mut reader,
        } = device;
        let mut stopped = stopped.clone();
        readers.spawn(async move {
            let mut owed = Vec::new();
            while let Some(Ok(true)) =
                unless_stopped(&mut stopped, reader.read(|_| {}, &mut owed)).await
            {}
        });
        senders.spawn(async move {
            let mut out = Vec::with_capacity(64);
            for seq in (writer.index..total).step_by(count) {
                let due = started + Duration::from_secs_f64(seq as f64 * seconds_per_message);
                tokio::time::sleep_until(due.into()).await;
                let (_, pin) = slot_of(seq, count);
                writer.push_write(&mut out, pin, seq as i64)?;
                times.stamp(seq..seq + 1, nanos_since(epoch).max(1));
                writer.write.write_all(&out).await?;
                out.clear();
            }
            Ok(writer)
        });
    }
    let (mut failures, mut connected) = (Vec::new(), Vec::new());
    loop {
        match tokio::time::timeout(send_limit, senders.join_next()).await {
            Ok(Some(Ok(Ok(writer)))) => connected.push(writer),
            Ok(Some(Ok(Err(error)))) => failures.push(error.to_string()),
            Ok(Some(Err(error))) => failures.push(error.to_string()),
            Ok(None) => break,
            Err(_) => {
                failures.push("sending took too long".to_owned());
                senders.abort_all();
                break;
            }
        }
    }
    PacedDevices {
        readers,
        connected,
        failures,
        send_seconds: started.elapsed().as_secs_f64(),
    }
}
