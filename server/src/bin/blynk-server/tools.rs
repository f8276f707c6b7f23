//! The shell commands of `blynk-server` besides running the server: templates, devices, keys,
//! backups, each on the data directory (or store) a server may be using at the same time.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use blynk_server::config::Config;
use blynk_server::engine::Engine;
use blynk_server::model::Template;

use crate::{DeviceCommand, KeyCommand, TemplateCommand};

/// With a bus, tells the running nodes what a shell command added (they do not poll then).
pub(crate) async fn tell_the_nodes(config: &Config) {
    if let Some(bus) = &config.bus
        && let Err(error) = blynk_server::engine::announce_added(bus).await
    {
        eprintln!(
            "warning: the nodes were not told ({error}); they pick it up when they next \
             reconnect to the bus"
        );
    }
}

pub(crate) async fn open_engine(config: &Config) -> Result<std::sync::Arc<Engine>> {
    blynk_server::private_files::prepare_data_dir(&config.data_dir)?;
    // The same store and retention as the server's: this process trims the history too while
    // it runs.
    let store = blynk_server::open_store(config).await?;
    Ok(Engine::open_for_tools(store).await?)
}

/// Runs the first-start steps for a tool command; an admin key made now is shown (on stderr,
/// once), since no server start will show it later.
pub(crate) async fn bootstrap_for_tools(
    engine: &Engine,
) -> Result<blynk_server::bootstrap::Bootstrap> {
    let boot = blynk_server::bootstrap::run(engine, None).await?;
    if let Some(key) = &boot.admin_key {
        eprintln!("first use of this data directory: the admin key is {key} (shown this once)");
    }
    Ok(boot)
}

pub(crate) async fn device(config: Config, command: DeviceCommand) -> Result<()> {
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

pub(crate) async fn template(config: Config, command: TemplateCommand) -> Result<()> {
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

pub(crate) async fn key(config: Config, command: Option<KeyCommand>) -> Result<()> {
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

pub(crate) fn backup(config: &Config, path: &Path) -> Result<()> {
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

pub(crate) fn restore(config: &Config, path: &Path) -> Result<()> {
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
