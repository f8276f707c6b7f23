//! `cargo xtask conformance`: the state-sync scenarios of `conformance/scenarios/*.scn`, run by
//! one runner against the real `blynk-server` on loopback, for every device kind where the
//! scenario applies, then a table of scenario x device kind.
//!
//! Why in xtask, with std, anyhow and serde_json only: the runner only starts processes, reads their output
//! lines, relays bytes (the link proxy) and makes a handful of HTTP requests; threads and std's
//! `TcpStream` do all of that without bringing tokio into xtask, and `cargo xtask conformance`
//! stays a plain step of `cargo xtask test`.
//!
//! Each (scenario, kind) case runs on its own server and data directory (under the system's
//! temporary directory, removed afterwards) with one [`proxy::Proxy`] per device on a fixed
//! loopback port: devices connect to the proxy, so the link can be cut and restored and the
//! server restarted on new ports without the device noticing more than a dropped connection.
//! Cases run in parallel (`CONFORMANCE_JOBS`, 6 by default). Everything binds 127.0.0.1, except
//! the simulated device's proxies, which listen inside the run's network namespace (below); every
//! wait has a deadline; child processes are killed when their owner is dropped, failure included.
//!
//! With `--sim`, the simulated devices run inside a network namespace the run creates
//! (`crate::netns`), each on a TAP device of its own there, and the namespace goes on every exit
//! path (failures and Ctrl-C included): nothing of the suite shows on the host's interfaces. The
//! server stays on the host's loopback; a device reaches it through its proxy, whose listener is
//! made inside the namespace on the TAP's host address.
//!
//! With `--nodes N` (N > 1), each case runs on N `blynk-server` nodes sharing a PostgreSQL
//! database and a nats-server (`nodes.rs`; both from `blynk-testbed`, one PostgreSQL for the
//! run, a database and a bus per case), with each device on a different node than the app that
//! reads and writes it: the same scenarios, now across the bus (SPEC 7).
//!
//! `packet loss P% for D` is done by the proxy, not by dropping bytes (TCP would retransmit them
//! and dropping chunks corrupts the stream): for D, in 500 ms slots, the link is cut with
//! probability P, so connections die at random short intervals and new ones go unanswered about
//! P of the time (held until the link is back, as over a dead link; the proxy never resets a
//! connection: `blynklib` 0.2.6 dies of a reset during its login). The simulated embassy-net
//! device gets real packet loss instead: it drops that share of its Ethernet frames itself.

mod case;
mod device;
mod nodes;
mod proxy;
mod scenario;
pub(crate) mod server;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::workspace::workspace_root;
use case::run_case;
use device::{KINDS, Kind, Launch};
use nodes::Topology;
use scenario::{Scenario, Step};

/// The outcome of one case.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Pass(Duration),
    Fail(Duration, String),
    NotApplicable(String),
}

/// The next `10.213.N.0/24` network (and TAP device `bconfN`) for a simulated device.
pub(super) static NEXT_NET: AtomicU32 = AtomicU32::new(1);

