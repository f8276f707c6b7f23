//! Classic bodies: `\0`-separated UTF-8 parts, read in place and written into a slice.

use core::fmt;

use super::{BuildError, ClassicError};
use crate::value::{Scalar, Value};

/// The parts of a body, borrowed from it. A single trailing `\0` is tolerated (one Linux build
/// of the C++ library sends it); an empty body has no parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    rest: Option<&'a str>,
}

impl<'a> Parts<'a> {
    /// Checks that `body` is UTF-8 and splits it.
    pub fn new(body: &'a [u8]) -> Result<Self, ClassicError> {
        let text = core::str::from_utf8(body).map_err(|error| ClassicError::InvalidUtf8 {
            offset: error.valid_up_to(),
        })?;
        let text = text.strip_suffix('\0').unwrap_or(text);
        Ok(Parts {
            rest: if body.is_empty() { None } else { Some(text) },
        })
    }

    /// The next part, or an error naming what was expected.
    pub fn expect(&mut self, what: &'static str) -> Result<&'a str, ClassicError> {
        self.next().ok_or(ClassicError::MissingPart { what })
    }

    /// Whether no part is left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_none()
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.split_once('\0') {
            Some((part, tail)) => {
                self.rest = Some(tail);
                Some(part)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Writes `\0`-separated parts into a slice, refusing to pass the slice's end or a body limit.
#[derive(Debug)]
pub struct BodyWriter<'o> {
    out: &'o mut [u8],
    len: usize,
    max: usize,
    parts: usize,
}

impl<'o> BodyWriter<'o> {
    /// A writer over `out` that refuses bodies longer than `max`.
    pub fn new(out: &'o mut [u8], max: usize) -> Self {
        BodyWriter {
            out,
            len: 0,
            max,
            parts: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one part; a part holding a `\0` is refused, since it would reach the peer as
    /// two parts.
    pub fn part(&mut self, text: &str) -> Result<&mut Self, BuildError> {
        if text.contains('\0') {
            return Err(BuildError::NulInPart);
        }
        self.start_part()?;
        self.append(text.as_bytes())?;
        Ok(self)
    }

    /// Appends one part formatted from `value` (a number, a pin number).
    pub fn part_display(&mut self, value: impl fmt::Display) -> Result<&mut Self, BuildError> {
        self.start_part()?;
        let mut sink = Sink {
            writer: self,
            error: None,
        };
        let written = fmt::write(&mut sink, format_args!("{value}"));
        match (written, sink.error) {
            (_, Some(error)) => Err(error),
            (Err(_), None) => Err(BuildError::BodyTooLong {
                len: self.len,
                max: self.max,
            }),
            (Ok(()), None) => Ok(self),
        }
    }

    /// Appends one part for a scalar, as the classic protocol carries it.
    pub fn scalar(&mut self, scalar: &Scalar<'_>) -> Result<&mut Self, BuildError> {
        match scalar {
            Scalar::Text(text) => self.part(text.as_str()),
            Scalar::Int(int) => self.part_display(int),
            Scalar::Double(double) => self.part_display(double),
        }
    }

    /// Appends every part of a value. A value whose last part is empty text is refused: the
    /// body would end in `\0`, which readers take for a trailing separator (see [`Parts`]).
    pub fn value(&mut self, value: &Value<'_>) -> Result<&mut Self, BuildError> {
        if let Some(Scalar::Text(text)) = value.parts().last()
            && text.as_str().is_empty()
        {
            return Err(BuildError::EmptyLastPart);
        }
        for scalar in value.parts() {
            self.scalar(scalar)?;
        }
        Ok(self)
    }

    fn start_part(&mut self) -> Result<(), BuildError> {
        if self.parts > 0 {
            self.append(b"\0")?;
        }
        self.parts += 1;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), BuildError> {
        let end = self.len + bytes.len();
        if end > self.max {
            return Err(BuildError::BodyTooLong {
                len: end,
                max: self.max,
            });
        }
        // The writer holds the body part of the frame buffer; report both sizes as whole
        // frames, header included, like the header check of `encode_frame` does.
        let available = self.out.len() + super::HEADER_LEN;
        let target = self
            .out
            .get_mut(self.len..end)
            .ok_or(BuildError::BufferTooSmall {
                needed: end + super::HEADER_LEN,
                available,
            })?;
        target.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// Adapts a [`BodyWriter`] to `fmt::Write`, keeping the first build error.
struct Sink<'w, 'o> {
    writer: &'w mut BodyWriter<'o>,
    error: Option<BuildError>,
}

impl fmt::Write for Sink<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.writer.append(text.as_bytes()).map_err(|error| {
            self.error = Some(error);
            fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_on_nul_and_tolerate_one_trailing_nul() {
        let parts: heapless::Vec<&str, 8> = Parts::new(b"vw\x001\x00255\x00").unwrap().collect();
        assert_eq!(parts.as_slice(), &["vw", "1", "255"]);
        assert_eq!(Parts::new(b"").unwrap().count(), 0);
        let empty_middle: heapless::Vec<&str, 8> = Parts::new(b"a\x00\x00b").unwrap().collect();
        assert_eq!(empty_middle.as_slice(), &["a", "", "b"]);
        assert_eq!(
            Parts::new(b"ok\xff"),
            Err(ClassicError::InvalidUtf8 { offset: 2 })
        );
    }

    #[test]
    fn writer_refuses_to_pass_the_limit() {
        let mut buffer = [0u8; 16];
        let mut writer = BodyWriter::new(&mut buffer, 6);
        writer.part("vw").unwrap().part_display(12).unwrap();
        assert_eq!(writer.len(), 5);
        assert_eq!(
            writer.part("x").err(),
            Some(BuildError::BodyTooLong { len: 7, max: 6 })
        );
    }

    #[test]
    fn spec_6_writer_refuses_a_nul_inside_a_part_and_an_empty_last_part() {
        let mut buffer = [0u8; 32];
        let mut writer = BodyWriter::new(&mut buffer, 32);
        assert_eq!(writer.part("x\0y").err(), Some(BuildError::NulInPart));
        assert!(writer.is_empty(), "nothing of the refused part was written");
        let text = |text| Scalar::Text(crate::value::Text::new(text).unwrap());
        let nul = Value::from_parts(&[text("a\0b")]).unwrap();
        assert_eq!(writer.value(&nul).err(), Some(BuildError::NulInPart));
        let empty_last = Value::from_parts(&[text("a"), text("")]).unwrap();
        assert_eq!(
            writer.value(&empty_last).err(),
            Some(BuildError::EmptyLastPart)
        );
        let empty_first = Value::from_parts(&[text(""), text("a")]).unwrap();
        writer.value(&empty_first).unwrap();
        assert_eq!(writer.len(), 2, "an empty part before another one is fine");
    }
}
