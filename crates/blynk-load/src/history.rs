//! Row "HTTP write with 4 million history rows vs none": the store's history is filled straight
//! in the SQLite file before the server starts (1,000 devices x 4 pins x 1,000 rows, the
//! retention rule's steady state, by a recursive CTE), then one keep-alive client times app
//! REST writes one after another.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;

use super::measure::{num, percentile_ms};
use super::{PINS, Target, TargetArgs, TempData, populate, start_in_process, stop_in_process};

#[derive(Args, Clone, Debug)]
pub struct HistoryArgs {
    /// Devices, each with history on its first `--pins` pins.
    #[arg(long, default_value_t = 1_000)]
    pub devices: usize,
    /// Pins per device with history.
    #[arg(long, default_value_t = 4)]
    pub pins: u32,
    /// History rows per pin (0: none, the comparison run).
    #[arg(long, default_value_t = 1_000)]
    pub rows_per_pin: u32,
    /// Seconds of writes.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// At most this many writes.
    #[arg(long, default_value_t = 2_000)]
    pub max_writes: usize,
}

/// Prepares the server (child process) over a store with the history, then times the writes.
pub fn run(
    target_args: &TargetArgs,
    args: &HistoryArgs,
    load: &tokio::runtime::Runtime,
) -> Result<Vec<(&'static str, String)>> {
    let pins = args.pins.clamp(1, PINS);
    let data = TempData::new()?;
    let (runtime, server) = start_in_process(&data.0, target_args.durability)?;
    let engine = server.engine().clone();
    let devices = runtime.block_on(populate(&engine, args.devices, false))?;
    drop(engine);
    stop_in_process(runtime, server);

    let filling = Instant::now();
    let rows = fill_history(&data.0, &devices, pins, args.rows_per_pin)?;
    let fill_seconds = filling.elapsed().as_secs_f64();
    eprintln!("  {rows} history rows written in {fill_seconds:.1} s");

    let starting = Instant::now();
    let target = Target::child(target_args, data, devices)?;
    let start_seconds = starting.elapsed().as_secs_f64();
    let timed = load.block_on(time_writes(&target, args, pins));
    target.stop();
    let latencies = timed?;
    Ok(vec![
        ("history_rows", rows.to_string()),
        ("server_start_seconds", num(start_seconds)),
        ("writes", latencies.len().to_string()),
        ("p50_ms", num(percentile_ms(&latencies, 0.50))),
        ("p99_ms", num(percentile_ms(&latencies, 0.99))),
        ("max_ms", num(percentile_ms(&latencies, 1.0))),
    ])
}

/// Writes `rows_per_pin` history rows on each of the first `pins` pins of every device, and the
/// latest value of each, in one transaction; returns the history rows written.
fn fill_history(
    data: &std::path::Path,
    devices: &[super::DeviceRef],
    pins: u32,
    rows_per_pin: u32,
) -> Result<u64> {
    if rows_per_pin == 0 {
        return Ok(0);
    }
    let path = data.join(blynk_server::DATABASE_FILE);
    let mut connection =
        rusqlite::Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
    connection.pragma_update(None, "synchronous", "OFF")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let transaction = connection.transaction()?;
    let mut rows = 0u64;
    {
        // Versions count up per device across its pins, oldest first, one second apart.
        let mut history = transaction.prepare(
            "WITH RECURSIVE
               k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?2),
               p(pin) AS (SELECT 0 UNION ALL SELECT pin + 1 FROM p WHERE pin + 1 < ?3)
             INSERT INTO history (device_id, pin, version, value, set_at, origin)
             SELECT ?1, 'V' || p.pin, (k.n - 1) * ?3 + p.pin + 1, CAST(k.n AS TEXT),
                    ?4 - (?2 - k.n) * 1000, 'device'
             FROM k, p ORDER BY p.pin, k.n",
        )?;
        let mut latest = transaction.prepare(
            "WITH RECURSIVE p(pin) AS (SELECT 0 UNION ALL SELECT pin + 1 FROM p WHERE pin + 1 < ?3)
             INSERT OR REPLACE INTO latest_values (device_id, pin, value, version, set_at, origin)
             SELECT ?1, 'V' || p.pin, CAST(?2 AS TEXT), (?2 - 1) * ?3 + p.pin + 1, ?4, 'device'
             FROM p",
        )?;
        for device in devices {
            rows += history.execute(rusqlite::params![device.id, rows_per_pin, pins, now])? as u64;
            latest.execute(rusqlite::params![device.id, rows_per_pin, pins, now])?;
        }
    }
    transaction.commit()?;
    Ok(rows)
}

/// App REST writes one after another, to every device and pin with history in turn, until the
/// time or the count runs out; each write's time to its 200.
async fn time_writes(target: &Target, args: &HistoryArgs, pins: u32) -> Result<Vec<u64>> {
    let mut connection = super::app_client(target.http, &target.admin_key)?
        .connect()
        .await?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut index = 0usize;
    while started.elapsed().as_secs_f64() < args.seconds && latencies.len() < args.max_writes {
        let device = &target.devices[index % target.devices.len()];
        let pin = (index / target.devices.len()) as u32 % pins;
        let body = format!(r#"{{"value":{},"wait_ms":0}}"#, 1_000_000 + index).into_bytes();
        let path = format!("/api/devices/{}/values/V{pin}", device.id);
        let sent = Instant::now();
        // The client allows a call 30 s before it gives up with a timeout error.
        connection
            .call(blynk_client::Method::PUT, &path, Some(body), Duration::ZERO)
            .await
            .context("HTTP write")?;
        latencies.push(sent.elapsed().as_nanos() as u64);
        index += 1;
    }
    latencies.sort_unstable();
    Ok(latencies)
}
