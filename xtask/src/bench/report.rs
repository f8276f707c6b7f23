//! `docs/performance.md` as written: the table, the commands as they ran, every figure line,
//! and what the previous report holds.

use super::*;

/// Figure lines saved in a report, for the next report's comparison.
pub(crate) fn saved_figures(report: &str) -> Vec<Figure> {
    report.lines().filter_map(Figure::parse).collect()
}

/// The commands a report lists under "## Commands", by row letter.
pub(crate) fn saved_commands(report: &str) -> BTreeMap<String, Vec<Vec<String>>> {
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

pub(crate) fn render(options: &Options, table: &[Row], figures: &[Figure]) -> String {
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
    write_runs(&mut out, figures, "run");
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
        // The reading of several nodes goes to their own section (`nodes.rs`).
        let (reading, _) = split_reading(&reading);
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
         blynk-load -- ARGS` with the open-file limit raised); \
         `cargo xtask bench --only a,c` runs some rows, `--seconds` and `--runs` set the \
         durations.\n"
    );
    write_commands(&mut out, table);
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
    write_raw_figures(&mut out, figures);
    out
}

/// When a run of `cargo xtask bench` began and how busy the machine was then: with its end, the
/// facts of the run, kept as a figure of their own beside the rows' (shown by [`write_runs`]).
pub(crate) struct RunFacts {
    started: Instant,
    load_before: String,
}

impl RunFacts {
    pub(crate) fn start() -> Self {
        RunFacts {
            started: Instant::now(),
            load_before: load_average(),
        }
    }

    /// The facts as a figure of `row` (`run`, `nodes-run`), `extra` (`name=value ` pairs) after
    /// the date.
    pub(crate) fn figure(&self, row: &str, extra: &str, options: &Options) -> Option<Figure> {
        Figure::parse(&format!(
            "figure: row={row} system=xtask date={} {extra}rows={} took_s={:.0} load_before={} \
             load_after={}",
            output_of("date", &["-u", "+%Y-%m-%dT%H:%MZ"]),
            options
                .only
                .as_ref()
                .map_or_else(|| "all".to_owned(), |only| only.join(",")),
            self.started.elapsed().as_secs_f64(),
            self.load_before,
            load_average(),
        ))
    }

    /// The end of the run: writes `report` (`what` of the file, `""` for all of it) and says so,
    /// with the figures it holds and the time the run took.
    pub(crate) fn finish(
        &self,
        options: &Options,
        what: &str,
        report: String,
        figures: usize,
    ) -> Result<()> {
        write_report(options, report)?;
        println!(
            "\nwrote {what}{} ({figures} figures, {:.0} s)",
            options.out.display(),
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// Reads the report (or file of figures) at `path`.
pub(crate) fn read_report(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `report` where the options say.
pub(crate) fn write_report(options: &Options, report: String) -> Result<()> {
    std::fs::write(&options.out, report)
        .with_context(|| format!("writing {}", options.out.display()))
}

/// The commands of each row of `table`, as `cargo xtask bench load` lines under its letter.
pub(crate) fn write_commands(out: &mut String, table: &[Row]) {
    for row in table {
        let _ = writeln!(out, "- ({}):", row.letter);
        for command in &row.commands {
            let _ = writeln!(out, "  `cargo xtask bench load {}`", command.join(" "));
        }
    }
}

/// Every figure, one line each as blynk-load printed it, in a block of text.
pub(crate) fn write_raw_figures(out: &mut String, figures: &[Figure]) {
    let _ = writeln!(out, "```text");
    for figure in figures {
        let mut line = String::from("figure:");
        for (name, value) in &figure.fields {
            let _ = write!(line, " {name}={value}");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "```");
}

/// A line for each run recorded as a figure of `row` (`run`, `nodes-run`): when, which rows, how
/// long, and the machine's load around it.
pub(crate) fn write_runs(out: &mut String, figures: &[Figure], row: &str) {
    for run in figures
        .iter()
        .filter(|figure| figure.get("row") == Some(row))
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
}
