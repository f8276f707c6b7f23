//! The server's classic device session, fed one connection's bytes in-process: before login
//! (when the first byte's low bit is 0) or after a valid HW_LOGIN of the demo device.

#![no_main]

use blynk_fuzz::{Harness, PEER};
use blynk_server::session::connection::StreamIo;
use libfuzzer_sys::fuzz_target;

/// HW_LOGIN, the classic library's login command.
const HW_LOGIN: u8 = 29;

fuzz_target!(|data: &[u8]| {
    let harness = Harness::get();
    let Some(input) = harness.input(data, |token, input| {
        input.push(HW_LOGIN);
        input.extend_from_slice(&1u16.to_be_bytes());
        input.extend_from_slice(&(token.len() as u16).to_be_bytes());
        input.extend_from_slice(token.as_bytes());
    }) else {
        return;
    };
    harness.connection(&input, |stream, context| {
        blynk_server::session::classic::serve(StreamIo::new(stream), PEER, context)
    });
});
