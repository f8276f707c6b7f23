//! Several nodes under test, for the rows of `cargo xtask bench --nodes N`: either nodes this
//! generator starts (a durable PostgreSQL and a nats-server from `blynk-testbed`, then N
//! `blynk-server` child processes on them, each on its own loopback ports), or nodes started
//! elsewhere, given by address (`--node HTTP,NATIVE[,PID]`, once per node, with `--admin-key`).
//!
//! Every node is a [`Target`] holding the same devices: the rows pick which node a device or an
//! app connects to.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, anyhow, bail};
use blynk_testbed::{NatsServer, Postgres};
use clap::Args;

use super::measure::CpuMeters;
use super::target::{ChildExtras, spawn_child_with};
use super::{
    ADMIN_KEY, Running, SETUP_TIMEOUT, Target, TargetArgs, TempData, populate, populate_rest,
    server_config,
};

/// How the rows of several nodes find or start their nodes.
#[derive(Args, Clone, Debug)]
pub struct NodesArgs {
    /// Nodes started by the generator (on a PostgreSQL and a nats-server it starts too).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// A node started elsewhere: `HTTP,NATIVE[,PID]` addresses (the PID for CPU and memory
    /// figures), once per node, all on one store and bus; `--admin-key` is theirs.
    #[arg(long = "node", value_parser = parse_node)]
    pub external: Vec<ExternalNode>,
}

/// A node given by address.
#[derive(Clone, Copy, Debug)]
pub struct ExternalNode {
    pub http: SocketAddr,
    pub native: SocketAddr,
    pub pid: Option<u32>,
}

fn parse_node(text: &str) -> Result<ExternalNode, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let address = |index: usize, what: &str| -> Result<SocketAddr, String> {
        parts
            .get(index)
            .ok_or_else(|| format!("`{text}`: no {what} address (HTTP,NATIVE[,PID])"))?
            .trim()
            .parse()
            .map_err(|error| format!("`{text}`: the {what} address: {error}"))
    };
    let pid = match parts.get(2) {
        Some(pid) => Some(
            pid.trim()
                .parse()
                .map_err(|error| format!("`{text}`: the process id: {error}"))?,
        ),
        None => None,
    };
    if parts.len() > 3 {
        return Err(format!("`{text}`: expected HTTP,NATIVE[,PID]"));
    }
    Ok(ExternalNode {
        http: address(0, "HTTP")?,
        native: address(1, "native")?,
        pid,
    })
}

/// The nodes of one measurement, and what they run on when the generator started them.
pub struct Cluster {
    pub nodes: Vec<Target>,
    /// Stopped after the nodes (dropping them stops the processes).
    _bus: Option<NatsServer>,
    _store: Option<Postgres>,
}

