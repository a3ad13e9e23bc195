//! Avro on the wire: input records in Avro, decoded into attrib's JSON form, and actions and
//! invalid actions written as Avro (docs/design.md §2, `schemas/`).
//!
//! **Input.** Framing is decided per record, from its first bytes:
//!
//! - `0x00` + a 4-byte big-endian schema id: the Confluent wire format. The writer schema is
//!   fetched from the Schema Registry (`GET {url}/schemas/ids/{id}`) once per id.
//! - `0xC3 0x01` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
//!   Parsing Canonical Form: Avro single-object encoding. The fingerprint must be one of
//!   attrib's own schemas or of the configured `extra_writer_schemas`.
//! - anything else is not Avro: the caller reads it as JSON.
//!
//! The writer schema is resolved against attrib's schema for the record type (Avro schema
//! resolution: writer fields unknown to attrib are skipped, attrib's fields missing from the
//! writer take their defaults, ints promote to longs, …; beyond the specification, an Avro
//! `enum` is read as its symbol where attrib has a string), chosen by record name among the types
//! the topic carries (`io.attrib.Conversion`, `io.attrib.Modification`, … on the conversions
//! topic). The datum is written out directly in the JSON form of docs/design.md §2 (decimals as decimal
//! strings, `timestamp-millis` as RFC 3339), so that the JSON validation applies unchanged.
//!
//! The decoder is attrib's own: a resolution plan is compiled once per (writer schema, topic)
//! and then run over the bytes, writing JSON as it goes. It reads only what the bytes hold
//! (lengths are checked against the bytes left, collection counts against a work budget), so
//! no input can make it allocate more than its output limit or panic. `apache-avro` parses the
//! schemas.
//!
//! **Output.** [`AvroOutput`] writes `action.avsc` and `invalid_action.avsc` datums for the
//! output topics whose format is Avro, framed in the Confluent wire format when a registry is
//! configured (the schema of each such topic is registered under `<topic>-value` at start) and
//! in single-object encoding otherwise.
//!
//! **Registry.** [`Registry`] speaks HTTP or HTTPS (native TLS: the system's CA store, or the
//! CAs of `schema_registry_ca_file` only), with HTTP basic auth from
//! `schema_registry_user`/`_password` or from credentials in the URL.

use crate::model::output::{Action, InvalidAction};
use crate::model::records::{DlqReason, InputTopic, Invalid, invalid};
use crate::model::time::format_rfc3339;
use crate::ops::settings::{OutputFormat, Settings};
use anyhow::{Context, Result, anyhow, bail};
use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name, RecordSchema, UuidSchema};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// attrib's schemas, embedded: (file stem in `schemas/`, text).
pub const SCHEMA_FILES: [(&str, &str); 11] = [
    ("click", include_str!("../../schemas/click.avsc")),
    ("promo_code", include_str!("../../schemas/promo_code.avsc")),
    ("conversion", include_str!("../../schemas/conversion.avsc")),
    (
        "modification",
        include_str!("../../schemas/modification.avsc"),
    ),
    ("reversal", include_str!("../../schemas/reversal.avsc")),
    ("identify", include_str!("../../schemas/identify.avsc")),
    ("program", include_str!("../../schemas/program.avsc")),
    ("contract", include_str!("../../schemas/contract.avsc")),
    (
        "cross_program",
        include_str!("../../schemas/cross_program.avsc"),
    ),
    ("action", include_str!("../../schemas/action.avsc")),
    (
        "invalid_action",
        include_str!("../../schemas/invalid_action.avsc"),
    ),
];

/// First byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// First two bytes of Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// Registry calls give up after this long (the record then goes to the DLQ).
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);
/// A schema id whose fetch failed is not asked for again before this long.
const REGISTRY_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Deepest schema nesting followed (a recursive writer schema stops here).
const MAX_DEPTH: usize = 48;
/// Default cap on the JSON one Avro record may decode into.
pub const DEFAULT_MAX_JSON_BYTES: usize = 16 << 20;

/// Named types of a schema, by full name.
type Names = HashMap<String, Schema>;

// ---------------------------------------------------------------------------------------------
// attrib's own schemas
// ---------------------------------------------------------------------------------------------

/// One of attrib's schemas, parsed.
pub struct OwnSchema {
    /// File stem in `schemas/` (`click`, `promo_code`, …).
    pub stem: &'static str,
    /// The `.avsc` text.
    pub text: &'static str,
    pub schema: Schema,
    names: Names,
    /// Full record name (`io.attrib.Click`).
    pub full_name: String,
    /// CRC-64-AVRO fingerprint of the Parsing Canonical Form (as the specification defines it).
    pub fingerprint: u64,
}

/// attrib's schemas, parsed once.
pub fn own_schemas() -> &'static [OwnSchema] {
    static OWN: OnceLock<Vec<OwnSchema>> = OnceLock::new();
    OWN.get_or_init(|| {
        SCHEMA_FILES
            .iter()
            .map(|(stem, text)| {
                let schema = Schema::parse_str(text)
                    .unwrap_or_else(|e| panic!("embedded schema {stem}.avsc does not parse: {e}"));
                let pcf = parsing_canonical_form(text)
                    .unwrap_or_else(|e| panic!("embedded schema {stem}.avsc: {e}"));
                OwnSchema {
                    stem,
                    text,
                    names: names_of(&schema),
                    full_name: schema.name().map(|n| n.fullname(None)).unwrap_or_default(),
                    fingerprint: crc64_avro(pcf.as_bytes()),
                    schema,
                }
            })
            .collect()
    })
}

/// One of attrib's schemas by file stem (`"click"`, `"action"`, …).
pub fn own_schema(stem: &str) -> Option<&'static OwnSchema> {
    own_schemas().iter().find(|s| s.stem == stem)
}

/// The record types a topic carries, by file stem.
fn topic_stems(topic: InputTopic) -> &'static [&'static str] {
    match topic {
        InputTopic::Clicks => &["click"],
        InputTopic::Conversions => &["conversion", "modification", "reversal"],
        InputTopic::Identities => &["identify"],
        InputTopic::PromoCodes => &["promo_code"],
        InputTopic::Config => &["program", "contract", "cross_program"],
    }
}

/// The input topics, in the order of [`topic_index`].
const TOPICS: [InputTopic; 5] = [
    InputTopic::Clicks,
    InputTopic::Conversions,
    InputTopic::PromoCodes,
    InputTopic::Config,
    InputTopic::Identities,
];

