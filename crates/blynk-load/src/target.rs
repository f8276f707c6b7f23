//! The server under test: in this process, a child `blynk-server`, or an external one, and
//! the template and devices it is prepared with.

use blynk_testbed::server::ServerCommand;

use super::*;

/// A device prepared for the run.
#[derive(Clone, Debug)]
pub(crate) struct DeviceRef {
    pub(crate) id: i64,
    pub(crate) token: String,
}

/// A data directory under the system temp dir, removed on drop.
pub(crate) struct TempData(pub(crate) PathBuf);

impl TempData {
    pub(crate) fn new() -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "blynk-load-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempData(path))
    }
}

impl Drop for TempData {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) enum Running {
    InProcess {
        runtime: tokio::runtime::Runtime,
        server: Box<blynk_server::Server>,
        _data: TempData,
    },
    Child {
        child: Child,
        _data: TempData,
    },
    External {
        pid: Option<u32>,
    },
}

pub(crate) struct Target {
    pub(crate) http: SocketAddr,
    pub(crate) native: SocketAddr,
    /// The MQTT device port, when the server opened one.
    pub(crate) mqtt: Option<SocketAddr>,
    pub(crate) admin_key: String,
    pub(crate) devices: Vec<DeviceRef>,
    pub(crate) running: Running,
    /// `full`, `process`, or "the external server's".
    pub(crate) durability: &'static str,
}

impl Target {
    /// A `blynk-server` child ([`spawn_child`]) over `data`, prepared with `devices`.
    pub(crate) fn child(
        args: &TargetArgs,
        data: TempData,
        devices: Vec<DeviceRef>,
    ) -> Result<Self> {
        let (child, addresses, admin_key) = spawn_child(args, &data.0)?;
        Ok(Target {
            http: addresses.http,
            native: addresses.native,
            mqtt: addresses.mqtt,
            admin_key,
            devices,
            running: Running::Child { child, _data: data },
            durability: args.durability.name(),
        })
    }

    pub(crate) fn mode(&self) -> &'static str {
        match self.running {
            Running::InProcess { .. } => "in-process server",
            Running::Child { .. } => "child-process server",
            Running::External { .. } => "external server",
        }
    }

    pub(crate) fn server_pid(&self) -> Option<u32> {
        match &self.running {
            Running::InProcess { .. } => None,
            Running::Child { child, .. } => Some(child.id()),
            Running::External { pid } => *pid,
        }
    }

    pub(crate) fn stop(self) {
        match self.running {
            Running::InProcess {
                runtime,
                server,
                _data,
            } => stop_in_process(runtime, *server),
            Running::Child { mut child, _data } => {
                // Our own child: SIGTERM first for a graceful stop, then SIGKILL.
                blynk_testbed::server::terminate(&mut child, Duration::from_secs(10));
            }
            Running::External { .. } => {}
        }
    }
}

pub(crate) fn load_template(name: &str) -> Template {
    Template {
        id: 0,
        name: name.to_owned(),
        datastreams: (0..PINS)
            .map(|number| DatastreamDef {
                pin: virtual_pin(number),
                name: datastream_name(number),
                value_type: DatastreamType::Integer,
                min: None,
                max: None,
                default: None,
                sync: true,
                kind: KindDef::State,
                ttl: None,
            })
            .collect(),
    }
}

/// The name of the load template's datastream on virtual pin `number` (MQTT topics use it).
pub(crate) fn datastream_name(number: u32) -> String {
    format!("value{number}")
}

pub(crate) fn virtual_pin(number: u32) -> Pin {
    Pin::virtual_pin(number % PINS).unwrap_or(Pin::Virtual(0))
}

pub(crate) fn server_config(data: &Path, durability: Durability) -> Config {
    let mut config = Config {
        data_dir: data.to_path_buf(),
        bind: "127.0.0.1".parse().expect("an address"),
        http_port: 0,
        native_port: 0,
        mqtt_port: MqttPort::Ephemeral,
        durability: match durability {
            Durability::Full => DurabilitySetting::Full,
            Durability::Process => DurabilitySetting::Process,
        },
        ..Config::default()
    };
    config.limits.messages_per_second = 10_000_000;
    config.limits.message_burst = 10_000_000;
    config.limits.failed_logins_per_minute = 1_000_000;
    // Every simulated device connects from loopback.
    config.limits.max_connections_per_address = 0;
    config
}

