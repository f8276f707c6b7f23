//! The memory the library itself takes, beyond the caller's buffers, measured on the host
//! (64-bit pointers: a 32-bit board needs less). The flash and RAM figures for a Cortex-M0
//! firmware are in `docs/ARCHITECTURE.md`.

use blynk_device::{Blynk, Config, Handlers};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;

use crate::support::Dialer;

#[test]
fn the_runner_future_and_the_device_object_stay_small() {
    let blynk: &'static Blynk<CriticalSectionRawMutex, 8, 128> = Box::leak(Box::new(Blynk::new()));
    let (rx, tx) = (vec![0u8; 256].leak(), vec![0u8; 128].leak());
    let mut runner = blynk.runner(Config::new("abcdEFGH0123456789_-abcdefghijkl"), rx, tx);
    static HANDLERS: Handlers<(), 4> = Handlers::new();
    let mut connector = Dialer::default();
    let mut firmware = ();
    let run = runner.run(&mut connector, &mut firmware, &HANDLERS);
    let future = size_of_val(&run);
    let object = size_of::<Blynk<CriticalSectionRawMutex, 8, 128>>();
    println!("run future: {future} bytes; Blynk<_, 8, 128>: {object} bytes");
    // The future holds the connector's own future too (a tokio connect here).
    assert!(future < 2048, "run future of {future} bytes");
    assert!(object < 1024, "device object of {object} bytes");
}
