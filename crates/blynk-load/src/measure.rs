//! What a row measures and how it reports it: the send times of a fixed-rate run (and the
//! latency of what answers them), a process's CPU time from `/proc/<pid>/stat` (utime + stime of
//! that process only), percentiles, and the `figure:` lines that `cargo xtask bench` reads to
//! write `docs/performance.md`.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;

/// How long a run loads the system: a warm-up, then the seconds measured.
#[derive(Args, Clone, Debug)]
pub struct Timing {
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds sent before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

/// The send times of a fixed-rate run's messages `0..total`, in nanoseconds since the run's
/// epoch (0 until sent); those from `measured_from` on, after the warm-up, are timed. Clones
/// share the times.
#[derive(Clone)]
pub struct SendTimes {
    pub rate: u64,
    /// The warm-up and the seconds measured.
    pub duration: Duration,
    pub total: usize,
    pub measured_from: usize,
    at: Arc<Vec<AtomicU64>>,
}

impl SendTimes {
    /// `rate` messages per second over the warm-up and the seconds measured. `row` (a run needs
    /// devices and a rate) names the row in the error.
    pub fn new(row: &str, devices: usize, rate: u64, timing: &Timing) -> Result<Self> {
        if devices == 0 || rate == 0 {
            bail!("{row} needs devices and a rate");
        }
        let total = (rate as f64 * (timing.warmup + timing.seconds)) as usize;
        Ok(SendTimes {
            rate,
            duration: Duration::from_secs_f64(timing.warmup + timing.seconds),
            total,
            measured_from: (rate as f64 * timing.warmup) as usize,
            at: Arc::new((0..total).map(|_| AtomicU64::new(0)).collect()),
        })
    }

    /// Messages `seqs` were sent at `now`.
    pub fn stamp(&self, seqs: Range<usize>, now: u64) {
        for at in &self.at[seqs] {
            at.store(now, Ordering::Relaxed);
        }
    }

    /// The send time of message `seq`, when it is measured (past the warm-up, within the run).
    pub fn measured(&self, seq: usize) -> Option<u64> {
        if seq < self.measured_from {
            return None;
        }
        Some(self.at.get(seq)?.load(Ordering::Relaxed))
    }

    /// The latency of what answers measured message `seq` at `now`.
    pub fn latency(&self, seq: usize, now: u64) -> Option<u64> {
        self.measured(seq).map(|at| now.saturating_sub(at))
    }

    /// Messages sent so far.
    pub fn sent(&self) -> usize {
        self.at
            .iter()
            .filter(|at| at.load(Ordering::Relaxed) > 0)
            .count()
    }
}

/// Waits for every receiving task (each gives the latencies it measured, in nanoseconds, and
/// the messages it received): all the latencies, sorted, and all the messages received.
pub async fn all_received(
    mut receivers: tokio::task::JoinSet<(Vec<u64>, u64)>,
) -> Result<(Vec<u64>, u64)> {
    let mut latencies = Vec::new();
    let mut received = 0;
    while let Some(done) = receivers.join_next().await {
        let (mine, count) = done?;
        latencies.extend(mine);
        received += count;
    }
    latencies.sort_unstable();
    Ok((latencies, received))
}

/// `work`, unless `stopped` changes (or its sender goes) first: then `None`.
pub async fn unless_stopped<T>(
    stopped: &mut tokio::sync::watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = stopped.changed() => None,
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU time of process `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Result<f64> {
        fields
            .get(number - 3)
            .and_then(|text| text.parse::<f64>().ok())
            .with_context(|| format!("field {number} of /proc/{pid}/stat"))
    };
    Ok((field(14)? + field(15)?) / clock_ticks_per_second())
}

/// A process's CPU time across a measured stretch.
pub struct CpuMeter {
    pid: u32,
    at_start: f64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Result<Self> {
        Ok(CpuMeter {
            pid,
            at_start: cpu_seconds(pid)?,
        })
    }

    /// Microseconds of CPU per unit of work since the start (`units` messages, writes, ...).
    pub fn micros_per(&self, units: u64) -> Result<f64> {
        let spent = cpu_seconds(self.pid)? - self.at_start;
        Ok(spent * 1e6 / units.max(1) as f64)
    }
}

/// The CPU time of several processes (the nodes of a row) across a measured stretch.
pub struct CpuMeters(Vec<CpuMeter>);

impl CpuMeters {
    pub fn start(pids: &[u32]) -> Result<Self> {
        pids.iter()
            .map(|pid| CpuMeter::start(*pid))
            .collect::<Result<_>>()
            .map(CpuMeters)
    }

    /// Microseconds of CPU per unit of work of each process, in the order of their ids.
    pub fn micros_per(&self, units: u64) -> Result<Vec<f64>> {
        self.0.iter().map(|meter| meter.micros_per(units)).collect()
    }
}

/// The `p`-quantile (0..=1) of sorted nanoseconds, in milliseconds; NaN when empty.
pub fn percentile_ms(sorted_nanos: &[u64], p: f64) -> f64 {
    if sorted_nanos.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_nanos.len() as f64 * p).ceil() as usize).clamp(1, sorted_nanos.len()) - 1;
    sorted_nanos[index] as f64 / 1e6
}

/// Prints one `figure:` line: the row, the system measured, and `name=value` pairs. Numbers are
/// written plainly (`nan` when there is none) so that `cargo xtask bench` can aggregate runs.
pub fn print_figures(row: &str, system: &str, pairs: &[(&str, String)]) {
    let mut line = format!("figure: row={row} system={system}");
    for (name, value) in pairs {
        let _ = write!(line, " {name}={}", value.replace(' ', "_"));
    }
    println!("{line}");
}

/// The runs of a row: prints the figures of each, counts those that failed.
#[derive(Default)]
pub struct Runs {
    pub failed: usize,
}

impl Runs {
    /// Run `what` (the row and the run's number) failed with `error`: says so on stderr.
    pub fn failed(&mut self, what: impl std::fmt::Display, error: &anyhow::Error) {
        eprintln!("  {what}: {error:#}");
        self.failed += 1;
    }

    /// Prints the `figures` of a run of `row` on `system` after the `leading` pairs that tell its
    /// runs apart, or its failure (`what` names it).
    pub fn report(
        &mut self,
        (row, system): (&str, &str),
        what: impl std::fmt::Display,
        mut leading: Vec<(&'static str, String)>,
        figures: Result<Vec<(&'static str, String)>>,
    ) {
        match figures {
            Ok(figures) => {
                leading.extend(figures);
                print_figures(row, system, &leading);
            }
            Err(error) => self.failed(what, &error),
        }
    }
}

/// A number as a figure value.
pub fn num(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "nan".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_spent_by_this_process_shows_in_its_stat() {
        let before = cpu_seconds(std::process::id()).expect("readable");
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        // At least two clock ticks of work, bounded by two seconds of wall time.
        while cpu_seconds(std::process::id()).expect("readable") - before < 0.02
            && started.elapsed() < std::time::Duration::from_secs(2)
        {
            for step in 0..100_000u64 {
                spin = std::hint::black_box(spin.wrapping_mul(31).wrapping_add(step));
            }
        }
        assert!(cpu_seconds(std::process::id()).expect("readable") - before >= 0.02);
    }

    #[test]
    fn percentiles_pick_the_rank_that_covers_p() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }
}