fn topic_index(t: InputTopic) -> usize {
    match t {
        InputTopic::Clicks => 0,
        InputTopic::Conversions => 1,
        InputTopic::PromoCodes => 2,
        InputTopic::Config => 3,
        InputTopic::Identities => 4,
    }
}

// ---------------------------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------------------------

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
                            let _ = write!(out, ",\"size\":{size}");
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

/// The 5-byte Confluent header for a schema id.
pub fn confluent_header(id: u32) -> [u8; 5] {
    let mut h = [0u8; 5];
    h[0] = CONFLUENT_MAGIC;
    h[1..].copy_from_slice(&id.to_be_bytes());
    h
}

// ---------------------------------------------------------------------------------------------
// Schema helpers
// ---------------------------------------------------------------------------------------------

fn names_of(schema: &Schema) -> Names {
    fn walk(s: &Schema, names: &mut Names, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        match s {
            Schema::Record(r) => {
                names.insert(r.name.fullname(None), s.clone());
                for f in &r.fields {
                    walk(&f.schema, names, depth + 1);
                }
            }
            Schema::Enum(e) => {
                names.insert(e.name.fullname(None), s.clone());
            }
            Schema::Fixed(f) => {
                names.insert(f.name.fullname(None), s.clone());
            }
            Schema::Decimal(d) => {
                if let InnerDecimalSchema::Fixed(f) = &d.inner {
                    names.insert(f.name.fullname(None), Schema::Fixed(f.clone()));
                }
            }
            Schema::Array(a) => walk(&a.items, names, depth + 1),
            Schema::Map(m) => walk(&m.types, names, depth + 1),
            Schema::Union(u) => {
                for v in u.variants() {
                    walk(v, names, depth + 1);
                }
            }
            _ => {}
        }
    }
    let mut names = Names::new();
    walk(schema, &mut names, 0);
    names
}

fn deref<'a>(s: &'a Schema, names: &'a Names) -> Result<&'a Schema, String> {
    match s {
        Schema::Ref { name } => names
            .get(&name.fullname(None))
            .ok_or_else(|| format!("unknown type `{}`", name.fullname(None))),
        _ => Ok(s),
    }
}

