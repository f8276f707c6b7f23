//! `cargo xtask bench --nodes N`: the rows of several nodes (cross-node app -> device latency,
//! device -> app fan-out across nodes, connections held by the nodes together), each on a
//! durable PostgreSQL, a nats-server and N `blynk-server` processes that blynk-load starts.
//! Their figures go in a section of their own at the end of `docs/performance.md`, after a
//! marker line: a run of the single-node rows keeps that section as it is, and a run of these
//! rows leaves everything before it untouched.

use super::*;

/// The line that opens the section of several nodes in the report.
pub(crate) const MARKER: &str = "<!-- Several nodes: written by `cargo xtask bench --nodes N` -->";
/// The heading of the part of the reading (`docs/performance-reading.md`) about several nodes:
/// copied into this section, and left out of the single-node one.
pub(crate) const READING_HEADING: &str = "## Several nodes";

/// The report split at [`MARKER`]: the single-node part, and the section of several nodes.
pub(crate) fn split_report(report: &str) -> (&str, Option<&str>) {
    match report.find(MARKER) {
        Some(at) => (&report[..at], Some(&report[at..])),
        None => (report, None),
    }
}

/// The reading split at [`READING_HEADING`]: the single-node part, and the part of several
/// nodes (up to the next `## ` heading; it is the last section when none follows).
pub(crate) fn split_reading(reading: &str) -> (String, Option<String>) {
    let mut single = String::new();
    let mut nodes: Option<String> = None;
    let mut inside = false;
    for line in reading.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == READING_HEADING;
            if inside {
                nodes.get_or_insert_with(String::new);
                continue;
            }
        }
        let part = if inside {
            nodes.get_or_insert_with(String::new)
        } else {
            &mut single
        };
        part.push_str(line);
        part.push('\n');
    }
    (single, nodes)
}

/// The rows of several nodes, by letter (`n1`, `n2`, `n3`).
pub(crate) fn node_rows(options: &Options, nodes: usize) -> Vec<Row> {
    let runs = options.runs.max(1);
    let seconds = options.seconds;
    let nodes_select = |row| select(row, "nodes");
    let latency_at = |rate| Select {
        keyed: Some(("rate", rate)),
        ..nodes_select("nodes-app-to-device")
    };
    let latency = latency_at(5_000);
    let gentle = latency_at(1_000);
    let fan_out = nodes_select("nodes-fan-out");
    let held = nodes_select("nodes-connections");
    // Connections per node: what one process may hold here (20,000 descriptors) less a margin.
    let connections = 19_500 * nodes;
    // CPU of node A (the devices') and node B per write or message.
    let cpu_per_node = |select, [device_node, other_node]: [&'static str; 2], unit| {
        [
            metric("CPU node A", select, device_node, unit),
            metric("node B", select, other_node, unit),
        ]
    };
    // What a watcher of the fan-out received: node B's fields start `other_`, node A's `same_`.
    let watcher = |delivered, [rate, p50, p99, lost]: [&'static str; 4]| {
        [
            metric(delivered, fan_out, rate, " msg/s"),
            metric("p50", fan_out, p50, " ms"),
            metric("p99", fan_out, p99, " ms"),
            metric("lost pins", fan_out, lost, ""),
        ]
    };

    vec![
        Row {
            letter: "n1",
            workload: "app -> device across nodes at 5,000 writes/s (and 1,000): 1,000 classic \
                       devices on node A, one app WebSocket on node B",
            target: "p99 <= 3 ms",
            server: [
                [p50(latency), p99(latency), ack_p99(latency)].as_slice(),
                &cpu_per_node(
                    latency,
                    ["cpu_us_per_write_device_node", "cpu_us_per_write_app_node"],
                    " us/write",
                ),
                &[
                    metric("received", latency, "received", ""),
                    metric("sent", latency, "sent", ""),
                    p50(gentle).labelled("at 1,000 writes/s: p50"),
                    p99(gentle),
                    ack_p99(gentle),
                ],
            ]
            .concat(),
            mosquitto: Vec::new(),
            // The same at 1,000 writes/s: what the path costs when the machine is not saturated.
            commands: vec![
                args(&format!(
                    "nodes-app-to-device --nodes {nodes} --rate 5000 --seconds {seconds} --runs {runs}"
                )),
                args(&format!(
                    "nodes-app-to-device --nodes {nodes} --rate 1000 --seconds {seconds} --runs {runs}"
                )),
            ],
        },
        Row {
            letter: "n2",
            workload: "device -> app fan-out across nodes at 10,000 msg/s: 1,000 classic \
                       devices on node A, one app watching every device on node B and one on \
                       node A",
            target: "0 lost; node B close to node A",
            server: [
                watcher(
                    "node B: delivered",
                    [
                        "other_delivered_rate",
                        "other_p50_ms",
                        "other_p99_ms",
                        "other_lost_pins",
                    ],
                )
                .as_slice(),
                &watcher(
                    "node A: delivered",
                    [
                        "same_delivered_rate",
                        "same_p50_ms",
                        "same_p99_ms",
                        "same_lost_pins",
                    ],
                ),
                &cpu_per_node(
                    fan_out,
                    ["cpu_us_per_msg_device_node", "cpu_us_per_msg_other_node"],
                    " us/msg",
                ),
            ]
            .concat(),
            mosquitto: Vec::new(),
            commands: vec![args(&format!(
                "nodes-fan-out --nodes {nodes} --rate 10000 --seconds {seconds} --runs {runs}"
            ))],
        },
        Row {
            letter: "n3",
            workload: "idle classic device connections held by the nodes together (each \
                       process capped at 20,000 descriptors; the generator's connections come \
                       from helper processes), then presence and app writes across nodes",
            target: "about 19,500 per node; presence and writes still work",
            server: vec![
                metric("held", held, "held", ""),
                metric("failed logins", held, "failed_logins", ""),
                metric("logins tried again", held, "retried_logins", ""),
                metric("not tried by the deadline", held, "untried_logins", ""),
                metric("RSS", held, "kib_per_connection", " KiB each"),
                metric("logged in in", held, "login_seconds", " s"),
                runs_with("presence works", held, "presence_ok"),
                runs_with("writes work", held, "writes_ok"),
            ],
            mosquitto: Vec::new(),
            commands: vec![args(&format!(
                "nodes-connections --nodes {nodes} --connections {connections} --login-seconds 540 --runs 1"
            ))],
        },
    ]
}

