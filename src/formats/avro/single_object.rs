//! Avro single-object encoding: the Parsing Canonical Form of a schema, its CRC-64-AVRO
//! fingerprint, and the 10-byte header that carries it.

use super::MAX_DEPTH;
use anyhow::{Context, Result, anyhow};
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// First two bytes of Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a schema given as JSON text, as the Avro specification
/// defines it: full names, only `name`, `type`, `fields`, `symbols`, `items`, `values` and
/// `size` kept (so logical types and their `precision` and `scale` are dropped), in that order,
/// no whitespace.
pub fn parsing_canonical_form(schema_json: &str) -> Result<String> {
    let v: Json = serde_json::from_str(schema_json).context("schema is not JSON")?;
    let mut out = String::new();
    pcf(&v, None, &mut out, 0).map_err(|e| anyhow!("invalid schema: {e}"))?;
    Ok(out)
}

fn full_name(name: &str, namespace: Option<&str>, enclosing: Option<&str>) -> String {
    if name.contains('.') {
        return name.trim_start_matches('.').to_string();
    }
    let ns = match namespace {
        Some(n) => n,
        None => enclosing.unwrap_or(""),
    };
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}.{name}")
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings serialize"));
}

fn pcf(v: &Json, ns: Option<&str>, out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("schema nested too deeply".into());
    }
    match v {
        Json::String(s) => {
            if PRIMITIVES.contains(&s.as_str()) {
                push_json_str(out, s);
            } else {
                push_json_str(out, &full_name(s, None, ns));
            }
        }
        Json::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pcf(b, ns, out, depth + 1)?;
            }
            out.push(']');
        }
        Json::Object(m) => {
            let ty = m.get("type").ok_or("schema object without `type`")?;
            let Json::String(t) = ty else {
                return pcf(ty, ns, out, depth + 1);
            };
            match t.as_str() {
                p if PRIMITIVES.contains(&p) => push_json_str(out, p),
                "record" | "error" | "enum" | "fixed" => {
                    let name = m
                        .get("name")
                        .and_then(Json::as_str)
                        .ok_or("named type without `name`")?;
                    let full = full_name(name, m.get("namespace").and_then(Json::as_str), ns);
                    let inner_ns = full.rfind('.').map(|i| &full[..i]);
                    out.push_str("{\"name\":");
                    push_json_str(out, &full);
                    out.push_str(",\"type\":");
                    push_json_str(out, t);
                    match t.as_str() {
                        "record" | "error" => {
                            out.push_str(",\"fields\":[");
                            let fields = m
                                .get("fields")
                                .and_then(Json::as_array)
                                .ok_or("record without `fields`")?;
                            for (i, f) in fields.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let fname = f
                                    .get("name")
                                    .and_then(Json::as_str)
                                    .ok_or("field without `name`")?;
                                out.push_str("{\"name\":");
                                push_json_str(out, fname);
                                out.push_str(",\"type\":");
                                pcf(
                                    f.get("type").ok_or("field without `type`")?,
                                    inner_ns,
                                    out,
                                    depth + 1,
                                )?;
                                out.push('}');
                            }
                            out.push(']');
                        }
                        "enum" => {
                            out.push_str(",\"symbols\":[");
                            let symbols = m
                                .get("symbols")
                                .and_then(Json::as_array)
                                .ok_or("enum without `symbols`")?;
                            for (i, s) in symbols.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                push_json_str(out, s.as_str().ok_or("enum symbol not a string")?);
                            }
                            out.push(']');
                        }
                        _ => {
                            let size = m
                                .get("size")
                                .and_then(Json::as_u64)
                                .ok_or("fixed without integer `size`")?;
                            write!(out, ",\"size\":{size}")
                                .expect("writing to a String cannot fail");
                        }
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    pcf(
                        m.get("items").ok_or("array without `items`")?,
                        ns,
                        out,
                        depth + 1,
                    )?;
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    pcf(
                        m.get("values").ok_or("map without `values`")?,
                        ns,
                        out,
                        depth + 1,
                    )?;
                    out.push('}');
                }
                other => push_json_str(out, &full_name(other, None, ns)),
            }
        }
        _ => return Err("a schema is a string, an array or an object".into()),
    }
    Ok(())
}

/// CRC-64-AVRO (Rabin) fingerprint, as used by single-object encoding.
pub fn crc64_avro(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: OnceLock<[u64; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ table[((fp ^ b as u64) & 0xff) as usize];
    }
    fp
}

/// The fingerprint of a schema given as JSON text.
pub fn fingerprint(schema_json: &str) -> Result<u64> {
    Ok(crc64_avro(parsing_canonical_form(schema_json)?.as_bytes()))
}

/// The 10-byte single-object header for a fingerprint.
pub fn single_object_header(fingerprint: u64) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[..2].copy_from_slice(&SINGLE_OBJECT_MAGIC);
    h[2..].copy_from_slice(&fingerprint.to_le_bytes());
    h
}