/// Runs the suite; `args` are optional filters on scenario names, `--kind NAME` (repeatable)
/// runs only those device kinds, `--nodes N` runs each case on N nodes (PostgreSQL and
/// nats-server between them), and `--sim` (or `CONFORMANCE_SIM=1`) adds the simulated
/// embassy-net device (as root: TAP devices).
pub fn run(args: &[String]) -> Result<()> {
    let started = Instant::now();
    let sim = args.iter().any(|arg| arg == "--sim")
        || std::env::var("CONFORMANCE_SIM").is_ok_and(|value| value == "1");
    let mut kinds: Vec<String> = Vec::new();
    let mut filters: Vec<String> = Vec::new();
    let mut nodes = 1usize;
    let mut rest = args.iter().filter(|arg| *arg != "--sim");
    while let Some(arg) = rest.next() {
        if arg == "--nodes" {
            let count = rest.next().context("--nodes needs a number")?;
            nodes = match count.parse() {
                Ok(count @ 1..=9) => count,
                _ => bail!("--nodes takes a number from 1 to 9, not `{count}`"),
            };
        } else if arg == "--kind" {
            let kind = rest.next().context("--kind needs a kind's name")?;
            if !KINDS.iter().any(|known| known.name() == kind) {
                let names: Vec<&str> = KINDS.iter().map(|known| known.name()).collect();
                bail!("no device kind `{kind}`; the kinds: {}", names.join(", "));
            }
            kinds.push(kind.clone());
        } else {
            filters.push(arg.clone());
        }
    }
    let args = &filters[..];
    let root = workspace_root();
    let scenarios = scenario::load_all(&root.join("conformance/scenarios"))?;
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| args.is_empty() || args.iter().any(|filter| s.name.contains(filter)))
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario matches {args:?}");
    }
    println!("\n==> conformance: building blynk-server and host_light");
    let debug =
        crate::blynk_server::build_debug(&[&["-p", "blynk-device", "--example", "host_light"]])?;
    let python = device::ensure_venv(&root)?;
    let (light_sim, sim_unavailable) = if !sim {
        (
            None,
            Some(
                "opt-in: `cargo xtask conformance --sim` (as root: a TAP device per device, \
                 in a network namespace of the run)"
                    .to_string(),
            ),
        )
    } else if !crate::workspace::is_root() || !Path::new("/dev/net/tun").exists() {
        (
            None,
            Some("the simulated device needs root and /dev/net/tun".to_string()),
        )
    } else {
        (Some(crate::sim::build_sim(false)?), None)
    };
    // The simulated devices' TAP devices live in a namespace of this run, removed on every
    // exit path (crate::netns): nothing of the suite shows on the host's interfaces. The
    // devices reach the server through their proxies, whose listeners are made inside it.
    let netns = match &light_sim {
        Some(_) => Some(crate::netns::Netns::create(&format!(
            "blynk-conf-{}",
            std::process::id()
        ))?),
        None => None,
    };
    // One PostgreSQL for the run (a database per case), stopped on every exit path.
    let postgres = match nodes {
        1 => None,
        _ => {
            println!("==> conformance: starting PostgreSQL for {nodes} nodes per case");
            Some(blynk_testbed::Postgres::start()?)
        }
    };
    let topology = match &postgres {
        Some(postgres) => Topology::Cluster { nodes, postgres },
        None => Topology::Single,
    };
    let server_binary = debug.join("blynk-server");
    let scratch = std::env::temp_dir().join(format!("blynk-conformance-{}", std::process::id()));
    let launch = Launch {
        kind: Kind::BlynkDevice,
        host_light: debug.join("examples/host_light"),
        light_sim,
        netns: netns.as_ref().map(|netns| netns.name().to_string()),
        python,
        drivers: root.join("server/tests/python"),
        stderr: PathBuf::new(),
    };

    let mut queue = VecDeque::new();
    let mut results: BTreeMap<(usize, usize), Outcome> = BTreeMap::new();
    for (s, scenario) in scenarios.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            // A device write from the console is a need of its own.
            let mut needs = scenario.needs.clone();
            if scenario
                .steps
                .iter()
                .any(|(_, _, step)| matches!(step, Step::DeviceWrites { .. }))
            {
                needs.push("console-write".into());
            }
            if !kinds.is_empty() && !kinds.iter().any(|name| name == kind.name()) {
                results.insert(
                    (s, k),
                    Outcome::NotApplicable("not selected (--kind)".into()),
                );
            } else if *kind == Kind::EmbassyNetSim
                && let Some(reason) = &sim_unavailable
            {
                results.insert((s, k), Outcome::NotApplicable(reason.clone()));
            } else if let Some(reason) = needs.iter().find_map(|need| kind.lacks(need)) {
                results.insert((s, k), Outcome::NotApplicable(reason.into()));
            } else {
                queue.push_back((s, k));
            }
        }
    }
    let jobs: usize = std::env::var("CONFORMANCE_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse().ok())
        .unwrap_or(6)
        .max(1);
    println!(
        "==> conformance: {} scenarios x {} device kinds, {} cases to run, {jobs} at a time{}",
        scenarios.len(),
        KINDS.len(),
        queue.len(),
        match nodes {
            1 => String::new(),
            _ => format!(", each on {nodes} nodes (device on one, app on the next)"),
        }
    );
    let queue = Arc::new(Mutex::new(queue));
    let finished = Arc::new(Mutex::new(Vec::new()));
    let scenarios = Arc::new(scenarios);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (queue, finished, scenarios) = (&queue, &finished, &scenarios);
            let (launch, server_binary, scratch) = (&launch, &server_binary, &scratch);
            scope.spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((s, k)) = next else { break };
                    let scenario = &scenarios[s];
                    let kind = KINDS[k];
                    let dir = scratch.join(format!("{}-{}", scenario.name, kind.name()));
                    let mut launch = launch.clone();
                    launch.kind = kind;
                    launch.stderr = dir.join("device.log");
                    let outcome = run_case(scenario, &launch, topology, server_binary, &dir);
                    match &outcome {
                        Outcome::Pass(time) => println!(
                            "  pass  {} x {} ({:.1} s)",
                            scenario.name,
                            kind.name(),
                            time.as_secs_f64()
                        ),
                        Outcome::Fail(time, why) => println!(
                            "  FAIL  {} x {} ({:.1} s): {why}",
                            scenario.name,
                            kind.name(),
                            time.as_secs_f64()
                        ),
                        Outcome::NotApplicable(_) => {}
                    }
                    if matches!(outcome, Outcome::Pass(_)) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    finished
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(((s, k), outcome));
                }
            });
        }
    });
    for (key, outcome) in finished.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        results.insert(key, outcome);
    }
    let failures = print_table(&scenarios, &results);
    let elapsed = started.elapsed().as_secs_f64();
    if failures == 0 {
        let _ = std::fs::remove_dir_all(&scratch);
        println!("<== conformance{}: ok in {elapsed:.1} s", on_nodes(nodes));
        Ok(())
    } else {
        println!(
            "<== conformance{}: {failures} FAILED in {elapsed:.1} s (logs under {})",
            on_nodes(nodes),
            scratch.display()
        );
        bail!("{failures} conformance cases failed")
    }
}

