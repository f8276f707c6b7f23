//! Integration tests of blynk-device: the real runner over tokio sockets
//! (`embedded_io_adapters::tokio_1::FromTokio`) against a real `blynk-server` on 127.0.0.1,
//! with real database files in temporary directories. Tests named `spec_*` prove the SPEC rule
//! their name gives.

mod support;

mod footprint;
mod lifecycle;
mod offline;
mod session_props;
mod sync;
