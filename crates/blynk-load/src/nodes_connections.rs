//! The row "device connections held by several nodes": idle classic devices spread evenly over
//! the nodes, logged in by helper processes (`hold-classic`, see `holder.rs`: one process cannot
//! open them all), with each node's resident memory (VmRSS) before and after. At the end, with
//! every connection still held: presence crosses nodes (a device held by one node is online on
//! the other) and app writes still reach devices (one on each node, written from the last node).

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::cluster::{Cluster, device_view, is_online, wait_online};
use super::links::{DeviceIncoming, DeviceProtocol, UnderTest, connect_devices};
use super::measure::num;
use super::{DeviceRef, Target, TempData, app_client, vm_rss_kib, wait_or_kill};

/// Connections one helper process holds at most (under its 20,000 descriptors).
const PER_HELPER: usize = 19_000;
/// Time for a node's memory to settle before it is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Devices kept out of the held ones, one per node, for the end's write check.
const PROBES_PER_NODE: usize = 1;

#[derive(Args, Clone, Debug)]
pub struct HeldArgs {
    /// Idle classic connections held by all the nodes together.
    #[arg(long, default_value_t = 39_000)]
    pub connections: usize,
    /// Seconds after which the helpers start no more logins (what they hold then is measured).
    #[arg(long, default_value_t = 600)]
    pub login_seconds: u64,
}

/// The `[limits]` line of nodes started for this row: each holds its share, under its
/// descriptors (the server lowers it to fit them anyway).
pub const NODE_LIMITS: &[&str] = &["max_connections = 19900"];

/// A helper process holding connections to one node.
struct Helper {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    node: usize,
    /// The devices it was given, in order.
    devices: Vec<DeviceRef>,
    _tokens: TempData,
}

impl Helper {
    fn start(node: usize, target: &Target, devices: &[DeviceRef], seconds: u64) -> Result<Helper> {
        let tokens = TempData::new()?;
        let file = tokens.0.join("tokens");
        let mut list = String::with_capacity(devices.len() * 40);
        for device in devices {
            list.push_str(&device.token);
            list.push('\n');
        }
        std::fs::write(&file, list)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("hold-classic")
            .arg("--at")
            .arg(target.http.to_string())
            .arg("--tokens")
            .arg(&file)
            .arg("--seconds")
            .arg(seconds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a hold-classic helper")?;
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().context("the helper's output")?);
        Ok(Helper {
            child,
            input,
            output,
            node,
            devices: devices.to_vec(),
            _tokens: tokens,
        })
    }

    /// The numbers of the next line starting with `word`.
    fn answer(&mut self, word: &str) -> Result<Vec<usize>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.output.read_line(&mut line)? == 0 {
                bail!("a hold-classic helper ended before saying `{word}`");
            }
            let mut parts = line.split_whitespace();
            if parts.next() == Some(word) {
                return parts
                    .map(|text| {
                        text.parse()
                            .with_context(|| format!("the helper's line `{}`", line.trim()))
                    })
                    .collect();
            }
        }
    }

    /// `(open, closed)` connections now.
    fn check(&mut self) -> Result<(usize, usize)> {
        let input = self
            .input
            .as_mut()
            .context("the helper's input is closed")?;
        writeln!(input, "check")?;
        input.flush()?;
        match self.answer("open")?[..] {
            [open, closed] => Ok((open, closed)),
            _ => bail!("the helper's `open` line has not two numbers"),
        }
    }

    /// Closes its input (it releases its connections and exits) and waits for it, bounded.
    fn release(mut self) {
        drop(self.input.take());
        wait_or_kill(
            &mut self.child,
            Duration::from_secs(30),
            Duration::from_millis(50),
        );
    }
}

