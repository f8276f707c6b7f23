//! Conversions into pin values, so that firmware writes `virtual_write(1, 255)` or
//! `virtual_write(2, (1, 2.5, "abc"))` as in Blynk, and the accessors handlers read values with.

use blynk_proto::value::Text;
use blynk_proto::{Scalar, Value, ValueError};

/// One part of a value: an integer, a double or a text.
pub trait IntoScalar<'a> {
    /// The part; fails for a NaN, an infinity or a text over 255 bytes.
    fn into_scalar(self) -> Result<Scalar<'a>, ValueError>;
}

macro_rules! int_scalar {
    ($($int:ty),*) => {$(
        impl<'a> IntoScalar<'a> for $int {
            fn into_scalar(self) -> Result<Scalar<'a>, ValueError> {
                Ok(Scalar::Int(i64::from(self)))
            }
        }
    )*};
}

int_scalar!(i8, i16, i32, i64, u8, u16, u32, bool);

impl<'a> IntoScalar<'a> for f64 {
    fn into_scalar(self) -> Result<Scalar<'a>, ValueError> {
        if self.is_finite() {
            Ok(Scalar::Double(self))
        } else {
            Err(ValueError::NotFinite)
        }
    }
}

impl<'a> IntoScalar<'a> for f32 {
    fn into_scalar(self) -> Result<Scalar<'a>, ValueError> {
        f64::from(self).into_scalar()
    }
}

impl<'a> IntoScalar<'a> for &'a str {
    fn into_scalar(self) -> Result<Scalar<'a>, ValueError> {
        Ok(Scalar::Text(Text::new(self)?))
    }
}

impl<'a> IntoScalar<'a> for Scalar<'a> {
    fn into_scalar(self) -> Result<Scalar<'a>, ValueError> {
        match self {
            Scalar::Double(double) => double.into_scalar(),
            other => Ok(other),
        }
    }
}

/// Anything that makes a pin value: a number, a bool (0 or 1), a text, a tuple of up to four
/// of those (a multi-part write, `virtualWrite(V2, 1, 2.5, "abc")`), a slice of [`Scalar`]s, or
/// a [`Value`].
pub trait IntoValue<'a> {
    /// The value; fails when it cannot travel (see [`ValueError`]).
    fn into_value(self) -> Result<Value<'a>, ValueError>;
}

impl<'a, T: IntoScalar<'a>> IntoValue<'a> for T {
    fn into_value(self) -> Result<Value<'a>, ValueError> {
        Value::from_parts(&[self.into_scalar()?])
    }
}

impl<'a> IntoValue<'a> for Value<'a> {
    fn into_value(self) -> Result<Value<'a>, ValueError> {
        Ok(self)
    }
}

impl<'a> IntoValue<'a> for &Value<'a> {
    fn into_value(self) -> Result<Value<'a>, ValueError> {
        Ok(self.clone())
    }
}

impl<'a> IntoValue<'a> for &[Scalar<'a>] {
    fn into_value(self) -> Result<Value<'a>, ValueError> {
        Value::from_parts(self)
    }
}

macro_rules! tuple_value {
    ($($name:ident),+) => {
        impl<'a, $($name: IntoScalar<'a>),+> IntoValue<'a> for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_value(self) -> Result<Value<'a>, ValueError> {
                let ($($name,)+) = self;
                Value::from_parts(&[$($name.into_scalar()?),+])
            }
        }
    };
}

tuple_value!(A, B);
tuple_value!(A, B, C);
tuple_value!(A, B, C, D);

/// Reading a received value the way Blynk's `param.asInt()`, `asFloat()` and `asStr()` do:
/// from its first part.
///
/// Texts are read as decimal integers only: parsing decimal fractions from text would add some
/// 16 KiB of float-parsing tables to every firmware, and the server already sends numbers as
/// numbers.
pub trait ValueExt {
    /// The first part as an integer: an integer as is, a double truncated, a text holding a
    /// decimal integer parsed; `None` for any other text.
    fn as_int(&self) -> Option<i64>;
    /// The first part as a number; a text holding a decimal integer is parsed.
    fn as_float(&self) -> Option<f64>;
    /// The first part when it is a text.
    fn as_text(&self) -> Option<&str>;
    /// The first part as a switch: a non-zero number is `true`, anything else `false`.
    fn as_bool(&self) -> bool;
}

impl ValueExt for Value<'_> {
    fn as_int(&self) -> Option<i64> {
        match self.first()? {
            Scalar::Int(int) => Some(*int),
            Scalar::Double(double) => Some(*double as i64),
            Scalar::Text(text) => text.as_str().parse().ok(),
        }
    }

    fn as_float(&self) -> Option<f64> {
        match self.first()? {
            Scalar::Double(double) => Some(*double),
            _ => self.as_int().map(|int| int as f64),
        }
    }

    fn as_text(&self) -> Option<&str> {
        match self.first()? {
            Scalar::Text(text) => Some(text.as_str()),
            _ => None,
        }
    }

    fn as_bool(&self) -> bool {
        match self.first() {
            Some(Scalar::Double(double)) => *double != 0.0,
            _ => self.as_int().is_some_and(|int| int != 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_texts_and_tuples_become_values() {
        assert_eq!(255u8.into_value().unwrap().parts(), &[Scalar::Int(255)]);
        assert_eq!(true.into_value().unwrap().parts(), &[Scalar::Int(1)]);
        let multi = (1, 2.5, "abc").into_value().unwrap();
        assert_eq!(multi.parts().len(), 3);
        assert_eq!(multi.parts()[1], Scalar::Double(2.5));
        assert_eq!(f64::NAN.into_value(), Err(ValueError::NotFinite));
    }

    #[test]
    fn accessors_read_the_first_part() {
        let value = Value::text("42").unwrap();
        assert_eq!(value.as_int(), Some(42));
        assert_eq!(value.as_text(), Some("42"));
        assert!(Value::double(0.5).unwrap().as_bool());
        assert!(!Value::int(0).as_bool());
        assert_eq!(Value::double(2.9).unwrap().as_int(), Some(2));
    }
}