impl Cluster {
    /// Starts (or reaches) the nodes, with `count` devices made before any device connects.
    /// `limits` are extra `[limits]` lines of started nodes (a higher connection cap, say).
    pub fn start(
        target_args: &TargetArgs,
        args: &NodesArgs,
        count: usize,
        limits: &[&str],
        load: &tokio::runtime::Runtime,
    ) -> Result<Cluster> {
        if !args.external.is_empty() {
            return Self::reach(target_args, args, count, load);
        }
        if args.nodes < 2 {
            bail!("--nodes must be at least 2 (one node is the single-node table)");
        }
        let started = std::time::Instant::now();
        let store = Postgres::start_durable().map_err(|error| anyhow!("PostgreSQL: {error}"))?;
        let url = store
            .create_database()
            .map_err(|error| anyhow!("PostgreSQL: {error}"))?;
        let bus = NatsServer::start().map_err(|error| anyhow!("nats-server: {error}"))?;
        let devices = populate_store(&url, target_args, count)?;
        let extras = ChildExtras {
            flags: vec!["--store".into(), url, "--bus".into(), bus.url()],
            limits: limits.iter().map(|line| (*line).to_owned()).collect(),
        };
        let mut nodes = Vec::with_capacity(args.nodes);
        for _ in 0..args.nodes {
            let data = TempData::new()?;
            let (child, addresses, admin_key) = spawn_child_with(target_args, &data.0, &extras)?;
            nodes.push(Target {
                http: addresses.http,
                native: addresses.native,
                mqtt: addresses.mqtt,
                admin_key,
                devices: devices.clone(),
                running: Running::Child { child, _data: data },
                durability: "postgres",
            });
        }
        eprintln!(
            "  started PostgreSQL (durable), nats-server and {} nodes with {count} devices in \
             {:.1} s",
            nodes.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(Cluster {
            nodes,
            _bus: Some(bus),
            _store: Some(store),
        })
    }

    /// Nodes started elsewhere: the devices are made through the first one's REST API.
    fn reach(
        target_args: &TargetArgs,
        args: &NodesArgs,
        count: usize,
        load: &tokio::runtime::Runtime,
    ) -> Result<Cluster> {
        if args.external.len() < 2 {
            bail!("give at least two --node addresses");
        }
        let admin_key = target_args
            .admin_key
            .clone()
            .context("--admin-key is needed for nodes given by address")?;
        let devices = load.block_on(populate_rest(
            args.external[0].http,
            &admin_key,
            count,
            false,
        ))?;
        let nodes = args
            .external
            .iter()
            .map(|node| Target {
                http: node.http,
                native: node.native,
                mqtt: None,
                admin_key: admin_key.clone(),
                devices: devices.clone(),
                running: Running::External { pid: node.pid },
                durability: "the external nodes'",
            })
            .collect();
        Ok(Cluster {
            nodes,
            _bus: None,
            _store: None,
        })
    }

    /// The process ids of the nodes (all, or an error naming the node without one).
    pub fn pids(&self) -> Result<Vec<u32>> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                node.server_pid().with_context(|| {
                    format!("node {index} has no process id (--node HTTP,NATIVE,PID)")
                })
            })
            .collect()
    }

    /// The CPU time of every node's process, from now on.
    pub fn cpu_meters(&self) -> Result<CpuMeters> {
        CpuMeters::start(&self.pids()?)
    }

    pub fn stop(self) {
        for node in self.nodes {
            node.stop();
        }
    }
}

/// `node` seen as a server started elsewhere (same addresses, devices and process id), for the
/// helpers that take a whole [`super::links::UnderTest`]; stopping it stops nothing.
pub fn device_view(node: &Target) -> Target {
    Target {
        http: node.http,
        native: node.native,
        mqtt: node.mqtt,
        admin_key: node.admin_key.clone(),
        devices: node.devices.clone(),
        running: Running::External {
            pid: node.server_pid(),
        },
        durability: node.durability,
    }
}

/// Whether `node` reports device `id` online (`GET /api/devices/{id}`).
pub async fn is_online(node: &Target, id: i64) -> Result<bool> {
    let device = super::app_client(node.http, &node.admin_key)?
        .get(&format!("/api/devices/{id}"))
        .await?;
    Ok(device["online"].as_bool() == Some(true))
}

/// Waits until `node` reports each of `ids` online (presence crosses the bus), bounded by
/// [`SETUP_TIMEOUT`].
pub async fn wait_online(node: &Target, ids: &[i64]) -> Result<()> {
    let deadline = std::time::Instant::now() + SETUP_TIMEOUT;
    for &id in ids {
        while !is_online(node, id).await? {
            if std::time::Instant::now() > deadline {
                bail!(
                    "device {id} not online on {} within {SETUP_TIMEOUT:?}",
                    node.http
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Makes the template and `count` devices in the PostgreSQL database at `url` through a server
/// in this process (no bus: no node runs yet), which is stopped before the nodes start.
fn populate_store(
    url: &str,
    target_args: &TargetArgs,
    count: usize,
) -> Result<Vec<super::DeviceRef>> {
    let data = TempData::new()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("populate")
        .build()?;
    let mut config = server_config(&data.0, target_args.durability);
    config.store.url = Some(url.to_owned());
    let server = runtime.block_on(blynk_server::start_with_admin_key(config, Some(ADMIN_KEY)))?;
    let engine = server.engine().clone();
    let devices = runtime.block_on(populate(&engine, count, false));
    runtime.block_on(server.shutdown());
    drop(engine);
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_given_by_its_addresses_and_maybe_its_process() {
        let node = parse_node("127.0.0.1:8080,127.0.0.1:9443,42").unwrap();
        assert_eq!(node.http.port(), 8080);
        assert_eq!(node.native.port(), 9443);
        assert_eq!(node.pid, Some(42));
        assert_eq!(parse_node("127.0.0.1:1,127.0.0.1:2").unwrap().pid, None);
        assert!(parse_node("127.0.0.1:1").is_err());
        assert!(parse_node("127.0.0.1:1,127.0.0.1:2,3,4").is_err());
    }
}
