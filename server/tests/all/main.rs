//! Integration tests of blynk-server: one binary, real TCP on 127.0.0.1:0, real database files
//! in temporary directories. Tests named `spec_*` prove the SPEC rule their name gives.

mod support;

mod backup;
mod bad_input;
mod classic_extras;
mod connection_limits;
mod durability;
mod history;
mod http_api;
mod interleavings;
mod keys;
mod logs;
mod metrics;
mod mqtt;
mod nodes;
mod nodes_failures;
mod nodes_postgres;
mod postgres_store;
mod publication;
mod python_clients;
mod ready_file;
mod smoke;
mod stored_bounds;
mod sync_classic;
mod sync_native;
mod tls;
mod watchers;