/// Starts (or reaches) the server and creates the template, `count` devices, and with
/// `preset`, a value for each of their 16 pins.
pub(crate) fn prepare(
    args: &TargetArgs,
    default_mode: ServerMode,
    count: usize,
    preset: bool,
    load: &tokio::runtime::Runtime,
) -> Result<Target> {
    let mode = args.server.unwrap_or(
        if args.http.is_some() && args.native.is_some() && args.admin_key.is_some() {
            ServerMode::External
        } else {
            default_mode
        },
    );
    let started = Instant::now();
    let target = match mode {
        ServerMode::External => {
            let http = args
                .http
                .context("--http is needed for an external server")?;
            let native = args
                .native
                .context("--native is needed for an external server")?;
            let admin_key = args
                .admin_key
                .clone()
                .context("--admin-key is needed for an external server")?;
            let devices = load.block_on(populate_rest(http, &admin_key, count, preset))?;
            Target {
                http,
                native,
                mqtt: None,
                admin_key,
                devices,
                running: Running::External {
                    pid: args.server_pid,
                },
                durability: "the external server's",
            }
        }
        ServerMode::InProcess | ServerMode::Child => {
            let data = TempData::new()?;
            let (runtime, server) = start_in_process(&data.0, args.durability)?;
            let engine = server.engine().clone();
            let devices = runtime.block_on(populate(&engine, count, preset))?;
            if mode == ServerMode::InProcess {
                Target {
                    http: server.http_address,
                    native: server.native_address,
                    mqtt: server.mqtt_address,
                    admin_key: ADMIN_KEY.to_owned(),
                    devices,
                    running: Running::InProcess {
                        runtime,
                        server: Box::new(server),
                        _data: data,
                    },
                    durability: args.durability.name(),
                }
            } else {
                drop(engine);
                stop_in_process(runtime, server);
                Target::child(args, data, devices)?
            }
        }
    };
    eprintln!(
        "  prepared the {} with {} devices{} in {:.1} s",
        target.mode(),
        target.devices.len(),
        if preset { " and 16 values each" } else { "" },
        started.elapsed().as_secs_f64()
    );
    Ok(target)
}

/// `blynk-server` in this process over `data`, on a runtime of its own, with the load's admin
/// key: the server under test, or the one that prepares a child's data directory.
pub(crate) fn start_in_process(
    data: &Path,
    durability: Durability,
) -> Result<(tokio::runtime::Runtime, blynk_server::Server)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()?;
    let server = runtime.block_on(blynk_server::start_with_admin_key(
        server_config(data, durability),
        Some(ADMIN_KEY),
    ))?;
    Ok((runtime, server))
}

/// Stops a server of [`start_in_process`] (its store flushed) and its runtime.
pub(crate) fn stop_in_process(runtime: tokio::runtime::Runtime, server: blynk_server::Server) {
    runtime.block_on(server.shutdown());
    runtime.shutdown_timeout(Duration::from_secs(2));
}

/// Creates the template and devices through the engine, a few hundred at a time so the store
/// commits them in batches.
pub(crate) async fn populate(
    engine: &Arc<Engine>,
    count: usize,
    preset: bool,
) -> Result<Vec<DeviceRef>> {
    let template = engine.create_template(load_template("load")).await?;
    let mut devices = Vec::with_capacity(count);
    let indices: Vec<usize> = (0..count).collect();
    for chunk in indices.chunks(500) {
        let created = futures_util::future::join_all(chunk.iter().map(|index| {
            let (engine, template) = (engine.clone(), template.clone());
            async move {
                engine
                    .create_device(&format!("load-{index}"), &template)
                    .await
            }
        }))
        .await;
        let mut slots = Vec::with_capacity(created.len());
        for slot in created {
            let slot = slot?;
            devices.push(DeviceRef {
                id: slot.device.id,
                token: slot.device.token.clone(),
            });
            slots.push(slot);
        }
        if preset {
            let writes = slots.iter().flat_map(|slot| {
                (0..PINS).map(move |number| {
                    let engine = engine.clone();
                    async move {
                        let value = Value::int(slot.device.id * 100 + i64::from(number));
                        engine
                            .app_write(slot, virtual_pin(number), &value, Origin::Http)
                            .await
                    }
                })
            });
            for written in futures_util::future::join_all(writes).await {
                written.map_err(|error| anyhow!("presetting a value: {error}"))?;
            }
        }
    }
    Ok(devices)
}

