//! `blynk-probe`: replays the connection attacks of SPEC section 6 at full scale against a
//! `blynk-server` child on loopback and prints what the server did and its memory (RSS from
//! `/proc`, so Linux only). The figures are in `docs/reliability.md`.
//!
//! ```text
//! blynk-probe websocket   # 16 unfinished 60 MB messages on /websockets
//! blynk-probe headers     # 200 unfinished 390 KB request headers, 300 header trickles
//! blynk-probe per-address # 19,200 idle connections from one address, then others
//! blynk-probe limiter     # bad tokens from 120,000 addresses, a good client meanwhile
//! blynk-probe limiter --control --addresses 30000   # the same load with right tokens
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use blynk_testbed::server::{self, START_WITHIN, ServerCommand};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Replays SPEC 6's connection attacks against a blynk-server child")]
struct Cli {
    /// The server binary (default: `blynk-server` next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    #[command(subcommand)]
    probe: Probe,
}

#[derive(Subcommand, Clone, Copy)]
enum Probe {
    /// Unfinished oversized messages on the classic WebSocket endpoint.
    Websocket,
    /// Unfinished oversized request headers, and headers trickled a byte at a time.
    Headers,
    /// Idle connections from one address, then a client from another.
    PerAddress,
    /// Bad tokens from many addresses, with a good client's latency meanwhile.
    Limiter {
        /// Addresses, one request each.
        #[arg(long, default_value_t = 120_000)]
        addresses: u32,
        /// The same requests with the right token: the load without a single failure, to
        /// compare the good client's latency with.
        #[arg(long)]
        control: bool,
    },
}

/// A server child on loopback ports over a temporary data directory.
struct Server {
    child: Child,
    http: SocketAddr,
    native: SocketAddr,
    token: String,
    _data: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server with `limits` (TOML lines for the `[limits]` table) on top of the
    /// defaults.
    fn start(binary: &Path, limits: &str) -> Result<Self> {
        let data = std::env::temp_dir().join(format!("blynk-probe-{}", std::process::id()));
        std::fs::create_dir_all(&data)?;
        let data = TempDir(data);
        let added = Command::new(binary)
            .arg("--data")
            .arg(&data.0)
            .args(["device", "add", "--template", "light", "--name", "probe"])
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        let token = String::from_utf8(added.stdout)?.trim().to_owned();
        if token.len() != 32 {
            bail!("`device add` printed no token");
        }
        let config = data.0.join("probe.toml");
        std::fs::write(&config, format!("[limits]\n{limits}\n"))?;
        let mut command = ServerCommand::new(binary, &data.0).log("error").command();
        command.arg("--config").arg(&config).arg("serve");
        let (child, ready) = server::spawn(&mut command, &data.0.join("ready.json"), START_WITHIN)?;
        Ok(Server {
            child,
            http: ready.http,
            native: ready.native,
            token,
            _data: data,
        })
    }

    /// Resident memory in MB.
    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(target).await
}

/// Whether the server closed `stream` (read 0 or an error) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Sends one HTTP request on a new connection from `source` and returns the status (0: none).
async fn http_status(source: Ipv4Addr, target: SocketAddr, path: &str) -> u16 {
    let Ok(mut stream) = connect_from(source, target).await else {
        return 0;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

async fn websocket(server: &Server) -> Result<()> {
    const CONNECTIONS: usize = 16;
    const MESSAGE: u64 = 60_000_000;
    const FRAME: usize = 1 << 20;
    let before = server.rss_mb();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (target, sent) = (server.http, sent.clone());
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(target).await.ok()?;
            let upgrade = "GET /websockets HTTP/1.1\r\nHost: probe\r\nUpgrade: websocket\r\n\
                Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                Sec-WebSocket-Version: 13\r\n\r\n";
            stream.write_all(upgrade.as_bytes()).await.ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.ok()?;
            let payload = vec![0u8; FRAME];
            // A 60 MB binary message in 1 MiB fragments (under the library's default 16 MiB
            // frame limit), never finished.
            for index in 0..(MESSAGE as usize).div_ceil(FRAME) {
                let mut frame = vec![if index == 0 { 0x02 } else { 0x00 }, 0x80 | 127];
                frame.extend_from_slice(&(FRAME as u64).to_be_bytes());
                frame.extend_from_slice(&[0; 4]);
                if stream.write_all(&frame).await.is_err()
                    || stream.write_all(&payload).await.is_err()
                {
                    return Some(true);
                }
                sent.fetch_add(FRAME as u64, Ordering::Relaxed);
            }
            Some(closed_within(&mut stream, Duration::from_secs(5)).await)
        });
    }
    let mut closed = 0;
    while let Some(result) = tasks.join_next().await {
        closed += usize::from(result.ok().flatten().unwrap_or(false));
    }
    println!(
        "websocket: {CONNECTIONS} x unfinished {} MB messages: the clients wrote {:.1} MB (mostly into \
         the kernel's socket buffers) before the server closed them; \
         {closed}/{CONNECTIONS} closed by the server; RSS {before:.0} MB -> {:.0} MB",
        MESSAGE / 1_000_000,
        sent.load(Ordering::Relaxed) as f64 / 1e6,
        server.rss_mb()
    );
    Ok(())
}

