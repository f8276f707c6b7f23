//! The tests of several nodes (`nodes.rs`, `nodes_failures.rs`) on a real PostgreSQL, as
//! several machines would share it, with a real nats-server between them.

use crate::nodes;
use crate::nodes_failures;
use crate::support::cluster::Store;
use blynk_testbed::postgres::{self, Postgres};

fn database() -> Store {
    Store::postgres(postgres::shared().fresh_database())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_on_postgres_device_on_one_node_app_and_http_writes_on_the_others() {
    nodes::device_on_one_node_writes_on_the_others(database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_on_postgres_a_write_while_no_node_holds_the_device_waits_for_its_sync() {
    nodes::unheld_write_then_sync_elsewhere(database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_on_postgres_templates_and_devices_added_on_one_node_appear_on_the_others() {
    nodes::added_devices_appear_everywhere(database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_on_postgres_a_node_killed_under_load_loses_no_acknowledged_write() {
    nodes_failures::node_killed_under_load(database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_on_postgres_two_nodes_writing_one_device_keep_versions_unique() {
    nodes_failures::two_nodes_write_one_device(database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_7_on_postgres_the_bus_stopped_for_5_s_then_postgres_restarted_everything_converges() {
    // A PostgreSQL of its own: the shared one must not go away under other tests.
    let server = Postgres::start().unwrap_or_else(|error| panic!("{error}"));
    let store = Store::postgres(server.fresh_database());
    nodes_failures::bus_outage(store, Some(&server)).await;
}
