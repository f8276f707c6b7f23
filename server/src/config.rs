//! Server configuration: defaults that need nothing, a TOML file, and flags or environment
//! variables on top (see `main.rs`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::net::address::AddressRange;
use crate::store::retention::Retention;

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
    /// The MQTT device API.
    pub mqtt_port: MqttPort,
    /// Certificate and key files; when set, every port speaks TLS.
    pub tls: Option<TlsFiles>,
    /// How hard commits wait for the disk.
    pub durability: DurabilitySetting,
    /// The IANA zone (`Europe/Berlin`) of classic time requests, for devices without a
    /// `timezone` property of their own.
    pub timezone: String,
    /// What the store keeps.
    pub store: StoreSettings,
    /// Limits that keep one client from hurting the others.
    pub limits: Limits,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client
    /// on the HTTP port; they are also exempt from the per-address connection cap.
    pub trusted_proxies: Vec<AddressRange>,
    /// A token that opens `GET /metrics` only (the admin key opens it too), for a scraper that
    /// should not hold the admin key.
    pub metrics_token: Option<String>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The NATS server linking several nodes on one store (`nats://host:4222`); none: this
    /// process serves alone.
    pub bus: Option<String>,
    /// Where the running server writes its ready file (`ready_file.rs`): the bound addresses,
    /// the admin key on a first start, the demo token, the process id; none: no file.
    pub ready_file: Option<PathBuf>,
    /// The clock of records and timers: the system's, or one a test moves forward (only set
    /// in code).
    #[serde(skip)]
    pub clock: crate::clock::Clock,
}

/// How log lines are written: `text` for people (the default), `json` (one object a line) for
/// log shippers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the MQTT device API listens. In a file, flag or variable it is a number: `0` turns
/// MQTT off, any other number is the port; left out, it is the standard port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "u16")]
pub enum MqttPort {
    /// 1883, or 8883 when TLS is on (the ports MQTT clients assume).
    #[default]
    Standard,
    /// No MQTT listener.
    Off,
    /// This port.
    Port(u16),
    /// A free port the system picks (tests); only settable in code, since `0` means off.
    Ephemeral,
}

impl From<u16> for MqttPort {
    fn from(port: u16) -> Self {
        match port {
            0 => MqttPort::Off,
            port => MqttPort::Port(port),
        }
    }
}

impl MqttPort {
    /// The port to bind, `None` when MQTT is off.
    pub fn resolve(self, tls: bool) -> Option<u16> {
        match self {
            MqttPort::Standard if tls => Some(8883),
            MqttPort::Standard => Some(1883),
            MqttPort::Off => None,
            MqttPort::Port(port) => Some(port),
            MqttPort::Ephemeral => Some(0),
        }
    }
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

/// Which database holds the state, and what it keeps of the past.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// A PostgreSQL database (`postgres://user:password@host:port/database`) shared by every
    /// node; `None` (the default) keeps the state in SQLite in the data directory.
    pub url: Option<String>,
    /// Values kept per pin in the history, newest first; 0 keeps any number.
    pub history_per_pin: u32,
    /// Days after which a value leaves the history; 0 keeps values whatever their age.
    pub history_max_age_days: u32,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: None,
            history_per_pin: 1000,
            history_max_age_days: 0,
        }
    }
}

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite in the data directory.
    Sqlite,
    /// This PostgreSQL database.
    Postgres(String),
}

impl StoreSettings {
    /// Where the state lives, or why the URL is not one the server can use.
    pub fn location(&self) -> Result<StoreLocation, String> {
        match self.url.as_deref() {
            None | Some("" | "sqlite") => Ok(StoreLocation::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres(url.to_owned()))
            }
            Some(_) => Err(
                "the store must be a PostgreSQL URL (postgres://user:password@host:port/database), \
                 or left out for SQLite in the data directory"
                    .to_owned(),
            ),
        }
    }

    /// The history's retention rules.
    pub fn retention(&self) -> Retention {
        Retention {
            per_pin: self.history_per_pin,
            max_age: (self.history_max_age_days > 0)
                .then(|| Duration::from_secs(u64::from(self.history_max_age_days) * 24 * 3600)),
        }
    }
}