fn kind(s: &Schema) -> String {
    match s {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Union(_) => "union".into(),
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Decimal(_) => "decimal".into(),
        Schema::BigDecimal => "big-decimal".into(),
        Schema::Uuid(_) => "uuid".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis => "time-millis".into(),
        Schema::TimeMicros => "time-micros".into(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::TimestampNanos => "timestamp-nanos".into(),
        Schema::LocalTimestampMillis => "local-timestamp-millis".into(),
        Schema::LocalTimestampMicros => "local-timestamp-micros".into(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        Schema::Duration(_) => "duration".into(),
        Schema::Ref { name } => name.fullname(None),
    }
}

fn same_name(w: &Name, r: &Name, r_aliases: Option<&Vec<apache_avro::schema::Alias>>) -> bool {
    w.fullname(None) == r.fullname(None)
        || w.name() == r.name()
        || r_aliases.is_some_and(|a| {
            a.iter()
                .any(|a| a.fullname(None) == w.fullname(None) || a.name() == w.name())
        })
}

// ---------------------------------------------------------------------------------------------
// Resolution plans
// ---------------------------------------------------------------------------------------------

/// How a writer value is read and written out as JSON.
#[derive(Debug)]
enum Plan {
    Null,
    Bool,
    Int(Num),
    Long(Num),
    Float,
    Double,
    Bytes(Text),
    String(Text),
    Fixed(usize, Text),
    /// Per writer symbol index: the JSON text of attrib's symbol, or why there is none.
    Enum(Vec<Result<String, String>>),
    Array(Box<Plan>),
    Map(Box<Plan>),
    /// Per writer branch.
    Union(Vec<Result<Plan, String>>),
    Record(Box<RecordPlan>),
}

#[derive(Debug)]
struct RecordPlan {
    steps: Vec<Step>,
    /// `"name":value` of attrib's fields the writer lacks, from their defaults.
    defaults: Vec<Vec<u8>>,
}

#[derive(Debug)]
enum Step {
    /// `"name":` then the value.
    Field(Vec<u8>, Plan),
    /// A writer field attrib does not know: read and dropped.
    Skip(Plan),
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Number,
    /// A time: divided by this to get milliseconds, written as RFC 3339.
    Millis(i64),
}

#[derive(Debug, Clone, Copy)]
enum Text {
    Utf8,
    Decimal(u32),
    /// Bytes as a string of code points 0–255 (Avro's JSON form of bytes); also skipped values.
    Raw,
}

fn json_key(name: &str) -> Vec<u8> {
    let mut k = serde_json::to_vec(name).expect("strings serialize");
    k.push(b':');
    k
}

fn is_timestamp(s: &Schema) -> Option<i64> {
    match s {
        Schema::TimestampMillis | Schema::LocalTimestampMillis => Some(1),
        Schema::TimestampMicros | Schema::LocalTimestampMicros => Some(1_000),
        Schema::TimestampNanos | Schema::LocalTimestampNanos => Some(1_000_000),
        _ => None,
    }
}

/// Whether a writer type can be read as a reader type (`exact`: without promotion).
fn matches(w: &Schema, r: &Schema, exact: bool) -> bool {
    use Schema as S;
    match (w, r) {
        (S::Record(a), S::Record(b)) => same_name(&a.name, &b.name, b.aliases.as_ref()),
        (S::Enum(a), S::Enum(b)) => same_name(&a.name, &b.name, b.aliases.as_ref()),
        (S::Fixed(a), S::Fixed(b)) => a.size == b.size && same_name(&a.name, &b.name, None),
        (S::Array(_), S::Array(_)) | (S::Map(_), S::Map(_)) => true,
        (S::Null, S::Null) | (S::Boolean, S::Boolean) => true,
        (S::Int, S::Int) | (S::Long, S::Long) | (S::Float, S::Float) | (S::Double, S::Double) => {
            true
        }
        (S::String | S::Uuid(UuidSchema::String), S::String) | (S::Bytes, S::Bytes) => true,
        (S::Decimal(_), S::Decimal(_)) => true,
        _ if is_timestamp(w).is_some() && matches!(r, S::TimestampMillis) => true,
        _ if exact => false,
        (S::Int, S::Long | S::Float | S::Double | S::TimestampMillis) => true,
        (S::Long, S::Float | S::Double | S::TimestampMillis) => true,
        (S::Float, S::Double) => true,
        (S::Bytes, S::String | S::Decimal(_)) | (S::String, S::Bytes) => true,
        (S::Fixed(_), S::Decimal(_)) => true,
        (S::Enum(_), S::String) => true,
        _ if is_timestamp(w).is_some() && matches!(r, S::Long | S::Float | S::Double) => true,
        _ => false,
    }
}

/// Compiles the resolution of writer type `w` against reader type `r`.
fn compile(w: &Schema, wn: &Names, r: &Schema, rn: &Names, depth: usize) -> Result<Plan, String> {
    use Schema as S;
    if depth > MAX_DEPTH {
        return Err("schema nested too deeply (a recursive writer schema?)".into());
    }
    let w = deref(w, wn)?;
    let r = deref(r, rn)?;
    if let S::Union(u) = w {
        let branches: Vec<Result<Plan, String>> = u
            .variants()
            .iter()
            .map(|b| compile(b, wn, r, rn, depth + 1))
            .collect();
        if let Some(Err(e)) = branches.iter().find(|b| b.is_err())
            && branches.iter().all(Result::is_err)
        {
            return Err(e.clone());
        }
        return Ok(Plan::Union(branches));
    }
    if let S::Union(u) = r {
        for exact in [true, false] {
            for b in u.variants() {
                if matches(w, deref(b, rn)?, exact) {
                    return compile(w, wn, b, rn, depth + 1);
                }
            }
        }
        let kinds: Vec<String> = u.variants().iter().map(kind).collect();
        return Err(format!(
            "writer type {} matches no branch of attrib's [{}]",
            kind(w),
            kinds.join(", ")
        ));
    }
    let mismatch = || format!("writer type {} cannot be read as {}", kind(w), kind(r));
    if let (Some(div), S::TimestampMillis) = (is_timestamp(w), r) {
        return Ok(Plan::Long(Num::Millis(div)));
    }
    Ok(match (w, r) {
        (S::Null, S::Null) => Plan::Null,
        (S::Boolean, S::Boolean) => Plan::Bool,
        (S::Int, S::Int | S::Long | S::Float | S::Double) => Plan::Int(Num::Number),
        (S::Int, S::TimestampMillis) => Plan::Int(Num::Millis(1)),
        (S::Long, S::Long | S::Float | S::Double) => Plan::Long(Num::Number),
        (S::Long, S::TimestampMillis) => Plan::Long(Num::Millis(1)),
        (_, S::Long | S::Float | S::Double) if is_timestamp(w).is_some() => Plan::Long(Num::Number),
        (S::Float, S::Float | S::Double) => Plan::Float,
        (S::Double, S::Double) => Plan::Double,
        (S::String | S::Uuid(UuidSchema::String), S::String | S::Bytes) => Plan::String(Text::Utf8),
        (S::Bytes, S::String) => Plan::Bytes(Text::Utf8),
        (S::Bytes, S::Bytes) => Plan::Bytes(Text::Raw),
        (S::Decimal(d), S::Decimal(_)) => {
            let scale = decimal_scale(d.scale)?;
            match &d.inner {
                InnerDecimalSchema::Bytes => Plan::Bytes(Text::Decimal(scale)),
                InnerDecimalSchema::Fixed(f) => Plan::Fixed(f.size, Text::Decimal(scale)),
            }
        }
        (S::Bytes, S::Decimal(d)) => Plan::Bytes(Text::Decimal(decimal_scale(d.scale)?)),
        (S::Fixed(f), S::Decimal(d)) => Plan::Fixed(f.size, Text::Decimal(decimal_scale(d.scale)?)),
        (S::Fixed(a), S::Fixed(_)) if matches(w, r, true) => Plan::Fixed(a.size, Text::Raw),
        (S::Enum(we), S::Enum(re)) if matches(w, r, true) => Plan::Enum(
            we.symbols
                .iter()
                .map(|s| {
                    if re.symbols.contains(s) {
                        Ok(serde_json::to_string(s).expect("strings serialize"))
                    } else if let Some(d) = &re.default {
                        Ok(serde_json::to_string(d).expect("strings serialize"))
                    } else {
                        Err(format!("enum symbol `{s}` is unknown to attrib's schema"))
                    }
                })
                .collect(),
        ),
        // Not an Avro promotion, but attrib's enumerations are strings it checks itself, so a
        // producer's enum is read as its symbol.
        (S::Enum(we), S::String) => Plan::Enum(
            we.symbols
                .iter()
                .map(|s| Ok(serde_json::to_string(s).expect("strings serialize")))
                .collect(),
        ),
        (S::Array(a), S::Array(b)) => {
            Plan::Array(Box::new(compile(&a.items, wn, &b.items, rn, depth + 1)?))
        }
        (S::Map(a), S::Map(b)) => {
            Plan::Map(Box::new(compile(&a.types, wn, &b.types, rn, depth + 1)?))
        }
        (S::Record(wr), S::Record(rr)) if matches(w, r, true) => {
            compile_record(wr, wn, rr, rn, depth)?
        }
        _ => return Err(mismatch()),
    })
}

fn decimal_scale(scale: usize) -> Result<u32, String> {
    u32::try_from(scale)
        .ok()
        .filter(|s| *s <= 28)
        .ok_or_else(|| format!("decimal scale {scale} is more than 28"))
}

fn compile_record(
    wr: &RecordSchema,
    wn: &Names,
    rr: &RecordSchema,
    rn: &Names,
    depth: usize,
) -> Result<Plan, String> {
    let mut used = vec![false; rr.fields.len()];
    let mut steps = Vec::with_capacity(wr.fields.len());
    for wf in &wr.fields {
        let ri = rr
            .fields
            .iter()
            .position(|rf| rf.name == wf.name)
            .or_else(|| {
                rr.fields
                    .iter()
                    .position(|rf| rf.aliases.contains(&wf.name))
            })
            .filter(|i| !used[*i]);
        match ri {
            Some(i) => {
                used[i] = true;
                let rf = &rr.fields[i];
                let plan = compile(&wf.schema, wn, &rf.schema, rn, depth + 1)
                    .map_err(|e| format!("field `{}`: {e}", rf.name))?;
                steps.push(Step::Field(json_key(&rf.name), plan));
            }
            None => steps.push(Step::Skip(
                skip_plan(&wf.schema, wn, depth + 1)
                    .map_err(|e| format!("field `{}`: {e}", wf.name))?,
            )),
        }
    }
    let mut defaults = Vec::new();
    for (rf, used) in rr.fields.iter().zip(used) {
        if used {
            continue;
        }
        let Some(d) = &rf.default else {
            return Err(format!(
                "the writer's {} has no field `{}` and attrib's schema gives it no default",
                wr.name.fullname(None),
                rf.name
            ));
        };
        let mut buf = json_key(&rf.name);
        default_json(&rf.schema, rn, d, &mut buf, depth + 1)
            .map_err(|e| format!("default of field `{}`: {e}", rf.name))?;
        defaults.push(buf);
    }
    Ok(Plan::Record(Box::new(RecordPlan { steps, defaults })))
}

/// A plan that reads a writer value and writes nothing.
fn skip_plan(w: &Schema, wn: &Names, depth: usize) -> Result<Plan, String> {
    use Schema as S;
    if depth > MAX_DEPTH {
        return Err("schema nested too deeply (a recursive writer schema?)".into());
    }
    Ok(match deref(w, wn)? {
        S::Null => Plan::Null,
        S::Boolean => Plan::Bool,
        S::Int | S::Date | S::TimeMillis => Plan::Int(Num::Number),
        S::Long
        | S::TimeMicros
        | S::TimestampMillis
        | S::TimestampMicros
        | S::TimestampNanos
        | S::LocalTimestampMillis
        | S::LocalTimestampMicros
        | S::LocalTimestampNanos => Plan::Long(Num::Number),
        S::Float => Plan::Float,
        S::Double => Plan::Double,
        S::Bytes | S::BigDecimal | S::Uuid(UuidSchema::Bytes) => Plan::Bytes(Text::Raw),
        S::String | S::Uuid(UuidSchema::String) => Plan::String(Text::Raw),
        S::Fixed(f) | S::Uuid(UuidSchema::Fixed(f)) | S::Duration(f) => {
            Plan::Fixed(f.size, Text::Raw)
        }
        S::Decimal(d) => match &d.inner {
            InnerDecimalSchema::Bytes => Plan::Bytes(Text::Raw),
            InnerDecimalSchema::Fixed(f) => Plan::Fixed(f.size, Text::Raw),
        },
        S::Enum(e) => Plan::Enum(e.symbols.iter().map(|_| Ok(String::new())).collect()),
        S::Array(a) => Plan::Array(Box::new(skip_plan(&a.items, wn, depth + 1)?)),
        S::Map(m) => Plan::Map(Box::new(skip_plan(&m.types, wn, depth + 1)?)),
        S::Union(u) => Plan::Union(
            u.variants()
                .iter()
                .map(|b| skip_plan(b, wn, depth + 1))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(Ok)
                .collect(),
        ),
        S::Record(r) => Plan::Record(Box::new(RecordPlan {
            steps: r
                .fields
                .iter()
                .map(|f| skip_plan(&f.schema, wn, depth + 1).map(Step::Skip))
                .collect::<Result<_, _>>()?,
            defaults: Vec::new(),
        })),
        S::Ref { .. } => return Err("unresolved reference".into()),
    })
}

/// Writes a field default (Avro's JSON encoding of a value of `r`) in attrib's JSON form.
fn default_json(
    r: &Schema,
    rn: &Names,
    d: &Json,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), String> {
    use Schema as S;
    if depth > MAX_DEPTH {
        return Err("default nested too deeply".into());
    }
    let bad = || format!("default {d} is not a {}", kind(r));
    match deref(r, rn)? {
        S::Union(u) => {
            for b in u.variants() {
                let mark = out.len();
                if default_json(b, rn, d, out, depth + 1).is_ok() {
                    return Ok(());
                }
                out.truncate(mark);
            }
            return Err(bad());
        }
        S::Null if d.is_null() => out.extend_from_slice(b"null"),
        S::Boolean if d.is_boolean() => out.extend_from_slice(d.to_string().as_bytes()),
        S::Int | S::Long | S::Float | S::Double if d.is_number() => {
            out.extend_from_slice(d.to_string().as_bytes())
        }
        S::String | S::Bytes | S::Fixed(_) | S::Uuid(_) if d.is_string() => {
            serde_json::to_writer(&mut *out, d).map_err(|e| e.to_string())?
        }
        S::Enum(e) if d.as_str().is_some_and(|s| e.symbols.iter().any(|x| x == s)) => {
            serde_json::to_writer(&mut *out, d).map_err(|e| e.to_string())?
        }
        S::Decimal(ds) if d.is_string() => {
            let bytes: Option<Vec<u8>> = d
                .as_str()
                .unwrap_or_default()
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect();
            let text = decimal_text(&bytes.ok_or_else(bad)?, decimal_scale(ds.scale)?)?;
            serde_json::to_writer(&mut *out, &text).map_err(|e| e.to_string())?
        }
        s @ (S::TimestampMillis
        | S::TimestampMicros
        | S::TimestampNanos
        | S::LocalTimestampMillis
        | S::LocalTimestampMicros
        | S::LocalTimestampNanos) => {
            let v = d.as_i64().ok_or_else(bad)?;
            let ms = v.div_euclid(is_timestamp(s).unwrap_or(1));
            serde_json::to_writer(&mut *out, &format_rfc3339(ms)).map_err(|e| e.to_string())?
        }
        S::Array(a) if d.is_array() => {
            out.push(b'[');
            for (i, x) in d.as_array().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                default_json(&a.items, rn, x, out, depth + 1)?;
            }
            out.push(b']');
        }
        S::Map(m) if d.is_object() => {
            out.push(b'{');
            for (i, (k, x)) in d.as_object().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&json_key(k));
                default_json(&m.types, rn, x, out, depth + 1)?;
            }
            out.push(b'}');
        }
        S::Record(rec) if d.is_object() => {
            out.push(b'{');
            for (i, f) in rec.fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&json_key(&f.name));
                match d.get(&f.name).or(f.default.as_ref()) {
                    Some(v) => default_json(&f.schema, rn, v, out, depth + 1)?,
                    None => return Err(format!("default lacks field `{}`", f.name)),
                }
            }
            out.push(b'}');
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// Compiles a top-level writer schema for a topic: a record (or a union of records) that the
/// topic carries, matched to attrib's schema of the same name.
fn compile_top(w: &Schema, wn: &Names, topic: InputTopic, depth: usize) -> Result<Plan, String> {
    match deref(w, wn)? {
        Schema::Record(wr) => {
            let stems = topic_stems(topic);
            let own = || stems.iter().filter_map(|s| own_schema(s));
            let reader = own()
                .find(|o| o.full_name == wr.name.fullname(None))
                .or_else(|| {
                    own().find(|o| o.schema.name().is_some_and(|n| n.name() == wr.name.name()))
                });
            let Some(reader) = reader else {
                let expected: Vec<String> = own().map(|o| o.full_name.clone()).collect();
                return Err(format!(
                    "writer schema {} is not a record of the {} topic ({})",
                    wr.name.fullname(None),
                    topic.replay_name(),
                    expected.join(", ")
                ));
            };
            compile(w, wn, &reader.schema, &reader.names, depth)
        }
        Schema::Union(u) if depth == 0 => {
            let branches: Vec<Result<Plan, String>> = u
                .variants()
                .iter()
                .map(|b| compile_top(b, wn, topic, depth + 1))
                .collect();
            match branches.iter().find_map(|b| b.as_ref().err()) {
                Some(e) if branches.iter().all(Result::is_err) => Err(e.clone()),
                _ => Ok(Plan::Union(branches)),
            }
        }
        other => Err(format!("writer schema is a {}, not a record", kind(other))),
    }
}

