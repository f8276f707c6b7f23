//! The dashboard's browser tests: a real headless Chromium (Debian's `chromium`), driven by
//! playwright-core under node's test runner, against the real server binary and the host build
//! of the light firmware (`blynk-device`'s `host_light` example).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::blynk_server::{build_debug, target_dir};
use crate::workspace::{TestCounts, workspace_root};

/// Where Chromium is, unless `CHROMIUM` says otherwise.
const CHROMIUM: &str = "/usr/bin/chromium";

fn require(program: &str, hint: &str) -> Result<()> {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match found {
        Ok(status) if status.success() => Ok(()),
        _ => bail!("`{program}` is missing: {hint}"),
    }
}

/// Builds what the tests run, installs playwright-core, runs the suite; returns whether it
/// passed and the counts of node's TAP summary.
pub fn run() -> Result<(bool, TestCounts)> {
    println!("\n==> browser tests (headless Chromium)");
    let started = Instant::now();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_string());
    if !Path::new(&chromium).exists() {
        bail!(
            "Chromium is missing at {chromium}: install Debian's `chromium` package (apt-get install chromium), or set CHROMIUM"
        );
    }
    require("node", "install Node.js (Debian's `nodejs` package)")?;
    require("npm", "install npm (Debian's `npm` package)")?;
    let suite = workspace_root().join("server/tests/browser");
    if !suite.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&suite)
            .status()
            .context("running npm ci")?;
        if !status.success() {
            bail!("npm ci failed in {}", suite.display());
        }
    }
    let target = build_debug(&[&["-p", "blynk-device", "--example", "host_light"]])?;
    let artifacts = target_dir().join("browser-artifacts");
    let mut child = Command::new("node")
        .args(["--test", "--test-reporter=tap", "--test-concurrency=1"])
        .current_dir(&suite)
        .env("BLYNK_SERVER_BIN", target.join("blynk-server"))
        .env("BLYNK_DEVICE_BIN", target.join("examples/host_light"))
        .env("BLYNK_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting node")?;
    let mut counts = TestCounts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            let mut words = line.split_whitespace();
            match (
                words.next(),
                words.next(),
                words.next().and_then(|n| n.parse::<u64>().ok()),
            ) {
                (Some("#"), Some("pass"), Some(n)) => counts.passed += n,
                (Some("#"), Some("fail"), Some(n)) => counts.failed += n,
                _ => {}
            }
        }
    }
    let ok = child.wait()?.success() && counts.failed == 0 && counts.passed > 0;
    println!(
        "<== browser tests: {} in {:.1} s (screenshots in {})",
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
    Ok((ok, counts))
}
