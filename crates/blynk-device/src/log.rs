//! Logging that forwards to `defmt` or `log`, whichever feature is on, and compiles to nothing
//! when neither is: the [`log!`](crate::log!) macro, for this library and for firmware built on
//! it.
//!
//! Arguments must format with both `{}` of `core::fmt::Display` and `defmt::Format`, so the
//! library logs only numbers, strings, chars and its own error types.

/// Writes a log line at a level (`debug`, `info`, `warn`, `error`) through `defmt` or `log`,
/// whichever feature *of the crate that calls it* is on, and compiles to nothing when neither is:
///
/// ```ignore
/// blynk_device::log!(info, "light {}", if on { "on" } else { "off" });
/// ```
///
/// The features are checked where the macro is expanded, so a firmware crate that uses it
/// declares features `log` and `defmt` with dependencies of those names (and forwards them to
/// `blynk-device`'s, to log the library's lines too). Arguments must format with both `{}` of
/// `core::fmt::Display` and `defmt::Format`.
#[macro_export]
macro_rules! log {
    ($level:ident, $s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::$level!($s $(, $x)*);
        #[cfg(feature = "defmt")]
        ::defmt::$level!($s $(, $x)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($(&$x),*);
    }};
}

/// The letter Blynk names a pin's kind with (`V`, `D`, `A`), for log lines.
pub(crate) const fn pin_letter(pin: blynk_proto::Pin) -> char {
    match pin {
        blynk_proto::Pin::Virtual(_) => 'V',
        blynk_proto::Pin::Digital(_) => 'D',
        blynk_proto::Pin::Analog(_) => 'A',
    }
}
