//! Encoding attrib's JSON form as an Avro datum of a schema.

use super::resolve::is_timestamp;
use super::schemas::{deref, kind, names_of, own_schema};
use super::{MAX_DEPTH, Names};
use anyhow::{Result, anyhow};
use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, UuidSchema};
use serde_json::Value as Json;

/// Encodes a JSON value (attrib's JSON form) as an Avro datum of a schema.
pub struct JsonEncoder {
    schema: Schema,
    names: Names,
}

impl JsonEncoder {
    pub fn new(schema: Schema) -> JsonEncoder {
        JsonEncoder {
            names: names_of(&schema),
            schema,
        }
    }

    /// For one of attrib's schemas, by file stem (`"click"`, `"action"`, …).
    pub fn own(stem: &str) -> Option<JsonEncoder> {
        own_schema(stem).map(|o| JsonEncoder::new(o.schema.clone()))
    }

    /// Appends the datum to `out`.
    pub fn encode(&self, json: &Json, out: &mut Vec<u8>) -> Result<()> {
        encode_value(&self.schema, &self.names, json, out, 0).map_err(|e| anyhow!(e))
    }

    pub fn to_vec(&self, json: &Json) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(json, &mut out)?;
        Ok(out)
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Minimal big-endian two's complement, as Java's `BigInteger.toByteArray`.
fn twos_complement(v: i128) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start < 15
        && ((b[start] == 0 && b[start + 1] & 0x80 == 0)
            || (b[start] == 0xff && b[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    b[start..].to_vec()
}

fn json_decimal(j: &Json) -> Option<rust_decimal::Decimal> {
    match j {
        Json::String(s) => crate::model::money::parse_decimal(s),
        Json::Number(n) => crate::model::money::parse_decimal(&n.to_string()),
        _ => None,
    }
}

fn encode_value(
    s: &Schema,
    names: &Names,
    j: &Json,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), String> {
    use Schema as S;
    if depth > MAX_DEPTH {
        return Err("value nested too deeply".into());
    }
    let s = deref(s, names)?;
    let bad = || {
        let shown: String = j.to_string().chars().take(80).collect();
        format!("{shown} is not a {}", kind(s))
    };
    match s {
        S::Null if j.is_null() => {}
        S::Boolean => out.push(u8::from(j.as_bool().ok_or_else(bad)?)),
        S::Int => {
            let v = j
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(bad)?;
            put_long(out, v as i64);
        }
        S::Long => put_long(out, j.as_i64().ok_or_else(bad)?),
        S::Float => out.extend_from_slice(&(j.as_f64().ok_or_else(bad)? as f32).to_le_bytes()),
        S::Double => out.extend_from_slice(&j.as_f64().ok_or_else(bad)?.to_le_bytes()),
        S::String | S::Uuid(UuidSchema::String) => {
            put_bytes(out, j.as_str().ok_or_else(bad)?.as_bytes())
        }
        S::Bytes => {
            let b: Option<Vec<u8>> = j
                .as_str()
                .ok_or_else(bad)?
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect();
            put_bytes(out, &b.ok_or_else(bad)?);
        }
        S::Decimal(d) => {
            let mut v = json_decimal(j).ok_or_else(bad)?;
            if v.scale() as usize > d.scale {
                let r = v.round_dp(d.scale as u32);
                if r != v {
                    return Err(format!("{v} has more than {} decimals", d.scale));
                }
                v = r;
            }
            v.rescale(d.scale as u32);
            if v.scale() as usize != d.scale {
                return Err(format!("{v} does not fit scale {}", d.scale));
            }
            let m = v.mantissa();
            if d.precision < 39 && m.unsigned_abs() >= 10u128.pow(d.precision as u32) {
                return Err(format!("{v} has more than {} digits", d.precision));
            }
            let bytes = twos_complement(m);
            match &d.inner {
                InnerDecimalSchema::Bytes => put_bytes(out, &bytes),
                InnerDecimalSchema::Fixed(f) => {
                    if bytes.len() > f.size {
                        return Err(format!("{v} does not fit {} bytes", f.size));
                    }
                    let fill = if m < 0 { 0xff } else { 0 };
                    out.extend(std::iter::repeat_n(fill, f.size - bytes.len()));
                    out.extend_from_slice(&bytes);
                }
            }
        }
        S::TimestampMillis | S::TimestampMicros | S::TimestampNanos => {
            let ms = match j {
                Json::String(t) => crate::model::time::parse_rfc3339(t).ok_or_else(bad)?,
                _ => j.as_i64().ok_or_else(bad)?,
            };
            let mul = is_timestamp(s).unwrap_or(1);
            put_long(out, ms.checked_mul(mul).ok_or_else(bad)?);
        }
        S::Enum(e) => {
            let sym = j.as_str().ok_or_else(bad)?;
            let i = e.symbols.iter().position(|x| x == sym).ok_or_else(bad)?;
            put_long(out, i as i64);
        }
        S::Fixed(f) => {
            let b: Option<Vec<u8>> = j
                .as_str()
                .ok_or_else(bad)?
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect();
            let b = b.filter(|b| b.len() == f.size).ok_or_else(bad)?;
            out.extend_from_slice(&b);
        }
        S::Array(a) => {
            let items = j.as_array().ok_or_else(bad)?;
            if !items.is_empty() {
                put_long(out, items.len() as i64);
                for (i, x) in items.iter().enumerate() {
                    encode_value(&a.items, names, x, out, depth + 1)
                        .map_err(|e| format!("[{i}]: {e}"))?;
                }
            }
            put_long(out, 0);
        }
        S::Map(m) => {
            let obj = j.as_object().ok_or_else(bad)?;
            if !obj.is_empty() {
                put_long(out, obj.len() as i64);
                for (k, x) in obj {
                    put_bytes(out, k.as_bytes());
                    encode_value(&m.types, names, x, out, depth + 1)
                        .map_err(|e| format!("{k}: {e}"))?;
                }
            }
            put_long(out, 0);
        }
        S::Union(u) => {
            let mut last = None;
            for (i, b) in u.variants().iter().enumerate() {
                let mark = out.len();
                put_long(out, i as i64);
                match encode_value(b, names, j, out, depth + 1) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        out.truncate(mark);
                        if !matches!(deref(b, names), Ok(S::Null)) {
                            last = Some(e);
                        }
                    }
                }
            }
            return Err(last.unwrap_or_else(bad));
        }
        S::Record(r) => {
            let obj = j.as_object().ok_or_else(bad)?;
            for f in &r.fields {
                let v = match (obj.get(&f.name), &f.default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d,
                    (None, None) => return Err(format!("missing field `{}`", f.name)),
                };
                encode_value(&f.schema, names, v, out, depth + 1)
                    .map_err(|e| format!("field `{}`: {e}", f.name))?;
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}
