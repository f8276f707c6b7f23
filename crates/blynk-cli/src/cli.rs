//! The command line: global connection flags and one subcommand per task.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Command-line client of the Blynk-compatible state-sync server.
///
/// The server URL and admin key come from flags, then the environment (`BLYNK_SERVER`,
/// `BLYNK_KEY`), then the config file (`$BLYNK_CONFIG`, else `~/.config/blynk/config.toml`,
/// with `server = ".."` and `key = ".."`). The server prints its admin key on first start;
/// `blynk-server key rotate` prints a new one, `blynk-server key create` makes scoped keys.
#[derive(Debug, Parser)]
#[command(name = "blynk", version, about, long_about)]
pub struct Cli {
    /// Where to connect and how to print.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Server URL [default: http://localhost:8080]
    #[arg(long, global = true, env = "BLYNK_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API key: the admin key, or a scoped key (`blynk-server key create`)
    #[arg(
        long,
        global = true,
        env = "BLYNK_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: Option<String>,
    /// Config file [default: ~/.config/blynk/config.toml]
    #[arg(long, global = true, env = "BLYNK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for https:// servers, e.g. a self-signed one
    #[arg(long, global = true, env = "BLYNK_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Machine-readable JSON on standard output (`watch`: one JSON object per line)
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List devices: id, name, template, online/offline, last seen
    Devices,
    /// Show a pin's value (or every value of the device when PIN is left out)
    Get {
        /// Device id or name
        device: String,
        /// Pin, like V1, D13 or A0
        pin: Option<String>,
    },
    /// Write a pin's value; several VALUEs make a multi-part value
    Set(SetArgs),
    /// Print a device's values, then live changes, presence, properties and events
    Watch(WatchArgs),
    /// List templates with their datastreams
    Templates,
    /// Create, show or delete a device
    #[command(subcommand)]
    Device(DeviceCommand),
}

/// `blynk set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Device id or name
    pub device: String,
    /// Pin, like V1
    pub pin: String,
    /// The value; a numeric-looking argument is sent as a number
    #[arg(required = true, allow_negative_numbers = true)]
    pub values: Vec<String>,
    /// How long to wait for the device to receive the value, in milliseconds (at most 30000)
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub wait: u64,
}

/// `blynk watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Device ids or names
    #[arg(required_unless_present = "all")]
    pub devices: Vec<String>,
    /// Watch every device
    #[arg(long, conflicts_with = "devices")]
    pub all: bool,
    /// Exit after N live events (the snapshot does not count)
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit after this many seconds
    #[arg(long = "for", value_name = "SECONDS")]
    pub duration: Option<f64>,
}

/// `blynk device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a device and print its token
    Add {
        /// Template name or id
        #[arg(long)]
        template: String,
        /// Device name (unique)
        #[arg(long)]
        name: String,
    },
    /// Show a device: token, datastreams, values, properties
    Show {
        /// Device id or name
        device: String,
    },
    /// Delete a device and everything stored for it
    Delete {
        /// Device id or name
        device: String,
    },
}
