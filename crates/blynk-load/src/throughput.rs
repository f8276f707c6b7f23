//! The `throughput` scenario: devices write as fast as they are acknowledged while app
//! watchers watch every device.

use blynk_client::events::{AppEvent, count_values, for_each_event};
use blynk_proto::classic::Command;

use super::*;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) acked: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) classic_accepted: AtomicU64,
    pub(crate) watcher_values: AtomicU64,
    pub(crate) watchers_closed: AtomicU64,
    pub(crate) devices_closed: AtomicU64,
}

pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) acked: u64,
    pub(crate) classic: u64,
    pub(crate) watched: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            acked: self.acked.load(Ordering::Relaxed),
            classic: self.classic_accepted.load(Ordering::Relaxed),
            watched: self.watcher_values.load(Ordering::Relaxed),
        }
    }
}

pub(crate) async fn throughput(target: &Target, args: &ThroughputArgs) -> Result<String> {
    let counters = Arc::new(Counters::default());
    let ids: Vec<i64> = target.devices.iter().map(|device| device.id).collect();
    let watch = serde_json::json!({ "type": "watch", "devices": ids }).to_string();

    // Watchers first, so every write from the first on has its audience.
    let mut setup: JoinSet<Result<blynk_client::AppSocket>> = JoinSet::new();
    for _ in 0..args.watchers {
        let (http, key, watch) = (target.http, target.admin_key.clone(), watch.clone());
        setup.spawn(async move {
            let mut socket = app_socket(http, &key).await?;
            socket.send_text(watch).await?;
            let mut snapshot = false;
            while !snapshot {
                let text = socket.recv().await?;
                for_each_event(text.as_bytes(), |event| {
                    snapshot |= event == AppEvent::Snapshot;
                });
            }
            Ok(socket)
        });
    }
    let watchers = join_all_ok(&mut setup, "watchers").await?;
    let mut running = JoinSet::new();
    for mut socket in watchers {
        let counters = counters.clone();
        running.spawn(async move {
            // Counting reads the message where the socket received it: nothing is allocated
            // per message. The socket closing (or breaking) ends the watcher.
            while let Ok(text) = socket.recv().await {
                let values = count_values(text.as_bytes());
                counters.watcher_values.fetch_add(values, Ordering::Relaxed);
            }
            counters.watchers_closed.fetch_add(1, Ordering::Relaxed);
        });
    }

    // Native devices log in, then write in a window of unacknowledged writes.
    let (native_devices, classic_devices) = target.devices.split_at(args.devices);
    let natives =
        NativeConn::login_many(target.native, native_devices, native_devices.len(), 600).await?;
    let classics = classic_login_many(target.http, classic_devices, classic_devices.len()).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (index, mut conn) in natives.into_iter().enumerate() {
        let (counters, stop, window) = (counters.clone(), stop.clone(), args.window.max(1));
        writers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(window * 16);
            let (mut outstanding, mut id, mut value) = (0usize, 0u16, index as i64 * 1_000_000);
            let result: Result<()> = async {
                while !stop.load(Ordering::Relaxed) {
                    while outstanding < window {
                        id = id.wrapping_add(1);
                        value += 1;
                        push_frame(
                            &mut out,
                            &Message::Write(Write {
                                id,
                                pin: virtual_pin(value as u32),
                                value: Value::int(value),
                                age_ms: None,
                            }),
                        )?;
                        outstanding += 1;
                    }
                    if !out.is_empty() {
                        conn.stream.write_all(&out).await?;
                        out.clear();
                    }
                    if conn.fill().await? == 0 {
                        bail!("closed by the server");
                    }
                    let (mut acks, mut errors) = (0u64, 0u64);
                    while let Some(incoming) = conn.next()? {
                        match incoming {
                            Incoming::Ack => acks += 1,
                            Incoming::Error(_) => errors += 1,
                            _ => {}
                        }
                    }
                    outstanding = outstanding.saturating_sub((acks + errors) as usize);
                    counters.acked.fetch_add(acks, Ordering::Relaxed);
                    counters.errors.fetch_add(errors, Ordering::Relaxed);
                }
                Ok(())
            }
            .await;
            if result.is_err() {
                counters.devices_closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Classic devices have no write acks: a PING after every batch of writes is answered once
    // the server has read the batch, so "accepted" means read and handed to the engine.
    pub(crate) const BATCH: u64 = 32;
    for (index, mut stream) in classics.into_iter().enumerate() {
        let (counters, stop) = (counters.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(2048);
            let mut buffer = Vec::with_capacity(4096);
            let (mut id, mut value, mut batches_out) = (10u16, index as i64 * 1_000_000, 0);
            let result: Result<()> = async {
                while !stop.load(Ordering::Relaxed) {
                    while batches_out < 2 {
                        for _ in 0..BATCH {
                            id = id.wrapping_add(1).max(10);
                            value += 1;
                            let pin = value.rem_euclid(16) as u32;
                            classic_virtual_write(&mut out, id, pin, value)?;
                        }
                        id = id.wrapping_add(1).max(10);
                        classic_frame(&mut out, Command::Ping, id, &[])?;
                        batches_out += 1;
                    }
                    stream.write_all(&out).await?;
                    out.clear();
                    if stream.read_buf(&mut buffer).await? == 0 {
                        bail!("closed by the server");
                    }
                    let mut consumed = 0;
                    while let Some((frame, len)) = classic_next(&buffer[consumed..]) {
                        if is_ok_reply(&frame) {
                            batches_out -= 1;
                            counters
                                .classic_accepted
                                .fetch_add(BATCH, Ordering::Relaxed);
                        } else if frame.command == Command::Response {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        consumed += len;
                    }
                    buffer.drain(..consumed);
                }
                Ok(())
            }
            .await;
            if result.is_err() {
                counters.devices_closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let progress = args.progress.then(|| {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut previous = counters.snapshot();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = counters.snapshot();
                let seconds = now.at.duration_since(previous.at).as_secs_f64();
                eprintln!(
                    "  acked {:.0}/s, classic {:.0}/s, watcher values {:.0}/s, watchers closed {}",
                    (now.acked - previous.acked) as f64 / seconds,
                    (now.classic - previous.classic) as f64 / seconds,
                    (now.watched - previous.watched) as f64 / seconds,
                    counters.watchers_closed.load(Ordering::Relaxed),
                );
                previous = now;
            }
        })
    });
    tokio::time::sleep(Duration::from_secs_f64(args.timing.warmup)).await;
    let first = counters.snapshot();
    tokio::time::sleep(Duration::from_secs_f64(args.timing.seconds)).await;
    let last = counters.snapshot();
    if let Some(progress) = progress {
        progress.abort();
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers.drain(..) {
        writer.abort();
    }
    // How far behind the watchers were: let them catch up (up to 10 s) with the writes acked.
    let drain_started = Instant::now();
    let mut behind = counters.snapshot();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.snapshot();
        if now.watched == behind.watched || drain_started.elapsed() > Duration::from_secs(10) {
            break;
        }
        behind = now;
    }
    let caught_up = counters.snapshot();
    running.abort_all();
    while running.join_next().await.is_some() {}

    let seconds = last.at.duration_since(first.at).as_secs_f64();
    let rate = |from: u64, to: u64| (to - from) as f64 / seconds;
    let native_rate = rate(first.acked, last.acked);
    let classic_rate = rate(first.classic, last.classic);
    let watched_rate = rate(first.watched, last.watched);
    let classic = if args.classic > 0 {
        format!(
            ", classic {} conns: {:.0} writes/s read",
            args.classic, classic_rate
        )
    } else {
        String::new()
    };
    Ok(format!(
        "throughput: {} native devices (window {}){}, {} watchers of every device, {} durability, \
         {} over {:.1} s after {:.1} s warm-up: device writes acked {:.0}/s{}; watcher value \
         messages received {:.0}/s in total ({:.0}/s per watcher); after the writers stopped \
         the watchers took {:.1} s more to reach {:.1}% of all writes; errors {}, watchers \
         dropped {}, devices dropped {} [target >= 200,000 msgs/s]",
        args.devices,
        args.window,
        classic,
        args.watchers,
        durability_of(target),
        target.mode(),
        seconds,
        args.timing.warmup,
        native_rate,
        if args.classic > 0 {
            format!(" (+ {classic_rate:.0}/s classic)")
        } else {
            String::new()
        },
        watched_rate,
        watched_rate / args.watchers.max(1) as f64,
        caught_up.at.duration_since(last.at).as_secs_f64(),
        if args.watchers == 0 {
            0.0
        } else {
            100.0 * caught_up.watched as f64
                / args.watchers as f64
                / (caught_up.acked + caught_up.classic).max(1) as f64
        },
        counters.errors.load(Ordering::Relaxed),
        counters.watchers_closed.load(Ordering::Relaxed),
        counters.devices_closed.load(Ordering::Relaxed),
    ))
}

pub(crate) fn durability_of(target: &Target) -> &'static str {
    target.durability
}

/// Nanoseconds since `epoch`, as stored send times.
/// Reads more bytes into `buffer`, whose bytes before `start` are parsed: those are dropped
/// first (all of them, or once they pass two chunks), and room for a `chunk` is made when less
/// than a quarter of one is left. Every client of the generator reads this way; 0 when the
/// peer closed.
pub(crate) async fn read_more(
    read: &mut (impl tokio::io::AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
    start: &mut usize,
    chunk: usize,
) -> Result<usize> {
    if *start == buffer.len() {
        buffer.clear();
        *start = 0;
    } else if *start > 2 * chunk {
        buffer.drain(..*start);
        *start = 0;
    }
    if buffer.capacity() - buffer.len() < chunk / 4 {
        buffer.reserve(chunk);
    }
    Ok(read.read_buf(buffer).await?)
}

pub(crate) fn nanos_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}
