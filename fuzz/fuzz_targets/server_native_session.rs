//! The server's native device session, fed one connection's bytes in-process: before login
//! (when the first byte's low bit is 0) or after a valid login of the demo device.

#![no_main]

use blynk_device::session::Session;
use blynk_fuzz::{Harness, PEER};
use blynk_proto::Token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let harness = Harness::get();
    let Some(input) = harness.input(data, |token, input| {
        let mut rx = [0u8; 1024];
        let mut login = [0u8; 128];
        let token = Token::new(token).expect("the demo token");
        let len = Session::new(&mut rx, None)
            .login(token, "fuzz", 45, &mut login)
            .expect("a login frame");
        input.extend_from_slice(&login[..len]);
    }) else {
        return;
    };
    harness.connection(&input, |stream, context| {
        blynk_server::session::native::serve(stream, PEER, context)
    });
});