/// Plans of one writer schema, per input topic.
type Plans = [Result<Arc<Plan>, String>; 5];

fn plans_for(schema: &Schema) -> Plans {
    let names = names_of(schema);
    TOPICS.map(|t| compile_top(schema, &names, t, 0).map(Arc::new))
}

// ---------------------------------------------------------------------------------------------
// Running a plan
// ---------------------------------------------------------------------------------------------

struct In<'a> {
    b: &'a [u8],
    pos: usize,
    work: usize,
    max_work: usize,
}

const TRUNCATED: &str = "the record ends early";

impl In<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.pos).ok_or(TRUNCATED)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.b.len() - self.pos {
            return Err(TRUNCATED.into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn long(&mut self) -> Result<i64, String> {
        let mut v: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            let chunk = (b & 0x7f) as u64;
            if shift == 63 && chunk > 1 {
                return Err("a long is out of range".into());
            }
            v |= chunk << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("a long is out of range".into());
            }
        }
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn int(&mut self) -> Result<i32, String> {
        i32::try_from(self.long()?).map_err(|_| "an int is out of range".to_string())
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("negative length {n}"))
    }

    fn tick(&mut self) -> Result<(), String> {
        self.work += 1;
        if self.work > self.max_work {
            return Err("the record holds more values than its size allows".into());
        }
        Ok(())
    }
}

