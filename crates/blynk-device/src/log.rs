//! Logging that forwards to `defmt` or `log`, whichever feature is on, and compiles to nothing
//! when neither is.
//!
//! Arguments must format with both `{}` of `core::fmt::Display` and `defmt::Format`, so the
//! library logs only numbers, strings, chars and its own error types.
#![allow(unused_macros)]

macro_rules! debug {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::debug!($s $(, $x)*);
        #[cfg(feature = "defmt")]
        ::defmt::debug!($s $(, $x)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($(&$x),*);
    }};
}

macro_rules! info {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::info!($s $(, $x)*);
        #[cfg(feature = "defmt")]
        ::defmt::info!($s $(, $x)*);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        let _ = ($(&$x),*);
    }};
}

macro_rules! warn {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::warn!($s $(, $x)*);
        #[cfg(feature = "defmt")]
        ::defmt::warn!($s $(, $x)*);
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
