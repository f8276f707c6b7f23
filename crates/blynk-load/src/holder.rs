//! `hold-classic`: a helper process of the row "connections held by several nodes". One process
//! may open about 20,000 descriptors here, fewer than the connections the nodes hold together,
//! so the row runs several of these, each logging in its share of classic devices and holding
//! them idle.
//!
//! A login the node refuses or drops (its store busy with thousands of logins at once, say) is
//! tried again, as a real device would reconnect, up to [`ATTEMPTS`] times in all.
//!
//! Logins stop at a deadline (`--seconds`), so that a row on a slow machine still ends.
//!
//! It talks to the row over its standard streams: it prints `held OK FAILED RETRIED UNTRIED`
//! once the logins are done (FAILED: devices still not logged in after every attempt; UNTRIED:
//! left when the deadline passed), then `sample INDEX` (the line of the token file of a device
//! it holds, for the row's presence check; -1 when it holds none), answers each `check` line on its standard input with `open OPEN CLOSED` (connections
//! the server closed since), and exits, closing them all, when its standard input closes.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{SETUP_TIMEOUT, classic_login, count_closed};

/// Logins in flight at once.
const PARALLEL_LOGINS: usize = 250;
/// Login attempts per device, the first included.
const ATTEMPTS: usize = 3;

#[derive(Args, Clone, Debug)]
pub struct HoldArgs {
    /// The node's HTTP (and classic) address.
    #[arg(long)]
    pub at: SocketAddr,
    /// A file of device tokens, one a line.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Seconds after which no more logins are started.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
}

/// Runs the helper until its standard input closes.
pub fn hold(args: &HoldArgs, load: &tokio::runtime::Runtime) -> Result<String> {
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading {}", args.tokens.display()))?;
    let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (mut held, mut retried, mut untried) = (Vec::with_capacity(tokens.len()), 0, 0);
    let mut waiting = tokens.clone();
    let mut sample = None;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            retried += waiting.len();
            // A moment for whatever refused them to drain.
            std::thread::sleep(Duration::from_secs(2));
        }
        let (connected, failed, left) = load.block_on(login_all(args.at, &waiting, deadline));
        if sample.is_none() {
            sample = connected
                .first()
                .and_then(|(token, _)| tokens.iter().position(|line| line == token));
        }
        held.extend(connected.into_iter().map(|(_, stream)| stream));
        waiting = failed;
        untried = left;
        if waiting.is_empty() || untried > 0 || Instant::now() > deadline {
            break;
        }
    }
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "held {} {} {retried} {untried}",
        held.len(),
        waiting.len()
    )?;
    writeln!(stdout, "sample {}", sample.map_or(-1, |index| index as i64))?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "check" {
            let closed = load.block_on(count_closed(&held));
            writeln!(stdout, "open {} {closed}", held.len() - closed)?;
            stdout.flush()?;
        }
    }
    drop(held);
    Ok("hold-classic: released".to_owned())
}

/// Logs the tokens in until `deadline`; the connections held, the tokens whose login failed
/// (the first few failures are printed on standard error) and how many were not tried.
async fn login_all(
    at: SocketAddr,
    tokens: &[String],
    deadline: Instant,
) -> (Vec<(String, TcpStream)>, Vec<String>, usize) {
    let mut held = Vec::with_capacity(tokens.len());
    let mut failed = Vec::new();
    for (index, chunk) in tokens.chunks(PARALLEL_LOGINS).enumerate() {
        if Instant::now() > deadline {
            return (held, failed, tokens.len() - index * PARALLEL_LOGINS);
        }
        let mut logins: JoinSet<(String, Result<TcpStream>)> = JoinSet::new();
        for token in chunk {
            let token = token.clone();
            logins.spawn(async move {
                let login = tokio::time::timeout(SETUP_TIMEOUT, classic_login(at, &token))
                    .await
                    .context("login timed out")
                    .and_then(|login| login);
                (token, login)
            });
        }
        while let Some(done) = logins.join_next().await {
            match done {
                Ok((token, Ok(stream))) => held.push((token, stream)),
                Ok((token, Err(error))) => {
                    if failed.len() < 3 {
                        eprintln!("  hold-classic: a login to {at} failed: {error:#}");
                    }
                    failed.push(token);
                }
                Err(error) => eprintln!("  hold-classic: a login task failed: {error}"),
            }
        }
    }
    (held, failed, 0)
}
