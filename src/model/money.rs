//! Money and weights: exact decimals, read from JSON text (never through a float) and written
//! with exactly six decimals, rounded half-even.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;

/// Rounds half-even to 6 decimals and fixes the scale at 6, so that it prints as `"5.500000"`.
///
/// `Decimal` keeps 28 significant digits, so a quotient such as a discount share can carry an
/// error in its last digits; a value that is exactly half-way at the 7th decimal could then
/// round the wrong way. Rounding first to 18 decimals removes that noise (a true value is
/// either exactly half-way or, with the denominators money produces, much farther from it).
pub fn round6(d: Decimal) -> Decimal {
    let d = if d.scale() > 18 {
        d.round_dp_with_strategy(18, RoundingStrategy::MidpointNearestEven)
    } else {
        d
    };
    let mut r = d.round_dp_with_strategy(6, RoundingStrategy::MidpointNearestEven);
    r.rescale(6);
    r
}

/// Parses a decimal from its text (`"19.99"`, `"1e2"` is refused: plain notation only).
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let s = s.trim();
    if s.is_empty() || s.contains(['e', 'E']) {
        return None;
    }
    s.parse::<Decimal>().ok()
}

/// Serializes an already rounded decimal as a string with exactly 6 decimals.
pub fn serialize6<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&round6(*d))
}

struct DecimalVisitor;

// serde_json's `arbitrary_precision` hands numbers over as a one-entry map holding their text.
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Visitor<'de> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal string or number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_decimal(v).ok_or_else(|| E::custom(format!("invalid decimal `{v}`")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        // Only reached by non-JSON deserializers; JSON numbers arrive as text (see below).
        Decimal::try_from(v).map_err(|_| E::custom(format!("invalid decimal `{v}`")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decimal, A::Error> {
        let key: Option<String> = map.next_key()?;
        match key.as_deref() {
            Some(SERDE_JSON_NUMBER_TOKEN) => {
                let text: String = map.next_value()?;
                self.visit_str(&text)
            }
            _ => Err(de::Error::custom("invalid type: map, expected a decimal")),
        }
    }
}

/// Deserializes a decimal from a JSON string or a JSON number's text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    d.deserialize_any(DecimalVisitor)
}

/// The same for optional decimals (null or absent = `None`).
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal string or number, or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_even_to_six_places() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(round6(d("0.0000005")).to_string(), "0.000000");
        assert_eq!(round6(d("0.0000015")).to_string(), "0.000002");
        assert_eq!(round6(d("5.5")).to_string(), "5.500000");
        // 0.6593195 computed through a division: the noise must not break the tie.
        let noisy = d("8.33") * d("0.0791500600240096038415366146");
        assert_eq!(round6(noisy).to_string(), "0.659320");
    }

    #[test]
    fn reads_json_numbers_from_their_text() {
        #[derive(serde::Deserialize)]
        struct M {
            #[serde(deserialize_with = "deserialize")]
            m: Decimal,
        }
        let m: M = serde_json::from_str(r#"{"m":0.1}"#).unwrap();
        assert_eq!(m.m.to_string(), "0.1");
        let m: M = serde_json::from_str(r#"{"m":"19.99"}"#).unwrap();
        assert_eq!(m.m.to_string(), "19.99");
        assert!(serde_json::from_str::<M>(r#"{"m":"abc"}"#).is_err());
    }
}
