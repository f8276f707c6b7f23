//! The `idle-rss` scenario: the server's resident memory per idle connection.

use super::*;

/// This process's soft limit of open files, from /proc.
pub(crate) fn open_file_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// VmRSS of a process, in KiB.
pub(crate) fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS line")
}

pub(crate) async fn idle_rss(target: &Target, args: &IdleArgs) -> Result<String> {
    let pid = target.server_pid().context(
        "idle-rss measures the server process: use a child server (the default) or --server-pid",
    )?;
    let devices = &target.devices[..args.connections];
    let growth = idle_growth(target, pid, devices, args.protocol).await?;
    let (before, at_half, after) = (growth.before, growth.at_half, growth.after);
    let (half, closed) = (growth.half, growth.closed);
    let count = args.connections as f64;
    let second_half = (args.connections - half) as f64;
    Ok(format!(
        "idle-rss: {} idle {} connections (logged in, no sync) to the {} (pid {pid}): server \
         VmRSS {} KiB before, {} KiB at {}, {} KiB at {}: {:.2} KiB per connection overall, {:.2} \
         KiB per connection over the second half; {} closed [target <= {} KiB]",
        args.connections,
        match args.protocol {
            IdleProtocol::Native => "native",
            IdleProtocol::Classic => "classic",
        },
        target.mode(),
        before,
        at_half,
        half,
        after,
        args.connections,
        after.saturating_sub(before) as f64 / count,
        after.saturating_sub(at_half) as f64 / second_half,
        closed,
        match args.protocol {
            IdleProtocol::Native => 4,
            IdleProtocol::Classic => 1,
        },
    ))
}

/// The server's resident memory (KiB) as idle connections are opened: before any, once `half`
/// of them are, and after all; and how many of them the server had closed by then.
pub(crate) struct IdleGrowth {
    pub before: u64,
    pub at_half: u64,
    pub after: u64,
    pub half: usize,
    pub closed: usize,
}

/// Opens an idle connection of `protocol` for each of `devices`, in two halves, reading the
/// memory of the server (process `pid`) once it settled before, between and after; the
/// connections are closed at the end.
pub(crate) async fn idle_growth(
    target: &Target,
    pid: u32,
    devices: &[DeviceRef],
    protocol: IdleProtocol,
) -> Result<IdleGrowth> {
    let settle = Duration::from_secs(2);
    tokio::time::sleep(settle).await;
    let before = vm_rss_kib(pid)?;
    let half = devices.len() / 2;
    let mut held = idle_logins(target, &devices[..half], protocol).await?;
    tokio::time::sleep(settle).await;
    let at_half = vm_rss_kib(pid)?;
    held.extend(idle_logins(target, &devices[half..], protocol).await?);
    tokio::time::sleep(settle).await;
    let after = vm_rss_kib(pid)?;
    // Every connection is still open and logged in: nothing was closed by the server.
    let closed = count_closed(&held).await;
    Ok(IdleGrowth {
        before,
        at_half,
        after,
        half,
        closed,
    })
}

/// Connections whose server side closed (a read returns end of file at once).
pub(crate) async fn count_closed(held: &[TcpStream]) -> usize {
    let mut closed = 0;
    for stream in held {
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_micros(1), stream.peek(&mut probe)).await
        {
            closed += 1;
        }
    }
    closed
}

/// Logs in `devices` with `protocol` and keeps their sockets.
pub(crate) async fn idle_logins(
    target: &Target,
    devices: &[DeviceRef],
    protocol: IdleProtocol,
) -> Result<Vec<TcpStream>> {
    match protocol {
        IdleProtocol::Native => {
            let conns = NativeConn::login_many(target.native, devices, 250, 3600).await?;
            Ok(conns.into_iter().map(|conn| conn.stream).collect())
        }
        IdleProtocol::Classic => classic_login_many(target.http, devices, 250).await,
    }
}