/// Runs the rows of several nodes (all, or those of `--only`) and rewrites the report's
/// section of several nodes.
pub(crate) fn run_nodes(options: &Options, nodes: usize) -> Result<()> {
    let facts = RunFacts::start();
    let existing = std::fs::read_to_string(&options.out).unwrap_or_default();
    let (single, section) = split_report(&existing);
    let mut saved = section.map(saved_figures).unwrap_or_default();
    // Figures of an earlier run (its `figure:` lines, as printed), for rows not run now.
    if let Some(path) = &options.figures_from {
        add_new_figures(&mut saved, saved_figures(&read_report(path)?));
    }
    let table = node_rows(options, nodes);
    let chosen = |letter: &str| {
        options
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|wanted| wanted == letter))
    };
    // Rows not run keep their figures, as in the single-node table.
    let mut figures: Vec<Figure> = saved
        .into_iter()
        .filter(|figure| {
            figure.get("row") == Some("nodes-run")
                || node_letter(figure).is_some_and(|letter| !chosen(letter))
        })
        .collect();
    let to_run: Vec<&Row> = table.iter().filter(|row| chosen(row.letter)).collect();
    // `--only` naming no row rewrites the section from the figures it holds (and the reading).
    if to_run.is_empty() {
        write_report(
            options,
            format!("{single}{}", render_nodes(&table, &figures, nodes)),
        )?;
        println!(
            "rewrote the section of several nodes of {}",
            options.out.display()
        );
        return Ok(());
    }
    if let Err(error) = crate::packages::ensure() {
        eprintln!("{error:#}");
    }
    build_release()?;
    for row in to_run {
        for command in &row.commands {
            figures.extend(run_load(command)?);
        }
    }
    figures.extend(facts.figure("nodes-run", &format!("nodes={nodes} "), options));
    let mut report = single.to_owned();
    if !report.is_empty() && !report.ends_with("\n\n") {
        report.push('\n');
    }
    report.push_str(&render_nodes(&table, &figures, nodes));
    facts.finish(
        options,
        "the section of several nodes of ",
        report,
        figures.len(),
    )
}

/// The row of a figure of several nodes.
fn node_letter(figure: &Figure) -> Option<&'static str> {
    Some(match figure.get("row")? {
        "nodes-app-to-device" => "n1",
        "nodes-fan-out" => "n2",
        "nodes-connections" => "n3",
        _ => return None,
    })
}

