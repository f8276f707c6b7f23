//! `cargo xtask bench`: runs every row of the performance table with `blynk-load` (the server
//! and, where the table compares, Mosquitto in the same run), then writes `docs/performance.md`
//! with the machine, the commit, the exact command of each row and the median, min and max of
//! its runs. When `docs/performance-baseline.md` exists (the figures from before the data path
//! rebuild), the table quotes its medians beside the new ones, with the ratio.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::steps::{cargo, load_generator, workspace_root};

/// Where the figures go, and the baseline they are compared with.
const REPORT: &str = "docs/performance.md";
const BASELINE: &str = "docs/performance-baseline.md";
/// The hand-kept reading of the figures (which targets are missed, by how much, what bounds
/// them), copied into every report under its results.
const READING: &str = "docs/performance-reading.md";

/// Options of `cargo xtask bench`.
struct Options {
    seconds: f64,
    runs: usize,
    out: PathBuf,
    title: String,
    only: Option<Vec<String>>,
    /// Render from the raw figures of an earlier report instead of running anything.
    figures_from: Option<PathBuf>,
}

const USAGE: &str = "\
usage: cargo xtask bench [--seconds S] [--runs N] [--only a,b,..] [--out PATH] [--title TEXT]
       cargo xtask bench load <blynk-load scenario and flags>   (one scenario, figures printed)
       cargo xtask bench codecs [criterion args]                (the codec micro-benchmarks)

  --seconds S  seconds measured by each fixed-rate run (default 5; the ladder's rungs use 3)
  --runs N     runs of each cheap row, each on a fresh server or broker (default 3)
  --only LIST  rows to run (the others keep the figures the report holds), by letter: a (device -> app flood), b (device -> app 20k/s),
               c (app -> device 10k/s), d (reconnect storm), e (HTTP write over history),
               f (idle classic connections), g (one app watching), h (rate ladder),
               i (classic, native and MQTT devices at 10k/s both ways)
  --out PATH   the report written (default docs/performance.md)
  --title T    the report's heading
  --figures-from PATH  write the report from the raw figures of an earlier one, running nothing";

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 5.0,
        runs: 3,
        out: workspace_root().join(REPORT),
        title: "Performance".to_owned(),
        only: None,
        figures_from: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
            "--runs" => options.runs = value()?.parse().context("--runs")?,
            "--out" => options.out = workspace_root().join(value()?),
            "--title" => options.title = value()?.clone(),
            "--figures-from" => options.figures_from = Some(workspace_root().join(value()?)),
            "--only" => {
                options.only = Some(
                    value()?
                        .split(',')
                        .map(|row| row.trim().to_owned())
                        .collect(),
                )
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag `{other}`\n{USAGE}"),
        }
    }
    Ok(options)
}

/// One `figure:` line of blynk-load: `row`, `system` and `name=value` pairs.
#[derive(Debug, Clone)]
struct Figure {
    fields: BTreeMap<String, String>,
}

impl Figure {
    fn parse(line: &str) -> Option<Figure> {
        let rest = line.trim().strip_prefix("figure: ")?;
        let fields = rest
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Some(Figure { fields })
    }

