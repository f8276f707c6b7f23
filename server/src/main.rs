//! The `blynk-server` command: runs the server (the default), or manages templates and devices
//! in the data directory from the shell.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use blynk_server::config::{Config, DurabilitySetting, LogFormat, StoreLocation, TlsFiles};
use blynk_server::engine::Engine;
use blynk_server::model::Template;
use clap::{Parser, Subcommand};

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

/// Log lines go to stdout, filtered by `BLYNK_LOG` (default `info`): plain text, or one JSON
/// object a line (`timestamp`, `level`, `fields.message` and the other fields) for log shippers.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BLYNK_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
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
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
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

/// With a bus, tells the running nodes what a shell command added (they do not poll then).
async fn tell_the_nodes(config: &Config) {
    if let Some(bus) = &config.bus
        && let Err(error) = blynk_server::engine::announce_added(bus).await
    {
        eprintln!(
            "warning: the nodes were not told ({error}); they pick it up when they next \
             reconnect to the bus"
        );
    }
}

async fn open_engine(config: &Config) -> Result<std::sync::Arc<Engine>> {
    blynk_server::private_files::prepare_data_dir(&config.data_dir)?;
    // The same store and retention as the server's: this process trims the history too while
    // it runs.
    let store = blynk_server::open_store(config).await?;
    Ok(Engine::open_for_tools(store).await?)
}

/// Runs the first-start steps for a tool command; an admin key made now is shown (on stderr,
/// once), since no server start will show it later.
async fn bootstrap_for_tools(engine: &Engine) -> Result<blynk_server::bootstrap::Bootstrap> {
    let boot = blynk_server::bootstrap::run(engine, None).await?;
    if let Some(key) = &boot.admin_key {
        eprintln!("first use of this data directory: the admin key is {key} (shown this once)");
    }
    Ok(boot)
}

async fn device(config: Config, command: DeviceCommand) -> Result<()> {
    let engine = open_engine(&config).await?;
    bootstrap_for_tools(&engine).await?;
    match command {
        DeviceCommand::Add { template, name } => {
            let Some(template) = engine.find_template(&template) else {
                bail!("no template `{template}`; `blynk-server template list` shows them");
            };
            let slot = engine.create_device(&name, &template).await?;
            tell_the_nodes(&config).await;
            println!("{}", slot.device.token);
            eprintln!(
                "device {} `{}` added (template {}); its token is above",
                slot.device.id, name, template.name
            );
        }
        DeviceCommand::List => {
            println!("{:>4}  {:<20} {:<12} token", "id", "name", "template");
            for slot in engine.devices() {
                println!(
                    "{:>4}  {:<20} {:<12} {}",
                    slot.device.id, slot.device.name, slot.template.name, slot.device.token
                );
            }
        }
    }
    Ok(())
}

async fn template(config: Config, command: TemplateCommand) -> Result<()> {
    let engine = open_engine(&config).await?;
    bootstrap_for_tools(&engine).await?;
    match command {
        TemplateCommand::Add { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let template: Template =
                toml::from_str(&text).with_context(|| format!("in {}", file.display()))?;
            if let Err(problem) = template.check() {
                bail!("{}: {problem}", file.display());
            }
            let stored = engine.create_template(template).await?;
            tell_the_nodes(&config).await;
            println!(
                "template {} `{}` added with {} datastreams",
                stored.id,
                stored.name,
                stored.datastreams.len()
            );
        }
        TemplateCommand::List => {
            for template in engine.templates() {
                println!("{} `{}`", template.id, template.name);
                for d in &template.datastreams {
                    let range = match (d.min, d.max) {
                        (Some(min), Some(max)) => format!(" {min}..{max}"),
                        _ => String::new(),
                    };
                    println!(
                        "    {:<4} {:<16} {}{}{}{}",
                        d.pin.to_string(),
                        d.name,
                        blynk_server::model::type_name(d.value_type),
                        range,
                        if d.sync { " sync" } else { "" },
                        if d.is_command() { " command" } else { "" },
                    );
                }
            }
        }
    }
    Ok(())
}

