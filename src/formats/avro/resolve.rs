//! Resolution plans: how a writer schema is read as attrib's schema, compiled once per
//! (writer schema, topic).

use super::decode::decimal_text;
use super::schemas::{TOPICS, deref, kind, names_of, own_schema, same_name, topic_stems};
use super::{MAX_DEPTH, Names};
use crate::model::records::InputTopic;
use crate::model::time::format_rfc3339;
use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, RecordSchema, UuidSchema};
use serde_json::Value as Json;
use std::sync::Arc;

/// How a writer value is read and written out as JSON.
#[derive(Debug)]
pub(super) enum Plan {
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
pub(super) struct RecordPlan {
    pub(super) steps: Vec<Step>,
    /// `"name":value` of attrib's fields the writer lacks, from their defaults.
    pub(super) defaults: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub(super) enum Step {
    /// `"name":` then the value.
    Field(Vec<u8>, Plan),
    /// A writer field attrib does not know: read and dropped.
    Skip(Plan),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    Number,
    /// A time: divided by this to get milliseconds, written as RFC 3339.
    Millis(i64),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Text {
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

pub(super) fn is_timestamp(s: &Schema) -> Option<i64> {
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
pub(super) fn compile(
    w: &Schema,
    wn: &Names,
    r: &Schema,
    rn: &Names,
    depth: usize,
) -> Result<Plan, String> {
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
pub(super) type Plans = [Result<Arc<Plan>, String>; 5];

pub(super) fn plans_for(schema: &Schema) -> Plans {
    let names = names_of(schema);
    TOPICS.map(|t| compile_top(schema, &names, t, 0).map(Arc::new))
}
