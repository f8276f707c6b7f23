//! `cargo xtask fuzz`: the cargo-fuzz (libFuzzer) targets of `fuzz/`, built once on a nightly
//! toolchain and run one after the other, with a table of executions and crashes per target.
//! `cargo xtask test` smoke-runs every target a few seconds over its committed seeds.
//!
//! The nightly toolchain and cargo-fuzz are installed when missing. The targets are built with
//! no sanitizer: the code under test is safe Rust, where what a fuzzer finds is a panic, a hang
//! or unbounded memory, which libFuzzer reports without one, at twice the speed. The long runs
//! build optimized (with debug assertions, cargo-fuzz's default); the smoke step builds without
//! optimization, which compiles several times faster on a cold machine and runs fast enough
//! for a few seconds per target.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::workspace::{forget_own_package, workspace_root};

/// Every target of `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &[
    "native_decoder",
    "classic_decoder",
    "device_session",
    "server_native_session",
    "server_classic_session",
    "http_device_query",
];

/// Seconds each target runs in `cargo xtask test`.
pub const SMOKE_SECONDS: u64 = 3;

/// What one run of a target did.
#[derive(Debug)]
pub struct Outcome {
    /// The target.
    pub target: String,
    /// Seconds it ran.
    pub seconds: f64,
    /// Inputs executed, from libFuzzer's final statistics.
    pub executions: u64,
    /// Whether it stopped on a crash (a panic, a hang past the timeout, memory past the limit).
    pub crashed: bool,
}

/// `cargo xtask fuzz [--seconds N] [--target T]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60;
    let mut only: Option<String> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|value| value.parse().ok())
                    .context("--seconds takes a whole number")?;
            }
            "--target" => only = Some(args.next().context("--target takes a name")?.clone()),
            other => bail!("unknown argument `{other}` (fuzz [--seconds N] [--target T])"),
        }
    }
    let targets: Vec<&str> = match &only {
        Some(name) if TARGETS.contains(&name.as_str()) => vec![name.as_str()],
        Some(name) => bail!(
            "no fuzz target `{name}`; the targets: {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let outcomes = run_targets(&targets, seconds, Corpus::Growing, Profile::Release)?;
    print_table(&outcomes);
    if outcomes.iter().any(|outcome| outcome.crashed) {
        bail!("a fuzz target crashed; its input is in target/fuzz/artifacts/<target>/");
    }
    Ok(())
}

/// The smoke step of `cargo xtask test`: every target [`SMOKE_SECONDS`] over its seeds.
pub fn smoke() -> Result<bool> {
    let outcomes = run_targets(TARGETS, SMOKE_SECONDS, Corpus::SeedsOnly, Profile::Dev)?;
    print_table(&outcomes);
    Ok(outcomes.iter().all(|outcome| !outcome.crashed))
}

/// Where new inputs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corpus {
    /// Into `target/fuzz/corpus/<target>/`, kept between runs.
    Growing,
    /// Into a directory emptied first: the smoke run always starts from the seeds alone.
    SeedsOnly,
}

/// How the targets are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// Optimized, with debug assertions: for long runs.
    Release,
    /// Unoptimized: quick to build, for the smoke step.
    Dev,
}

