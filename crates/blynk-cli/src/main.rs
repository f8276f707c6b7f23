//! `blynk`, the command-line app client of the state-sync server.
//!
//! It speaks the app API (`docs/api.md`): REST for devices, values and templates, and the app
//! WebSocket for `blynk watch`. The server URL and admin key come from flags, the environment or
//! a config file (see [`config`]). Output is for people by default and JSON with `--json`.
//!
//! Exit codes: 0 success (a write delivered, pending or superseded), 1 any error (the message
//! goes to standard error), 2 a usage error, 3 a command write that expired undelivered.

#[macro_use]
mod output;
mod cli;
mod client;
mod commands;
mod config;
mod history;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("blynk: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("blynk: {error:#}");
            ExitCode::FAILURE
        }
    }
}
