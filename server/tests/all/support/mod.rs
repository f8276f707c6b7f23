//! Test support: the shared pieces (a real server on 127.0.0.1:0 over a temporary data
//! directory, the binary as a child process, the HTTP and app WebSocket clients) come from the
//! server's `test-util` feature; the clients of each device protocol and the multi-node
//! harnesses are the server tests' own.

#![allow(dead_code)]

pub mod classic;
pub mod haproxy;
pub mod mqtt;
pub mod native;
pub mod nats;
pub mod node;
pub mod postgres;

pub use blynk_server::test_util::*;