/// The section of several nodes, from [`MARKER`] to the end of the report.
pub(crate) fn render_nodes(table: &[Row], figures: &[Figure], nodes: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{MARKER}\n");
    let _ = writeln!(
        out,
        "## Several nodes (`cargo xtask bench --nodes {nodes}`)\n"
    );
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench --nodes {nodes}`; the single-node rows above are not run \
         by it, and a run of them keeps this section.\n"
    );
    let commit = output_of("git", &["rev-parse", "--short=12", "HEAD"]);
    let _ = writeln!(
        out,
        "- Written: {} (UTC); commit `{commit}`",
        output_of("date", &["-u", "+%Y-%m-%d %H:%M"])
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    let postgres = output_of(
        "sh",
        &[
            "-c",
            "ls -d /usr/lib/postgresql/*/bin/postgres | tail -n 1 | xargs -r sh -c '$0 --version'",
        ],
    );
    let nats = output_of("nats-server", &["--version"]);
    let _ = writeln!(
        out,
        "- Nodes: {nodes} release builds of `blynk-server` as child processes on 127.0.0.1, each \
         with `--store postgres://...` and `--bus nats://...`; PostgreSQL ({postgres}) with its \
         defaults (every commit flushed to disk), nats-server ({nats}), both started on free \
         loopback ports for the run and stopped after it, all on the same {} cores as the load \
         generator. CPU is each node's own process's user + system time (`/proc/<pid>/stat`) \
         divided by the writes or messages sent; PostgreSQL's and nats-server's CPU is not \
         counted in it.",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let _ = writeln!(
        out,
        "- Each run starts fresh nodes: median (min-max) over the runs; node A holds the \
         devices, node B is the other one."
    );
    write_runs(&mut out, figures, "nodes-run");
    let _ = writeln!(out, "\n### Results\n");
    let _ = writeln!(out, "| workload | figure | target |");
    let _ = writeln!(out, "|---|---|---|");
    for row in table {
        let _ = writeln!(
            out,
            "| ({}) {} | {} | {} |",
            row.letter,
            row.workload,
            cells(&row.server, figures),
            row.target
        );
    }
    let reading = std::fs::read_to_string(workspace_root().join(READING)).unwrap_or_default();
    if let (_, Some(part)) = split_reading(&reading) {
        let _ = writeln!(
            out,
            "\n### Reading the figures\n\nKept by hand in `{READING}` (its section \"Several \
             nodes\") and copied here by each run.\n"
        );
        let _ = writeln!(out, "{}", part.trim());
    }
    let _ = writeln!(out, "\n### Commands\n");
    let _ = writeln!(
        out,
        "Each row runs these (`cargo xtask bench load ARGS` is `cargo run --release -p \
         blynk-load -- ARGS` with the open-file limit raised); `cargo xtask bench --nodes \
         {nodes} --only n1,n3` runs some rows.\n"
    );
    write_commands(&mut out, table);
    let _ = writeln!(out, "\n### Raw figures\n");
    let _ = writeln!(out, "One line per run, as blynk-load printed it.\n");
    write_raw_figures(&mut out, figures);
    out
}

/// Adds the figures of an earlier run that `saved` does not hold already: a file of figures may
/// be the report itself, whose section's figures are in `saved`, and a run counted twice would
/// change the run counts the report gives.
fn add_new_figures(saved: &mut Vec<Figure>, earlier: Vec<Figure>) {
    for figure in earlier {
        if !saved.contains(&figure) {
            saved.push(figure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_of_several_nodes_is_kept_apart_from_the_single_node_report() {
        let report = format!(
            "# Performance\n\n## Raw figures\n\nfigure: row=device-to-app system=server\n\n\
             {MARKER}\n\n## Several nodes\n\nfigure: row=nodes-fan-out system=nodes run=1\n"
        );
        let (single, section) = split_report(&report);
        assert_eq!(saved_figures(single).len(), 1);
        assert!(single.ends_with("server\n\n"));
        let section = section.expect("the section");
        assert!(section.starts_with(MARKER));
        let figures = saved_figures(section);
        assert_eq!(figures.len(), 1);
        assert_eq!(node_letter(&figures[0]), Some("n2"));
        assert_eq!(split_report("# Performance\n").1, None);
    }

    #[test]
    fn figures_of_the_report_itself_are_not_counted_twice() {
        let figure = |run| Figure::parse(&format!("figure: row=nodes-fan-out run={run}")).unwrap();
        let mut saved = vec![figure(1)];
        add_new_figures(&mut saved, vec![figure(1), figure(2)]);
        assert_eq!(saved, vec![figure(1), figure(2)]);
    }

    #[test]
    fn the_reading_of_several_nodes_goes_to_its_own_section() {
        let reading = "# Reading\n\nIntro.\n\n## Met\n\n- a\n\n## Several nodes\n\n- n1 missed\n\n\
                       ## Missed\n\n- b\n";
        let (single, nodes) = split_reading(reading);
        assert!(single.contains("## Met") && single.contains("## Missed"));
        assert!(!single.contains("n1 missed"));
        assert_eq!(nodes.as_deref().map(str::trim), Some("- n1 missed"));
        assert_eq!(split_reading("# Reading\n\n## Met\n").1, None);
    }
}
