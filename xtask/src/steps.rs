//! The steps of `cargo xtask test`, run in order, collecting failures, and the commands they
//! share with `cargo xtask bench`.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::workspace::{TestCounts, cargo, forget_own_package, workspace_root};

/// Embedded targets that `blynk-proto` and `blynk-device` must build for without std or alloc:
/// Cortex-M0+ (no atomics), Cortex-M4F/M7 (the Nucleo-F767ZI) and RISC-V (the ESP32-C3).
const NO_STD_TARGETS: &[&str] = &[
    "thumbv6m-none-eabi",
    "thumbv7em-none-eabihf",
    "riscv32imc-unknown-none-elf",
];

/// Runs `command`, printing what runs and how long it took; `Ok(false)` when it failed.
fn run(label: &str, command: &mut Command) -> Result<bool> {
    println!("\n==> {label}");
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("could not start `{label}`"))?;
    println!(
        "<== {label}: {} in {:.1} s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(status.success())
}

/// Like [`run`], echoing the output and counting the tests it reports.
fn run_counting_tests(label: &str, command: &mut Command) -> Result<(bool, TestCounts)> {
    use std::io::{BufRead, BufReader};
    println!("\n==> {label}");
    let started = Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{label}`"))?;
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            counts.add_line(&line);
        }
    }
    let status = child.wait()?;
    println!(
        "<== {label}: {} in {:.1} s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok((status.success(), counts))
}

/// Adds a rustup target when it is not installed yet.
pub fn ensure_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(output) = installed
        && String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == target)
    {
        return Ok(());
    }
    println!("adding rustup target {target}");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()?;
    if !status.success() {
        bail!("`rustup target add {target}` failed");
    }
    Ok(())
}

/// The arguments of the conformance step on several nodes: one device kind, the native light
/// (the most scenarios: offline queue, delta resync, sync marker), to keep the step short; the
/// whole matrix on three nodes is `cargo xtask conformance --nodes 3`.
const CONFORMANCE_ON_NODES: [&str; 4] = ["--nodes", "3", "--kind", "blynk-device"];

/// Every check CI runs; all steps run even when one fails, and the failures are listed at the end.
pub fn test() -> Result<()> {
    // Before anything builds: a missing package would fail a step only after minutes of work.
    crate::packages::ensure_rust_components()?;
    crate::packages::ensure()?;
    let mut steps: Vec<(String, bool)> = Vec::new();
    let mut record = |label: &str, ok: bool| steps.push((label.to_string(), ok));

    record(
        "cargo fmt --check",
        run(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )?,
    );
    record(
        "cargo clippy -D warnings",
        run(
            "cargo clippy -D warnings",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?,
    );
    let (tests_ok, counts) = run_counting_tests(
        "cargo test",
        cargo().args(["test", "--workspace", "--no-fail-fast"]),
    )?;
    record("cargo test", tests_ok);
    // The README's first command must start the server, not some other binary of its package.
    record(
        "README quick start resolves (cargo run -p blynk-server)",
        run(
            "cargo run -p blynk-server -- --help",
            cargo().args(["run", "-q", "-p", "blynk-server", "--", "--help"]),
        )?,
    );
    // Every fuzz target a few seconds over its committed seeds (nightly and cargo-fuzz are
    // installed when missing); `cargo xtask fuzz` is the long run.
    let fuzz_ok = crate::fuzz::smoke().unwrap_or_else(|error| {
        eprintln!("fuzz smoke run could not run: {error:#}");
        false
    });
    record("fuzz smoke run", fuzz_ok);
    let (browser_ok, browser_counts) = crate::browser::run().unwrap_or_else(|error| {
        eprintln!("browser tests could not run: {error:#}");
        (false, TestCounts::default())
    });
    record("browser tests", browser_ok);
    // The state-sync conformance scenarios, every device kind (prints its own table). As root
    // (CI runs as root) the simulated embassy-net device joins on TAP devices of its own; a
    // developer without root runs the other kinds and sees the column marked opt-in.
    let sim = if crate::workspace::is_root() {
        vec!["--sim".to_string()]
    } else {
        Vec::new()
    };
    let conformance = crate::conformance::run(&sim);
    if let Err(error) = &conformance {
        eprintln!("conformance suite: {error:#}");
    }
    record("conformance suite", conformance.is_ok());
    // The same scenarios across three nodes on PostgreSQL and nats-server (SPEC 7).
    let nodes = crate::conformance::run(&CONFORMANCE_ON_NODES.map(String::from));
    if let Err(error) = &nodes {
        eprintln!("conformance suite on 3 nodes: {error:#}");
    }
    record("conformance suite on 3 nodes (blynk-device)", nodes.is_ok());
    // A short soak under loss (about 30 s): the long one is `cargo xtask soak`. It needs root
    // for its network namespaces; without root it says so and is left out.
    if crate::netns::available() {
        let smoke = crate::soak::soak(crate::soak::Options {
            devices: 20,
            seconds: 20,
            loss: 20,
        });
        if let Err(error) = &smoke {
            eprintln!("soak smoke: {error:#}");
        }
        record(
            "soak smoke (20 devices, 20 s, 20% loss)",
            smoke.is_ok_and(|report| report.passed()),
        );
    } else {
        println!("\nsoak smoke: left out (it needs root for its network namespaces)");
    }
    // Type-checked, not compiled to machine code: what a no_std or no-alloc slip breaks is a
    // name that does not resolve, which `check` finds at a fraction of a build's time. The
    // boards' firmware (`cargo xtask build`) is the full build.
    for target in NO_STD_TARGETS {
        ensure_target(target)?;
    }
    let checks: [(&str, &[&str]); 3] = [
        ("blynk-proto", &[]),
        ("blynk-device", &[]),
        ("blynk-device", &["--features", "embassy-net"]),
    ];
    for (package, features) in checks {
        let label = format!(
            "{package}{} for {} (no_std, no alloc)",
            if features.is_empty() {
                ""
            } else {
                " +embassy-net"
            },
            NO_STD_TARGETS.join(", ")
        );
        let mut command = cargo();
        command.args(["check", "-p", package]).args(features);
        for target in NO_STD_TARGETS {
            command.args(["--target", target]);
        }
        record(&label, run(&label, &mut command)?);
    }

    let failed: Vec<&str> = steps
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(label, _)| label.as_str())
        .collect();
    println!(
        "\nsteps: {} ok, {} failed {:?}",
        steps.len() - failed.len(),
        failed.len(),
        failed
    );
    println!(
        "tests: {} passed, {} failed",
        counts.passed + browser_counts.passed,
        counts.failed + browser_counts.failed
    );
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("failed steps: {}", failed.join(", "))
    }
}

/// `cargo run --release -p blynk-load -- ARGS` (after building the release `blynk-server` it
/// starts as a child) with the open-file limit raised to the hard
/// limit first: the reconnect storm holds 10,000 sockets in the generator and as many in the
/// server. Everything binds and connects to 127.0.0.1 only.
pub fn load_generator(args: &[String]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new("sh");
    forget_own_package(&mut command);
    command
        .current_dir(workspace_root())
        .args([
            "-c",
            "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$@\"",
            "sh",
            &cargo,
            "run",
            "--quiet",
            "--release",
            "-p",
            "blynk-load",
            "--",
        ])
        .args(args);
    command
}
