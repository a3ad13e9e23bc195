//! attrib's own schemas (embedded from `schemas/`), the record types each input topic
//! carries, and helpers over parsed schemas.

use super::single_object::{crc64_avro, parsing_canonical_form};
use super::{MAX_DEPTH, Names};
use crate::model::records::InputTopic;
use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name};
use std::sync::OnceLock;

/// attrib's schemas, embedded: (file stem in `schemas/`, text).
pub const SCHEMA_FILES: [(&str, &str); 11] = [
    ("click", include_str!("../../../schemas/click.avsc")),
    (
        "promo_code",
        include_str!("../../../schemas/promo_code.avsc"),
    ),
    (
        "conversion",
        include_str!("../../../schemas/conversion.avsc"),
    ),
    (
        "modification",
        include_str!("../../../schemas/modification.avsc"),
    ),
    ("reversal", include_str!("../../../schemas/reversal.avsc")),
    ("identify", include_str!("../../../schemas/identify.avsc")),
    ("program", include_str!("../../../schemas/program.avsc")),
    ("contract", include_str!("../../../schemas/contract.avsc")),
    (
        "cross_program",
        include_str!("../../../schemas/cross_program.avsc"),
    ),
    ("action", include_str!("../../../schemas/action.avsc")),
    (
        "invalid_action",
        include_str!("../../../schemas/invalid_action.avsc"),
    ),
];

/// One of attrib's schemas, parsed.
pub struct OwnSchema {
    /// File stem in `schemas/` (`click`, `promo_code`, …).
    pub stem: &'static str,
    /// The `.avsc` text.
    pub text: &'static str,
    pub schema: Schema,
    pub(super) names: Names,
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
pub(super) fn topic_stems(topic: InputTopic) -> &'static [&'static str] {
    match topic {
        InputTopic::Clicks => &["click"],
        InputTopic::Conversions => &["conversion", "modification", "reversal"],
        InputTopic::Identities => &["identify"],
        InputTopic::PromoCodes => &["promo_code"],
        InputTopic::Config => &["program", "contract", "cross_program"],
    }
}

/// The input topics, in the order of [`topic_index`].
pub(super) const TOPICS: [InputTopic; 5] = [
    InputTopic::Clicks,
    InputTopic::Conversions,
    InputTopic::PromoCodes,
    InputTopic::Config,
    InputTopic::Identities,
];

pub(super) fn topic_index(t: InputTopic) -> usize {
    match t {
        InputTopic::Clicks => 0,
        InputTopic::Conversions => 1,
        InputTopic::PromoCodes => 2,
        InputTopic::Config => 3,
        InputTopic::Identities => 4,
    }
}

// ---------------------------------------------------------------------------------------------
// Schema helpers
// ---------------------------------------------------------------------------------------------

pub(super) fn names_of(schema: &Schema) -> Names {
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

pub(super) fn deref<'a>(s: &'a Schema, names: &'a Names) -> Result<&'a Schema, String> {
    match s {
        Schema::Ref { name } => names
            .get(&name.fullname(None))
            .ok_or_else(|| format!("unknown type `{}`", name.fullname(None))),
        _ => Ok(s),
    }
}

pub(super) fn kind(s: &Schema) -> String {
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

pub(super) fn same_name(
    w: &Name,
    r: &Name,
    r_aliases: Option<&Vec<apache_avro::schema::Alias>>,
) -> bool {
    w.fullname(None) == r.fullname(None)
        || w.name() == r.name()
        || r_aliases.is_some_and(|a| {
            a.iter()
                .any(|a| a.fullname(None) == w.fullname(None) || a.name() == w.name())
        })
}
