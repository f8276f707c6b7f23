//! The `blynk-server` command: runs the server (the default), or manages templates and devices
//! in the data directory from the shell.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use blynk_server::config::{Config, DurabilitySetting, TlsFiles};
use blynk_server::engine::Engine;
use blynk_server::model::Template;
use blynk_server::store::Store;
use blynk_server::store::sqlite::{Durability, SqliteStore};
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
    /// Values kept per pin in the history (default 1000; 0 keeps any number).
    #[arg(long, env = "BLYNK_HISTORY_PER_PIN", global = true)]
    history_per_pin: Option<u32>,
    /// Days after which a value leaves the history (default 0: kept whatever its age).
    #[arg(long, env = "BLYNK_HISTORY_MAX_AGE_DAYS", global = true)]
    history_max_age_days: Option<u32>,
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
    /// Print the admin key.
    Key,
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
    Ok(config)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLYNK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    let config = config(&cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Device(command) => device(config, command).await,
            Command::Template(command) => template(config, command).await,
            Command::Key => {
                let engine = open_engine(&config).await?;
                let boot = blynk_server::bootstrap::run(&engine, None).await?;
                println!("{}", boot.admin_key);
                Ok(())
            }
        }
    })
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

async fn serve(config: Config) -> Result<()> {
    let tls = config.tls.is_some();
    let data = config.data_dir.clone();
    let server = blynk_server::start(config).await?;
    let scheme = if tls { "https" } else { "http" };
    let host = match server.http_address.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        ip => ip.to_string(),
    };
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
    say!("  data directory   {}", data.display());
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
    say!("  admin key        {}", server.admin_key);
    if let Some(token) = &server.demo_token {
        say!("  demo device      token {token}");
    }
    say!();
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
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

async fn open_engine(config: &Config) -> Result<std::sync::Arc<Engine>> {
    blynk_server::private_files::prepare_data_dir(&config.data_dir)?;
    // The same retention as the server's: this process trims the history too while it runs.
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(SqliteStore::open_with_retention(
        &config.data_dir.join(blynk_server::DATABASE_FILE),
        Durability::Full,
        config.store.retention(),
    )?);
    Ok(Engine::open_for_tools(store).await?)
}

async fn device(config: Config, command: DeviceCommand) -> Result<()> {
    let engine = open_engine(&config).await?;
    blynk_server::bootstrap::run(&engine, None).await?;
    match command {
        DeviceCommand::Add { template, name } => {
            let Some(template) = engine.find_template(&template) else {
                bail!("no template `{template}`; `blynk-server template list` shows them");
            };
            let slot = engine.create_device(&name, &template).await?;
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
    blynk_server::bootstrap::run(&engine, None).await?;
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