/// How the end line names a run on several nodes.
fn on_nodes(nodes: usize) -> String {
    match nodes {
        1 => String::new(),
        _ => format!(" on {nodes} nodes"),
    }
}

fn print_table(scenarios: &[Scenario], results: &BTreeMap<(usize, usize), Outcome>) -> usize {
    let mut reasons: Vec<String> = Vec::new();
    let mut failures = 0;
    let width = scenarios
        .iter()
        .map(|s| s.name.len() + s.spec.len() + 3)
        .max()
        .unwrap_or(10);
    let mut header = format!("\n{:width$}", "scenario (SPEC)");
    for kind in KINDS {
        header.push_str(&format!(" | {:20}", kind.name()));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for (s, scenario) in scenarios.iter().enumerate() {
        let label = if scenario.spec.is_empty() {
            scenario.name.clone()
        } else {
            format!("{} ({})", scenario.name, scenario.spec)
        };
        let mut row = format!("{label:width$}");
        for k in 0..KINDS.len() {
            let cell = match results.get(&(s, k)) {
                Some(Outcome::Pass(time)) => format!("pass {:.1} s", time.as_secs_f64()),
                Some(Outcome::Fail(..)) => {
                    failures += 1;
                    "FAIL".to_string()
                }
                Some(Outcome::NotApplicable(reason)) => {
                    let index = match reasons.iter().position(|r| r == reason) {
                        Some(index) => index,
                        None => {
                            reasons.push(reason.clone());
                            reasons.len() - 1
                        }
                    };
                    format!("n/a [{}]", index + 1)
                }
                None => "-".to_string(),
            };
            row.push_str(&format!(" | {cell:20}"));
        }
        println!("{row}");
    }
    for (index, reason) in reasons.iter().enumerate() {
        println!("  n/a [{}]: {reason}", index + 1);
    }
    println!(
        "  blynklib and blynk-library-python run the light's logic in the runner over their \
         drivers and call sync_all when connected, as a classic sketch's BLYNK_CONNECTED does"
    );
    for (s, scenario) in scenarios.iter().enumerate() {
        for (k, kind) in KINDS.iter().enumerate() {
            if let Some(Outcome::Fail(_, why)) = results.get(&(s, k)) {
                println!("\nFAILED {} x {}: {why}", scenario.name, kind.name());
            }
        }
    }
    failures
}

/// A JSON value as plain text: a string without its quotes, an array as its items' texts
/// joined by commas, anything else as JSON writes it.
pub(super) fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => {
            items.iter().map(json_text).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// The text ([`json_text`]) of the field `field` of the JSON object `body`; `None` when `body`
/// is no JSON object or has no such field.
pub(super) fn json_field(body: &str, field: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    body.get(field).map(json_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_fields() {
        let body = r#"{"value":1,"version":3,"online":true,"token":"ab-c","parts":["1","2"]}"#;
        assert_eq!(json_field(body, "value").as_deref(), Some("1"));
        assert_eq!(json_field(body, "online").as_deref(), Some("true"));
        assert_eq!(json_field(body, "token").as_deref(), Some("ab-c"));
        assert_eq!(json_field(body, "parts").as_deref(), Some("1,2"));
        assert_eq!(json_field(body, "missing"), None);
        assert_eq!(json_field("not json", "value"), None);
    }

    #[test]
    fn a_history_answer_is_read_point_by_point() {
        let body = r#"[{"value":"3","at":1000},{"value":4.0,"at":2000}]"#;
        assert!(case::history_has(body, "3", Some(1000)));
        assert!(case::history_has(body, "4", None));
        assert!(!case::history_has(body, "4", Some(1000)));
        assert!(!case::history_has("oops", "4", None));
    }
}
