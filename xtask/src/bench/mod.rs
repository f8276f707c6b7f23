//! `cargo xtask bench`: runs every row of the performance table with `blynk-load` (the server
//! and, where the table compares, Mosquitto in the same run), then writes `docs/performance.md`
//! with the machine, the commit, the exact command of each row and the median, min and max of
//! its runs. When `docs/performance-baseline.md` exists (the figures from before the data path
//! rebuild), the table quotes its medians beside the new ones, with the ratio. `--nodes N` runs
//! the rows of several nodes instead, into a section of their own (`nodes.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::steps::load_generator;
use crate::workspace::{cargo, workspace_root};

mod figures;
mod nodes;
mod report;
mod table;

use figures::*;
use nodes::*;
use report::*;
use table::*;

/// Where the figures go, and the baseline they are compared with.
pub(crate) const REPORT: &str = "docs/performance.md";
pub(crate) const BASELINE: &str = "docs/performance-baseline.md";
/// The hand-kept reading of the figures (which targets are missed, by how much, what bounds
/// them), copied into every report under its results.
pub(crate) const READING: &str = "docs/performance-reading.md";

/// Options of `cargo xtask bench`.
pub(crate) struct Options {
    pub(crate) seconds: f64,
    pub(crate) runs: usize,
    pub(crate) out: PathBuf,
    pub(crate) title: String,
    pub(crate) only: Option<Vec<String>>,
    /// Render from the raw figures of an earlier report instead of running anything.
    pub(crate) figures_from: Option<PathBuf>,
    /// Run the rows of this many nodes instead of the single-node table.
    pub(crate) nodes: Option<usize>,
}

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench [--seconds S] [--runs N] [--only a,b,..] [--out PATH] [--title TEXT]
       cargo xtask bench --nodes N [--seconds S] [--runs N] [--only n1,n2,n3]
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
  --figures-from PATH  write the report from the raw figures of an earlier one, running nothing
  --nodes N    the rows of N nodes on PostgreSQL and nats-server instead (section \"Several nodes\"
               of the report; the single-node rows are neither run nor changed): n1 (app -> device
               across nodes, 5k/s), n2 (device -> app fan-out across nodes), n3 (connections
               held by the nodes together, then presence and writes); with --figures-from PATH,
               the `figure:` lines of PATH stand for the rows not run";

pub(crate) fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 5.0,
        runs: 3,
        out: workspace_root().join(REPORT),
        title: "Performance".to_owned(),
        only: None,
        figures_from: None,
        nodes: None,
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
            "--nodes" => options.nodes = Some(value()?.parse().context("--nodes")?),
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

/// Runs one blynk-load command, echoing its output; the figures it printed.
pub(crate) fn run_load(arguments: &[String]) -> Result<Vec<Figure>> {
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
pub(crate) fn ensure_mosquitto() -> Result<()> {
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

pub(crate) fn output_of(program: &str, arguments: &[&str]) -> String {
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
pub(crate) fn machine() -> String {
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
    if let Some(nodes) = options.nodes {
        if nodes < 2 {
            bail!("--nodes takes 2 or more (one node is the table of the plain `bench`)");
        }
        return run_nodes(&options, nodes);
    }
    // The section of several nodes at the end of the report, kept as it is.
    let existing = std::fs::read_to_string(&options.out).unwrap_or_default();
    let (single, section) = split_report(&existing);
    let with_section = |mut report: String| {
        if let Some(section) = section {
            report.push('\n');
            report.push_str(section);
        }
        report
    };
    if let Some(path) = &options.figures_from {
        let text = read_report(path)?;
        let figures = saved_figures(split_report(&text).0);
        write_report(
            &options,
            with_section(render(&options, &rows(&options), &figures)),
        )?;
        println!("wrote {} from {}", options.out.display(), path.display());
        return Ok(());
    }
    build_release()?;
    let facts = RunFacts::start();
    if let Err(error) = ensure_mosquitto() {
        eprintln!("{error:#}");
    }
    let mut table = rows(&options);
    // With --only, the other rows keep the commands (their runs and seconds) the report lists.
    if let Some(only) = &options.only {
        let listed = saved_commands(single);
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
        Some(only) => saved_figures(single)
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
    figures.extend(facts.figure("run", "", &options));
    let report = with_section(render(&options, &table, &figures));
    facts.finish(&options, "", report, figures.len())
}

pub(crate) fn build_release() -> Result<()> {
    println!("==> cargo build --release -p blynk-server -p blynk-load");
    let built = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "blynk-server",
            "-p",
            "blynk-load",
        ])
        .status()?;
    if !built.success() {
        bail!("the release build of blynk-server and blynk-load failed");
    }
    Ok(())
}

/// The 1-minute load average: how busy the shared machine was.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn figures_are_summarized_per_row_system_and_durability() {
        let figures = saved_figures(
            "figure: row=app-to-device system=server durability=full run=1 p99_ms=4.500\n\
             figure: row=app-to-device system=server durability=full run=2 p99_ms=2.500\n\
             figure: row=app-to-device system=server durability=full run=3 p99_ms=nan\n\
             figure: row=app-to-device system=server durability=process run=1 p99_ms=1.000",
        );
        let full = Select {
            durability: Some("full"),
            ..select("app-to-device", "server")
        };
        assert_eq!(
            p99(full).cell(&figures),
            "p99 3.50 ms (2.50-4.50, 2 of 3 runs)"
        );
        let mosquitto = select("app-to-device", "mosquitto");
        assert_eq!(p99(mosquitto).cell(&figures), "p99: not run");
    }

    #[test]
    pub(crate) fn per_protocol_figures_are_told_apart_by_protocol() {
        let figures = saved_figures(
            "figure: row=protocol-app-to-device system=server protocol=native durability=full \
             run=1 p99_ms=0.800\n\
             figure: row=protocol-app-to-device system=server protocol=mqtt durability=full \
             run=1 p99_ms=1.200",
        );
        assert!(figures.iter().all(|figure| figure.letter() == Some("i")));
        let mqtt = Select {
            protocol: Some("mqtt"),
            ..select("protocol-app-to-device", "server")
        };
        assert_eq!(p99(mqtt).cell(&figures), "p99 1.20 ms");
    }

    #[test]
    pub(crate) fn a_report_gives_back_the_commands_it_lists() {
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
    fn the_facts_of_a_run_are_a_figure_of_their_own() {
        let options = parse(&["--only".to_owned(), "a,c".to_owned()]).expect("options");
        let facts = RunFacts::start()
            .figure("nodes-run", "nodes=2 ", &options)
            .expect("a figure");
        assert_eq!(facts.get("row"), Some("nodes-run"));
        assert_eq!(facts.get("system"), Some("xtask"));
        assert_eq!(facts.get("nodes"), Some("2"));
        assert_eq!(facts.get("rows"), Some("a,c"));
        for field in ["date", "took_s", "load_before", "load_after"] {
            assert!(facts.get(field).is_some(), "{field}");
        }
        let mut shown = String::new();
        write_runs(&mut shown, &[facts], "nodes-run");
        assert!(shown.starts_with("- Run at ") && shown.contains(": rows a,c, 0 s;"));
    }

    #[test]
    pub(crate) fn large_numbers_are_grouped() {
        assert_eq!(show(123_456.7), "123,457");
        assert_eq!(show(0.5), "0.50");
        assert_eq!(show(3.0), "3");
    }
}
