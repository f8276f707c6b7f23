//! GROUP (21) bodies: the newer C++ library's `beginGroup()` / `beginGroup(timestamp)` /
//! `endGroup()`, which bracket the HARDWARE writes of one batch.

use core::num::NonZeroU16;

use super::body::Parts;
use super::frame::encode_frame;
use super::{BuildError, ClassicError, Command};

/// A parsed GROUP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCommand {
    /// `b`: the writes up to the next `e` form one batch, made now.
    Begin,
    /// `t\0<unix ms>`: the writes up to the next `e` were measured at that time.
    BeginAt {
        /// Milliseconds since the Unix epoch, as the device's clock tells them.
        unix_ms: u64,
    },
    /// `e`: the batch is complete.
    End,
}

impl GroupCommand {
    /// Parses a GROUP body.
    pub fn parse(body: &[u8]) -> Result<Self, ClassicError> {
        let mut parts = Parts::new(body)?;
        let command = match parts.expect("group sub-command")? {
            "b" => GroupCommand::Begin,
            "e" => GroupCommand::End,
            "t" => {
                let text = parts.expect("group timestamp")?;
                GroupCommand::BeginAt {
                    unix_ms: parse_millis(text).ok_or(ClassicError::MissingPart {
                        what: "timestamp in Unix milliseconds",
                    })?,
                }
            }
            _ => return Err(ClassicError::UnknownSubCommand),
        };
        Ok(command)
    }
}

/// Digits only (no sign, no spaces), at most 20 of them, fitting a `u64`.
fn parse_millis(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Builds a GROUP frame as the C++ library sends it (for tests and simulated devices).
pub fn encode_group(
    out: &mut [u8],
    id: NonZeroU16,
    command: GroupCommand,
) -> Result<&[u8], BuildError> {
    encode_frame(out, Command::Group, id, super::MAX_BODY, |body| {
        match command {
            GroupCommand::Begin => body.part("b")?,
            GroupCommand::End => body.part("e")?,
            GroupCommand::BeginAt { unix_ms } => body.part("t")?.part_display(unix_ms)?,
        };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_must_be_plain_digits_that_fit() {
        assert_eq!(parse_millis("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(parse_millis("-1"), None);
        assert_eq!(parse_millis("+1"), None);
        assert_eq!(parse_millis(""), None);
        assert_eq!(parse_millis("99999999999999999999"), None);
    }
}