/// The decimal string of a two's-complement big-endian unscaled value.
fn decimal_text(bytes: &[u8], scale: u32) -> Result<String, String> {
    if bytes.is_empty() {
        return Err("a decimal has no bytes".into());
    }
    let mut b = bytes;
    while b.len() > 1 && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0)) {
        b = &b[1..];
    }
    if b.len() > 16 {
        return Err("a decimal is out of range".into());
    }
    let mut v: i128 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for &x in b {
        v = (v << 8) | x as i128;
    }
    rust_decimal::Decimal::try_from_i128_with_scale(v, scale)
        .map(|d| d.to_string())
        .map_err(|_| "a decimal is out of range".to_string())
}

fn write_text(t: Text, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match t {
        Text::Utf8 => {
            let s = std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8".to_string())?;
            serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())
        }
        Text::Decimal(scale) => {
            let s = decimal_text(bytes, scale)?;
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
            Ok(())
        }
        Text::Raw => {
            let s: String = bytes.iter().map(|&b| b as char).collect();
            serde_json::to_writer(&mut *out, &s).map_err(|e| e.to_string())
        }
    }
}

fn write_num(n: Num, v: i64, out: &mut Vec<u8>) {
    match n {
        Num::Number => {
            let _ = std::io::Write::write_fmt(out, format_args!("{v}"));
        }
        Num::Millis(div) => {
            out.push(b'"');
            out.extend_from_slice(format_rfc3339(v.div_euclid(div)).as_bytes());
            out.push(b'"');
        }
    }
}

fn write_float(v: f64, out: &mut Vec<u8>) -> Result<(), String> {
    if !v.is_finite() {
        return Err("a float is not finite".into());
    }
    let _ = std::io::Write::write_fmt(out, format_args!("{v}"));
    Ok(())
}

fn run(p: &Plan, r: &mut In, out: &mut Vec<u8>, emit: bool, limit: usize) -> Result<(), String> {
    r.tick()?;
    match p {
        Plan::Null => {
            if emit {
                out.extend_from_slice(b"null");
            }
        }
        Plan::Bool => {
            let b = match r.byte()? {
                0 => false,
                1 => true,
                x => return Err(format!("a boolean is {x}, not 0 or 1")),
            };
            if emit {
                out.extend_from_slice(if b { b"true" } else { b"false" });
            }
        }
        Plan::Int(n) => {
            let v = r.int()?;
            if emit {
                write_num(*n, v as i64, out);
            }
        }
        Plan::Long(n) => {
            let v = r.long()?;
            if emit {
                write_num(*n, v, out);
            }
        }
        Plan::Float => {
            let b = r.take(4)?;
            let v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            if emit {
                if !v.is_finite() {
                    return Err("a float is not finite".into());
                }
                let _ = std::io::Write::write_fmt(out, format_args!("{v}"));
            }
        }
        Plan::Double => {
            let b = r.take(8)?;
            let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
            if emit {
                write_float(v, out)?;
            }
        }
        Plan::Bytes(t) | Plan::String(t) => {
            let n = r.len()?;
            let bytes = r.take(n)?;
            if emit {
                write_text(*t, bytes, out)?;
            }
        }
        Plan::Fixed(n, t) => {
            let bytes = r.take(*n)?;
            if emit {
                write_text(*t, bytes, out)?;
            }
        }
        Plan::Enum(symbols) => {
            let i = r.int()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| format!("enum index {i} is out of range"))?;
            if emit {
                out.extend_from_slice(s.as_ref().map_err(Clone::clone)?.as_bytes());
            }
        }
        Plan::Array(item) | Plan::Map(item) => {
            let is_map = matches!(p, Plan::Map(_));
            if emit {
                out.push(if is_map { b'{' } else { b'[' });
            }
            let mut first = true;
            loop {
                let mut count = r.long()?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    count = count.checked_neg().ok_or("a block count is out of range")?;
                    if r.long()? < 0 {
                        return Err("a block size is negative".into());
                    }
                }
                for _ in 0..count {
                    r.tick()?;
                    if emit && !first {
                        out.push(b',');
                    }
                    first = false;
                    if is_map {
                        let n = r.len()?;
                        let key = r.take(n)?;
                        if emit {
                            write_text(Text::Utf8, key, out)?;
                            out.push(b':');
                        }
                    }
                    run(item, r, out, emit, limit)?;
                    if out.len() > limit {
                        return Err(format!("the record decodes to more than {limit} bytes"));
                    }
                }
            }
            if emit {
                out.push(if is_map { b'}' } else { b']' });
            }
        }
        Plan::Union(branches) => {
            let i = r.long()?;
            let b = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| format!("union branch {i} is out of range"))?;
            match b {
                Ok(b) => run(b, r, out, emit, limit)?,
                Err(e) => return Err(format!("union branch {i}: {e}")),
            }
        }
        Plan::Record(rec) => {
            if emit {
                out.push(b'{');
            }
            let mut first = true;
            for step in &rec.steps {
                match step {
                    Step::Field(key, plan) => {
                        if emit {
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            out.extend_from_slice(key);
                        }
                        run(plan, r, out, emit, limit)?;
                    }
                    Step::Skip(plan) => run(plan, r, out, false, limit)?,
                }
            }
            if emit {
                for d in &rec.defaults {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(d);
                }
                out.push(b'}');
            }
            if out.len() > limit {
                return Err(format!("the record decodes to more than {limit} bytes"));
            }
        }
    }
    Ok(())
}

