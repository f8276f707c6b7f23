//! `hold-classic`: a helper process of the row "connections held by several nodes". One process
//! may open about 20,000 descriptors here, fewer than the connections the nodes hold together,
//! so the row runs several of these, each logging in its share of classic devices and holding
//! them idle.
//!
//! It talks to the row over its standard streams: it prints `held OK FAILED` once every login
//! is done, answers each `check` line on its standard input with `open OPEN CLOSED` (connections
//! the server closed since), and exits, closing them all, when its standard input closes.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{SETUP_TIMEOUT, classic_login};

/// Logins in flight at once.
const PARALLEL_LOGINS: usize = 250;

#[derive(Args, Clone, Debug)]
pub struct HoldArgs {
    /// The node's HTTP (and classic) address.
    #[arg(long)]
    pub at: SocketAddr,
    /// A file of device tokens, one a line.
    #[arg(long)]
    pub tokens: PathBuf,
}

/// Runs the helper until its standard input closes.
pub fn hold(args: &HoldArgs, load: &tokio::runtime::Runtime) -> Result<String> {
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading {}", args.tokens.display()))?;
    let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
    let (held, failed) = load.block_on(login_all(args.at, &tokens));
    let mut stdout = std::io::stdout();
    writeln!(stdout, "held {} {failed}", held.len())?;
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

/// Logs every token in; the connections held and the number of failed logins (the first few
/// failures are printed on standard error).
async fn login_all(at: SocketAddr, tokens: &[String]) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::with_capacity(tokens.len());
    let mut failed = 0;
    for chunk in tokens.chunks(PARALLEL_LOGINS) {
        let mut logins: JoinSet<Result<TcpStream>> = JoinSet::new();
        for token in chunk {
            let token = token.clone();
            logins.spawn(async move {
                tokio::time::timeout(SETUP_TIMEOUT, classic_login(at, &token))
                    .await
                    .context("login timed out")?
            });
        }
        while let Some(done) = logins.join_next().await {
            match done.map_err(anyhow::Error::from).and_then(|login| login) {
                Ok(stream) => held.push(stream),
                Err(error) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("  hold-classic: a login to {at} failed: {error:#}");
                    }
                }
            }
        }
    }
    (held, failed)
}

/// Connections whose server side closed (a read returns end of file at once).
async fn count_closed(held: &[TcpStream]) -> usize {
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
