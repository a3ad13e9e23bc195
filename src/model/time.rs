//! Event times: milliseconds since the Unix epoch, parsed from and written as RFC 3339.
//!
//! Everything inside attrib works on `Millis`; text appears only at the edges.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// One day, as docs/design.md §2 defines it: 86,400 s.
pub const DAY_MS: Millis = 86_400_000;

/// Parses an RFC 3339 timestamp, keeping it to the millisecond (finer digits are dropped).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats milliseconds as RFC 3339 in UTC with exactly three fractional digits.
pub fn format_rfc3339(ms: Millis) -> String {
    match Rfc3339Buf::new(ms) {
        Some(b) => b.as_str().to_string(),
        None => format_rfc3339_slow(ms),
    }
}

/// The general case of [`format_rfc3339`]: years outside 1970–9999 (chrono writes a signed
/// year there) and times chrono cannot represent (written as the number).
fn format_rfc3339_slow(ms: Millis) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// The last millisecond of the year 9999.
const MAX_FAST_MS: Millis = 253_402_300_799_999;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` on the stack: what [`format_rfc3339`] writes for times from
/// 1970 to 9999, without allocating.
pub struct Rfc3339Buf([u8; 24]);

impl Rfc3339Buf {
    /// `None` outside 1970-01-01T00:00:00.000Z ..= 9999-12-31T23:59:59.999Z.
    pub fn new(ms: Millis) -> Option<Rfc3339Buf> {
        if !(0..=MAX_FAST_MS).contains(&ms) {
            return None;
        }
        let days = ms / DAY_MS;
        let in_day = ms % DAY_MS;
        let (y, m, d) = civil_from_days(days);
        let (secs, milli) = (in_day / 1000, in_day % 1000);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut b[0..4], y);
        put_digits(&mut b[5..7], m);
        put_digits(&mut b[8..10], d);
        put_digits(&mut b[11..13], secs / 3600);
        put_digits(&mut b[14..16], secs / 60 % 60);
        put_digits(&mut b[17..19], secs % 60);
        put_digits(&mut b[20..23], milli);
        Some(Rfc3339Buf(b))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits and separators")
    }
}

/// Writes `v` as decimal digits filling `out`, zero-padded (`v` fits).
fn put_digits(out: &mut [u8], mut v: i64) {
    for c in out.iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// (year, month, day) of a day count since 1970-01-01, for days ≥ 0 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
        match Rfc3339Buf::new(*ms) {
            Some(b) => s.serialize_str(b.as_str()),
            None => s.serialize_str(&format_rfc3339_slow(*ms)),
        }
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
                Some(ms) => super::serialize(ms, s),
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

/// The wall clock in milliseconds, for what the design times by it (`processed_at`, arrival
/// times of input records); never an event time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

    #[test]
    fn fast_formatting_agrees_with_chrono() {
        let mut ms: Millis = -5_000;
        // Every day boundary region over the fast range's edges, and a spread in between.
        let mut cases = vec![0, 1, 999, 86_399_999, 951_782_400_000, 4_107_542_399_999];
        cases.extend([
            MAX_FAST_MS - 1,
            MAX_FAST_MS,
            MAX_FAST_MS + 1,
            -1,
            i64::MIN,
            i64::MAX,
        ]);
        while ms < MAX_FAST_MS {
            cases.push(ms);
            ms += 7_777_777_777 + ms.rem_euclid(86_400_000) / 3;
        }
        for ms in cases {
            assert_eq!(format_rfc3339(ms), format_rfc3339_slow(ms), "{ms}");
        }
    }
}
