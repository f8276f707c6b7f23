//! Borrowed strings with a compile-time length bound, and the device auth token.
//!
//! Decoded messages borrow their text from the frame buffer, so no allocation happens; the bound
//! is checked on decode and on construction, so an oversized string is an error, not a surprise.

use core::fmt;
use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};

use crate::TOKEN_LEN;

/// Why a string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The string is longer than its bound.
    #[error("text is {len} bytes long, the most allowed is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A token is not 32 characters from `[A-Za-z0-9_-]`.
    #[error("a token is {TOKEN_LEN} characters from A-Z, a-z, 0-9, '_' and '-'")]
    BadToken,
}

/// A borrowed UTF-8 string of at most `N` bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedStr<'a, const N: usize>(&'a str);

impl<'a, const N: usize> BoundedStr<'a, N> {
    /// The most bytes this string may hold.
    pub const MAX: usize = N;

    /// Wraps `text`, refusing it when it is longer than `N` bytes.
    pub const fn new(text: &'a str) -> Result<Self, TextError> {
        if text.len() > N {
            Err(TextError::TooLong {
                len: text.len(),
                max: N,
            })
        } else {
            Ok(BoundedStr(text))
        }
    }

    /// The string itself.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

impl<const N: usize> fmt::Debug for BoundedStr<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl<const N: usize> fmt::Display for BoundedStr<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<const N: usize> Serialize for BoundedStr<'_, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de: 'a, 'a, const N: usize> Deserialize<'de> for BoundedStr<'a, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <&'de str>::deserialize(deserializer)?;
        BoundedStr::new(text)
            .map_err(|_| de::Error::invalid_length(text.len(), &"a shorter string"))
    }
}

/// A device auth token: exactly [`TOKEN_LEN`] characters from `[A-Za-z0-9_-]`.
///
/// Its `Debug` form hides all but the first four characters so that logs never leak a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token<'a>(&'a str);

impl<'a> Token<'a> {
    /// Checks the format of `text` and wraps it.
    pub fn new(text: &'a str) -> Result<Self, TextError> {
        if is_token(text) {
            Ok(Token(text))
        } else {
            Err(TextError::BadToken)
        }
    }

    /// The token itself.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

/// Whether `text` has the format of a token.
pub fn is_token(text: &str) -> bool {
    text.len() == TOKEN_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.get(..4).unwrap_or("");
        write!(f, "Token({shown}…)")
    }
}

impl Serialize for Token<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Token<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <&'de str>::deserialize(deserializer)?;
        Token::new(text).map_err(|_| {
            de::Error::invalid_value(de::Unexpected::Str("<token>"), &"a 32-character token")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_str_refuses_one_byte_too_many() {
        assert!(BoundedStr::<3>::new("abc").is_ok());
        assert_eq!(
            BoundedStr::<3>::new("abcd"),
            Err(TextError::TooLong { len: 4, max: 3 })
        );
    }

    #[test]
    fn token_format_is_checked_and_hidden_in_debug() {
        let good = "abcdEFGH0123456789_-abcdefghijkl";
        let token = Token::new(good).unwrap();
        let mut shown = heapless::String::<32>::new();
        core::fmt::write(&mut shown, format_args!("{token:?}")).unwrap();
        assert_eq!(shown.as_str(), "Token(abcd…)");
        assert_eq!(Token::new("short"), Err(TextError::BadToken));
        assert_eq!(
            Token::new("abcdEFGH0123456789_-abcdefghijk!"),
            Err(TextError::BadToken)
        );
    }
}
