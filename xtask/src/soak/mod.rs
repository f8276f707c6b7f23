//! `cargo xtask soak [--devices N] [--minutes M] [--loss PCT]` (as root): the server and many
//! devices of the native device library with nftables dropping PCT% of the packets each way
//! between them, apps writing to the devices and the devices writing values for M minutes; then
//! every device's state must equal the server's, no acknowledged write may be lost, and the
//! server's memory (RSS, sampled over the run) must stay flat. Prints a report.
//!
//! The network: two namespaces made for the run, `srv` (the server, at 10.215.0.1) and `dev`
//! (the device processes, 10.215.1.K), joined by a veth pair; the loss rules sit in `dev`'s
//! input and output hooks, so every packet crosses one of them once. Both namespaces, and
//! everything in them, go on every exit path (`crate::netns`); nothing shows on the host's
//! interfaces. The namespaces also give the server a private address space of its own, so it
//! never listens on the host's.
//!
//! The devices: `blynk-device`'s `soak_fleet` example, [`DEVICES_PER_PROCESS`] devices per
//! process, each from its own source address. Why not all in one: the library takes its time
//! from embassy-time, whose host driver keeps at most 128 timers in one process (its largest
//! queue) and each device holds up to two at once; past that the queue wakes timers early in a
//! loop and burns the CPU. Why the kernel's TCP rather than one embassy-net stack per device:
//! see the example's documentation.

use std::io::Write;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use blynk_testbed::Killed;
use blynk_testbed::server::{self, ServerCommand};

use crate::blynk_server;
use crate::netns::Netns;
use crate::sim::{expect_line, lines};
pub use report::Report;
use report::{packet_counts, print_report};

mod report;

/// Devices in one `soak_fleet` process (see the module's documentation).
const DEVICES_PER_PROCESS: usize = 50;
/// The server's address in its namespace.
const SERVER_IP: &str = "10.215.0.1";

const USAGE: &str = "usage: cargo xtask soak [--devices N] [--minutes M] [--seconds S] [--loss PCT]
  (as root; defaults: 1000 devices, 5 minutes, 20% loss each way)";

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub devices: usize,
    pub seconds: u64,
    pub loss: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            devices: 1000,
            seconds: 300,
            loss: 20,
        }
    }
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
        let number: u64 = value
            .parse()
            .with_context(|| format!("{arg}: `{value}` is not a number\n{USAGE}"))?;
        match arg.as_str() {
            "--devices" if number > 0 => options.devices = number as usize,
            "--minutes" if number > 0 => options.seconds = number * 60,
            "--seconds" if number > 0 => options.seconds = number,
            "--loss" if number < 100 => options.loss = number as u32,
            _ => bail!("`{arg} {value}` is not a valid option\n{USAGE}"),
        }
    }
    Ok(options)
}

/// `cargo xtask soak ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let report = soak(options)?;
    if !report.passed() {
        bail!("the soak found problems (above)");
    }
    Ok(())
}

