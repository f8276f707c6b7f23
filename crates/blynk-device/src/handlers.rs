//! What the firmware does with what the server sends: a table of write handlers per virtual
//! pin (Blynk's `BLYNK_WRITE(Vn)` and `BLYNK_WRITE_DEFAULT`), and the [`Firmware`] trait for
//! connection events and digital/analog pins.
//!
//! Why a table of `fn` pointers for pins: it is built by a `const fn`, so it can live in a
//! `static` (in flash, no RAM), reads like Blynk's per-pin macros, and costs one comparison per
//! entry; the firmware's state is the context `C` every handler gets by `&mut`. Connection
//! events and hardware pins are few and the same for every firmware, so they are a trait with
//! default methods: implement only what you use.

use blynk_proto::{Pin, Value};

use crate::error::Error;
use crate::log::pin_letter;

/// A write handler of one virtual pin: `BLYNK_WRITE(Vn)`.
pub type WriteHandler<C> = fn(&mut C, &Value<'_>);

/// The handler of virtual pins without their own: `BLYNK_WRITE_DEFAULT`.
pub type DefaultHandler<C> = fn(&mut C, u8, &Value<'_>);

/// Write handlers of up to `N` virtual pins, over a firmware context `C`.
///
/// Handlers are `fn` items or closures without captures; a closure names the context's type
/// on its first parameter (`|lamp: &mut Lamp, value| ...`), since a `static` table is built
/// before its type is read.
///
/// ```
/// use blynk_device::{Handlers, Value, ValueExt};
///
/// struct Lamp { on: bool, brightness: u8 }
///
/// static HANDLERS: Handlers<Lamp, 2> = Handlers::new()
///     .on_write(0, |lamp: &mut Lamp, value| lamp.on = value.as_bool())
///     .on_write(1, |lamp: &mut Lamp, value| lamp.brightness = value.as_int().unwrap_or(0) as u8);
/// ```
pub struct Handlers<C, const N: usize> {
    pins: [Option<(u8, WriteHandler<C>)>; N],
    default: Option<DefaultHandler<C>>,
}

impl<C, const N: usize> Default for Handlers<C, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, const N: usize> Handlers<C, N> {
    /// A table without handlers.
    pub const fn new() -> Self {
        Handlers {
            pins: [None; N],
            default: None,
        }
    }

    /// Runs `handler` for every value of virtual pin `pin` (app writes and synced values).
    /// A second handler for the same pin replaces the first.
    ///
    /// # Panics
    ///
    /// When the table already holds `N` pins. In a `static` that is a compile-time error.
    #[allow(clippy::indexing_slicing, clippy::panic)] // `index < N`; see # Panics
    pub const fn on_write(mut self, pin: u8, handler: WriteHandler<C>) -> Self {
        let mut index = 0;
        while index < N {
            match self.pins[index] {
                Some((taken, _)) if taken != pin => index += 1,
                _ => {
                    self.pins[index] = Some((pin, handler));
                    return self;
                }
            }
        }
        panic!("Handlers: more pins than the table's size N");
    }

    /// Runs `handler` for values of virtual pins that have no handler of their own.
    pub const fn on_default(mut self, handler: DefaultHandler<C>) -> Self {
        self.default = Some(handler);
        self
    }

    /// Runs the handler of virtual pin `pin`; `false` when there is none.
    pub fn dispatch(&self, context: &mut C, pin: u8, value: &Value<'_>) -> bool {
        let own = self
            .pins
            .iter()
            .flatten()
            .find(|(number, _)| *number == pin)
            .map(|(_, handler)| *handler);
        match (own, self.default) {
            (Some(handler), _) => handler(context, value),
            (None, Some(default)) => default(context, pin, value),
            (None, None) => {
                log!(debug, "no handler for V{}", pin);
                return false;
            }
        }
        true
    }
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SyncDone {
    /// The automatic sync after login: the device is restored to the server's state.
    pub automatic: bool,
    /// How many values it carried.
    pub count: u16,
}

/// Connection events and hardware pins, implemented by the firmware's context. Every method
/// has a default that does nothing, so `impl Firmware for MyDevice {}` is enough to start.
pub trait Firmware {
    /// The server accepted the login (`BLYNK_CONNECTED`). The automatic sync follows.
    fn connected(&mut self) {}

    /// A connection that was logged in ended; the runner reconnects (`BLYNK_DISCONNECTED`).
    fn disconnected(&mut self, reason: Error) {
        let _ = reason;
    }

    /// A sync ended. With `automatic` set, every value of the server was applied: the device is
    /// fully restored.
    fn sync_complete(&mut self, sync: SyncDone) {
        let _ = sync;
    }

    /// A digital pin's value arrived (from a sync or an app): set the pin.
    fn digital_write(&mut self, pin: u8, high: bool) {
        let _ = high;
        log!(debug, "digital pin D{} not handled", pin);
    }

    /// An analog pin's value arrived: set the pin (PWM, DAC).
    fn analog_write(&mut self, pin: u8, value: i64) {
        let _ = value;
        log!(debug, "analog pin A{} not handled", pin);
    }
}

impl Firmware for () {}

/// Applies one value from the server: a virtual pin through the handlers, a digital or analog
/// pin through the [`Firmware`] trait.
pub(crate) fn apply<C: Firmware, const N: usize>(
    handlers: &Handlers<C, N>,
    context: &mut C,
    pin: Pin,
    value: &Value<'_>,
) {
    use crate::value::ValueExt;
    match pin {
        Pin::Virtual(number) => {
            handlers.dispatch(context, number, value);
        }
        Pin::Digital(number) => context.digital_write(number, value.as_bool()),
        Pin::Analog(number) => match value.as_int() {
            Some(level) => context.analog_write(number, level),
            None => log!(warn, "{}{}: not a number", pin_letter(pin), number),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        v1: Option<i64>,
        other: Option<u8>,
    }

    static HANDLERS: Handlers<Seen, 2> = Handlers::new()
        .on_write(1, |seen: &mut Seen, value| {
            seen.v1 = crate::value::ValueExt::as_int(value);
        })
        .on_default(|seen: &mut Seen, pin, _| seen.other = Some(pin));

    #[test]
    fn pins_go_to_their_handler_and_the_rest_to_the_default() {
        let mut seen = Seen::default();
        assert!(HANDLERS.dispatch(&mut seen, 1, &Value::int(5)));
        assert!(HANDLERS.dispatch(&mut seen, 9, &Value::int(1)));
        assert_eq!((seen.v1, seen.other), (Some(5), Some(9)));
        let empty: Handlers<Seen, 1> = Handlers::new();
        assert!(!empty.dispatch(&mut seen, 1, &Value::int(5)));
    }
}