fn decode_with(plan: &Plan, body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut r = In {
        b: body,
        pos: 0,
        work: 0,
        max_work: body.len().saturating_mul(4).saturating_add(1024),
    };
    let mut out = Vec::with_capacity(body.len() * 2 + 64);
    run(plan, &mut r, &mut out, true, limit)?;
    if r.pos != body.len() {
        return Err(format!(
            "{} bytes are left over after the record",
            body.len() - r.pos
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Schema Registry
// ---------------------------------------------------------------------------------------------

/// How to reach a Confluent Schema Registry: base URL, TLS trust and credentials.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistryConfig {
    /// Base URL, `http://` or `https://`; credentials may be given as `https://KEY:SECRET@host`.
    pub url: String,
    /// PEM file of the CA certificate(s) an `https://` registry's certificate must chain to,
    /// in place of the system's CA store.
    pub ca_file: Option<PathBuf>,
    /// HTTP basic auth: user (Confluent Cloud API key) and password (API secret).
    pub basic_auth: Option<(String, String)>,
}

impl RegistryConfig {
    pub fn url(url: &str) -> RegistryConfig {
        RegistryConfig {
            url: url.to_string(),
            ..RegistryConfig::default()
        }
    }

    /// `schema_registry_url`, `_ca_file`, `_user` and `_password`; `None` without a URL.
    pub fn from_settings(s: &Settings) -> Option<RegistryConfig> {
        let url = s
            .schema_registry
            .url
            .as_deref()
            .filter(|u| !u.trim().is_empty())?;
        Some(RegistryConfig {
            url: url.to_string(),
            ca_file: s.schema_registry.ca_file.clone(),
            basic_auth: s
                .schema_registry
                .user
                .clone()
                .zip(s.schema_registry.password.clone()),
        })
    }
}

/// A Confluent Schema Registry client (blocking; called from the processing thread only).
pub struct Registry {
    base: String,
    agent: ureq::Agent,
    /// `Basic …`, from [`RegistryConfig::basic_auth`] (credentials in the URL are sent by
    /// `ureq` itself).
    authorization: Option<String>,
}

const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl Registry {
    /// `url` is the registry's base URL; credentials may be given as `https://KEY:SECRET@host`.
    pub fn new(url: &str) -> Result<Registry> {
        Registry::connect(&RegistryConfig::url(url))
    }

    /// From the settings; `None` without `schema_registry_url`.
    pub fn from_settings(s: &Settings) -> Result<Option<Registry>> {
        RegistryConfig::from_settings(s)
            .map(|c| Registry::connect(&c))
            .transpose()
    }

    /// Sets up the client (no request is made): a CA file is read and checked now.
    pub fn connect(c: &RegistryConfig) -> Result<Registry> {
        let base = c.url.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("schema registry URL `{base}` must start with http:// or https://");
        }
        let roots = match &c.ca_file {
            None => ureq::tls::RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("cannot read schema_registry_ca_file {}", path.display())
                })?;
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(&pem) {
                    match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                        Ok(_) => {}
                        Err(e) => bail!(
                            "schema_registry_ca_file {} is not valid PEM: {e}",
                            path.display()
                        ),
                    }
                }
                if certs.is_empty() {
                    bail!(
                        "schema_registry_ca_file {} holds no PEM certificate",
                        path.display()
                    );
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(REGISTRY_TIMEOUT))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("attrib/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let authorization = c.basic_auth.as_ref().map(|(user, password)| {
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
        });
        Ok(Registry {
            base,
            agent,
            authorization,
        })
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => req.header("Authorization", a.as_str()),
            None => req,
        }
    }

    /// The base URL without credentials, for messages.
    fn shown(&self) -> String {
        match (self.base.find("://"), self.base.find('@')) {
            (Some(s), Some(at)) if at > s => {
                format!("{}{}", &self.base[..s + 3], &self.base[at + 1..])
            }
            _ => self.base.clone(),
        }
    }

    fn read(resp: ureq::http::Response<ureq::Body>) -> Result<(u16, String), String> {
        let status = resp.status().as_u16();
        let mut resp = resp;
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    fn failure(status: u16, body: &str) -> String {
        let msg = serde_json::from_str::<Json>(body)
            .ok()
            .and_then(|j| j.get("message").and_then(Json::as_str).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        format!("HTTP {status}: {msg}")
    }

    /// `GET /schemas/ids/{id}`: the schema text.
    pub fn schema_by_id(&self, id: u32) -> Result<String, String> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let resp = self
            .with_auth(self.agent.get(&url))
            .header("Accept", REGISTRY_CONTENT_TYPE)
            .call()
            .map_err(|e| e.to_string())?;
        let (status, body) = Self::read(resp)?;
        if status != 200 {
            return Err(Self::failure(status, &body));
        }
        let j: Json = serde_json::from_str(&body).map_err(|e| format!("bad response: {e}"))?;
        if let Some(t) = j.get("schemaType").and_then(Json::as_str) {
            if t != "AVRO" {
                return Err(format!("schema id {id} is a {t} schema, not Avro"));
            }
        }
        j.get("schema")
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| "bad response: no `schema`".to_string())
    }

    /// `POST /subjects/{subject}/versions`: registers (or finds) a schema, returning its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let resp = self
            .with_auth(self.agent.post(&url))
            .header("Content-Type", REGISTRY_CONTENT_TYPE)
            .header("Accept", REGISTRY_CONTENT_TYPE)
            .send(body)
            .map_err(|e| {
                anyhow!(
                    "cannot register the schema of subject `{subject}` at {}: {e}",
                    self.shown()
                )
            })?;
        let (status, body) = Self::read(resp).map_err(|e| anyhow!(e))?;
        if status != 200 {
            bail!(
                "cannot register the schema of subject `{subject}` at {}: {}",
                self.shown(),
                Self::failure(status, &body)
            );
        }
        serde_json::from_str::<Json>(&body)
            .ok()
            .and_then(|j| j.get("id").and_then(Json::as_u64))
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| anyhow!("registry answered without an `id`: {body}"))
    }
}

