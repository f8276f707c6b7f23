//! Integration tests of `blynk-proto`, linked as one binary to keep link time down.
//!
//! Golden byte vectors pin both wire formats; property tests show that every native message
//! round-trips (whole and split at any byte), that classic writes parse back to what was
//! written, and that no input, however malformed, makes a decoder panic or over-read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod classic_bodies;
mod classic_errors;
mod classic_golden;
mod classic_roundtrip;
mod lean;
mod native_errors;
mod native_golden;
mod native_roundtrip;
mod native_stream;
mod never_panics;
mod strategies;
