//! The `reconnect-storm` scenario: every device connects at once and waits for its sync.

use super::*;

pub(crate) async fn reconnect_storm(target: &Target, args: &StormArgs) -> Result<String> {
    let devices = &target.devices[..args.devices.min(target.devices.len())];
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
        let mut storm = JoinSet::new();
        for device in devices {
            let (native, token) = (target.native, device.token.clone());
            storm.spawn(async move {
                let attempt = async {
                    let mut conn = NativeConn::login(native, &token, true, 600).await?;
                    let mut synced = 0u32;
                    loop {
                        match conn.recv().await? {
                            Some(Incoming::Synced) => synced += 1,
                            Some(Incoming::SyncComplete(count)) => {
                                return Ok::<_, anyhow::Error>((
                                    started.elapsed(),
                                    synced,
                                    u32::from(count),
                                    conn,
                                ));
                            }
                            Some(Incoming::Error(error)) => bail!("error: {error}"),
                            Some(_) => {}
                            None => bail!("closed before SyncComplete"),
                        }
                    }
                };
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(result) => result,
                    Err(_) => bail!("no SyncComplete within the storm's timeout"),
                }
            });
        }
        let mut times = Vec::with_capacity(devices.len());
        let mut held = Vec::with_capacity(devices.len());
        let (mut incomplete, mut failures) = (0usize, Vec::new());
        while let Some(done) = storm.join_next().await {
            match done {
                Ok(Ok((elapsed, synced, count, conn))) => {
                    if synced != PINS || count != PINS {
                        incomplete += 1;
                    }
                    times.push(elapsed);
                    held.push(conn);
                }
                Ok(Err(error)) => failures.push(error.to_string()),
                Err(error) => failures.push(error.to_string()),
            }
        }
        let all_done = started.elapsed();
        times.sort_unstable();
        let at = |p: f64| -> f64 {
            if times.is_empty() {
                return f64::NAN;
            }
            let index = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
            times[index].as_secs_f64()
        };
        failures.sort();
        failures.dedup();
        rounds.push(format!(
            "round {}: all synced in {:.3} s (p50 {:.3} s, p99 {:.3} s), {} synced, {} with \
             fewer than 16 values, {} failed{}",
            round + 1,
            all_done.as_secs_f64(),
            at(0.5),
            at(0.99),
            times.len(),
            incomplete,
            devices.len() - times.len(),
            if failures.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    failures
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ));
        measure::print_figures(
            "reconnect-storm",
            "server",
            &[
                ("durability", durability_of(target).to_owned()),
                ("run", (round + 1).to_string()),
                ("devices", devices.len().to_string()),
                ("all_synced_seconds", measure::num(all_done.as_secs_f64())),
                ("p99_seconds", measure::num(at(0.99))),
                ("failed", (devices.len() - times.len()).to_string()),
                ("incomplete", incomplete.to_string()),
            ],
        );
        drop(held);
        // Let the server see every connection go before the next storm.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(format!(
        "reconnect-storm: {} native devices with 16 synced pins each log in at once with \
         sync_on_connect, {} durability, {}: {} [target < 1 s]",
        devices.len(),
        durability_of(target),
        target.mode(),
        rounds.join("; "),
    ))
}