    /// The table row this figure belongs to.
    fn letter(&self) -> Option<&'static str> {
        Some(match self.get("row")? {
            "device-to-app" => "a",
            "device-to-app-rate" if self.number("rate") == Some(20_000.0) => "b",
            "device-to-app-rate" => "h",
            "app-to-device" => "c",
            "reconnect-storm" => "d",
            "history-writes" => "e",
            "idle-classic" => "f",
            "watch-memory" => "g",
            "protocol-device-to-app" | "protocol-app-to-device" => "i",
            _ => return None,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn number(&self, name: &str) -> Option<f64> {
        self.get(name)?
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
    }
}

/// Which figures a cell of the table reads.
#[derive(Clone, Copy)]
struct Select {
    row: &'static str,
    system: &'static str,
    durability: Option<&'static str>,
    /// A field that tells runs of one row apart, and its value (`rate`, `history_rows`).
    keyed: Option<(&'static str, u64)>,
    /// The devices' protocol, for rows that measure each in turn.
    protocol: Option<&'static str>,
}

impl Select {
    fn matches(&self, figure: &Figure) -> bool {
        figure.get("row") == Some(self.row)
            && figure.get("system") == Some(self.system)
            && self
                .durability
                .is_none_or(|durability| figure.get("durability") == Some(durability))
            && self
                .keyed
                .is_none_or(|(name, value)| figure.number(name) == Some(value as f64))
            && self
                .protocol
                .is_none_or(|protocol| figure.get("protocol") == Some(protocol))
    }
}

/// How a metric is summarized over runs.
#[derive(Clone, Copy, PartialEq)]
enum Summary {
    /// Median (min-max) of the runs.
    Median,
    /// How many runs had a non-zero value.
    RunsWith,
}

/// One figure of a cell: `label value unit`.
#[derive(Clone, Copy)]
struct Metric {
    label: &'static str,
    select: Select,
    field: &'static str,
    unit: &'static str,
    summary: Summary,
}

fn metric(label: &'static str, select: Select, field: &'static str, unit: &'static str) -> Metric {
    Metric {
        label,
        select,
        field,
        unit,
        summary: Summary::Median,
    }
}

fn runs_with(label: &'static str, select: Select, field: &'static str) -> Metric {
    Metric {
        label,
        select,
        field,
        unit: "",
        summary: Summary::RunsWith,
    }
}

/// Median, min and max of some numbers.
fn spread(values: &mut [f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    };
    Some((median, values[0], values[values.len() - 1]))
}

/// A number with a sensible precision.
fn show(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let whole = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (index, digit) in whole.chars().enumerate() {
            if index > 0 && (whole.len() - index) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if magnitude >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Metric {
    fn values(&self, figures: &[Figure]) -> (Vec<f64>, usize) {
        let chosen: Vec<&Figure> = figures.iter().filter(|f| self.select.matches(f)).collect();
        let values = chosen.iter().filter_map(|f| f.number(self.field)).collect();
        (values, chosen.len())
    }

    fn median(&self, figures: &[Figure]) -> Option<f64> {
        let (mut values, _) = self.values(figures);
        spread(&mut values).map(|(median, _, _)| median)
    }

    /// `label median unit (min-max, N runs)`, or what is missing.
    fn cell(&self, figures: &[Figure]) -> String {
        let (mut values, runs) = self.values(figures);
        if runs == 0 {
            return format!("{}: not run", self.label);
        }
        if self.summary == Summary::RunsWith {
            let with = values.iter().filter(|value| **value != 0.0).count();
            return format!("{} {with}/{runs} runs", self.label);
        }
        match spread(&mut values) {
            None => format!("{}: none ({runs} runs)", self.label),
            // Runs without this figure (a watcher closed early, say) are counted apart.
            Some((median, _, _)) if values.len() == 1 => {
                let only = if runs > 1 {
                    format!(" (1 of {runs} runs)")
                } else {
                    String::new()
                };
                format!("{} {}{}{only}", self.label, show(median), self.unit)
            }
            Some((median, min, max)) => format!(
                "{} {}{} ({}-{}, {} runs)",
                self.label,
                show(median),
                self.unit,
                show(min),
                show(max),
                if values.len() == runs {
                    runs.to_string()
                } else {
                    format!("{} of {runs}", values.len())
                }
            ),
        }
    }
}

/// A row of the table.
struct Row {
    letter: &'static str,
    workload: &'static str,
    target: &'static str,
    server: Vec<Metric>,
    mosquitto: Vec<Metric>,
    commands: Vec<Vec<String>>,
}

fn select(row: &'static str, system: &'static str) -> Select {
    Select {
        row,
        system,
        durability: None,
        keyed: None,
        protocol: None,
    }
}

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

fn rows(options: &Options) -> Vec<Row> {
    let runs = options.runs.max(1);
    let seconds = options.seconds;
    let full = |row| Select {
        durability: Some("full"),
        ..select(row, "server")
    };
    let process = |row| Select {
        durability: Some("process"),
        ..select(row, "server")
    };
    // Row (b) apart from the ladder's rungs, which are the same scenario at other rates.
    let at_20k = |durability| Select {
        durability: Some(durability),
        keyed: Some(("rate", 20_000)),
        ..select("device-to-app-rate", "server")
    };
    let rate = |row, system, rate| Select {
        keyed: Some(("rate", rate)),
        ..select(row, system)
    };
    let history = |rows| Select {
        keyed: Some(("history_rows", rows)),
        ..select("history-writes", "server")
    };
    let ladder = [30_000u64, 40_000, 50_000, 60_000];
    let mut ladder_server = Vec::new();
    let mut ladder_mosquitto = Vec::new();
    let mut ladder_commands = Vec::new();
    for step in ladder {
        let (server, mosquitto) = (
            rate("device-to-app-rate", "server", step),
            rate("device-to-app-rate", "mosquitto", step),
        );
        let label = match step {
            30_000 => "30k: all delivered in",
            40_000 => "40k: all delivered in",
            50_000 => "50k: all delivered in",
            _ => "60k: all delivered in",
        };
        ladder_server.push(runs_with(label, server, "all_delivered"));
        ladder_server.push(metric("p99", server, "p99_ms", " ms"));
        ladder_mosquitto.push(runs_with(label, mosquitto, "all_delivered"));
        ladder_mosquitto.push(metric("p99", mosquitto, "p99_ms", " ms"));
        for system in ["server", "mosquitto"] {
            ladder_commands.push(args(&format!(
                "device-to-app-rate --system {system} --rate {step} --seconds 3 --warmup 0.5 --runs 1"
            )));
        }
    }
    let mut per_protocol = Vec::new();
    for protocol in ["classic", "native", "mqtt"] {
        let (to_app, to_device) = (
            Select {
                protocol: Some(protocol),
                ..full("protocol-device-to-app")
            },
            Select {
                protocol: Some(protocol),
                ..full("protocol-app-to-device")
            },
        );
        let (to_app_p50, to_device_p50) = match protocol {
            "classic" => ("classic: device -> app p50", "app -> device p50"),
            "native" => ("native: device -> app p50", "app -> device p50"),
            _ => ("MQTT: device -> app p50", "app -> device p50"),
        };
        per_protocol.extend([
            metric(to_app_p50, to_app, "p50_ms", " ms"),
            metric("p99", to_app, "p99_ms", " ms"),
            metric("CPU", to_app, "cpu_us_per_msg", " us/msg"),
            metric(to_device_p50, to_device, "p50_ms", " ms"),
            metric("p99", to_device, "p99_ms", " ms"),
            metric("CPU", to_device, "cpu_us_per_write", " us/write"),
        ]);
    }
    vec![
        Row {
            letter: "a",
            workload: "device -> app, 1,000 classic devices (200 values each) as fast as they \
                       can, one watcher",
            target: ">= 100,000 msg/s reach the watcher (coalesced counts when the final value \
                     per pin is right), <= 8 us server CPU per device message, 0 lost",
            server: vec![
                metric("reached", full("device-to-app"), "reached_rate", " msg/s"),
                metric("events", full("device-to-app"), "event_rate", "/s"),
                metric("CPU", full("device-to-app"), "cpu_us_per_msg", " us/msg"),
                metric("lost pins", full("device-to-app"), "lost_pins", ""),
                runs_with("watcher closed", full("device-to-app"), "watcher_closed"),
            ],
            mosquitto: vec![
                metric(
                    "reached",
                    select("device-to-app", "mosquitto"),
                    "reached_rate",
                    " msg/s",
                ),
                metric(
                    "CPU",
                    select("device-to-app", "mosquitto"),
                    "cpu_us_per_msg",
                    " us/msg",
                ),
                metric(
                    "lost pins",
                    select("device-to-app", "mosquitto"),
                    "lost_pins",
                    "",
                ),
            ],
            commands: vec![
                args(&format!("device-to-app --runs {runs}")),
                args(&format!("device-to-app --system mosquitto --runs {runs}")),
            ],
        },
        Row {
            letter: "b",
            workload: "device -> app at 20,000 msg/s (1,000 classic devices, one watcher)",
            target: "p99 <= 2 ms; <= 8 us CPU per message",
            server: vec![
                metric("p50", at_20k("full"), "p50_ms", " ms"),
                metric("p99", at_20k("full"), "p99_ms", " ms"),
                metric("CPU", at_20k("full"), "cpu_us_per_msg", " us/msg"),
                metric(
                    "process durability: p99",
                    at_20k("process"),
                    "p99_ms",
                    " ms",
                ),
                metric("CPU", at_20k("process"), "cpu_us_per_msg", " us/msg"),
            ],
            mosquitto: vec![
                metric(
                    "p50",
                    rate("device-to-app-rate", "mosquitto", 20_000),
                    "p50_ms",
                    " ms",
                ),
                metric(
                    "p99",
                    rate("device-to-app-rate", "mosquitto", 20_000),
                    "p99_ms",
                    " ms",
                ),
                metric(
                    "CPU",
                    rate("device-to-app-rate", "mosquitto", 20_000),
                    "cpu_us_per_msg",
                    " us/msg",
                ),
            ],
            commands: vec![
                args(&format!(
                    "device-to-app-rate --rate 20000 --seconds {seconds} --runs {runs}"
                )),
                args(&format!(
                    "--durability process device-to-app-rate --rate 20000 --seconds {seconds} --runs {runs}"
                )),
                args(&format!(
                    "device-to-app-rate --system mosquitto --rate 20000 --seconds {seconds} --runs {runs}"
                )),
            ],
        },
        Row {
            letter: "c",
            workload: "app -> device at 10,000 writes/s (one app WebSocket, 1,000 classic devices)",
            target: "p99 <= 1 ms, acks p99 <= fsync + 2 ms; <= 10 us CPU per write",
            server: vec![
                metric("p50", full("app-to-device"), "p50_ms", " ms"),
                metric("p99", full("app-to-device"), "p99_ms", " ms"),
                metric("ack p99", full("app-to-device"), "ack_p99_ms", " ms"),
                metric(
                    "CPU",
                    full("app-to-device"),
                    "cpu_us_per_write",
                    " us/write",
                ),
                metric(
                    "process durability: p99",
                    process("app-to-device"),
                    "p99_ms",
                    " ms",
                ),
                metric("ack p99", process("app-to-device"), "ack_p99_ms", " ms"),
                metric(
                    "CPU",
                    process("app-to-device"),
                    "cpu_us_per_write",
                    " us/write",
                ),
            ],
            mosquitto: vec![
                metric("p50", select("app-to-device", "mosquitto"), "p50_ms", " ms"),
                metric("p99", select("app-to-device", "mosquitto"), "p99_ms", " ms"),
                metric(
                    "PUBACK p99",
                    select("app-to-device", "mosquitto"),
                    "ack_p99_ms",
                    " ms",
                ),
                metric(
                    "CPU",
                    select("app-to-device", "mosquitto"),
                    "cpu_us_per_write",
                    " us/write",
                ),
            ],
            commands: vec![
                args(&format!(
                    "app-to-device --rate 10000 --seconds {seconds} --runs {runs}"
                )),
                args(&format!(
                    "--durability process app-to-device --rate 10000 --seconds {seconds} --runs {runs}"
                )),
                args(&format!(
                    "app-to-device --system mosquitto --rate 10000 --seconds {seconds} --runs {runs}"
                )),
            ],
        },
        Row {
            letter: "d",
            workload: "reconnect storm, 10,000 native devices x 16 synced values",
            target: "<= 1.0 s",
            server: vec![
                metric(
                    "all synced in",
                    select("reconnect-storm", "server"),
                    "all_synced_seconds",
                    " s",
                ),
                metric("failed", select("reconnect-storm", "server"), "failed", ""),
            ],
            mosquitto: Vec::new(),
            commands: vec![args(&format!(
                "reconnect-storm --devices 10000 --rounds {runs}"
            ))],
        },
        Row {
            letter: "e",
            workload: "HTTP write (app REST, one after another) with 4 million history rows \
                       (1,000 devices x 4 pins x 1,000) vs none",
            target: "p99 within 1.5x",
            server: vec![
                metric("with history: p50", history(4_000_000), "p50_ms", " ms"),
                metric("p99", history(4_000_000), "p99_ms", " ms"),
                metric("none: p50", history(0), "p50_ms", " ms"),
                metric("p99", history(0), "p99_ms", " ms"),
            ],
            mosquitto: Vec::new(),
            commands: vec![
                args("history-writes --seconds 10"),
                args("history-writes --seconds 10 --rows-per-pin 0"),
            ],
        },
        Row {
            letter: "f",
            workload: "idle classic device connections, 19,000 (server RSS per connection)",
            target: "<= 1 KiB each",
            server: vec![
                metric(
                    "RSS",
                    select("idle-classic", "server"),
                    "kib_per_connection",
                    " KiB each",
                ),
                metric("closed", select("idle-classic", "server"), "closed", ""),
            ],
            mosquitto: Vec::new(),
            commands: vec![args("idle-classic --connections 19000")],
        },
        Row {
            letter: "g",
            workload: "one app watching 19,000 devices (server RSS per watched device)",
            target: "<= 1 KiB per watched device",
            server: vec![
                metric(
                    "RSS",
                    select("watch-memory", "server"),
                    "kib_per_watched_device",
                    " KiB each",
                ),
                runs_with(
                    "stopped at the RSS cap",
                    select("watch-memory", "server"),
                    "over_cap",
                ),
            ],
            mosquitto: Vec::new(),
            commands: vec![args("watch-memory --devices 19000")],
        },
        Row {
            letter: "h",
            workload: "device -> app, rate ladder 30k/40k/50k/60k msg/s (3 s each, one run): \
                       every final value delivered (1/0), p99",
            target: "all delivered, p99 <= 5 ms up to Mosquitto's maximum rate in the same run",
            server: ladder_server,
            mosquitto: ladder_mosquitto,
            commands: ladder_commands,
        },
        Row {
            letter: "i",
            workload: "per protocol, same run: device -> app at 10,000 msg/s (1,000 devices, one \
                       app WebSocket watcher) and app -> device at 10,000 writes/s (one app \
                       WebSocket, 1,000 devices), the devices classic, native, then MQTT \
                       (QoS 1), each on a fresh server",
            target: "as (b) and (c) for every protocol: device -> app p99 <= 2 ms, app -> device \
                     p99 <= 1 ms",
            server: per_protocol,
            mosquitto: Vec::new(),
            commands: vec![args(&format!(
                "per-protocol --rate 10000 --seconds {seconds} --runs {runs}"
            ))],
        },
    ]
}

/// Runs one blynk-load command, echoing its output; the figures it printed.
fn run_load(arguments: &[String]) -> Result<Vec<Figure>> {
    println!("\n==> cargo xtask bench load {}", arguments.join(" "));
    let started = Instant::now();
    let mut child = load_generator(arguments)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting blynk-load")?;
    let mut figures = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(figure) = Figure::parse(&line) {
                figures.push(figure);
            }
        }
    }
    let status = child.wait()?;
    println!(
        "<== {} in {:.1} s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(figures)
}

/// Installs Debian's mosquitto when it is missing (as root, through apt-get).
fn ensure_mosquitto() -> Result<()> {
    let found = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .any(|path| std::path::Path::new(path).exists());
    if found {
        return Ok(());
    }
    println!("mosquitto is missing: installing Debian's package (apt-get install mosquitto)");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "mosquitto"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get install mosquitto failed (root needed); the Mosquitto column stays empty");
    }
    Ok(())
}

fn output_of(program: &str, arguments: &[&str]) -> String {
    Command::new(program)
        .args(arguments)
        .current_dir(workspace_root())
        .output()
        .map(|output| {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        })
        .unwrap_or_default()
}

/// Cores, CPU model and memory of this machine, from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB of memory", kib / 1024.0 / 1024.0)
        });
    format!("{cores} cores ({model}){memory}")
}