/// Per-connection and server-wide limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most open device and HTTP connections at once (lowered at start to what the process's
    /// open-file limit allows).
    pub max_connections: usize,
    /// Most open connections from one address (IPv6: one /64) at once; 0 for no cap.
    pub max_connections_per_address: u32,
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
    /// Seconds an HTTP or app connection may go without a whole request or WebSocket message
    /// (bytes that do not finish one do not count).
    pub http_idle_seconds: u64,
    /// Seconds a client has to send a request's headers; also how long an idle keep-alive
    /// connection is kept.
    pub http_header_seconds: u64,
    /// Seconds a client has to send a request's body, counted from its headers.
    pub http_body_seconds: u64,
    /// Events for one app WebSocket that cannot be merged (everything but values: presence,
    /// write reports, ...) waiting at most; one more closes the connection.
    pub watch_backlog: usize,
    /// Seconds a send to an app WebSocket may wait for the client to read before the
    /// connection is closed.
    pub watch_stall_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: 8080,
            native_port: 8441,
            mqtt_port: MqttPort::Standard,
            tls: None,
            durability: DurabilitySetting::Full,
            timezone: "UTC".to_owned(),
            store: StoreSettings::default(),
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            metrics_token: None,
            log_format: LogFormat::Text,
            bus: None,
            ready_file: None,
            clock: crate::clock::Clock::system(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 19_000,
            max_connections_per_address: 1_000,
            messages_per_second: 100,
            message_burst: 200,
            failed_logins_per_minute: 20,
            login_timeout_seconds: 10,
            send_queue: 256,
            default_heartbeat_seconds: 45,
            http_idle_seconds: 300,
            http_header_seconds: 10,
            http_body_seconds: 30,
            watch_backlog: 65_536,
            watch_stall_seconds: 30,
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

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config =
            Config::from_toml("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]")
                .unwrap();
        assert_eq!(config.trusted_proxies.len(), 3);
        assert!(config.trusted_proxies[1].contains("10.9.8.7".parse().unwrap()));
        let error = Config::from_toml("trusted_proxies = [\"proxy.lan\"]").unwrap_err();
        assert!(error.to_string().contains("not an IP address"), "{error}");
    }

    #[test]
    fn history_retention_is_1000_per_pin_by_default_and_age_is_opt_in() {
        let default = Config::default().store.retention();
        assert_eq!(default.per_pin, 1000);
        assert_eq!(default.max_age, None);
        let config =
            Config::from_toml("[store]\nhistory_per_pin = 0\nhistory_max_age_days = 30\n").unwrap();
        let retention = config.store.retention();
        assert_eq!(retention.per_pin, 0);
        assert_eq!(retention.max_age, Some(Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn the_store_is_sqlite_unless_a_postgres_url_is_given() {
        let default = Config::default().store.location();
        assert_eq!(default, Ok(StoreLocation::Sqlite));
        let config =
            Config::from_toml("[store]\nurl = \"postgres://node@db.example/blynk\"\n").unwrap();
        assert_eq!(
            config.store.location(),
            Ok(StoreLocation::Postgres(
                "postgres://node@db.example/blynk".into()
            ))
        );
        let config = Config::from_toml("[store]\nurl = \"mysql://db/blynk\"\n").unwrap();
        assert!(config.store.location().is_err());
    }

    #[test]
    fn mqtt_port_is_standard_unless_set_and_zero_turns_it_off() {
        let standard = Config::default().mqtt_port;
        assert_eq!(standard.resolve(false), Some(1883));
        assert_eq!(standard.resolve(true), Some(8883));
        let off = Config::from_toml("mqtt_port = 0").unwrap().mqtt_port;
        assert_eq!(off.resolve(false), None);
        let chosen = Config::from_toml("mqtt_port = 1884").unwrap().mqtt_port;
        assert_eq!(chosen.resolve(true), Some(1884));
    }

    #[test]
    fn log_format_is_text_unless_json_and_the_metrics_token_is_off_unless_set() {
        let default = Config::default();
        assert_eq!(default.log_format, LogFormat::Text);
        assert_eq!(default.metrics_token, None);
        let config = Config::from_toml("log_format = \"json\"\nmetrics_token = \"t\"\n").unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.metrics_token.as_deref(), Some("t"));
        assert!(Config::from_toml("log_format = \"xml\"").is_err());
    }

    #[test]
    fn the_ready_file_is_off_unless_a_path_is_given() {
        assert_eq!(Config::default().ready_file, None);
        let config = Config::from_toml("ready_file = \"run/ready.json\"").unwrap();
        assert_eq!(config.ready_file, Some(PathBuf::from("run/ready.json")));
    }
}
