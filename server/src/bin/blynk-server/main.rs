//! The `blynk-server` command: runs the server (the default), or manages templates and devices
//! in the data directory from the shell.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use blynk_server::config::{Config, DurabilitySetting, LogFormat, StoreLocation, TlsFiles};
use blynk_server::ready_file::ReadyFile;
use clap::{Parser, Subcommand};

mod tools;

use tools::{backup, device, key, restore, template};

#[derive(Parser)]
#[command(
    name = "blynk-server",
    version,
    about = "Self-hosted, Blynk-compatible IoT server with state syncing"
)]
struct Cli {
    /// A TOML configuration file.
    #[arg(long, env = "BLYNK_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The data directory (default ./data).
    #[arg(long, env = "BLYNK_DATA", global = true)]
    data: Option<PathBuf>,
    /// The database: a PostgreSQL URL (`postgres://user:password@host:port/database`) shared by
    /// several nodes; left out, SQLite in the data directory.
    #[arg(long, env = "BLYNK_STORE", global = true)]
    store: Option<String>,
    /// The address to listen on (default all interfaces).
    #[arg(long, env = "BLYNK_BIND")]
    bind: Option<IpAddr>,
    /// HTTP, WebSocket and classic Blynk hardware port (default 8080).
    #[arg(long, env = "BLYNK_HTTP_PORT")]
    http_port: Option<u16>,
    /// Native device protocol port (default 8441).
    #[arg(long, env = "BLYNK_NATIVE_PORT")]
    native_port: Option<u16>,
    /// MQTT device port (default 1883, or 8883 with TLS); 0 turns MQTT off.
    #[arg(long, env = "BLYNK_MQTT_PORT")]
    mqtt_port: Option<u16>,
    /// TLS certificate chain (PEM); with --tls-key, turns TLS on for every port.
    #[arg(long, env = "BLYNK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BLYNK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// `full` (fsync every commit, the default) or `process`.
    #[arg(long, env = "BLYNK_DURABILITY", value_parser = ["full", "process"])]
    durability: Option<String>,
    /// The IANA timezone of classic time requests (default UTC), e.g. `Europe/Berlin`.
    #[arg(long, env = "BLYNK_TIMEZONE")]
    timezone: Option<String>,
    /// The admin key to use, stored hashed in place of the one before (at least 16
    /// characters). Without it, the first start makes one and prints it, once.
    #[arg(long, env = "BLYNK_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Values kept per pin in the history (default 1000; 0 keeps any number).
    #[arg(long, env = "BLYNK_HISTORY_PER_PIN", global = true)]
    history_per_pin: Option<u32>,
    /// Days after which a value leaves the history (default 0: kept whatever its age).
    #[arg(long, env = "BLYNK_HISTORY_MAX_AGE_DAYS", global = true)]
    history_max_age_days: Option<u32>,
    /// A token that opens `GET /metrics` only (the admin key opens it too).
    #[arg(long, env = "BLYNK_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// `text` (the default) or `json` (one object a line, for log shippers).
    #[arg(long, env = "BLYNK_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// The NATS server linking several nodes on one store, e.g. `nats://127.0.0.1:4222`.
    #[arg(long, env = "BLYNK_BUS", global = true)]
    bus: Option<String>,
    /// Once every port is bound and the store is open, write this JSON file (mode 0600, by
    /// rename): `pid`, `tls`, the bound `http`, `native` and `mqtt` addresses, `admin_key` when
    /// this start made it, `demo_token`. Removed on a clean stop. For programs that start the
    /// server; the banner on standard output is for people.
    #[arg(long, env = "BLYNK_READY_FILE")]
    ready_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage templates.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Manage API keys: `rotate` prints a new admin key; `create`, `list`, `revoke`.
    Key {
        #[command(subcommand)]
        command: Option<KeyCommand>,
    },
    /// Back up the database into a new file, while the server runs (SQLite's online backup).
    Backup {
        /// The backup file to create.
        path: PathBuf,
    },
    /// Restore a backup into an empty (or new) data directory; then start the server on it.
    Restore {
        /// The backup file.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Give a key (by default the admin key) a new secret and print it; the old one stops
    /// working within seconds, on a running server too.
    Rotate {
        /// The key's name.
        #[arg(default_value = blynk_server::keys::ADMIN_NAME)]
        name: String,
    },
    /// Make a key and print its secret (shown this once; only its hash is stored).
    Create {
        /// A name for it (letters, digits, `-`, `_`, `.`).
        name: String,
        /// `admin`, `read` (values, history, watch) or `control` (read, plus writes to the
        /// devices of --template and --device).
        #[arg(long)]
        scope: String,
        /// `control`: a template (name or id) whose devices it may write to; repeatable.
        #[arg(long = "template")]
        templates: Vec<String>,
        /// `control`: a device (name or id) it may write to; repeatable.
        #[arg(long = "device")]
        devices: Vec<String>,
    },
    /// List the keys (names and scopes; secrets are not stored).
    List,
    /// Revoke a key.
    Revoke {
        /// The key's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Add a device and print its token.
    Add {
        /// Template name or id.
        #[arg(long)]
        template: String,
        /// Device name.
        #[arg(long)]
        name: String,
    },
    /// List devices with their tokens.
    List,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Add a template from a TOML file (`name = ..` and `[[datastream]]` tables).
    Add {
        /// The file.
        file: PathBuf,
    },
    /// List templates with their datastreams.
    List,
}

fn config(cli: &Cli) -> Result<Config> {
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(data) = &cli.data {
        config.data_dir = data.clone();
    }
    if let Some(bus) = &cli.bus {
        config.bus = Some(bus.clone());
    }
    if let Some(path) = &cli.ready_file {
        config.ready_file = Some(path.clone());
    }
    if let Some(store) = &cli.store {
        config.store.url = Some(store.clone());
    }
    if let Some(bind) = cli.bind {
        config.bind = bind;
    }
    if let Some(port) = cli.http_port {
        config.http_port = port;
    }
    if let Some(port) = cli.native_port {
        config.native_port = port;
    }
    if let Some(port) = cli.mqtt_port {
        config.mqtt_port = port.into();
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config.tls = Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    match cli.durability.as_deref() {
        Some("process") => config.durability = DurabilitySetting::Process,
        Some("full") => config.durability = DurabilitySetting::Full,
        _ => {}
    }
    if let Some(timezone) = &cli.timezone {
        config.timezone = timezone.clone();
    }
    if let Some(count) = cli.history_per_pin {
        config.store.history_per_pin = count;
    }
    if let Some(days) = cli.history_max_age_days {
        config.store.history_max_age_days = days;
    }
    if let Some(token) = &cli.metrics_token {
        config.metrics_token = Some(token.clone());
    }
    match cli.log_format.as_deref() {
        Some("json") => config.log_format = LogFormat::Json,
        Some("text") => config.log_format = LogFormat::Text,
        _ => {}
    }
    Ok(config)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = config(&cli)?;
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let admin_key = cli.admin_key.clone();
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config, admin_key.as_deref()).await,
            Command::Device(command) => device(config, command).await,
            Command::Template(command) => template(config, command).await,
            Command::Key { command } => key(config, command).await,
            Command::Backup { path } => backup(&config, &path),
            Command::Restore { path } => restore(&config, &path),
        }
    })
}