/// Row "device connections held by several nodes".
pub fn connections_held(
    cluster: &Cluster,
    args: &HeldArgs,
    load: &tokio::runtime::Runtime,
) -> Result<Vec<(&'static str, String)>> {
    let nodes = cluster.nodes.len();
    let devices = &cluster.nodes[0].devices;
    let probes = nodes * PROBES_PER_NODE;
    if devices.len() < probes + args.connections {
        bail!("fewer devices than connections");
    }
    let pids = cluster.pids()?;
    std::thread::sleep(SETTLE);
    let before: Vec<u64> = pids
        .iter()
        .map(|pid| vm_rss_kib(*pid))
        .collect::<Result<_>>()?;
    // Device `probes + i` goes to node `i % nodes`, in helpers of at most PER_HELPER each.
    let mut shares: Vec<Vec<DeviceRef>> = vec![Vec::new(); nodes];
    for (offset, device) in devices[probes..probes + args.connections]
        .iter()
        .enumerate()
    {
        shares[offset % nodes].push(device.clone());
    }
    let started = Instant::now();
    let mut helpers = Vec::new();
    for (node, share) in shares.iter().enumerate() {
        let parts = share.len().div_ceil(PER_HELPER).max(1);
        for part in share.chunks(share.len().div_ceil(parts).max(1)) {
            helpers.push(Helper::start(
                node,
                &cluster.nodes[node],
                part,
                args.login_seconds,
            )?);
        }
    }
    let (mut failed, mut retried, mut untried) = (0, 0, 0);
    for helper in &mut helpers {
        let [_, still_failed, tried_again, not_tried] = helper.answer("held")?[..] else {
            bail!("the helper's `held` line has not four numbers");
        };
        failed += still_failed;
        retried += tried_again;
        untried += not_tried;
    }
    // One device each helper holds, for the presence check: (its node, its id).
    let mut samples = Vec::new();
    for helper in &mut helpers {
        let line = helper.answer("sample");
        if let Some(device) = line
            .ok()
            .and_then(|numbers| numbers.first().copied())
            .and_then(|index| helper.devices.get(index))
        {
            samples.push((helper.node, device.id));
        }
    }
    let login_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let after: Vec<u64> = pids
        .iter()
        .map(|pid| vm_rss_kib(*pid))
        .collect::<Result<_>>()?;
    let outcome = load.block_on(still_working(cluster, &samples));
    let mut held = vec![0usize; nodes];
    let mut closed = 0;
    for helper in &mut helpers {
        let (open, gone) = helper.check()?;
        held[helper.node] += open;
        closed += gone;
    }
    for helper in helpers {
        helper.release();
    }
    let (presence, writes) = match outcome {
        Ok(found) => found,
        Err(error) => {
            eprintln!("  the end's checks failed: {error:#}");
            (0, 0)
        }
    };
    let total_held: usize = held.iter().sum();
    let grown: u64 = after
        .iter()
        .zip(&before)
        .map(|(after, before)| after.saturating_sub(*before))
        .sum();
    let mut figures = vec![
        ("nodes", nodes.to_string()),
        ("connections", args.connections.to_string()),
        ("held", total_held.to_string()),
        ("failed_logins", failed.to_string()),
        ("retried_logins", retried.to_string()),
        ("untried_logins", untried.to_string()),
        ("closed", closed.to_string()),
        ("login_seconds", num(login_seconds)),
        (
            "kib_per_connection",
            num(grown as f64 / total_held.max(1) as f64),
        ),
        ("presence_ok", presence.to_string()),
        ("writes_ok", writes.to_string()),
    ];
    const PER_NODE: [(&str, &str, &str); 2] = [
        (
            "held_node_a",
            "rss_after_kib_node_a",
            "kib_per_connection_node_a",
        ),
        (
            "held_node_b",
            "rss_after_kib_node_b",
            "kib_per_connection_node_b",
        ),
    ];
    for (node, (held_name, rss_name, per_name)) in PER_NODE.iter().enumerate().take(nodes) {
        figures.push((held_name, held[node].to_string()));
        figures.push((rss_name, after[node].to_string()));
        figures.push((
            per_name,
            num(after[node].saturating_sub(before[node]) as f64 / held[node].max(1) as f64),
        ));
    }
    Ok(figures)
}

/// With every connection held: whether a device held by each helper is online on the next
/// node (`samples`: its node and id) while a device never connected is not, and whether app
/// writes from the last node reach a probe device on each node. `(presence, writes)`: 1 when
/// all did.
async fn still_working(cluster: &Cluster, samples: &[(usize, i64)]) -> Result<(u8, u8)> {
    let nodes = cluster.nodes.len();
    let mut presence = !samples.is_empty();
    for &(node, id) in samples {
        let elsewhere = &cluster.nodes[(node + 1) % nodes];
        if wait_online(elsewhere, &[id]).await.is_err() {
            eprintln!("  presence: device {id} held by node {node} is not online elsewhere");
            presence = false;
        }
        // And offline ones stay offline: a probe device is not connected yet.
        if is_online(elsewhere, cluster.nodes[0].devices[node].id).await? {
            eprintln!("  presence: a device never connected shows online");
            presence = false;
        }
    }
    let writer = &cluster.nodes[nodes - 1];
    let mut client = app_client(writer.http, &writer.admin_key)?
        .connect()
        .await?;
    let mut writes = true;
    for node in 0..nodes {
        let probe = cluster.nodes[0].devices[node].clone();
        let mut view = device_view(&cluster.nodes[node]);
        view.devices = vec![probe.clone()];
        let on_node = UnderTest::Server(view, DeviceProtocol::Classic);
        let mut device = connect_devices(&on_node, 1, true)
            .await?
            .pop()
            .context("the probe device")?;
        wait_online(writer, &[probe.id]).await?;
        let value = 777_000 + node as i64;
        let body = serde_json::json!({ "value": value, "wait_ms": 5000 });
        let path = format!("/api/devices/{}/values/V0", probe.id);
        if let Err(error) = client.put(&path, &body, Duration::from_secs(5)).await {
            eprintln!("  write to the probe on node {node}: {error}");
            writes = false;
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut received = false;
        while !received {
            let read = tokio::time::timeout_at(
                deadline,
                device.read(|incoming| {
                    received |= matches!(incoming, DeviceIncoming::AppWrite(got) if got == value)
                }),
            )
            .await;
            if !matches!(read, Ok(Ok(true))) {
                break;
            }
        }
        if !received {
            eprintln!("  the write to the probe on node {node} did not reach it");
            writes = false;
        }
    }
    Ok((u8::from(presence), u8::from(writes)))
}