/// Standard base64 with padding (RFC 4648), for the basic auth header.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | (b[2] as u32);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

enum IdEntry {
    Ready(Arc<Plans>),
    Failed(String, Instant),
}

/// Decodes Avro-framed input records into attrib's JSON form.
pub struct AvroInput {
    by_fingerprint: HashMap<u64, Arc<Plans>>,
    registry: Option<Registry>,
    by_id: Mutex<HashMap<u32, IdEntry>>,
    max_json_bytes: usize,
}

impl AvroInput {
    /// attrib's schemas, the given extra writer schemas (`.avsc` files, for single-object
    /// records written with another version of a schema) and, if given, a Schema Registry.
    pub fn new(registry_url: Option<&str>, extra_writer_schemas: &[PathBuf]) -> Result<AvroInput> {
        let registry = registry_url
            .filter(|u| !u.trim().is_empty())
            .map(Registry::new)
            .transpose()?;
        AvroInput::with_registry(registry, extra_writer_schemas)
    }

    /// Like [`AvroInput::new`], with a registry client already set up.
    pub fn with_registry(
        registry: Option<Registry>,
        extra_writer_schemas: &[PathBuf],
    ) -> Result<AvroInput> {
        let mut by_fingerprint = HashMap::new();
        for own in own_schemas() {
            let plans = Arc::new(plans_for(&own.schema));
            by_fingerprint.insert(own.fingerprint, plans.clone());
            // apache-avro's canonical form keeps a decimal's precision and scale; records
            // written by it carry that fingerprint instead.
            by_fingerprint
                .entry(crc64_avro(own.schema.canonical_form().as_bytes()))
                .or_insert(plans);
        }
        for path in extra_writer_schemas {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read writer schema {}", path.display()))?;
            let schema = Schema::parse_str(&text)
                .map_err(|e| anyhow!("writer schema {} does not parse: {e}", path.display()))?;
            let fp =
                fingerprint(&text).with_context(|| format!("writer schema {}", path.display()))?;
            let plans = plans_for(&schema);
            if plans.iter().all(Result::is_err) {
                let why: Vec<&str> = plans
                    .iter()
                    .filter_map(|p| p.as_ref().err().map(String::as_str))
                    .collect();
                bail!(
                    "writer schema {} is not readable on any input topic: {}",
                    path.display(),
                    why.join("; ")
                );
            }
            let plans = Arc::new(plans);
            by_fingerprint.insert(fp, plans.clone());
            by_fingerprint
                .entry(crc64_avro(schema.canonical_form().as_bytes()))
                .or_insert(plans);
        }
        Ok(AvroInput {
            by_fingerprint,
            registry,
            by_id: Mutex::new(HashMap::new()),
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
        })
    }

    /// From the settings: the `schema_registry_*` settings, `extra_writer_schemas`, and a JSON
    /// output cap of four times `limits.max_record_bytes`.
    pub fn from_settings(s: &Settings) -> Result<AvroInput> {
        Ok(
            AvroInput::with_registry(Registry::from_settings(s)?, &s.extra_writer_schemas)?
                .with_max_json_bytes(s.limits.max_record_bytes.saturating_mul(4).max(1 << 16)),
        )
    }

    /// Caps the JSON one record may decode into.
    pub fn with_max_json_bytes(mut self, n: usize) -> Self {
        self.max_json_bytes = n;
        self
    }

    /// `Ok(None)`: not Avro-framed (read it as JSON). `Ok(Some(json))`: the record in attrib's
    /// JSON form. `Err`: Avro-framed but not decodable (the DLQ reason).
    pub fn decode_to_json(
        &self,
        topic: InputTopic,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, Invalid> {
        let fail = |e: String| {
            Invalid::new(
                DlqReason::Malformed,
                format!("avro record cannot be decoded: {e}"),
            )
        };
        let (plans, body) = match bytes {
            [CONFLUENT_MAGIC, rest @ ..] => {
                if rest.len() < 4 {
                    return Err(fail(
                        "confluent-framed record is shorter than its 5-byte header".into(),
                    ));
                }
                let Some(registry) = &self.registry else {
                    return Err(invalid(
                        "confluent-framed record but no schema_registry_url configured",
                    ));
                };
                let id = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
                (self.plans_for_id(registry, id).map_err(fail)?, &rest[4..])
            }
            [0xC3, 0x01, rest @ ..] => {
                if rest.len() < 8 {
                    return Err(fail(
                        "single-object record is shorter than its 10-byte header".into(),
                    ));
                }
                let fp = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                let plans = self.by_fingerprint.get(&fp).cloned().ok_or_else(|| {
                    fail(format!(
                        "unknown writer schema fingerprint {} (neither one of attrib's schemas nor of extra_writer_schemas)",
                        hex(&rest[..8])
                    ))
                })?;
                (plans, &rest[8..])
            }
            _ => return Ok(None),
        };
        let plan = plans[topic_index(topic)]
            .as_ref()
            .map_err(|e| fail(e.clone()))?;
        decode_with(plan, body, self.max_json_bytes)
            .map(Some)
            .map_err(fail)
    }

    fn plans_for_id(&self, registry: &Registry, id: u32) -> Result<Arc<Plans>, String> {
        {
            let cache = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&id) {
                Some(IdEntry::Ready(p)) => return Ok(p.clone()),
                Some(IdEntry::Failed(e, at)) if at.elapsed() < REGISTRY_RETRY_AFTER => {
                    return Err(e.clone());
                }
                _ => {}
            }
        }
        let fetched = registry
            .schema_by_id(id)
            .map_err(|e| {
                format!(
                    "cannot fetch writer schema id {id} from the schema registry at {}: {e}",
                    registry.shown()
                )
            })
            .and_then(|text| {
                Schema::parse_str(&text)
                    .map_err(|e| format!("writer schema id {id} does not parse: {e}"))
            });
        let mut cache = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        match fetched {
            Ok(schema) => {
                let plans = Arc::new(plans_for(&schema));
                cache.insert(id, IdEntry::Ready(plans.clone()));
                Ok(plans)
            }
            Err(e) => {
                cache.insert(id, IdEntry::Failed(e.clone(), Instant::now()));
                Err(e)
            }
        }
    }
}