/// Log lines on standard error, filtered by `BLYNK_LOG` (default `info`): plain text, or one
/// JSON object a line (`timestamp`, `level`, `fields.message` and the other fields) for log
/// shippers. Standard output is left to the start banner (a person's) or a shell command's
/// answer (`KEY=$(blynk-server key rotate)`).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BLYNK_LOG").unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, not in files or log shippers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

/// Prints a line of the start banner; a closed stdout (a supervisor that stopped reading) must
/// not take the server down, so write errors are ignored.
macro_rules! say {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

async fn serve(config: Config, admin_key: Option<&str>) -> Result<()> {
    let json_logs = config.log_format == LogFormat::Json;
    let tls = config.tls.is_some();
    let ready_file = config.ready_file.clone();
    let store = match config.store.location() {
        Ok(StoreLocation::Postgres(url)) => format!("PostgreSQL {}", without_password(&url)),
        _ => format!("SQLite in {}", config.data_dir.display()),
    };
    let server = blynk_server::start_with_admin_key(config, admin_key).await?;
    let scheme = if tls { "https" } else { "http" };
    let host = match server.http_address.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        ip => ip.to_string(),
    };
    if json_logs {
        // Every stdout line stays one JSON object; the admin key stays out of shipped logs.
        tracing::info!(
            dashboard = %format!("{scheme}://{host}:{}/", server.http_address.port()),
            store = %store,
            first_start = server.first_start,
            "blynk-server is running; `blynk-server key rotate` prints a new admin key"
        );
    } else {
        banner(&server, scheme, &host, &store, admin_key);
    }
    if let Some(path) = &ready_file {
        let ready = ReadyFile::of(&server, tls, admin_key.is_some());
        if let Err(error) = ready.write(path) {
            // A program waiting for the file would wait forever: stop rather than run unseen.
            server.shutdown().await;
            return Err(error)
                .with_context(|| format!("writing the ready file {}", path.display()));
        }
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The start banner: where to connect, and the admin key.
fn banner(
    server: &blynk_server::Server,
    scheme: &str,
    host: &str,
    store: &str,
    admin_key: Option<&str>,
) {
    say!();
    say!(
        "  blynk-server is running ({})",
        if server.first_start {
            "first start: created the admin key and a demo"
        } else {
            "data reused"
        }
    );
    say!(
        "  dashboard        {scheme}://{host}:{}/",
        server.http_address.port()
    );
    say!("  store            {store}");
    say!(
        "  HTTP API         {scheme}://{host}:{}/api",
        server.http_address.port()
    );
    say!(
        "  classic devices  {host}:{} (Blynk libraries: BLYNK_SERVER / port)",
        server.http_address.port()
    );
    say!("  native devices   {host}:{}", server.native_address.port());
    if let Some(mqtt) = server.mqtt_address {
        say!(
            "  MQTT devices     {host}:{} (user `device`, password the token)",
            mqtt.port()
        );
    }
    match (&server.admin_key, admin_key) {
        (Some(_), Some(_)) => {
            say!("  admin key        the one given (--admin-key / BLYNK_ADMIN_KEY)")
        }
        (Some(key), None) => {
            say!("  admin key        {key}");
            say!("                   (shown this once: only its hash is stored)");
        }
        (None, _) => {
            say!("  admin key        stored hashed; `blynk-server key rotate` prints a new one")
        }
    }
    if let Some(token) = &server.demo_token {
        say!("  demo device      token {token}");
    }
    say!();
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// A URL to show: the password (`user:password@`) left out.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
