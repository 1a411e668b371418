//! Time as data: the host hands every timestamp in; nothing here reads a clock.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point on the host's monotonic clock, in nanoseconds from an origin the host chooses
/// (`performance.now()`, `time.monotonic()`, Redis `TIME`, or a fake clock in tests).
///
/// An integer, not [`std::time::Instant`]: hosts cannot build an `Instant` from their own clock, and
/// `Instant::now` panics on `wasm32-unknown-unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The origin of the host's clock.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The farthest representable instant.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// A timestamp from fractional milliseconds, the unit JavaScript and the bindings use.
    /// Negative and NaN inputs become the origin; values beyond the range saturate.
    pub fn from_millis_f64(millis: f64) -> Self {
        if millis.is_nan() || millis <= 0.0 {
            return Timestamp::ZERO;
        }
        // `as` saturates for floats out of range.
        Timestamp((millis * 1e6).round() as u64)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Fractional milliseconds since the origin.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        self.saturating_add(rhs)
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Timestamp {
    /// Milliseconds with 3 decimals (`1500.250ms`), rounded to the nearest microsecond. In
    /// integers: float formatting would add about 15 KB to the wasm module.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0 / 1000 + u64::from(self.0 % 1000 >= 500);
        write!(f, "{}.{:03}ms", micros / 1000, micros % 1000)
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip() {
        let t = Timestamp::from_millis_f64(1234.5);
        assert_eq!(t.as_nanos(), 1_234_500_000);
        assert_eq!(t.as_millis_f64(), 1234.5);
        assert_eq!(Timestamp::from_millis_f64(-3.0), Timestamp::ZERO);
        assert_eq!(Timestamp::from_millis_f64(f64::NAN), Timestamp::ZERO);
        assert_eq!(Timestamp::from_millis_f64(f64::INFINITY), Timestamp::MAX);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp::MAX + Duration::from_secs(1), Timestamp::MAX);
        assert_eq!(Timestamp::ZERO - Timestamp::from_millis(5), Duration::ZERO);
    }

    #[test]
    fn shown_in_milliseconds_to_the_microsecond() {
        assert_eq!(Timestamp::from_nanos(1_500_250_000).to_string(), "1500.250ms");
        assert_eq!(Timestamp::from_nanos(1_499).to_string(), "0.001ms");
        assert_eq!(Timestamp::from_nanos(999_999_600).to_string(), "1000.000ms");
        assert_eq!(Timestamp::ZERO.to_string(), "0.000ms");
        assert_eq!(Timestamp::MAX.to_string(), "18446744073709.552ms");
    }
}