/// `cargo xtask bench` (every row, then the report) and its sub-commands.
pub fn run(extra: &[String]) -> Result<()> {
    if extra.first().map(String::as_str) == Some("codecs") {
        let mut command = cargo();
        command
            .args(["bench", "-p", "blynk-proto", "--bench", "codecs", "--"])
            .args(&extra[1..]);
        if !command.status()?.success() {
            bail!("the codec benchmarks failed");
        }
        return Ok(());
    }
    if extra.first().map(String::as_str) == Some("load") {
        build_release()?;
        let figures = run_load(&extra[1..])?;
        if figures.is_empty() {
            bail!("no figures printed");
        }
        return Ok(());
    }
    let options = parse(extra)?;
    if let Some(path) = &options.figures_from {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let figures = saved_figures(&text);
        let report = render(&options, &rows(&options), &figures);
        std::fs::write(&options.out, report)
            .with_context(|| format!("writing {}", options.out.display()))?;
        println!("wrote {} from {}", options.out.display(), path.display());
        return Ok(());
    }
    build_release()?;
    let started = Instant::now();
    let load_before = load_average();
    if let Err(error) = ensure_mosquitto() {
        eprintln!("{error:#}");
    }
    let mut table = rows(&options);
    // With --only, the other rows keep the commands (their runs and seconds) the report lists.
    if let Some(only) = &options.only {
        let listed = std::fs::read_to_string(&options.out)
            .map(|text| saved_commands(&text))
            .unwrap_or_default();
        for row in &mut table {
            if !only.iter().any(|letter| letter == row.letter)
                && let Some(commands) = listed.get(row.letter)
            {
                row.commands.clone_from(commands);
            }
        }
    }
    // With --only, the other rows keep the figures the report already holds.
    let mut figures: Vec<Figure> = match &options.only {
        Some(only) => std::fs::read_to_string(&options.out)
            .map(|text| saved_figures(&text))
            .unwrap_or_default()
            .into_iter()
            .filter(|figure| {
                !only
                    .iter()
                    .any(|letter| Some(letter.as_str()) == figure.letter())
            })
            .collect(),
        None => Vec::new(),
    };
    for row in &table {
        if options
            .only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|letter| letter == row.letter))
        {
            continue;
        }
        for command in &row.commands {
            figures.extend(run_load(command)?);
        }
    }
    // When and how this run went, kept with the figures (a later `--only` run adds its own).
    let facts = format!(
        "figure: row=run system=xtask date={} rows={} took_s={:.0} load_before={load_before} \
         load_after={}",
        output_of("date", &["-u", "+%Y-%m-%dT%H:%MZ"]),
        options
            .only
            .as_ref()
            .map_or_else(|| "all".to_owned(), |only| only.join(",")),
        started.elapsed().as_secs_f64(),
        load_average(),
    );
    figures.extend(Figure::parse(&facts));
    let report = render(&options, &table, &figures);
    std::fs::write(&options.out, report)
        .with_context(|| format!("writing {}", options.out.display()))?;
    println!(
        "\nwrote {} ({} figures, {:.0} s)",
        options.out.display(),
        figures.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn build_release() -> Result<()> {
    println!("==> cargo build --release -p blynk-server --bins");
    let built = cargo()
        .args(["build", "--release", "-p", "blynk-server", "--bins"])
        .status()?;
    if !built.success() {
        bail!("the release build of blynk-server failed");
    }
    Ok(())
}

/// Figure lines saved in a report, for the next report's comparison.
fn saved_figures(report: &str) -> Vec<Figure> {
    report.lines().filter_map(Figure::parse).collect()
}

/// The commands a report lists under "## Commands", by row letter.
fn saved_commands(report: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut commands: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut letter = None;
    let section = report
        .split_once("\n## Commands\n")
        .map_or("", |(_, rest)| rest);
    for line in section.lines() {
        if line.starts_with("## ") {
            break;
        }
        if let Some(rest) = line.strip_prefix("- (")
            && let Some(found) = rest.strip_suffix("):")
        {
            letter = Some(found.to_owned());
        } else if let (Some(letter), Some(command)) = (
            &letter,
            line.trim()
                .strip_prefix("`cargo xtask bench load ")
                .and_then(|rest| rest.strip_suffix('`')),
        ) {
            commands
                .entry(letter.clone())
                .or_default()
                .push(args(command));
        }
    }
    commands
}

/// The 1-minute load average: how busy the shared machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn render(options: &Options, table: &[Row], figures: &[Figure]) -> String {
    let baseline_path = workspace_root().join(BASELINE);
    // No comparison of the baseline with itself (written, or re-rendered from it).
    let baseline = (options.out != baseline_path
        && options.figures_from.as_ref() != Some(&baseline_path))
    .then(|| std::fs::read_to_string(&baseline_path).ok())
    .flatten()
    .map(|text| saved_figures(&text))
    .filter(|saved| !saved.is_empty());
    let commit = output_of("git", &["rev-parse", "--short=12", "HEAD"]);
    let dirty = !output_of("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let mosquitto = output_of("sh", &["-c", "mosquitto -h 2>&1 | head -n 1"]);
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", options.title);
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench` from the figures of its last run; do not edit by hand.\n"
    );
    let _ = writeln!(
        out,
        "- Date: {} (UTC); commit `{commit}`{}",
        output_of("date", &["-u", "+%Y-%m-%d %H:%M"]),
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    if let Some(path) = &options.figures_from {
        let shown = path.strip_prefix(workspace_root()).unwrap_or(path);
        let _ = writeln!(
            out,
            "- Figures copied from `{}` (not run again; its runs are listed below).",
            shown.display()
        );
    }
    let _ = writeln!(
        out,
        "- Server: release build of `blynk-server` as a child process on 127.0.0.1, full \
         durability (fsync every commit) unless a figure says `process`; CPU is its own \
         process's user + system time (`/proc/<pid>/stat`), divided by the messages sent."
    );
    let _ = writeln!(
        out,
        "- Mosquitto: {mosquitto}, a child process on a free 127.0.0.1 port (`listener PORT \
         127.0.0.1`, `allow_anonymous true`, `persistence true`, no queue or in-flight limit); \
         devices publish retained QoS 1 messages to `dev/<i>/V<n>`, the watcher subscribes to \
         `dev/#` at QoS 1; app writes go to `app/<i>/V<n>`. It persists on its autosave \
         schedule, not per message: compare it with both of the server's durabilities."
    );
    let _ = writeln!(
        out,
        "- The server's MQTT devices (row i) log in with user `device` and their token on the \
         server's MQTT port, publish QoS 1 to `ds/<datastream>` and subscribe to \
         `downlink/ds/+` at QoS 1 (they acknowledge every app write)."
    );
    let _ = writeln!(
        out,
        "- {} runs of each cheap row, each on a fresh server or broker: median (min-max); \
         fixed-rate runs measure {} s after 1 s of warm-up (the last run's settings; each \
         row's commands below say how its figures were taken).",
        options.runs, options.seconds
    );
    for run in figures
        .iter()
        .filter(|figure| figure.get("row") == Some("run"))
    {
        let field = |name| run.get(name).unwrap_or("?");
        let _ = writeln!(
            out,
            "- Run at {}: rows {}, {} s; the machine's 1-minute load average was {} before it \
             and {} after (2 means both cores busy).",
            field("date"),
            field("rows"),
            field("took_s"),
            field("load_before"),
            field("load_after"),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "## Results\n");
    if baseline.is_some() {
        let _ = writeln!(
            out,
            "| workload | figure | target | Mosquitto | before the rebuild (`{BASELINE}`) | now / before |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
    } else {
        let _ = writeln!(out, "| workload | figure | target | Mosquitto |");
        let _ = writeln!(out, "|---|---|---|---|");
    }
    for row in table {
        let cells = |metrics: &[Metric], from: &[Figure]| -> String {
            if metrics.is_empty() {
                return "-".to_owned();
            }
            metrics
                .iter()
                .map(|metric| metric.cell(from))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = write!(
            out,
            "| ({}) {} | {} | {} | {} |",
            row.letter,
            row.workload,
            cells(&row.server, figures),
            row.target,
            cells(&row.mosquitto, figures)
        );
        if let Some(before) = &baseline {
            let medians: Vec<Metric> = row
                .server
                .iter()
                .copied()
                .filter(|metric| metric.summary == Summary::Median)
                .collect();
            // A row the baseline never ran (a newer one) shows one dash, not one per figure.
            let then = if medians.iter().all(|metric| metric.median(before).is_none()) {
                "-".to_owned()
            } else {
                medians
                    .iter()
                    .map(|metric| {
                        metric.median(before).map_or_else(
                            || format!("{}: -", metric.label),
                            |value| format!("{} {}{}", metric.label, show(value), metric.unit),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let ratios = medians
                .iter()
                .filter_map(|metric| {
                    let (now, then) = (metric.median(figures)?, metric.median(before)?);
                    (then != 0.0).then(|| format!("{} x{}", metric.label, show(now / then)))
                })
                .collect::<Vec<_>>()
                .join("; ");
            let _ = write!(
                out,
                " {then} | {} |",
                if ratios.is_empty() { "-" } else { &ratios }
            );
        }
        let _ = writeln!(out);
    }
    if let Ok(reading) = std::fs::read_to_string(workspace_root().join(READING)) {
        let _ = writeln!(
            out,
            "\n## Reading the figures\n\nKept by hand in `{READING}` and copied here by each run: \
             it speaks of the figures it names, which the table above may have moved from.\n"
        );
        let _ = write!(
            out,
            "{}",
            reading.trim_start_matches(|c| c != '\n').trim_start()
        );
    }
    let _ = writeln!(out, "\n## Commands\n");
    let _ = writeln!(
        out,
        "Each row runs these (`cargo xtask bench load ARGS` is `cargo run --release -p \
         blynk-server --bin blynk-load -- ARGS` with the open-file limit raised); \
         `cargo xtask bench --only a,c` runs some rows, `--seconds` and `--runs` set the \
         durations.\n"
    );
    for row in table {
        let _ = writeln!(out, "- ({}):", row.letter);
        for command in &row.commands {
            let _ = writeln!(out, "  `cargo xtask bench load {}`", command.join(" "));
        }
    }
    let _ = writeln!(out, "\n## Noise\n");
    let _ = writeln!(
        out,
        "The machine is shared (other builds and tests may run at the same time) and the load \
         generator runs on the same cores as the system it measures, so it competes with it for \
         CPU: latencies carry scheduling delays of either, and a rate the generator cannot \
         sustain shows as a send rate below the target in the raw figures. Runs of one row vary \
         by tens of percent; compare medians, and the server with Mosquitto measured in the same \
         run. A busy machine (load average well above 2) hurts a single-threaded system (Mosquitto) \
         more than a multi-threaded one (the server), which gets more of the cores. CPU per \
         message is counted in clock ticks (10 ms), so short runs round it."
    );
    let _ = writeln!(out, "\n## Raw figures\n");
    let _ = writeln!(
        out,
        "One line per run, as blynk-load printed it (`lost_pins`: pins whose last value the \
         watcher never saw; `reached_rate`: messages sent / time until the watcher held every \
         final value; `send_rate`: what the generator achieved).\n"
    );
    let _ = writeln!(out, "```text");
    for figure in figures {
        let mut line = String::from("figure:");
        for (name, value) in &figure.fields {
            let _ = write!(line, " {name}={value}");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "```");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_summarized_per_row_system_and_durability() {
        let figures: Vec<Figure> = [
            "figure: row=app-to-device system=server durability=full run=1 p99_ms=4.500",
            "figure: row=app-to-device system=server durability=full run=2 p99_ms=2.500",
            "figure: row=app-to-device system=server durability=full run=3 p99_ms=nan",
            "figure: row=app-to-device system=server durability=process run=1 p99_ms=1.000",
        ]
        .iter()
        .filter_map(|line| Figure::parse(line))
        .collect();
        let full = Select {
            durability: Some("full"),
            ..select("app-to-device", "server")
        };
        assert_eq!(
            metric("p99", full, "p99_ms", " ms").cell(&figures),
            "p99 3.50 ms (2.50-4.50, 2 of 3 runs)"
        );
        assert_eq!(
            metric("p99", select("app-to-device", "mosquitto"), "p99_ms", " ms").cell(&figures),
            "p99: not run"
        );
    }

    #[test]
    fn per_protocol_figures_are_told_apart_by_protocol() {
        let figures: Vec<Figure> = [
            "figure: row=protocol-app-to-device system=server protocol=native durability=full \
             run=1 p99_ms=0.800",
            "figure: row=protocol-app-to-device system=server protocol=mqtt durability=full \
             run=1 p99_ms=1.200",
        ]
        .iter()
        .filter_map(|line| Figure::parse(line))
        .collect();
        assert!(figures.iter().all(|figure| figure.letter() == Some("i")));
        let mqtt = Select {
            protocol: Some("mqtt"),
            ..select("protocol-app-to-device", "server")
        };
        assert_eq!(
            metric("p99", mqtt, "p99_ms", " ms").cell(&figures),
            "p99 1.20 ms"
        );
    }

    #[test]
    fn a_report_gives_back_the_commands_it_lists() {
        let report = "# Performance\n\n## Commands\n\nEach row runs these.\n\n- (a):\n  \
                      `cargo xtask bench load device-to-app --runs 3`\n  \
                      `cargo xtask bench load device-to-app --system mosquitto --runs 3`\n\
                      - (i):\n  `cargo xtask bench load per-protocol --seconds 3 --runs 1`\n\n\
                      ## Noise\n\n- (z):\n  `cargo xtask bench load nothing`\n";
        let commands = saved_commands(report);
        assert_eq!(commands.len(), 2);
        assert_eq!(
            commands["a"][1],
            args("device-to-app --system mosquitto --runs 3")
        );
        assert_eq!(
            commands["i"],
            vec![args("per-protocol --seconds 3 --runs 1")]
        );
    }

    #[test]
    fn large_numbers_are_grouped() {
        assert_eq!(show(123_456.7), "123,457");
        assert_eq!(show(0.5), "0.50");
        assert_eq!(show(3.0), "3");
    }
}
