//! The server's classic device session, fed one connection's bytes in-process: before login
//! (when the first byte's low bit is 0) or after a valid HW_LOGIN of the demo device.

#![no_main]

use blynk_fuzz::{Harness, PEER};
use blynk_server::session::connection::StreamIo;
use libfuzzer_sys::fuzz_target;

/// HW_LOGIN, the classic library's login command.
const HW_LOGIN: u8 = 29;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let harness = Harness::get();
    let mut input = Vec::with_capacity(bytes.len() + 40);
    if mode & 1 == 1 {
        let token = harness.token.as_bytes();
        input.push(HW_LOGIN);
        input.extend_from_slice(&1u16.to_be_bytes());
        input.extend_from_slice(&(token.len() as u16).to_be_bytes());
        input.extend_from_slice(token);
    }
    input.extend_from_slice(bytes);
    harness.connection(&input, |stream, context| {
        blynk_server::session::classic::serve(StreamIo::new(stream), PEER, context)
    });
});
