//! The memory rows: the server's resident memory (VmRSS, its own process) per idle classic
//! device connection, and per device watched by one app. Apart from the `idle-rss` scenario
//! (native connections) so that each can change without the other.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use blynk_client::Error;
use blynk_client::events::{AppEvent, for_each_event};

use super::measure::num;
use super::{IdleProtocol, Target, app_socket, idle_growth, vm_rss_kib};

/// Time for the server's memory to settle before it is read.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Args, Clone, Debug)]
pub struct IdleClassicArgs {
    /// Idle classic device connections held.
    #[arg(long, default_value_t = 19_000)]
    pub connections: usize,
}

#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// Devices the app watches.
    #[arg(long, default_value_t = 19_000)]
    pub devices: usize,
    /// The watch is abandoned (figure marked) when the server's RSS passes this many MiB.
    #[arg(long, default_value_t = 6_144)]
    pub max_rss_mib: u64,
}

/// Row "idle classic device connections".
pub async fn idle_classic(
    target: &Target,
    args: &IdleClassicArgs,
) -> Result<Vec<(&'static str, String)>> {
    let pid = target.server_pid().context("a child server is needed")?;
    let count = args.connections.min(target.devices.len());
    let growth = idle_growth(target, pid, &target.devices[..count], IdleProtocol::Classic).await?;
    let mut figures = vec![("connections", count.to_string())];
    figures.extend(rss_figures(
        (growth.before, growth.after),
        "kib_per_connection",
        count,
    ));
    figures.push((
        "kib_per_connection_second_half",
        num(growth.after.saturating_sub(growth.at_half) as f64
            / (count - growth.half).max(1) as f64),
    ));
    figures.push(("closed", growth.closed.to_string()));
    Ok(figures)
}

/// Row "one app watching N devices".
pub async fn watch_memory(
    target: &Target,
    args: &WatchArgs,
) -> Result<Vec<(&'static str, String)>> {
    let pid = target.server_pid().context("a child server is needed")?;
    tokio::time::sleep(SETTLE).await;
    let before = vm_rss_kib(pid)?;
    let mut socket = app_socket(target.http, &target.admin_key).await?;
    socket.watch("all").await?;
    let started = Instant::now();
    let (mut snapshot, mut over_cap, mut peak) = (false, false, before);
    while !snapshot && started.elapsed() < super::SETUP_TIMEOUT * 2 {
        // The server's memory is sampled while the snapshot is being written.
        match tokio::time::timeout(Duration::from_millis(200), socket.recv()).await {
            Ok(Ok(text)) => {
                for_each_event(text.as_bytes(), |event| {
                    snapshot |= event == AppEvent::Snapshot;
                });
            }
            Ok(Err(Error::Closed { .. })) => bail!("the watcher was closed before its snapshot"),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {}
        }
        peak = peak.max(vm_rss_kib(pid)?);
        if peak > args.max_rss_mib * 1024 {
            over_cap = true;
            break;
        }
    }
    if !snapshot && !over_cap {
        bail!("no snapshot within {:?}", super::SETUP_TIMEOUT * 2);
    }
    tokio::time::sleep(SETTLE).await;
    let after = vm_rss_kib(pid)?.max(peak);
    drop(socket);
    let watched = target.devices.len().min(args.devices);
    let mut figures = vec![("devices", watched.to_string())];
    figures.extend(rss_figures(
        (before, after),
        "kib_per_watched_device",
        watched,
    ));
    figures.push(("over_cap", u8::from(over_cap).to_string()));
    Ok(figures)
}

/// The server's memory before and after (KiB), and the growth per unit (`per_unit`, over
/// `units`).
fn rss_figures(
    (before, after): (u64, u64),
    per_unit: &'static str,
    units: usize,
) -> [(&'static str, String); 3] {
    [
        ("rss_before_kib", before.to_string()),
        ("rss_after_kib", after.to_string()),
        (
            per_unit,
            num(after.saturating_sub(before) as f64 / units.max(1) as f64),
        ),
    ]
}
