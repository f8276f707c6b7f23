//! The simulated device's network card: an embassy-net driver over a TAP device.
//!
//! `embassy-net-tuntap`'s own driver panics when the kernel refuses a frame (writing to a TAP
//! device that is down fails with EIO), which would end the device the moment a test cuts its
//! link with `ip link set TAP down`. This one drops the frame instead, as a network card with its
//! cable pulled does, and can also drop a share of the frames each way on purpose ([`LOSS`]):
//! real packet loss under smoltcp's TCP (retransmissions, timeouts), without netem.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::task::Context;

use async_io::Async;
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use embassy_net_tuntap::TunTap;

/// The share of frames dropped each way, in percent (0: none, 100: the link is cut).
pub static LOSS: AtomicU8 = AtomicU8::new(0);

/// Ethernet MTU as smoltcp counts it: the IP MTU of a TAP device (1500) and the header.
const MTU: usize = 1500 + 14;

/// The state of the frame-dropping dice (xorshift32).
static DICE: AtomicU32 = AtomicU32::new(0x9E37_79B9);

/// Whether to drop the next frame, given [`LOSS`].
fn lost() -> bool {
    let loss = u32::from(LOSS.load(Ordering::Relaxed));
    if loss == 0 {
        return false;
    }
    let mut x = DICE.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    DICE.store(x, Ordering::Relaxed);
    x % 100 < loss
}

/// A TAP device as an embassy-net driver.
pub struct TapDevice {
    device: Async<TunTap>,
    hardware_address: [u8; 6],
}

impl TapDevice {
    /// Opens the TAP device `name` (it must exist).
    pub fn new(name: &str, seed: u32) -> io::Result<TapDevice> {
        DICE.store(seed | 1, Ordering::Relaxed);
        Ok(TapDevice {
            device: Async::new(TunTap::new(name)?)?,
            // A locally administered unicast address.
            hardware_address: [0x02, 0x62, 0x6c, 0x79, 0x6e, 0x6b],
        })
    }
}

impl Driver for TapDevice {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let mut buffer = vec![0; MTU];
        loop {
            // SAFETY: the TAP device is only read and written, never replaced or closed.
            match unsafe { self.device.get_mut() }.read(&mut buffer) {
                Ok(length) if lost() => {
                    let _ = length;
                }
                Ok(length) => {
                    buffer.truncate(length);
                    return Some((
                        RxToken { buffer },
                        TxToken {
                            device: &mut self.device,
                        },
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    if error.kind() != io::ErrorKind::WouldBlock {
                        log::warn!("TAP read failed: {error}");
                    }
                    if !self.device.poll_readable(cx).is_ready() {
                        return None;
                    }
                    if error.kind() != io::ErrorKind::WouldBlock {
                        return None;
                    }
                }
            }
        }
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Self::TxToken<'_>> {
        Some(TxToken {
            device: &mut self.device,
        })
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::default();
        capabilities.max_transmission_unit = MTU;
        capabilities
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.hardware_address)
    }
}

/// A received frame.
pub struct RxToken {
    buffer: Vec<u8>,
}

impl embassy_net_driver::RxToken for RxToken {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        f(&mut self.buffer)
    }
}

/// A frame to send.
pub struct TxToken<'a> {
    device: &'a mut Async<TunTap>,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F>(self, length: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buffer = vec![0; length];
        let result = f(&mut buffer);
        if lost() {
            return result;
        }
        // SAFETY: as in `receive`.
        match unsafe { self.device.get_mut() }.write(&buffer) {
            Ok(_) => {}
            // A full queue, or the link is down (EIO): the frame is lost, as on a real card.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) if error.raw_os_error() == Some(5) => {}
            Err(error) => log::warn!("TAP write failed: {error}"),
        }
        result
    }
}