async fn headers(server: &Server) -> Result<()> {
    const CONNECTIONS: usize = 200;
    const HEADER: usize = 390 * 1024;
    let before = server.rss_mb();
    let started = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(server.http).await?;
        let mut header = b"GET / HTTP/1.1\r\nX-Padding: ".to_vec();
        header.resize(HEADER, b'a');
        // The server may stop reading (and close) long before the end: that is the point.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&header)).await;
        streams.push(stream);
    }
    let peak = server.rss_mb();
    let mut closed = 0;
    for stream in &mut streams {
        closed += usize::from(closed_within(stream, Duration::from_millis(20)).await);
    }
    println!(
        "headers: {CONNECTIONS} x unfinished {} KB headers: {closed}/{CONNECTIONS} closed by the \
         server after {:.1} s; RSS {before:.0} MB -> {peak:.0} MB",
        HEADER / 1024,
        started.elapsed().as_secs_f64()
    );
    drop(streams);

    const TRICKLES: usize = 300;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TRICKLES {
        let target = server.http;
        tasks.spawn(async move {
            let mut stream = TcpStream::connect(target).await.ok()?;
            stream.write_all(b"GET / HTTP/1.1\r\n").await.ok()?;
            // One header byte every 5 s for up to 75 s.
            for _ in 0..15 {
                if stream.write_all(b"X").await.is_err()
                    || closed_within(&mut stream, Duration::from_secs(5)).await
                {
                    return Some(started.elapsed());
                }
            }
            None
        });
    }
    let (mut closed, mut last) = (0, Duration::ZERO);
    while let Some(result) = tasks.join_next().await {
        if let Some(after) = result.ok().flatten() {
            closed += 1;
            last = last.max(after);
        }
    }
    println!(
        "trickle: {TRICKLES} connections sending a header byte every 5 s: {closed}/{TRICKLES} \
         closed by the server, the last after {:.1} s",
        last.as_secs_f64()
    );
    Ok(())
}

async fn per_address(server: &Server) -> Result<()> {
    const IDLE: usize = 19_200;
    // Opened 64 at a time, so that all are open well within the header deadline (10 s), which
    // would otherwise close the first ones.
    let started = Instant::now();
    let mut openers = tokio::task::JoinSet::new();
    for worker in 0..64 {
        let target = server.http;
        openers.spawn(async move {
            let mut streams = Vec::new();
            for _ in (worker..IDLE).step_by(64) {
                // From 127.0.0.1, the default source: binding first would make the kernel search
                // the port range for every connection.
                // One request each, then idle on keep-alive.
                let mut stream = TcpStream::connect(target).await;
                if let Ok(open) = &mut stream {
                    let _ = open
                        .write_all(b"GET / HTTP/1.1\r\nHost: probe\r\n\r\n")
                        .await;
                }
                streams.push(stream);
            }
            streams
        });
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    while let Some(streams) = openers.join_next().await {
        for stream in streams? {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => refused += 1,
            }
        }
    }
    let opening = started.elapsed();
    // Refused connections are accepted by the kernel and closed by the server at once.
    let mut open = 0;
    for stream in &mut held {
        open += usize::from(!closed_within(stream, Duration::from_millis(1)).await);
    }
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let good = http_status(other, server.http, "/").await;
    let device = connect_from(other, server.native).await.is_ok();
    println!(
        "per-address: {IDLE} idle keep-alive HTTP connections from one address, opened in {:.1} \
         s: {open} kept open ({refused} failed to connect); a client from another address got HTTP {good}, \
         a native connection {}",
        opening.as_secs_f64(),
        if device { "accepted" } else { "refused" }
    );
    Ok(())
}

