//! The device side of `cargo xtask soak`: many devices of this library in one process, each with
//! its own `Blynk` object and runner over tokio's TCP, plus the apps that write to them over the
//! HTTP app API, and the final check against the server.
//!
//! ```text
//! soak_fleet provision --http IP:PORT --key KEY --devices N      # prints `device NAME TOKEN`
//! soak_fleet run --native IP:PORT --http IP:PORT --key KEY --tokens FILE --from A --count C
//!                [--source IP] [--seconds S] [--heartbeat H]
//! ```
//!
//! `run` talks with xtask over lines: it prints `ready` once every device has logged in and
//! synced, waits for `go`, writes for S seconds (each device writes V1, the apps write V0),
//! waits (under the loss still) until every device holds what the server acknowledged and
//! prints `settled` or `unsettled`, then on `check` compares every device and every
//! acknowledged write with what the server holds and prints one `result` line.
//!
//! Why the kernel's TCP and not one embassy-net stack per device: the soak is about the
//! library's own behaviour under loss (reconnect, heartbeat, offline queue, automatic sync,
//! acknowledgements), and a thousand smoltcp stacks with a TAP device each would cost more than
//! the devices themselves; the kernel's TCP in a network namespace sees the same dropped
//! packets. The simulated embassy-net device is checked under loss by `cargo xtask sim check`.

mod apps;
mod devices;
mod http;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// Command-line arguments: `--name value` pairs after the mode.
struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> (String, Args) {
        let mut raw = std::env::args().skip(1);
        let mode = raw.next().unwrap_or_default();
        let mut pairs = HashMap::new();
        while let Some(name) = raw.next() {
            let value = raw.next().unwrap_or_default();
            pairs.insert(name.trim_start_matches("--").to_string(), value);
        }
        (mode, Args(pairs))
    }

    fn get<T: std::str::FromStr>(&self, name: &str) -> T {
        match self.0.get(name).map(|value| value.parse()) {
            Some(Ok(value)) => value,
            _ => fail(&format!("--{name} is missing or not valid")),
        }
    }

    fn get_or<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.0.get(name) {
            Some(_) => self.get(name),
            None => default,
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("soak_fleet: {message}");
    std::process::exit(2);
}

fn main() {
    let (mode, args) = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(&format!("tokio: {error}")));
    let local = tokio::task::LocalSet::new();
    match mode.as_str() {
        "provision" => local.block_on(&runtime, provision(&args)),
        "run" => local.block_on(&runtime, run(&args)),
        _ => fail("usage: soak_fleet provision|run --name value ..."),
    }
}

/// Creates the template and the devices, printing `device NAME TOKEN` for each.
async fn provision(args: &Args) {
    let mut app = http::Client::new(args.get("http"), args.get("key"), None);
    let count: usize = args.get("devices");
    let template = r#"{"name": "soak", "datastreams": [
        {"pin": "V0", "name": "Set by apps", "type": "integer", "sync": true},
        {"pin": "V1", "name": "Set by the device", "type": "integer"}]}"#;
    match app.request("POST", "/api/templates", Some(template)).await {
        Ok((200 | 201, _)) => {}
        other => fail(&format!("creating the template: {other:?}")),
    }
    for index in 0..count {
        let body = format!(r#"{{"name": "soak-{index}", "template": "soak"}}"#);
        match app.request("POST", "/api/devices", Some(&body)).await {
            Ok((200 | 201, answer)) => {
                let token = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|json| json["token"].as_str().map(str::to_string))
                    .unwrap_or_else(|| fail(&format!("no token in {answer}")));
                println!("device soak-{index} {token}");
            }
            other => fail(&format!("creating soak-{index}: {other:?}")),
        }
    }
    println!("provisioned");
}

/// Runs the devices and the apps; see the module's documentation for the sequence.
async fn run(args: &Args) {
    let native: SocketAddr = args.get("native");
    let http_address: SocketAddr = args.get("http");
    let key: String = args.get("key");
    let source: Option<IpAddr> = args.0.get("source").and_then(|ip| ip.parse().ok());
    let (from, count): (usize, usize) = (args.get("from"), args.get("count"));
    let seconds: u64 = args.get_or("seconds", 300);
    let heartbeat: u16 = args.get_or("heartbeat", 10);
    let tokens_file: String = args.get("tokens");
    let tokens = std::fs::read_to_string(&tokens_file)
        .unwrap_or_else(|error| fail(&format!("{tokens_file}: {error}")));
    let chosen: Vec<(String, String)> = tokens
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("device"), Some(name), Some(token)) => {
                    Some((name.to_string(), token.to_string()))
                }
                _ => None,
            }
        })
        .skip(from)
        .take(count)
        .collect();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();

    let fleet = devices::Fleet::start(&chosen, native, source, heartbeat);
    let ready = fleet.wait_ready(Duration::from_secs(180)).await;
    println!("ready {ready}/{}", chosen.len());
    wait_for(&mut stdin, "go").await;

    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    // The device writers end by themselves once `stop` is set and their last write is
    // acknowledged; settling waits for that.
    drop(fleet.start_writers(stop.clone()));
    let apps = apps::Apps::new(http_address, key.clone(), source, &chosen);
    apps.run(Duration::from_secs(seconds)).await;
    stop.set(true);
    // The last app write of every device is acknowledged (rewritten until it is), so the value
    // each device must end with is known.
    apps.finish().await;
    let settle_started = std::time::Instant::now();
    let unsettled = fleet
        .settle(
            |name| apps.last_acknowledged(name),
            Duration::from_secs(180),
        )
        .await;
    if unsettled == 0 {
        println!("settled {:.1}", settle_started.elapsed().as_secs_f64());
    } else {
        println!("unsettled {unsettled}");
    }
    wait_for(&mut stdin, "check").await;
    let report = apps::check(&fleet, &apps, http_address, key, source).await;
    println!("{report}");
}

/// Waits for the line `word` on standard input (xtask's go-ahead).
async fn wait_for(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>,
    word: &str,
) {
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim() == word => return,
            Ok(Some(_)) => {}
            _ => fail(&format!("standard input ended before `{word}`")),
        }
    }
}
