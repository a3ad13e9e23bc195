//! Event times: milliseconds since the Unix epoch, parsed from and written as RFC 3339.
//!
//! Everything inside attrib works on `Millis`; text appears only at the edges.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// One day, as DESIGN §2 defines it: 86,400 s.
pub const DAY_MS: Millis = 86_400_000;

/// Parses an RFC 3339 timestamp, keeping it to the millisecond (finer digits are dropped).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats milliseconds as RFC 3339 in UTC with exactly three fractional digits.
pub fn format_rfc3339(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// Days (as configured on programs and contracts) to milliseconds, saturating.
pub fn days_to_ms(days: i64) -> Millis {
    days.saturating_mul(DAY_MS)
}

/// Serde helpers: `Millis` as an RFC 3339 string.
pub mod rfc3339 {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 time `{s}`")))
    }

    /// The same for optional times (null or absent = `None`).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&format_rfc3339(*ms)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
            let s = Option::<std::borrow::Cow<str>>::deserialize(d)?;
            match s {
                None => Ok(None),
                Some(s) => parse_rfc3339(&s).map(Some).ok_or_else(|| {
                    serde::de::Error::custom(format!("invalid RFC 3339 time `{s}`"))
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_millisecond() {
        let ms = parse_rfc3339("2026-11-01T10:00:00.123456Z").unwrap();
        assert_eq!(ms % 1000, 123);
        assert_eq!(format_rfc3339(ms), "2026-11-01T10:00:00.123Z");
        assert_eq!(
            parse_rfc3339("2026-11-01T12:00:00+02:00"),
            parse_rfc3339("2026-11-01T10:00:00Z")
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
