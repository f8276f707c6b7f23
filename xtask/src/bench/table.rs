//! The rows of the performance table: what each runs (blynk-load commands) and which of its
//! figures it shows.

use super::*;

/// A row of the table.
pub(crate) struct Row {
    pub(crate) letter: &'static str,
    pub(crate) workload: &'static str,
    pub(crate) target: &'static str,
    pub(crate) server: Vec<Metric>,
    pub(crate) mosquitto: Vec<Metric>,
    pub(crate) commands: Vec<Vec<String>>,
}

pub(crate) fn select(row: &'static str, system: &'static str) -> Select {
    Select {
        row,
        system,
        durability: None,
        keyed: None,
        protocol: None,
    }
}

pub(crate) fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

pub(crate) fn rows(options: &Options) -> Vec<Row> {
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
        ladder_server.extend([runs_with(label, server, "all_delivered"), p99(server)]);
        ladder_mosquitto.extend([runs_with(label, mosquitto, "all_delivered"), p99(mosquitto)]);
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
            p50(to_app).labelled(to_app_p50),
            p99(to_app),
            cpu_per_msg(to_app),
            p50(to_device).labelled(to_device_p50),
            p99(to_device),
            cpu_per_write(to_device),
        ]);
    }
    let (flood, flood_mosquitto) = (full("device-to-app"), select("device-to-app", "mosquitto"));
    let at_20k_mosquitto = rate("device-to-app-rate", "mosquitto", 20_000);
    let (writes, writes_process, writes_mosquitto) = (
        full("app-to-device"),
        process("app-to-device"),
        select("app-to-device", "mosquitto"),
    );
    vec![
        Row {
            letter: "a",
            workload: "device -> app, 1,000 classic devices (200 values each) as fast as they \
                       can, one watcher",
            target: ">= 100,000 msg/s reach the watcher (coalesced counts when the final value \
                     per pin is right), <= 8 us server CPU per device message, 0 lost",
            server: vec![
                metric("reached", flood, "reached_rate", " msg/s"),
                metric("events", flood, "event_rate", "/s"),
                cpu_per_msg(flood),
                metric("lost pins", flood, "lost_pins", ""),
                runs_with("watcher closed", flood, "watcher_closed"),
            ],
            mosquitto: vec![
                metric("reached", flood_mosquitto, "reached_rate", " msg/s"),
                cpu_per_msg(flood_mosquitto),
                metric("lost pins", flood_mosquitto, "lost_pins", ""),
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
                p50(at_20k("full")),
                p99(at_20k("full")),
                cpu_per_msg(at_20k("full")),
                p99(at_20k("process")).labelled("process durability: p99"),
                cpu_per_msg(at_20k("process")),
            ],
            mosquitto: vec![
                p50(at_20k_mosquitto),
                p99(at_20k_mosquitto),
                cpu_per_msg(at_20k_mosquitto),
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
                p50(writes),
                p99(writes),
                ack_p99(writes),
                cpu_per_write(writes),
                p99(writes_process).labelled("process durability: p99"),
                ack_p99(writes_process),
                cpu_per_write(writes_process),
            ],
            mosquitto: vec![
                p50(writes_mosquitto),
                p99(writes_mosquitto),
                ack_p99(writes_mosquitto).labelled("PUBACK p99"),
                cpu_per_write(writes_mosquitto),
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
                p50(history(4_000_000)).labelled("with history: p50"),
                p99(history(4_000_000)),
                p50(history(0)).labelled("none: p50"),
                p99(history(0)),
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