/// Decodes a bare datum (no framing) written with one of attrib's schemas, by file stem
/// (`"action"`, `"click"`, …), into attrib's JSON form. For tools and tests.
pub fn datum_to_json(stem: &str, body: &[u8]) -> Result<Vec<u8>, Invalid> {
    let own = own_schema(stem).ok_or_else(|| invalid(format!("no schema `{stem}`")))?;
    compile(&own.schema, &own.names, &own.schema, &own.names, 0)
        .and_then(|plan| decode_with(&plan, body, DEFAULT_MAX_JSON_BYTES))
        .map_err(|e| {
            Invalid::new(
                DlqReason::Malformed,
                format!("avro record cannot be decoded: {e}"),
            )
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

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

/// How an output record is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Confluent wire format with this schema id.
    Confluent(u32),
    /// Single-object encoding with this fingerprint.
    SingleObject(u64),
}

struct OutSchema {
    encoder: JsonEncoder,
    header: Vec<u8>,
    framing: Framing,
}

impl OutSchema {
    fn new(stem: &str, registry: Option<(&Registry, &str)>) -> Result<OutSchema> {
        let own = own_schema(stem).expect("embedded schema");
        let framing = match registry {
            Some((reg, topic)) => {
                Framing::Confluent(reg.register(&format!("{topic}-value"), own.text)?)
            }
            None => Framing::SingleObject(own.fingerprint),
        };
        let header = match framing {
            Framing::Confluent(id) => confluent_header(id).to_vec(),
            Framing::SingleObject(fp) => single_object_header(fp).to_vec(),
        };
        Ok(OutSchema {
            encoder: JsonEncoder::new(own.schema.clone()),
            header,
            framing,
        })
    }

    fn encode<T: serde::Serialize>(&self, v: &T) -> Result<Vec<u8>> {
        let j = serde_json::to_value(v)?;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.header);
        self.encoder.encode(&j, &mut out)?;
        Ok(out)
    }
}

/// Encodes actions and invalid actions as Avro (each only if its topic is an Avro topic).
pub struct AvroOutput {
    action: Option<OutSchema>,
    invalid: Option<OutSchema>,
}

impl AvroOutput {
    /// Both topics in Avro. With a registry, registers `action.avsc` under
    /// `<actions_topic>-value` and `invalid_action.avsc` under `<invalid_actions_topic>-value`
    /// now (an unreachable registry fails here, not per record) and frames records in the
    /// Confluent wire format; without, frames them in single-object encoding.
    pub fn new(
        registry_url: Option<&str>,
        actions_topic: &str,
        invalid_actions_topic: &str,
    ) -> Result<AvroOutput> {
        let registry = registry_url
            .filter(|u| !u.trim().is_empty())
            .map(Registry::new)
            .transpose()?;
        AvroOutput::for_topics(
            registry.as_ref(),
            Some(actions_topic),
            Some(invalid_actions_topic),
        )
    }

    /// Only the topics given are set up (and registered, with a registry).
    pub fn for_topics(
        registry: Option<&Registry>,
        actions_topic: Option<&str>,
        invalid_actions_topic: Option<&str>,
    ) -> Result<AvroOutput> {
        let reg = |topic| registry.map(|r| (r, topic));
        Ok(AvroOutput {
            action: actions_topic
                .map(|t| OutSchema::new("action", reg(t)))
                .transpose()?,
            invalid: invalid_actions_topic
                .map(|t| OutSchema::new("invalid_action", reg(t)))
                .transpose()?,
        })
    }

    /// `None` unless some output topic is Avro (`output_formats.<topic>`, else
    /// `output_format`); set up for the Avro topics only.
    pub fn from_settings(s: &Settings) -> Result<Option<AvroOutput>> {
        let actions = s.actions_format() == OutputFormat::Avro;
        let invalid = s.invalid_actions_format() == OutputFormat::Avro;
        if !actions && !invalid {
            return Ok(None);
        }
        let registry = Registry::from_settings(s)?;
        AvroOutput::for_topics(
            registry.as_ref(),
            actions.then_some(s.topics.actions.as_str()),
            invalid.then_some(s.topics.invalid_actions.as_str()),
        )
        .map(Some)
    }

    /// `None` if actions are not set up.
    pub fn action_framing(&self) -> Option<Framing> {
        self.action.as_ref().map(|o| o.framing)
    }

    /// `None` if invalid actions are not set up.
    pub fn invalid_framing(&self) -> Option<Framing> {
        self.invalid.as_ref().map(|o| o.framing)
    }

    pub fn encode_action(&self, a: &Action) -> Result<Vec<u8>> {
        self.action
            .as_ref()
            .ok_or_else(|| anyhow!("the Avro encoder is not set up for actions"))?
            .encode(a)
            .context("cannot encode action as Avro")
    }

    pub fn encode_invalid(&self, i: &InvalidAction) -> Result<Vec<u8>> {
        self.invalid
            .as_ref()
            .ok_or_else(|| anyhow!("the Avro encoder is not set up for invalid actions"))?
            .encode(i)
            .context("cannot encode invalid action as Avro")
    }
}
