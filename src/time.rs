//! Event time: a timestamp type in whole seconds since the Unix epoch and the
//! RFC 3339 conversions used by the event and alert contracts.
//!
//! Everything in the engine is measured in event time; nothing here reads a
//! clock.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Seconds in one day; windows and evaluations are aligned to UTC days.
pub const DAY: i64 = 86_400;

/// A point in event time, in seconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The earliest representable time; the watermark before any event.
    pub const MIN: Timestamp = Timestamp(i64::MIN / 2);

    /// Parses an RFC 3339 timestamp (`2025-11-20T00:00:00Z`, offsets allowed).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        Timestamp::parse_utc_seconds(text).or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| Timestamp(t.timestamp()))
        })
    }

    /// The form nearly every event carries, `YYYY-MM-DDTHH:MM:SSZ`, read
    /// without chrono's general parser (it is on every event's path). Any
    /// other form, and anything unusual in this one (a leap second, an
    /// invalid date), is `None` and left to chrono, which decides.
    fn parse_utc_seconds(text: &str) -> Option<Timestamp> {
        let b: &[u8; 20] = text.as_bytes().try_into().ok()?;
        if [b[4], b[7], b[10], b[13], b[16], b[19]] != *b"--T::Z" {
            return None;
        }
        let number = |digits: &[u8]| {
            digits.iter().try_fold(0i64, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
            })
        };
        let (year, month, day) = (number(&b[0..4])?, number(&b[5..7])?, number(&b[8..10])?);
        let (hour, minute, second) = (
            number(&b[11..13])?,
            number(&b[14..16])?,
            number(&b[17..19])?,
        );
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            1..=12 => 31,
            _ => return None,
        };
        if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        Some(Timestamp(
            days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second,
        ))
    }

    /// The UTC day number (days since 1970-01-01) this instant falls in.
    pub fn day(self) -> i64 {
        self.0.div_euclid(DAY)
    }

    /// Midnight UTC at the start of day number `day`.
    pub fn from_day(day: i64) -> Timestamp {
        Timestamp(day * DAY)
    }

    /// This instant moved by `seconds` (negative moves back).
    pub fn plus(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds))
    }

    /// The date part, `YYYY-MM-DD`, used in alert ids.
    pub fn date_string(self) -> String {
        self.to_chrono().format("%Y-%m-%d").to_string()
    }

    fn to_chrono(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with a `Z` suffix, as the alert schema writes times.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_chrono().to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// In text formats (JSON) an RFC 3339 string, the contracts' form; in
/// binary ones (checkpoints) the seconds, compact.
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
            Timestamp::parse_rfc3339(&text).ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time"))
            })
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339_and_days() {
        let t = Timestamp::parse_rfc3339("2025-11-20T13:45:00+08:00").unwrap();
        assert_eq!(t.to_string(), "2025-11-20T05:45:00Z");
        assert_eq!(
            Timestamp::from_day(t.day()).to_string(),
            "2025-11-20T00:00:00Z"
        );
        assert_eq!(t.date_string(), "2025-11-20");
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }

    proptest::proptest! {
        /// The fast path reads exactly what chrono reads, and leaves to
        /// chrono everything it does not read.
        #[test]
        fn the_utc_fast_path_agrees_with_chrono(seconds in -62_135_596_800i64..253_402_300_799) {
            let text = Timestamp(seconds).to_string();
            proptest::prop_assert_eq!(Timestamp::parse_utc_seconds(&text), Some(Timestamp(seconds)));
            proptest::prop_assert_eq!(Timestamp::parse_rfc3339(&text), Some(Timestamp(seconds)));
        }

        #[test]
        fn the_utc_fast_path_never_accepts_what_chrono_rejects(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"
        ) {
            if let Some(fast) = Timestamp::parse_utc_seconds(&text) {
                let chrono = DateTime::parse_from_rfc3339(&text).ok().map(|t| Timestamp(t.timestamp()));
                proptest::prop_assert_eq!(Some(fast), chrono);
            }
        }
    }

    #[test]
    fn the_utc_fast_path_leaves_the_unusual_to_chrono() {
        for text in [
            "2024-02-29T23:59:60Z",
            "2025-11-20T13:45:00+08:00",
            "2025-11-20t13:45:00z",
            "2025-11-20T13:45:00.5Z",
        ] {
            assert!(Timestamp::parse_utc_seconds(text).is_none(), "{text}");
            assert!(Timestamp::parse_rfc3339(text).is_some(), "{text}");
        }
        for text in [
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-04-31T00:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(text).is_none(), "{text}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2024-02-29T12:00:00Z"),
            Some(Timestamp(1_709_208_000))
        );
    }

    #[test]
    fn days_before_the_epoch_round_down() {
        assert_eq!(Timestamp(-1).day(), -1);
    }
}
