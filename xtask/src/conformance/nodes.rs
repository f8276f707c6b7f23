//! The servers of one case: one `blynk-server`, or with `--nodes N` (N > 1) N nodes sharing a
//! fresh PostgreSQL database and a nats-server of the case's own (devices of different cases
//! share ids, so they must not share a bus).
//!
//! Device slot `i` (the demo device is slot 0, each created device the next) connects to node
//! `i mod N`, and the app reads and writes it through node `(i + 1) mod N`: every app write
//! crosses the bus to the device's node, every device write crosses it back to the app's.
//! Templates and devices are created through node 0, so they too must reach the other nodes.
//! A scenario's server steps (restart, kill, start) act on the nodes holding the case's devices;
//! the app's node stays up and sees the device go and come back through the bus.

use std::path::Path;

use anyhow::Result;
use blynk_testbed::{NatsServer, Postgres};

use super::server::Server;
use crate::blynk_server::admin_key;

/// Where a run's cases put their servers.
#[derive(Clone, Copy)]
pub(super) enum Topology<'a> {
    /// One server on its own SQLite data directory.
    Single,
    /// `nodes` nodes on a database of `postgres` and a bus of their own.
    Cluster {
        nodes: usize,
        postgres: &'a Postgres,
    },
}

/// The running servers of one case; dropping it kills the nodes, then the bus.
pub(super) struct Servers {
    nodes: Vec<Server>,
    /// After `nodes`, so the nodes go first.
    _bus: Option<NatsServer>,
}

impl Servers {
    /// Starts the servers of `topology` under `dir`.
    pub(super) fn start(topology: Topology<'_>, binary: &Path, dir: &Path) -> Result<Servers> {
        let Topology::Cluster { nodes, postgres } = topology else {
            return Ok(Servers {
                nodes: vec![Server::start(binary, dir)?],
                _bus: None,
            });
        };
        let bus = NatsServer::start()?;
        let store = postgres.create_database()?;
        let extra = vec!["--store".into(), store, "--bus".into(), bus.url()];
        let key = admin_key();
        let mut servers = Servers {
            nodes: Vec::new(),
            _bus: Some(bus),
        };
        // One after the other: the first applies the schema and creates the demo device, which
        // the others then find in the store.
        for node in 0..nodes {
            let data = dir.join(format!("node{node}"));
            let server = Server::start_with(binary, &data, key.clone(), extra.clone())?;
            servers.nodes.push(server);
        }
        Ok(servers)
    }

    /// The node templates and devices are created through, whose banner gave the demo token.
    pub(super) fn first(&self) -> &Server {
        &self.nodes[0]
    }

    /// The node device slot `slot` connects to.
    pub(super) fn device_node(&self, slot: usize) -> &Server {
        &self.nodes[slot % self.nodes.len()]
    }

    /// The node the app reads and writes device slot `slot` through.
    pub(super) fn app_node(&self, slot: usize) -> &Server {
        &self.nodes[(slot + 1) % self.nodes.len()]
    }

    /// The nodes the device slots `slots` connect to, each once.
    fn holding(&self, slots: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut nodes: Vec<usize> = slots.map(|slot| slot % self.nodes.len()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Stops gracefully and starts again the nodes holding `slots`.
    pub(super) fn restart(&mut self, slots: impl Iterator<Item = usize>) -> Result<()> {
        for node in self.holding(slots) {
            self.nodes[node].restart()?;
        }
        Ok(())
    }

    /// `kill -9` of the nodes holding `slots`.
    pub(super) fn kill(&mut self, slots: impl Iterator<Item = usize>) {
        for node in self.holding(slots) {
            self.nodes[node].kill();
        }
    }

    /// Starts again (after [`Servers::kill`]) the nodes holding `slots`.
    pub(super) fn start_again(&mut self, slots: impl Iterator<Item = usize>) -> Result<()> {
        for node in self.holding(slots) {
            self.nodes[node].start_again()?;
        }
        Ok(())
    }

    /// The last `lines` lines of every node's log.
    pub(super) fn log_tails(&self, lines: usize) -> String {
        if let [server] = self.nodes.as_slice() {
            return server.log_tail(lines);
        }
        let mut tails = String::new();
        for (node, server) in self.nodes.iter().enumerate() {
            tails.push_str(&format!("    node {node}:\n{}\n", server.log_tail(lines)));
        }
        tails
    }
}