async fn key(config: Config, command: Option<KeyCommand>) -> Result<()> {
    let Some(command) = command else {
        bail!(
            "the admin key is stored hashed and cannot be shown; `blynk-server key rotate` \
             prints a new one (`blynk-server key --help` lists the key commands)"
        );
    };
    let engine = open_engine(&config).await?;
    let boot = blynk_server::bootstrap::run(&engine, None).await?;
    let keys = boot.keys;
    match (&command, boot.admin_key) {
        // A data directory's first admin key, made just now: that is the new key to print.
        (KeyCommand::Rotate { name }, Some(made)) if name == blynk_server::keys::ADMIN_NAME => {
            println!("{made}");
            eprintln!("made the admin key of a new data directory (above, shown this once)");
            return Ok(());
        }
        (_, Some(made)) => {
            eprintln!(
                "first use of this data directory: the admin key is {made} (shown this once)"
            );
        }
        (_, None) => {}
    }
    match command {
        KeyCommand::Rotate { name } => {
            let secret = keys.rotate(&name).await?;
            println!("{secret}");
            eprintln!(
                "key `{name}` has a new secret (above, shown this once); the old one stops \
                 working within {} s",
                blynk_server::keys::RELOAD_EVERY.as_secs()
            );
        }
        KeyCommand::Create {
            name,
            scope,
            templates,
            devices,
        } => {
            let scope = scope.parse()?;
            let (templates, devices) =
                blynk_server::keys::resolve_targets(&engine, &templates, &devices)?;
            let (_, secret) = keys.create(&name, scope, templates, devices).await?;
            println!("{secret}");
            eprintln!("key `{name}` created; its secret is above (shown this once)");
        }
        KeyCommand::List => {
            println!(
                "{:<24} {:<8} {:<24} created",
                "name", "scope", "may write to"
            );
            for key in keys.list().iter() {
                let targets: Vec<String> = key
                    .templates
                    .iter()
                    .map(|id| match engine.templates().iter().find(|t| t.id == *id) {
                        Some(template) => format!("template {}", template.name),
                        None => format!("template {id} (gone)"),
                    })
                    .chain(key.devices.iter().map(|id| match engine.device(*id) {
                        Some(slot) => format!("device {}", slot.device.name),
                        None => format!("device {id} (gone)"),
                    }))
                    .collect();
                let targets = match key.scope {
                    blynk_server::keys::Scope::Admin => "every device".to_owned(),
                    blynk_server::keys::Scope::Read => "-".to_owned(),
                    blynk_server::keys::Scope::Control => targets.join(", "),
                };
                let created = jiff::Timestamp::from_millisecond(key.created_at)
                    .map(|at| at.strftime("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<8} {:<24} {created}",
                    key.name,
                    key.scope.as_str(),
                    targets
                );
            }
        }
        KeyCommand::Revoke { name } => {
            keys.revoke(&name).await?;
            eprintln!(
                "key `{name}` revoked; a running server refuses it within {} s",
                blynk_server::keys::RELOAD_EVERY.as_secs()
            );
        }
    }
    Ok(())
}

fn backup(config: &Config, path: &Path) -> Result<()> {
    let database = config.data_dir.join(blynk_server::DATABASE_FILE);
    let copied = blynk_server::store::sqlite::backup::backup(&database, path)?;
    eprintln!(
        "backed up {} ({} KiB) into {} in {} ms",
        database.display(),
        copied.bytes / 1024,
        path.display(),
        copied.elapsed.as_millis()
    );
    Ok(())
}

fn restore(config: &Config, path: &Path) -> Result<()> {
    let copied = blynk_server::store::sqlite::backup::restore(
        path,
        &config.data_dir,
        blynk_server::DATABASE_FILE,
    )?;
    eprintln!(
        "restored {} ({} KiB) into {} in {} ms; start the server on it with --data {}",
        path.display(),
        copied.bytes / 1024,
        config.data_dir.display(),
        copied.elapsed.as_millis(),
        config.data_dir.display()
    );
    Ok(())
}
