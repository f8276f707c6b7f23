//! The other classic bodies: login, INTERNAL device info, PROPERTY, EVENT_LOG.

use core::num::NonZeroU16;

use super::body::Parts;
use super::frame::encode_frame;
use super::{BuildError, ClassicError, Command};
use crate::MAX_NAME_LEN;
use crate::pin::{Pin, parse_pin_number};
use crate::text::{BoundedStr, Token};

/// Reads the token of a LOGIN (2) or HW_LOGIN (29) body. `blynklib` sends a trailing `\0`
/// on some paths, which is tolerated like any body's.
pub fn parse_login(body: &[u8]) -> Result<Token<'_>, ClassicError> {
    let mut parts = Parts::new(body)?;
    let token = parts.expect("token")?;
    Token::new(token).map_err(|_| ClassicError::BadToken)
}

/// The INTERNAL (17) body a device sends after login: `key\0value` pairs such as
/// `ver\01.4.0\0h-beat\040\0buff-in\04096\0dev\0Linux`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    parts: Parts<'a>,
}

impl<'a> DeviceInfo<'a> {
    /// Parses an INTERNAL body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ClassicError> {
        Ok(DeviceInfo {
            parts: Parts::new(body)?,
        })
    }

    /// The key/value pairs, in order (a key without value is dropped).
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut parts = self.parts;
        core::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
    }

    /// The first part, which tells an info frame (`ver`) from a time request (`rtc`).
    pub fn kind(&self) -> Option<&'a str> {
        self.parts.clone().next()
    }

    /// `h-beat`: seconds between the device's pings.
    pub fn heartbeat_seconds(&self) -> Option<u16> {
        self.get("h-beat")?.parse().ok()
    }

    /// `buff-in`: the device's receive buffer in bytes.
    pub fn buffer_in(&self) -> Option<u16> {
        self.get("buff-in")?.parse().ok()
    }
}

/// A PROPERTY (19) body: `pin\0property\0value...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyUpdate<'a> {
    /// The virtual pin whose widget it describes.
    pub pin: Pin,
    /// The property name.
    pub name: BoundedStr<'a, MAX_NAME_LEN>,
    /// The value parts, at least one.
    pub values: Parts<'a>,
}

impl<'a> PropertyUpdate<'a> {
    /// Parses a PROPERTY body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ClassicError> {
        let mut parts = Parts::new(body)?;
        let pin = Pin::virtual_pin(parse_pin_number(parts.expect("pin")?)?)?;
        let name = parts.expect("property name")?;
        let name = BoundedStr::new(name).map_err(|_| ClassicError::MissingPart {
            what: "short property name",
        })?;
        if parts.is_empty() {
            return Err(ClassicError::MissingPart {
                what: "property value",
            });
        }
        Ok(PropertyUpdate {
            pin,
            name,
            values: parts,
        })
    }
}

/// An EVENT_LOG (64) body: `code[\0description]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLog<'a> {
    /// The event code.
    pub code: BoundedStr<'a, MAX_NAME_LEN>,
    /// The description, when given.
    pub description: Option<&'a str>,
}

impl<'a> EventLog<'a> {
    /// Parses an EVENT_LOG body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ClassicError> {
        let mut parts = Parts::new(body)?;
        let code = parts.expect("event code")?;
        let code = BoundedStr::new(code).map_err(|_| ClassicError::MissingPart {
            what: "short event code",
        })?;
        Ok(EventLog {
            code,
            description: parts.next(),
        })
    }
}

/// Builds a frame whose body is the given parts, for commands with plain text bodies
/// (login, INTERNAL, PROPERTY, EVENT_LOG, DEBUG_PRINT, REDIRECT).
pub fn encode_parts<'o>(
    out: &'o mut [u8],
    command: Command,
    id: NonZeroU16,
    parts: &[&str],
) -> Result<&'o [u8], BuildError> {
    encode_frame(out, command, id, super::MAX_BODY, |body| {
        for part in parts {
            body.part(part)?;
        }
        Ok(())
    })
}
