//! Server configuration: defaults that need nothing, a TOML file, and flags or environment
//! variables on top (see `main.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything the server needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// The address every listener binds to.
    pub bind: IpAddr,
    /// HTTP, WebSockets and classic Blynk hardware connections.
    pub http_port: u16,
    /// The native device protocol.
    pub native_port: u16,
    /// Certificate and key files; when set, every port speaks TLS.
    pub tls: Option<TlsFiles>,
    /// How hard commits wait for the disk.
    pub durability: DurabilitySetting,
    /// The IANA zone (`Europe/Berlin`) of classic time requests, for devices without a
    /// `timezone` property of their own.
    pub timezone: String,
    /// Limits that keep one client from hurting the others.
    pub limits: Limits,
}

/// PEM files for TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// `full` (fsync every commit) or `process` (survive a crash of the server, not of the machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilitySetting {
    /// Fsync every commit.
    #[default]
    Full,
    /// Leave flushing to the operating system.
    Process,
}

/// Per-connection and server-wide limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most open device and HTTP connections at once.
    pub max_connections: usize,
    /// Messages per second a device connection may send on average (the classic server's 100).
    pub messages_per_second: u32,
    /// Messages a device may send in one burst above the average.
    pub message_burst: u32,
    /// Failed logins per address per minute before further attempts are refused.
    pub failed_logins_per_minute: u32,
    /// Seconds a new connection has to log in.
    pub login_timeout_seconds: u64,
    /// Messages queued for one device before it counts as too slow and is disconnected.
    pub send_queue: usize,
    /// Heartbeat assumed for classic devices that announce none, in seconds.
    pub default_heartbeat_seconds: u16,
    /// Seconds an HTTP or app connection may stay idle.
    pub http_idle_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: 8080,
            native_port: 8441,
            tls: None,
            durability: DurabilitySetting::Full,
            timezone: "UTC".to_owned(),
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 19_000,
            messages_per_second: 100,
            message_burst: 200,
            failed_logins_per_minute: 20,
            login_timeout_seconds: 10,
            send_queue: 256,
            default_heartbeat_seconds: 45,
            http_idle_seconds: 300,
        }
    }
}

impl Limits {
    /// How long a device may stay silent: 2.3 times its heartbeat (SPEC 3.9), rounded up.
    pub fn silence_timeout(heartbeat_seconds: u16) -> Duration {
        let heartbeat = u64::from(heartbeat_seconds.max(1));
        Duration::from_millis((heartbeat * 2300).div_ceil(1000) * 1000)
    }
}

impl Config {
    /// Reads a TOML file on top of the defaults.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_3_9_silence_timeout_is_2_3_heartbeats_rounded_up() {
        assert_eq!(Limits::silence_timeout(10), Duration::from_secs(23));
        assert_eq!(Limits::silence_timeout(45), Duration::from_secs(104));
        assert_eq!(Limits::silence_timeout(1), Duration::from_secs(3));
    }

    #[test]
    fn toml_overrides_defaults_and_refuses_unknown_keys() {
        let config =
            Config::from_toml("http_port = 9000\n[limits]\nmessages_per_second = 5\n").unwrap();
        assert_eq!(config.http_port, 9000);
        assert_eq!(config.native_port, 8441);
        assert_eq!(config.limits.messages_per_second, 5);
        assert!(Config::from_toml("htp_port = 1").is_err());
    }
}
