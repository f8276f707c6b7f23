//! Store write figures for each backend, the store alone (no server, no network clients):
//!
//! - commit latency: one value write at a time, each awaited until durable;
//! - throughput: rounds of `--in-flight` value writes queued at once (as many sessions writing
//!   together), each round awaited; group commit puts a round in few transactions.
//!
//! Both with full durability (SQLite fsyncs each commit; PostgreSQL with its defaults). The
//! PostgreSQL side runs against `--postgres URL`, or else a private server started like the
//! tests' (Debian's `postgresql` package, a temporary directory, a loopback port). One
//! `figure:` line per backend, with medians over the rounds:
//!
//! `cargo run --release -p blynk-server --example store_writes -- --seconds 5 --in-flight 1000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use blynk_proto::Pin;
use blynk_server::model::{Origin, OwnedScalar, OwnedValue, StoredValue, Template, now_ms};
use blynk_server::store::postgres::PostgresStore;
use blynk_server::store::retention::Retention;
use blynk_server::store::sqlite::{Durability, SqliteStore};
use blynk_server::store::{Store, ValueWrite, settle};

/// Devices the writes go to (round robin), each with its own version counter.
const DEVICES: usize = 100;

#[tokio::main]
async fn main() -> Result<()> {
    let mut seconds = 5u64;
    let mut in_flight = 1000usize;
    let mut postgres_url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => seconds = value()?.parse()?,
            "--in-flight" => in_flight = value()?.parse()?,
            "--postgres" => postgres_url = Some(value()?),
            other => return Err(anyhow!("unknown argument {other}")),
        }
    }
    let duration = Duration::from_secs(seconds);

    let directory = tempfile::tempdir()?;
    let sqlite = SqliteStore::open_with_retention(
        &directory.path().join("store.db"),
        Durability::Full,
        Retention::default(),
    )?;
    report("sqlite", &sqlite, duration, in_flight).await?;
    drop(sqlite);

    let private;
    let url = match postgres_url {
        Some(url) => url,
        None => {
            private = blynk_testbed::Postgres::start_durable()?;
            private.url("postgres")
        }
    };
    let postgres = PostgresStore::open(&url, Retention::default()).await?;
    report("postgres", &postgres, duration, in_flight).await?;
    Ok(())
}

/// Measures one store and prints its figure line.
async fn report(name: &str, store: &dyn Store, duration: Duration, in_flight: usize) -> Result<()> {
    let devices = add_devices(store).await?;
    let mut versions = vec![0u64; devices.len()];
    let mut next = 0usize;
    let mut write = |versions: &mut Vec<u64>| {
        let index = next % devices.len();
        next += 1;
        versions[index] += 1;
        store.put_value(value(devices[index], versions[index]))
    };

    let mut latencies = Vec::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let started = Instant::now();
        settle(write(&mut versions)).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();

    let mut rates = Vec::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let started = Instant::now();
        let tickets: Vec<_> = (0..in_flight).map(|_| write(&mut versions)).collect();
        for ticket in tickets {
            settle(ticket).await?;
        }
        rates.push(in_flight as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);

    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction) as usize];
    println!(
        "figure: store={name} commit_latency_p50_ms={:.2} commit_latency_p99_ms={:.2} commits={} \
         throughput_writes_per_s={:.0} (median of {} rounds of {in_flight}; min {:.0}, max {:.0})",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        latencies.len(),
        rates[rates.len() / 2],
        rates.len(),
        rates[0],
        rates[rates.len() - 1],
    );
    Ok(())
}

async fn add_devices(store: &dyn Store) -> Result<Vec<i64>> {
    let template = settle(store.create_template(Template {
        id: 0,
        name: "bench".into(),
        datastreams: Vec::new(),
    }))
    .await?;
    let mut devices = Vec::with_capacity(DEVICES);
    for number in 0..DEVICES {
        let device = settle(store.create_device(
            &format!("bench {number}"),
            template.id,
            &format!("bench-{number}"),
        ))
        .await?;
        devices.push(device.id);
    }
    Ok(devices)
}

fn value(device_id: i64, version: u64) -> ValueWrite {
    ValueWrite {
        device_id,
        pin: Pin::virtual_pin((version % 4) as u32).expect("V0..V3 exist"),
        stored: StoredValue {
            value: Arc::new(OwnedValue(vec![OwnedScalar::Int(version as i64)])),
            version,
            set_at: now_ms(),
            origin: Origin::Device,
        },
        latest: true,
    }
}
