//! Instants as the domain sees them: milliseconds since the Unix epoch, UTC.

use std::fmt;

/// An instant in UTC with millisecond precision. The domain never reads the
/// system clock; instants come in from the `Clock` port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub const fn plus_seconds(self, s: i64) -> Self {
        Timestamp(self.0.saturating_add(s.saturating_mul(1000)))
    }

    pub const fn minus_seconds(self, s: i64) -> Self {
        Timestamp(self.0.saturating_sub(s.saturating_mul(1000)))
    }

    /// The calendar (year, month 1–12) of this instant in UTC.
    pub fn year_month(self) -> (i32, u32) {
        match ::time::OffsetDateTime::from_unix_timestamp(self.unix_seconds()) {
            Ok(dt) => (dt.year(), u8::from(dt.month()) as u32),
            // Out of the representable range: clamp to the epoch.
            Err(_) => (1970, 1),
        }
    }

    /// The calendar date (year, month, day) of this instant in UTC.
    pub fn date(self) -> (i32, u32, u32) {
        match ::time::OffsetDateTime::from_unix_timestamp(self.unix_seconds()) {
            Ok(dt) => (dt.year(), u8::from(dt.month()) as u32, dt.day() as u32),
            Err(_) => (1970, 1, 1),
        }
    }

    /// The same instant of the day `years` calendar years later, in UTC
    /// (29 February goes to the 28th in a year without one).
    pub fn plus_calendar_years(self, years: i32) -> Self {
        let nanos = i128::from(self.0) * 1_000_000;
        let Ok(dt) = ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return self;
        };
        let year = dt.year().saturating_add(years);
        let moved = dt
            .replace_year(year)
            .or_else(|_| dt.replace_day(28).and_then(|d| d.replace_year(year)));
        match moved {
            Ok(m) => {
                Timestamp(i64::try_from(m.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
            }
            Err(_) => self,
        }
    }

    /// RFC 3339 text, for logs and API bodies.
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(dt) => dt
                .format(&::time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| self.0.to_string()),
            Err(_) => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_of_known_instants() {
        // 2024-02-29T23:59:59Z
        let t = Timestamp::from_unix_millis(1_709_251_199_000);
        assert_eq!(t.year_month(), (2024, 2));
        assert_eq!(t.date(), (2024, 2, 29));
        assert_eq!(t.plus_seconds(1).year_month(), (2024, 3));
        assert_eq!(t.to_rfc3339(), "2024-02-29T23:59:59Z");
    }
}
