//! BRIDGE (15) bodies: the Bridge widget of the C++ library, through which one device writes
//! the pins of another. `<channel>\0i\0<token>` binds a channel to the device of a token;
//! `<channel>\0vw\0<pin>\0<value>...` (or `dw`, `aw`) writes through it.

use core::num::NonZeroU16;

use super::body::Parts;
use super::frame::encode_frame;
use super::hardware::{HardwareCommand, write_sub_command};
use super::{BuildError, ClassicError, Command};
use crate::pin::{Pin, parse_pin_number};
use crate::text::Token;
use crate::value::Value;

/// A parsed BRIDGE body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeCommand<'a> {
    /// `<channel>\0i\0<token>`: bind `channel` to the device of `token`.
    Bind {
        /// The channel: the virtual pin the device's `WidgetBridge` was made with.
        channel: u8,
        /// The target device's token.
        token: Token<'a>,
    },
    /// `<channel>\0vw|dw|aw\0<pin>\0<value>...`: write a pin of the bound device.
    Write {
        /// The channel.
        channel: u8,
        /// The write, as a HARDWARE body.
        write: HardwareCommand<'a>,
    },
}

impl<'a> BridgeCommand<'a> {
    /// Parses a BRIDGE body. Reads (`vr`, ...) and pin modes are refused with
    /// [`ClassicError::UnknownSubCommand`]: a bridge only writes.
    pub fn parse(body: &'a [u8]) -> Result<Self, ClassicError> {
        let mut parts = Parts::new(body)?;
        let channel_text = parts.expect("bridge channel")?;
        let channel = Pin::virtual_pin(parse_pin_number(channel_text)?)?.number();
        // The rest of the body, after the channel and its separator, is a HARDWARE body.
        let rest = body.get(channel_text.len() + 1..).unwrap_or_default();
        if parts.clone().next() == Some("i") {
            parts.next();
            let token = parts.expect("bridge token")?;
            let token = Token::new(token).map_err(|_| ClassicError::BadToken)?;
            return Ok(BridgeCommand::Bind { channel, token });
        }
        let write = HardwareCommand::parse(rest)?;
        match write {
            HardwareCommand::VirtualWrite { .. }
            | HardwareCommand::DigitalWrite { .. }
            | HardwareCommand::AnalogWrite { .. } => Ok(BridgeCommand::Write { channel, write }),
            _ => Err(ClassicError::UnknownSubCommand),
        }
    }

    /// For a write: the channel, the target pin and the value in domain types.
    pub fn as_write(&self) -> Option<Result<(u8, Pin, Value<'a>), ClassicError>> {
        match self {
            BridgeCommand::Bind { .. } => None,
            BridgeCommand::Write { channel, write } => write
                .as_write()
                .map(|result| result.map(|(pin, value)| (*channel, pin, value))),
        }
    }
}

/// Builds the frame `WidgetBridge::setAuthToken` sends (for tests and simulated devices).
pub fn encode_bridge_bind<'o>(
    out: &'o mut [u8],
    id: NonZeroU16,
    channel: u8,
    token: &str,
) -> Result<&'o [u8], BuildError> {
    encode_frame(out, Command::Bridge, id, super::MAX_BODY, |body| {
        body.part_display(channel)?.part("i")?.part(token)?;
        Ok(())
    })
}

/// Builds the frame `WidgetBridge::virtualWrite` (or `digitalWrite`, `analogWrite`) sends.
pub fn encode_bridge_write<'o>(
    out: &'o mut [u8],
    id: NonZeroU16,
    channel: u8,
    pin: Pin,
    value: &Value<'_>,
) -> Result<&'o [u8], BuildError> {
    encode_frame(out, Command::Bridge, id, super::MAX_BODY, |body| {
        body.part_display(channel)?
            .part(write_sub_command(pin))?
            .part_display(pin.number())?
            .value(value)?;
        Ok(())
    })
}