/// Median latency in ms of `count` good requests from an address of their own, 100 ms apart.
async fn good_latency(server: &Server, count: usize) -> (Vec<Duration>, usize) {
    let path = format!("/external/api/isHardwareConnected?token={}", server.token);
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for _ in 0..count {
        let sent = Instant::now();
        if http_status(Ipv4Addr::new(127, 0, 0, 9), server.http, &path).await != 200 {
            failures += 1;
        }
        latencies.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (latencies, failures)
}

fn percentile_ms(sorted: &[Duration], share: f64) -> f64 {
    let index = ((sorted.len() as f64 * share) as usize).min(sorted.len().saturating_sub(1));
    sorted
        .get(index)
        .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
}

/// The limiter alone, in this process: the cost of a failure as the number of addresses grows.
fn limiter_in_process() {
    use blynk_server::login_limiter::LoginLimiter;
    const FAILURES: u32 = 1_000_000;
    let limiter = LoginLimiter::new(20);
    let mut per_step = Vec::new();
    let started = std::time::Instant::now();
    let mut step_started = started;
    for n in 0..FAILURES {
        let address = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n));
        let _ = limiter.record_failure(address);
        if (n + 1) % 250_000 == 0 {
            per_step.push(step_started.elapsed().as_nanos() as f64 / 250_000.0);
            step_started = std::time::Instant::now();
        }
    }
    let steps: Vec<String> = per_step.iter().map(|ns| format!("{ns:.0}")).collect();
    println!(
        "limiter in process: {FAILURES} failures from distinct addresses: ns per failure by \
         quarter {}; addresses kept {}",
        steps.join(" / "),
        limiter.tracked()
    );
}

async fn limiter(server: &Server, addresses: u32, control: bool) -> Result<()> {
    const WORKERS: u32 = 64;
    if !control {
        limiter_in_process();
    }
    let attack_path: Arc<str> = if control {
        format!("/external/api/isHardwareConnected?token={}", server.token).into()
    } else {
        "/external/api/get?token=wrongwrongwrongwrongwrongwrong12&v1".into()
    };
    let (mut baseline, _) = good_latency(server, 50).await;
    baseline.sort();
    let before = server.rss_mb();
    let next = Arc::new(AtomicU64::new(0));
    let statuses: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let started = Instant::now();
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let (next, statuses, target) = (next.clone(), statuses.clone(), server.http);
        let path = attack_path.clone();
        attackers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed) as u32;
                if n >= addresses {
                    return;
                }
                // 127.1.0.0 onwards: every request from an address of its own.
                let source = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + n);
                let slot = match http_status(source, target, &path).await {
                    401 | 200 => 0,
                    429 => 1,
                    0 => 2,
                    _ => 3,
                };
                statuses[slot].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut latencies = Vec::new();
    let mut good_failures = 0;
    let mut first_10k = None;
    while next.load(Ordering::Relaxed) < u64::from(addresses) {
        if first_10k.is_none() && next.load(Ordering::Relaxed) >= 10_000 {
            first_10k = Some(started.elapsed());
        }
        let (latency, failures) = good_latency(server, 1).await;
        latencies.extend(latency);
        good_failures += failures;
    }
    while attackers.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let count = |slot: usize| statuses[slot].load(Ordering::Relaxed);
    let first_rate = first_10k.map_or(0.0, |took| 10_000.0 / took.as_secs_f64());
    println!(
        "limiter{}: {addresses} addresses, one {} token each, {WORKERS} at a time: {:.0} \
         requests/s overall, {first_rate:.0}/s over the first 10,000 ({} answered 401 or 200, {} 429, \
         {} no answer, {} other); a good request every 100 ms from another address: before \
         the attack median {:.1} ms, p99 {:.1} ms; during it {} requests ({good_failures} \
         failed), median {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS {before:.0} MB -> {:.0} MB",
        if control { " (control)" } else { "" },
        if control { "right" } else { "bad" },
        f64::from(addresses) / elapsed,
        count(0),
        count(1),
        count(2),
        count(3),
        percentile_ms(&baseline, 0.5),
        percentile_ms(&baseline, 0.99),
        latencies.len(),
        percentile_ms(&latencies, 0.5),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 1.0),
        server.rss_mb()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let binary = match cli.server_bin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("blynk-server"),
    };
    // The per-address probe keeps its idle keep-alive connections open longer than the header
    // deadline would (which also ends idle keep-alives), to see the cap alone.
    let limits = match cli.probe {
        Probe::PerAddress => "http_header_seconds = 600",
        _ => "",
    };
    let server = Server::start(&binary, limits)?;
    // Let the start settle, so that the first RSS reading is the idle server's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    match cli.probe {
        Probe::Websocket => websocket(&server).await,
        Probe::Headers => headers(&server).await,
        Probe::PerAddress => per_address(&server).await,
        Probe::Limiter { addresses, control } => limiter(&server, addresses, control).await,
    }
}
