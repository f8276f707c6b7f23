//! The memory rows: the server's resident memory (VmRSS, its own process) per idle classic
//! device connection, and per device watched by one app. Apart from the `idle-rss` scenario
//! (native connections) so that each can change without the other.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::app_events::{self, AppEvent};
use super::measure::num;
use super::{Target, classic_login, join_all_ok, vm_rss_kib, ws_connect, ws_parse, ws_text};

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

/// Classic logins in batches of 250.
async fn classic_logins(target: &Target, from: usize, to: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(to - from);
    for chunk in target.devices[from..to].chunks(250) {
        let mut logins: JoinSet<Result<TcpStream>> = JoinSet::new();
        for device in chunk {
            let (http, token) = (target.http, device.token.clone());
            logins.spawn(async move { classic_login(http, &token).await });
        }
        held.extend(join_all_ok(&mut logins, "classic logins").await?);
    }
    Ok(held)
}

/// Row "idle classic device connections".
pub async fn idle_classic(
    target: &Target,
    args: &IdleClassicArgs,
) -> Result<Vec<(&'static str, String)>> {
    let pid = target.server_pid().context("a child server is needed")?;
    let count = args.connections.min(target.devices.len());
    tokio::time::sleep(SETTLE).await;
    let before = vm_rss_kib(pid)?;
    let half = count / 2;
    let mut held = classic_logins(target, 0, half).await?;
    tokio::time::sleep(SETTLE).await;
    let at_half = vm_rss_kib(pid)?;
    held.extend(classic_logins(target, half, count).await?);
    tokio::time::sleep(SETTLE).await;
    let after = vm_rss_kib(pid)?;
    let mut closed = 0;
    for stream in &held {
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_micros(1), stream.peek(&mut probe)).await
        {
            closed += 1;
        }
    }
    drop(held);
    Ok(vec![
        ("connections", count.to_string()),
        ("rss_before_kib", before.to_string()),
        ("rss_after_kib", after.to_string()),
        (
            "kib_per_connection",
            num(after.saturating_sub(before) as f64 / count.max(1) as f64),
        ),
        (
            "kib_per_connection_second_half",
            num(after.saturating_sub(at_half) as f64 / (count - half).max(1) as f64),
        ),
        ("closed", closed.to_string()),
    ])
}

/// Row "one app watching N devices".
pub async fn watch_memory(
    target: &Target,
    args: &WatchArgs,
) -> Result<Vec<(&'static str, String)>> {
    let pid = target.server_pid().context("a child server is needed")?;
    tokio::time::sleep(SETTLE).await;
    let before = vm_rss_kib(pid)?;
    let (mut reader, mut write) = ws_connect(target.http, &target.admin_key).await?;
    let mut out = Vec::new();
    ws_text(&mut out, br#"{"type":"watch","devices":"all"}"#);
    write.write_all(&out).await?;
    let started = Instant::now();
    let (mut snapshot, mut over_cap, mut peak) = (false, false, before);
    while !snapshot && started.elapsed() < super::SETUP_TIMEOUT * 2 {
        match tokio::time::timeout(Duration::from_millis(200), reader.fill()).await {
            Ok(Ok(0)) => bail!("the watcher was closed before its snapshot"),
            Ok(result) => {
                result?;
            }
            Err(_) => {}
        }
        while let Some((opcode, payload, consumed)) = ws_parse(&reader.buffer[reader.start..])? {
            if opcode == 1 {
                app_events::for_each_event(payload, |event| {
                    snapshot |= matches!(event, AppEvent::Snapshot)
                });
            }
            reader.start += consumed;
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
    drop((reader, write));
    let watched = target.devices.len().min(args.devices);
    Ok(vec![
        ("devices", watched.to_string()),
        ("rss_before_kib", before.to_string()),
        ("rss_after_kib", after.to_string()),
        (
            "kib_per_watched_device",
            num(after.saturating_sub(before) as f64 / watched.max(1) as f64),
        ),
        ("over_cap", u8::from(over_cap).to_string()),
    ])
}