/// Builds, sets the network up, runs, checks; the report (also printed).
pub fn soak(options: Options) -> Result<Report> {
    if !crate::netns::available() {
        bail!("cargo xtask soak needs root and `ip netns` (iproute2): it makes network namespaces");
    }
    if Command::new("nft").arg("--version").output().is_err() {
        bail!("cargo xtask soak needs nftables for the packet loss: apt-get install nftables");
    }
    let started = Instant::now();
    println!(
        "==> soak: {} devices, {} s of writes, {}% of packets lost each way",
        options.devices, options.seconds, options.loss
    );
    let debug = blynk_server::build_debug(&[&["-p", "blynk-device", "--example", "soak_fleet"]])?;
    let scratch = std::env::temp_dir().join(format!("blynk-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let result = run_soak(options, &debug, &scratch);
    match &result {
        Ok(report) if report.passed() => {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        _ => println!("logs under {}", scratch.display()),
    }
    println!(
        "<== soak: {} in {:.0} s",
        if result.as_ref().is_ok_and(Report::passed) {
            "ok"
        } else {
            "FAILED"
        },
        started.elapsed().as_secs_f64()
    );
    result
}

/// A `soak_fleet run` process: its go-ahead pipe and its output lines.
struct Fleet {
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    _child: Killed,
}

fn run_soak(options: Options, debug: &Path, scratch: &Path) -> Result<Report> {
    let pid = std::process::id();
    let server_ns = Netns::create(&format!("blynk-soak-s{pid}"))?;
    let device_ns = Netns::create(&format!("blynk-soak-d{pid}"))?;
    // The veth pair is made inside the server's namespace, its peer moved straight into the
    // devices': at no time is either end on the host.
    server_ns.ip(&[
        "link",
        "add",
        "soak0",
        "type",
        "veth",
        "peer",
        "name",
        "soak1",
        "netns",
        device_ns.name(),
    ])?;
    server_ns.ip(&["addr", "add", &format!("{SERVER_IP}/16"), "dev", "soak0"])?;
    server_ns.ip(&["link", "set", "soak0", "up"])?;
    let processes = options.devices.div_ceil(DEVICES_PER_PROCESS);
    for process in 0..processes {
        let address = format!("10.215.1.{}/16", process + 1);
        device_ns.ip(&["addr", "add", &address, "dev", "soak1"])?;
    }
    device_ns.ip(&["link", "set", "soak1", "up"])?;

    // The server, with the file limit raised for a thousand connections.
    let data = scratch.join("data");
    let server_binary = debug.join("blynk-server");
    let key = blynk_server::admin_key();
    let mut command = ServerCommand::new(&server_binary, &data)
        .bind(SERVER_IP)
        .ports(8080, 8441)
        .admin_key(&key)
        .wrapped_in(server_ns.command_with_all_files());
    command.stderr(std::fs::File::create(scratch.join("server.log"))?);
    // `ip netns exec` and `sh -c exec` both exec, so the server keeps the child's process id.
    let (server, ready) = server::spawn(
        &mut command,
        &scratch.join("ready.json"),
        server::START_WITHIN,
    )?;
    let server_pid = server.id();
    let _server = Killed(server);
    let (http, native) = (ready.http, ready.native);
    println!("server (pid {server_pid}) on {native} (native) and {http} (HTTP), in its namespace");

    // The devices.
    let fleet_binary = debug.join("examples/soak_fleet");
    let provision = device_ns
        .command(&fleet_binary)
        .args(["provision", "--http", &http.to_string(), "--key", &key])
        .args(["--devices", &options.devices.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("provisioning the devices")?;
    let tokens = String::from_utf8_lossy(&provision.stdout).to_string();
    if !provision.status.success() || !tokens.contains("provisioned") {
        bail!("provisioning the devices failed");
    }
    let tokens_file = scratch.join("tokens");
    std::fs::write(&tokens_file, &tokens)?;
    println!("created {} devices", options.devices);
    let mut fleets = Vec::new();
    for process in 0..processes {
        let from = process * DEVICES_PER_PROCESS;
        let count = DEVICES_PER_PROCESS.min(options.devices - from);
        let mut child = device_ns
            .command_with_all_files()
            .arg(&fleet_binary)
            .args([
                "run",
                "--native",
                &native.to_string(),
                "--http",
                &http.to_string(),
            ])
            .args(["--key", &key, "--tokens"])
            .arg(&tokens_file)
            .args(["--from", &from.to_string(), "--count", &count.to_string()])
            .args(["--source", &format!("10.215.1.{}", process + 1)])
            .args(["--seconds", &options.seconds.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(
                scratch.join(format!("fleet-{process}.log")),
            )?)
            .spawn()
            .context("starting a soak_fleet process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = lines(child.stdout.take().context("no stdout")?, "");
        fleets.push(Fleet {
            stdin,
            lines,
            _child: Killed(child),
        });
    }
    for (index, fleet) in fleets.iter().enumerate() {
        expect_line(&fleet.lines, Duration::from_secs(200), "ready", |line| {
            line.starts_with("ready")
        })
        .with_context(|| format!("device process {index}"))?;
    }
    println!(
        "{} devices connected and synced in {processes} processes",
        options.devices
    );

    // Loss on, writing starts, the server's RSS is sampled every 2 s.
    // Two rules per direction: count every packet, then drop PCT% of them (and count those).
    let drop_rule = format!("numgen random mod 100 lt {} counter drop", options.loss);
    device_ns.nft(&["add", "table", "inet", "chaos"])?;
    for (chain, hook) in [("in", "input"), ("out", "output")] {
        let spec = format!("{{ type filter hook {hook} priority 0; }}");
        device_ns.nft(&["add", "chain", "inet", "chaos", chain, &spec])?;
        device_ns.nft(&["add", "rule", "inet", "chaos", chain, "counter"])?;
        if options.loss > 0 {
            let mut args = vec!["add", "rule", "inet", "chaos", chain];
            args.extend(drop_rule.split_whitespace());
            device_ns.nft(&args)?;
        }
    }
    // The database's size beside the RSS: SQLite caches its pages (up to the cache sizes the
    // store sets), so memory that follows the data is told apart from memory that leaks.
    let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (samples, sampling, data) = (samples.clone(), sampling.clone(), data.clone());
        let begun = Instant::now();
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                if let Some(kib) = rss_kib(server_pid) {
                    let at = begun.elapsed().as_secs_f64();
                    let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
                    samples.0.push((at, kib));
                    samples.1.push((at, directory_kib(&data)));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    for fleet in &mut fleets {
        writeln!(fleet.stdin, "go")?;
    }
    println!("writing for {} s under loss", options.seconds);
    let mut report = Report::default();
    let settle_within = Duration::from_secs(options.seconds + 400);
    for fleet in &fleets {
        let deadline = Instant::now() + settle_within;
        loop {
            let line = fleet
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("a device process neither settled nor gave up in time")?;
            if line.starts_with("settled") {
                break;
            }
            if line.starts_with("unsettled") {
                report.unsettled += 1;
                println!("a device process did not settle: {line}");
                break;
            }
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    (report.rss, report.data) = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The network healed, every device and write is checked against the server.
    let counters = device_ns.nft_output(&["list", "table", "inet", "chaos"])?;
    report.packets = packet_counts(&counters);
    device_ns.nft(&["flush", "table", "inet", "chaos"])?;
    for fleet in &mut fleets {
        writeln!(fleet.stdin, "check")?;
    }
    let mut totals: Vec<(String, u64)> = Vec::new();
    for fleet in &fleets {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let line = fleet
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("a device process gave no result")?;
            if let Some(problem) = line.strip_prefix("problem ") {
                println!("  problem: {problem}");
            }
            if let Some(result) = line.strip_prefix("result ") {
                for field in result.split_whitespace() {
                    let Some((name, value)) = field.split_once('=') else {
                        continue;
                    };
                    let value: u64 = value.parse().unwrap_or(0);
                    match totals.iter_mut().find(|(known, _)| known == name) {
                        Some((_, sum)) => *sum += value,
                        None => totals.push((name.to_string(), value)),
                    }
                }
                break;
            }
        }
    }
    report.totals = totals;
    print_report(&options, &report, processes);
    Ok(report)
}

/// The total size of the files in `dir`, in KiB.
fn directory_kib(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum::<u64>()
                / 1024
        })
        .unwrap_or(0)
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn the_defaults_are_a_thousand_devices_five_minutes_twenty_percent() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let options = parse(&strings(&[
            "--devices",
            "20",
            "--seconds",
            "20",
            "--loss",
            "5",
        ]));
        assert_eq!(
            options.unwrap(),
            Options {
                devices: 20,
                seconds: 20,
                loss: 5
            }
        );
        assert!(parse(&strings(&["--loss", "100"])).is_err());
        assert!(parse(&strings(&["--devices"])).is_err());
    }
}
