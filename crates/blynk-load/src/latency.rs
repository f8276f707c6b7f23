//! The `latency` scenario: app writes at a fixed rate, timed until the device receives them.

use blynk_client::Method;

use super::measure::{SendTimes, all_received, percentile_ms, unless_stopped};
use super::*;

pub(crate) async fn latency(target: &Target, args: &LatencyArgs) -> Result<String> {
    let devices = &target.devices[..args.devices.min(target.devices.len())];
    if devices.is_empty() || args.senders == 0 || args.rate == 0 {
        bail!("latency needs devices, senders and a rate");
    }
    let times = SendTimes::new("latency", devices.len(), args.rate, &args.timing)?;
    let total = times.total;
    let epoch = Instant::now();

    // The devices, recording the latency of each update they receive.
    let conns = NativeConn::login_many(target.native, devices, devices.len(), 600).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut receivers = JoinSet::new();
    for mut conn in conns {
        let (times, mut stopped) = (times.clone(), stopped.clone());
        receivers.spawn(async move {
            let mut latencies: Vec<u64> = Vec::with_capacity(total);
            let mut received = 0u64;
            while let Some(Ok(1..)) = unless_stopped(&mut stopped, conn.fill()).await {
                let now = nanos_since(epoch);
                while let Ok(Some(incoming)) = conn.next() {
                    if let Incoming::Update(Some(seq)) = incoming {
                        received += 1;
                        if let Some(latency) = times.latency(seq as usize, now) {
                            latencies.push(latency);
                        }
                    }
                }
            }
            (latencies, received)
        });
    }

    // The senders: seq s goes from sender s % senders, to device s % devices, pin (s / devices) % 16.
    let errors = Arc::new(AtomicU64::new(0));
    let rate_each = args.rate as f64 / args.senders as f64;
    let ids: Arc<Vec<i64>> = Arc::new(devices.iter().map(|device| device.id).collect());
    let mut senders = JoinSet::new();
    let started = Instant::now();
    for sender in 0..args.senders {
        let mine = (sender..total)
            .step_by(args.senders)
            .collect::<Vec<usize>>();
        let (times, ids, errors) = (times.clone(), ids.clone(), errors.clone());
        let (http, key, via) = (target.http, target.admin_key.clone(), args.via);
        senders.spawn(async move {
            let write_of = |seq: usize| {
                let device = ids[seq % ids.len()];
                let pin = (seq / ids.len()) % PINS as usize;
                (device, pin)
            };
            match via {
                Via::Ws => {
                    let (mut sender, mut receiver) = app_socket(http, &key).await?.split();
                    let (drain_errors, replies_times) = (errors.clone(), times.clone());
                    let expected = mine.len();
                    let replies_deadline = tokio::time::Instant::from_std(started)
                        + Duration::from_secs_f64(mine.len() as f64 / rate_each)
                        + Duration::from_secs(3);
                    // Replies: "stored" (or "pending") once durable, timed; then "delivered".
                    let replies = tokio::spawn(async move {
                        let mut stored: Vec<u64> = Vec::with_capacity(expected);
                        let mut answered = 0;
                        while answered < expected {
                            let text =
                                match tokio::time::timeout_at(replies_deadline, receiver.recv())
                                    .await
                                {
                                    Ok(Ok(text)) => text,
                                    _ => break,
                                };
                            let now = nanos_since(epoch);
                            if text.contains("\"error\"") {
                                drain_errors.fetch_add(1, Ordering::Relaxed);
                                answered += 1;
                            } else if text.contains("\"stored\"") || text.contains("\"pending\"") {
                                answered += 1;
                                let reply: serde_json::Value =
                                    serde_json::from_str(&text).unwrap_or_default();
                                if let Some(seq) = reply["id"].as_u64()
                                    && let Some(latency) = replies_times.latency(seq as usize, now)
                                {
                                    stored.push(latency);
                                }
                            }
                        }
                        stored
                    });
                    let mut next = 0;
                    while next < mine.len() {
                        let due = ((started.elapsed().as_secs_f64() * rate_each) as usize + 1)
                            .min(mine.len());
                        let batch = next..due.max(next);
                        for &seq in &mine[batch.clone()] {
                            let (device, pin) = write_of(seq);
                            sender
                                .feed_text(format!(
                                    r#"{{"type":"write","id":{seq},"device":{device},"pin":"V{pin}","value":{seq}}}"#
                                ))
                                .await?;
                        }
                        if !batch.is_empty() {
                            let now = nanos_since(epoch);
                            for &seq in &mine[batch.clone()] {
                                times.stamp(seq..seq + 1, now);
                            }
                            sender.flush().await?;
                        }
                        next = batch.end;
                        // Until the next write of this sender is due.
                        let at = started + Duration::from_secs_f64(next as f64 / rate_each);
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let finished = started.elapsed();
                    let stored = replies.await.unwrap_or_default();
                    Ok::<_, anyhow::Error>((stored, finished))
                }
                Via::Rest => {
                    let mut connection = app_client(http, &key)?.connect().await?;
                    let mut stored = Vec::with_capacity(mine.len());
                    for (k, &seq) in mine.iter().enumerate() {
                        let due = started + Duration::from_secs_f64(k as f64 / rate_each);
                        tokio::time::sleep_until(due.into()).await;
                        let (device, pin) = write_of(seq);
                        let body = format!(r#"{{"value":{seq},"wait_ms":0}}"#).into_bytes();
                        let path = format!("/api/devices/{device}/values/V{pin}");
                        let sent = nanos_since(epoch);
                        times.stamp(seq..seq + 1, sent);
                        match connection.call(Method::PUT, &path, Some(body), Duration::ZERO).await {
                            Ok(_) if seq >= times.measured_from => {
                                stored.push(nanos_since(epoch).saturating_sub(sent))
                            }
                            Ok(_) => {}
                            Err(blynk_client::Error::Refused { .. }) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => return Err(error.into()),
                        }
                    }
                    Ok((stored, started.elapsed()))
                }
            }
        });
    }
    let mut sender_failures = Vec::new();
    let mut stored_latencies: Vec<u64> = Vec::with_capacity(total);
    let mut finished = Duration::ZERO;
    let send_deadline =
        Duration::from_secs_f64(args.timing.warmup + args.timing.seconds) + SETUP_TIMEOUT;
    while let Ok(Some(done)) = tokio::time::timeout(send_deadline, senders.join_next()).await {
        match done {
            Ok(Ok((stored, sender_finished))) => {
                stored_latencies.extend(stored);
                finished = finished.max(sender_finished);
            }
            Ok(Err(error)) => sender_failures.push(error.to_string()),
            Err(error) => sender_failures.push(error.to_string()),
        }
    }
    let sending = finished.as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    let (latencies, received) = all_received(receivers).await?;
    stored_latencies.sort_unstable();
    let percentile = |p: f64| percentile_ms(&latencies, p);
    if !sender_failures.is_empty() {
        eprintln!("  latency senders failed: {sender_failures:?}");
    }
    Ok(format!(
        "latency: {} app writes/s via {} over {} connections to {} native devices (16 pins), {} \
         durability, {}; {} measured over {:.1} s after {:.1} s warm-up (sending took {:.1} s): \
         send -> device Update p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; send -> \
         \"stored\" reply p50 {:.3} ms, p99 {:.3} ms; received {}/{} sent (an older value is not \
         sent once a newer one of its pin was), {} errors [target p99 <= 1 ms at 10k msg/s]",
        args.rate,
        match args.via {
            Via::Ws => "app WebSocket",
            Via::Rest => "REST PUT",
        },
        args.senders,
        devices.len(),
        durability_of(target),
        target.mode(),
        latencies.len(),
        args.timing.seconds,
        args.timing.warmup,
        sending,
        percentile(0.50),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0),
        percentile_ms(&stored_latencies, 0.50),
        percentile_ms(&stored_latencies, 0.99),
        received,
        total,
        errors.load(Ordering::Relaxed) + sender_failures.len() as u64,
    ))
}