fn run_targets(
    targets: &[&str],
    seconds: u64,
    corpus: Corpus,
    profile: Profile,
) -> Result<Vec<Outcome>> {
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let target_dir = target_dir(&root);
    // One build for every target: they share all their dependencies.
    println!("\n==> cargo +nightly fuzz build ({profile:?}, every target, no sanitizer)");
    let started = Instant::now();
    let mut build = cargo_nightly();
    build
        .current_dir(root.join("fuzz"))
        .args(["fuzz", "build", "--sanitizer", "none", "--target-dir"])
        .arg(&target_dir);
    if profile == Profile::Dev {
        build.arg("--dev");
    }
    let built = build.status().context("could not start cargo fuzz build")?;
    println!(
        "<== cargo fuzz build: {} in {:.1} s",
        if built.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if !built.success() {
        bail!("the fuzz targets did not build");
    }
    let binaries = target_dir.join(host_triple()?).join(match profile {
        Profile::Release => "release",
        Profile::Dev => "debug",
    });
    targets
        .iter()
        .map(|target| run_target(&root, &target_dir, &binaries, target, seconds, corpus))
        .collect()
}

fn run_target(
    root: &Path,
    target_dir: &Path,
    binaries: &Path,
    target: &str,
    seconds: u64,
    corpus: Corpus,
) -> Result<Outcome> {
    let seeds = root.join("fuzz").join("corpus").join(target);
    let work = target_dir.join(match corpus {
        Corpus::Growing => "corpus",
        Corpus::SeedsOnly => "smoke-corpus",
    });
    let work = work.join(target);
    if corpus == Corpus::SeedsOnly && work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let artifacts = target_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&artifacts)?;
    println!("\n==> fuzz {target} for {seconds} s");
    let started = Instant::now();
    // The first directory receives new inputs; the committed seeds are only read.
    let output = Command::new(binaries.join(target))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=30")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&work)
        .arg(&seeds)
        .stdout(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start the fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = log.lines().rev().take(12).collect();
    for line in tail.iter().rev() {
        println!("  {line}");
    }
    Ok(Outcome {
        target: target.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        executions: final_stat(&log, "stat::number_of_executed_units:").unwrap_or(0),
        crashed: !output.status.success(),
    })
}

/// A number from libFuzzer's `-print_final_stats=1` lines.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix(name))
        .and_then(|value| value.trim().parse().ok())
}

fn print_table(outcomes: &[Outcome]) {
    println!("\n| target | seconds | executions | per second | crashes |");
    println!("|---|---:|---:|---:|---:|");
    for outcome in outcomes {
        println!(
            "| {} | {:.0} | {} | {:.0} | {} |",
            outcome.target,
            outcome.seconds,
            outcome.executions,
            outcome.executions as f64 / outcome.seconds.max(0.001),
            u8::from(outcome.crashed)
        );
    }
}

/// The build directory of the fuzz crate: inside the workspace's own target directory.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fuzz")
}

/// `cargo +nightly` through rustup's proxy, without what `cargo run` told this process about
/// its own toolchain and package.
fn cargo_nightly() -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly").current_dir(workspace_root());
    forget_own_package(&mut command);
    command.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    command
}

fn ensure_nightly() -> Result<()> {
    let listed = Command::new("rustup").args(["toolchain", "list"]).output();
    if let Ok(output) = listed
        && String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.starts_with("nightly"))
    {
        return Ok(());
    }
    println!(
        "installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"
    );
    let status = Command::new("rustup")
        .args(["toolchain", "install", "nightly", "--profile", "minimal"])
        .status()?;
    if !status.success() {
        bail!("`rustup toolchain install nightly` failed");
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = cargo_nightly()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if found.is_ok_and(|status| status.success()) {
        return Ok(());
    }
    println!("installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz` failed");
    }
    Ok(())
}

/// The host's target triple, which cargo-fuzz builds for.
fn host_triple() -> Result<String> {
    let output = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read_from_libfuzzer_output() {
        let log = "#2 INITED\nDone 1234 runs in 3 second(s)\nstat::number_of_executed_units: 1234\nstat::peak_rss_mb: 40\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units:"),
            Some(1234)
        );
        assert_eq!(final_stat(log, "stat::new_units_added:"), None);
    }

    #[test]
    fn every_target_has_seeds() {
        let corpus = workspace_root().join("fuzz").join("corpus");
        for target in TARGETS {
            let seeds = std::fs::read_dir(corpus.join(target))
                .map(|entries| entries.count())
                .unwrap_or(0);
            assert!(seeds > 0, "fuzz/corpus/{target}/ holds no seed");
        }
    }
}