/// Creates the template and devices through the app REST API of an external server.
pub(crate) async fn populate_rest(
    http: SocketAddr,
    admin_key: &str,
    count: usize,
    preset: bool,
) -> Result<Vec<DeviceRef>> {
    let name = format!(
        "load-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or_default()
    );
    let template = serde_json::to_value(load_template(&name))?;
    let client = app_client(http, admin_key)?;
    client
        .post("/api/templates", &template)
        .await
        .context("creating the template")?;
    let workers = 8.min(count.max(1));
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let (name, client) = (name.clone(), client.clone());
        tasks.spawn(async move {
            let mut connection = client.connect().await?;
            let mut made = Vec::new();
            for index in (worker..count).step_by(workers) {
                let body =
                    serde_json::json!({ "name": format!("{name}-{index}"), "template": name });
                let reply = connection
                    .post("/api/devices", &body)
                    .await
                    .context("creating a device")?;
                let device = DeviceRef {
                    id: reply["id"].as_i64().context("device id")?,
                    token: reply["token"].as_str().context("device token")?.to_owned(),
                };
                if preset {
                    for number in 0..PINS {
                        let body = serde_json::json!({
                            "value": device.id * 100 + i64::from(number),
                            "wait_ms": 0,
                        });
                        let path = format!("/api/devices/{}/values/V{number}", device.id);
                        connection
                            .put(&path, &body, Duration::ZERO)
                            .await
                            .context("presetting a value")?;
                    }
                }
                made.push((index, device));
            }
            Ok::<_, anyhow::Error>(made)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    all.sort_by_key(|(index, _)| *index);
    Ok(all.into_iter().map(|(_, device)| device).collect())
}

/// Where a child server listens, read from its start banner.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChildAddresses {
    pub(crate) http: SocketAddr,
    pub(crate) native: SocketAddr,
    pub(crate) mqtt: Option<SocketAddr>,
}

/// Starts `blynk-server` over the prepared data directory on ephemeral loopback ports and reads
/// its addresses from its ready file.
pub(crate) fn spawn_child(
    args: &TargetArgs,
    data: &Path,
) -> Result<(Child, ChildAddresses, String)> {
    spawn_child_with(args, data, &ChildExtras::default())
}

/// What a child server takes beyond the load's settings: flags (a node's `--store` and `--bus`)
/// and lines of its configuration file's `[limits]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChildExtras {
    pub(crate) flags: Vec<String>,
    pub(crate) limits: Vec<String>,
}

/// [`spawn_child`] with `extras`.
pub(crate) fn spawn_child_with(
    args: &TargetArgs,
    data: &Path,
    extras: &ChildExtras,
) -> Result<(Child, ChildAddresses, String)> {
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("blynk-server"),
    };
    if !binary.exists() {
        bail!(
            "no server binary at {} (build it: cargo build --release -p blynk-server, or \
             pass --server-bin)",
            binary.display()
        );
    }
    let config = data.join("load.toml");
    let mut limits = "[limits]\nmessages_per_second = 10000000\nmessage_burst = 10000000\n\
         failed_logins_per_minute = 1000000\nmax_connections_per_address = 0\n"
        .to_owned();
    for line in &extras.limits {
        limits.push_str(line);
        limits.push('\n');
    }
    std::fs::write(&config, limits)?;
    let mut server = ServerCommand::new(&binary, data)
        .log("warn")
        // The key the data directory was populated with (it is stored hashed, never printed).
        .admin_key(ADMIN_KEY);
    // Never the standard port: 1883 may be taken by another server. Off unless a row needs it.
    if args.mqtt {
        server = server.mqtt_on_a_free_port()?;
    }
    let mut command = server.command();
    command
        .arg("--config")
        .arg(&config)
        .args(["--durability", args.durability.name()])
        .args(&extras.flags)
        .arg("serve")
        .stderr(Stdio::piped());
    let ready_file = data.join("ready.json");
    // Shows its first warnings, then keeps draining its logs so the server never blocks on them.
    let drain = |child: &mut Child| {
        let Some(logs) = child.stderr.take() else {
            return;
        };
        std::thread::spawn(move || {
            for (index, line) in std::io::BufReader::new(logs).lines().enumerate() {
                let Ok(line) = line else { break };
                if index < 20 {
                    eprintln!("  server: {line}");
                }
            }
        });
    };
    let (mut child, ready) =
        blynk_testbed::server::spawn_then(&mut command, &ready_file, START_WITHIN, drain)
            .with_context(|| format!("starting {}", binary.display()))?;
    if args.mqtt && ready.mqtt.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the child server has no MQTT address (its port was taken?)");
    }
    let addresses = ChildAddresses {
        http: ready.http,
        native: ready.native,
        mqtt: ready.mqtt,
    };
    Ok((child, addresses, ADMIN_KEY.to_owned()))
}

/// How long the child server may take to write its ready file (a large data directory).
const START_WITHIN: Duration = Duration::from_secs(60);
