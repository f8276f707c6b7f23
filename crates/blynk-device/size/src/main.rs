//! A minimal firmware, with (`--features with-blynk`) or without the device library: the same
//! skeleton (reset handler, a time driver, a block_on executor, a dummy network connection), so
//! the difference of the two images is what the library adds. Run `./measure.sh`.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m_rt::entry;
use embedded_io_async::{ErrorType, Read, Write};
use panic_halt as _;

/// A time driver that counts calls: enough for the linker, never run.
struct Clock;
static TICKS: AtomicU32 = AtomicU32::new(0);
impl embassy_time_driver::Driver for Clock {
    fn now(&self) -> u64 {
        u64::from(TICKS.load(Ordering::Relaxed))
    }
    fn schedule_wake(&self, _at: u64, waker: &core::task::Waker) {
        waker.wake_by_ref();
    }
}
embassy_time_driver::time_driver_impl!(static CLOCK: Clock = Clock);

/// A connection whose bytes come from outside the optimiser's view.
pub struct Wire;
impl ErrorType for Wire {
    type Error = embedded_io_async::ErrorKind;
}
impl Read for Wire {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = black_box(buf.len());
        for byte in buf.iter_mut().take(n) {
            *byte = black_box(0);
        }
        Ok(n)
    }
}
impl Write for Wire {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(black_box(buf).len())
    }
    async fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[cfg(feature = "with-blynk")]
mod device {
    use blynk_device::{Blynk, Config, ConnectError, Connector, Firmware, Handlers, ValueExt};
    use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;

    pub struct Lamp {
        pub on: bool,
        pub level: i64,
    }
    impl Firmware for Lamp {}

    pub static BLYNK: Blynk<CriticalSectionRawMutex, 8, 128> = Blynk::new();
    pub static HANDLERS: Handlers<Lamp, 2> = Handlers::new()
        .on_write(0, |lamp: &mut Lamp, value| lamp.on = value.as_bool())
        .on_write(1, |lamp: &mut Lamp, value| {
            lamp.level = value.as_int().unwrap_or(0)
        });

    pub struct Net;
    impl Connector for Net {
        type Connection<'c> = super::Wire;
        async fn connect(&mut self) -> Result<super::Wire, ConnectError> {
            if core::hint::black_box(true) {
                Ok(super::Wire)
            } else {
                Err(ConnectError::Refused)
            }
        }
    }

    pub async fn run(rx: &mut [u8], tx: &mut [u8]) {
        let config = Config::new("abcdEFGH0123456789_-abcdefghijkl").with_firmware("1.0.0");
        let mut runner = BLYNK.runner(config, rx, tx);
        let mut lamp = Lamp {
            on: false,
            level: 0,
        };
        let _ = BLYNK.virtual_write(1, 255);
        let _ = BLYNK.virtual_write(2, (1, 2.5, "abc"));
        BLYNK.sync_all();
        BLYNK.sync_virtual(&[1, 2]);
        let _ = BLYNK.set_property(1, "color", "#FF0000");
        let _ = BLYNK.log_event("overheat", Some("too hot"));
        // With `with-serde`: encode and decode of the serde codec, every message of it, as a
        // firmware that used them instead of the lean codec would link.
        #[cfg(feature = "with-serde")]
        {
            use blynk_proto::native::{self, Message, Ping};
            let mut out = [0u8; 64];
            let message = core::hint::black_box(Message::Ping(Ping { id: 1 }));
            let _ = core::hint::black_box(native::encode(&message, &mut out).map(|f| f.len()));
            let input = core::hint::black_box([0u8; 64]);
            let _ = core::hint::black_box(native::decode(&input).is_ok());
        }
        let _ = runner.run(&mut Net, &mut lamp, &HANDLERS).await;
        core::hint::black_box((lamp.on, lamp.level, BLYNK.overflow_count()));
    }
}

#[cfg(not(feature = "with-blynk"))]
mod device {
    use embedded_io_async::{Read, Write};

    /// The same skeleton without the library: echo the wire. With `with-builtins`, it also
    /// uses what any firmware with a network stack links anyway (memmove, memcpy, memset,
    /// 32- and 64-bit division), so that the difference is the library's own code.
    pub async fn run(rx: &mut [u8], tx: &mut [u8]) {
        let mut wire = super::Wire;
        loop {
            let n = wire.read(rx).await.unwrap_or(0);
            #[cfg(feature = "with-builtins")]
            {
                use core::hint::black_box;
                let (from, to) = (black_box(n / 2), black_box(1));
                rx.copy_within(from..n, to);
                let m = n.min(tx.len());
                tx[..m].copy_from_slice(&rx[..m]);
                tx.fill(black_box(0));
                black_box(black_box(n as u64) / black_box(7u64));
                black_box(black_box(n as u32) % black_box(7u32));
            }
            let _ = wire.write_all(&rx[..n]).await;
            let _ = &tx;
            embassy_time::Timer::after_millis(10).await;
        }
    }
}

#[entry]
fn main() -> ! {
    let mut rx = [0u8; 256];
    let mut tx = [0u8; 128];
    embassy_futures::block_on(device::run(&mut rx, &mut tx));
    loop {
        cortex_m::asm::wfi();
    }
}
