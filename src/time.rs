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
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Timestamp(t.timestamp()))
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

    #[test]
    fn days_before_the_epoch_round_down() {
        assert_eq!(Timestamp(-1).day(), -1);
    }
}
