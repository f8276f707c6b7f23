//! HTTP write latency beside a large history, against the same setup with none: the figures of
//! "writes must not stall as history grows".
//!
//! For each history size it prepares a data directory (N devices of the demo template, then,
//! straight in SQL, `per-pin` history values on V0..V3 of every device), starts the server in
//! this process on 127.0.0.1, and times sequential `GET /external/api/update` writes over one
//! keep-alive connection for a fixed time (long enough to cover the server's periodic refresh
//! check and its first retention sweep). One line of figures per size:
//!
//! `cargo run --release -p blynk-server --example history_writes -- --devices 1000 --per-pin 1000`
//!
//! [`measure`] is the reusable part: it takes a history size and returns the figures.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use blynk_client::Endpoint;
use blynk_proto::Pin;
use blynk_server::config::{Config, DurabilitySetting};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Devices of the demo template.
    pub devices: usize,
    /// History values per pin on V0..V3 of every device (0: no history).
    pub per_pin: u32,
    /// How long writes are timed.
    pub duration: Duration,
    /// Full (fsync) or process durability.
    pub durability: DurabilitySetting,
}

/// Latency figures of one run.
#[derive(Debug)]
pub struct Figures {
    /// History rows in the database when the server started.
    pub history_rows: u64,
    /// Time the server took to start (open, migrate, load).
    pub start: Duration,
    /// Writes timed.
    pub writes: usize,
    /// Median write latency.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest write.
    pub max: Duration,
}

/// Prepares a data directory as `setup` says, starts a server on it and times HTTP writes.
pub async fn measure(setup: Setup) -> Result<Figures> {
    let data = tempfile::tempdir()?;
    let config = server_config(data.path(), setup.durability);
    let tokens = {
        let server = blynk_server::start(config.clone()).await?;
        let template = server
            .engine()
            .find_template("light")
            .context("the demo template is missing")?;
        let mut tokens = Vec::with_capacity(setup.devices);
        for number in 0..setup.devices {
            let slot = server
                .engine()
                .create_device(&format!("history-{number}"), &template)
                .await?;
            tokens.push(slot.device.token.clone());
        }
        server.shutdown().await;
        tokens
    };
    let database = data.path().join(blynk_server::DATABASE_FILE);
    let pins: Vec<Pin> = (0..4)
        .map(|number| Pin::virtual_pin(number).unwrap())
        .collect();
    let history_rows = if setup.per_pin > 0 {
        blynk_server::store::sqlite::fill_history(&database, &pins, setup.per_pin)?
    } else {
        0
    };

    let started = Instant::now();
    let server = blynk_server::start(config).await?;
    let start = started.elapsed();
    // The device API takes the token in the query: the client's API key goes unused.
    let endpoint = Endpoint::parse(&format!("http://{}", server.http_address))?;
    let mut connection = blynk_client::Client::new(endpoint, "")?.connect().await?;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + setup.duration;
    let mut number = 0usize;
    while Instant::now() < deadline {
        let token = &tokens[number % tokens.len()];
        let path = format!("/external/api/update?token={token}&V1={}", number % 256);
        let sent = Instant::now();
        let answer = connection.get(&path).await;
        latencies.push(sent.elapsed());
        answer.with_context(|| format!("write {number}"))?;
        number += 1;
    }
    server.shutdown().await;
    latencies.sort();
    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction) as usize];
    Ok(Figures {
        history_rows,
        start,
        writes: latencies.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    })
}

fn server_config(data: &std::path::Path, durability: DurabilitySetting) -> Config {
    let mut config = Config {
        data_dir: data.to_path_buf(),
        bind: "127.0.0.1".parse().unwrap(),
        http_port: 0,
        native_port: 0,
        mqtt_port: blynk_server::config::MqttPort::Off,
        durability,
        ..Config::default()
    };
    config.limits.messages_per_second = 1_000_000;
    config.limits.message_burst = 1_000_000;
    config
}

fn flag(arguments: &[String], name: &str, default: u64) -> Result<u64> {
    match arguments.iter().position(|argument| argument == name) {
        Some(index) => arguments
            .get(index + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let durability = if arguments.iter().any(|argument| argument == "--process") {
        DurabilitySetting::Process
    } else {
        DurabilitySetting::Full
    };
    let devices = usize::try_from(flag(&arguments, "--devices", 1000)?)?;
    let per_pin = u32::try_from(flag(&arguments, "--per-pin", 1000)?)?;
    let duration = Duration::from_secs(flag(&arguments, "--seconds", 20)?);
    for per_pin in [0, per_pin] {
        let figures = measure(Setup {
            devices,
            per_pin,
            duration,
            durability,
        })
        .await?;
        println!(
            "history_writes devices={devices} history_rows={} durability={:?} start_ms={} \
             writes={} p50_us={} p99_us={} max_us={}",
            figures.history_rows,
            durability,
            figures.start.as_millis(),
            figures.writes,
            figures.p50.as_micros(),
            figures.p99.as_micros(),
            figures.max.as_micros(),
        );
    }
    Ok(())
}
