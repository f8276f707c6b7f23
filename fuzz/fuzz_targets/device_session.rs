//! The device library's protocol state machine fed what a server (or anything on the network)
//! might send, in chunks, over a small receive buffer as on a board.

#![no_main]

use blynk_device::session::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte: chunk size; the second: the receive buffer (8 to 1,031 bytes) and
    // whether the device kept a version from an earlier connection.
    let Some((&[chunk, sizing], bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut rx = vec![0u8; 8 + usize::from(sizing) * 4];
    let known = (sizing & 1 == 1).then_some(u64::from(sizing));
    let mut session = Session::new(&mut rx, known);
    let mut events = 0usize;
    for piece in bytes.chunks(usize::from(chunk) + 1) {
        if session.on_bytes(piece, &mut |_event| events += 1).is_err() {
            // Errors are sticky: the stream is out of step and the runner reconnects.
            assert!(session.process(&mut |_| {}).is_err());
            return;
        }
        let _ = session.take_pong();
    }
    let _ = (
        session.is_logged_in(),
        session.is_restored(),
        session.known_version(),
    );
});
