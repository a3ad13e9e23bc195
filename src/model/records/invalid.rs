//! Why a record is invalid (its DLQ reason and message), and the field checks that say so.

use super::Limits;
use rust_decimal::Decimal;
use serde::Deserialize;

/// Why a record goes to the DLQ: a small fixed set, the `reason` label of
/// `attrib_dlq_records_total` (the text of the DLQ's `attrib.error` header says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DlqReason {
    /// Not decodable: not JSON, not an object, trailing data, an Avro record that cannot be read.
    Malformed,
    /// A required field is missing (or, with stitching on, a change carries neither id).
    MissingField,
    /// A record of a type that does not belong on its topic.
    WrongType,
    /// A key that is missing where one is needed, or does not match the record.
    BadKey,
    /// A null value where a record is needed.
    Tombstone,
    /// Larger than `limits.max_record_bytes`.
    TooLarge,
    /// A field with a wrong type or a value that makes no sense (the default).
    InvalidValue,
}

impl DlqReason {
    /// Every reason, for metrics and alert tests.
    pub const ALL: [DlqReason; 7] = [
        DlqReason::Malformed,
        DlqReason::MissingField,
        DlqReason::WrongType,
        DlqReason::BadKey,
        DlqReason::Tombstone,
        DlqReason::TooLarge,
        DlqReason::InvalidValue,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DlqReason::Malformed => "malformed",
            DlqReason::MissingField => "missing_field",
            DlqReason::WrongType => "wrong_type",
            DlqReason::BadKey => "bad_key",
            DlqReason::Tombstone => "tombstone",
            DlqReason::TooLarge => "too_large",
            DlqReason::InvalidValue => "invalid_value",
        }
    }
}

/// A decoding or validation failure: its reason, and the text of the DLQ's `attrib.error`
/// header (`.0`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String, pub DlqReason);

impl Invalid {
    pub fn new(reason: DlqReason, msg: impl Into<String>) -> Invalid {
        Invalid(msg.into(), reason)
    }

    pub fn reason(&self) -> DlqReason {
        self.1
    }
}

/// A value that makes no sense ([`DlqReason::InvalidValue`]); the other reasons are given with
/// [`Invalid::new`].
pub fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid::new(DlqReason::InvalidValue, msg)
}

/// Parses JSON into a wire struct, naming the field path of a type error. The fast path
/// parses without tracking paths; only a record that fails is parsed again to name the field.
pub(crate) fn parse_json<'a, T: Deserialize<'a>>(
    what: &str,
    bytes: &'a [u8],
) -> Result<T, Invalid> {
    if let Ok(v) = serde_json::from_slice::<T>(bytes) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            Invalid::new(
                DlqReason::Malformed,
                format!("{what} is not a JSON object: {inner}"),
            )
        } else {
            invalid(format!(
                "invalid {what}: field `{path}`: {}",
                strip_position(&inner)
            ))
        }
    })?;
    de.end().map_err(|e| {
        Invalid::new(
            DlqReason::Malformed,
            format!("{what} has trailing data: {e}"),
        )
    })?;
    Ok(value)
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub(crate) fn required<T>(what: &str, field: &str, v: Option<T>) -> Result<T, Invalid> {
    v.ok_or_else(|| {
        Invalid::new(
            DlqReason::MissingField,
            format!("invalid {what}: missing required field `{field}`"),
        )
    })
}

pub(crate) fn required_id<S: AsRef<str>>(
    what: &str,
    field: &str,
    v: Option<S>,
    limits: &Limits,
) -> Result<S, Invalid> {
    let v = required(what, field, v)?;
    if v.as_ref().is_empty() {
        return Err(invalid(format!("invalid {what}: field `{field}` is empty")));
    }
    check_len(what, field, v.as_ref(), limits.max_id_len)?;
    Ok(v)
}

pub(crate) fn optional_id<S: AsRef<str>>(
    what: &str,
    field: &str,
    v: Option<S>,
    limits: &Limits,
) -> Result<Option<S>, Invalid> {
    if let Some(s) = &v {
        check_len(what, field, s.as_ref(), limits.max_id_len)?;
    }
    Ok(v)
}

pub(crate) fn check_len(what: &str, field: &str, s: &str, max: usize) -> Result<(), Invalid> {
    // At most one character per byte: a string of at most `max` bytes needs no count.
    if s.len() <= max {
        return Ok(());
    }
    let n = s.chars().count();
    if n > max {
        return Err(invalid(format!(
            "invalid {what}: field `{field}` is {n} characters long, more than {max}"
        )));
    }
    Ok(())
}

pub(super) fn check_type(
    what: &str,
    kind: Option<&str>,
    allowed: &[&str],
    topic: &str,
) -> Result<(), Invalid> {
    if let Some(k) = kind {
        if !allowed.contains(&k) {
            return Err(Invalid::new(
                DlqReason::WrongType,
                format!("record of type `{k}` does not belong on the {topic} topic"),
            ));
        }
    }
    let _ = what;
    Ok(())
}

pub(super) fn non_negative(what: &str, field: &str, d: Decimal) -> Result<Decimal, Invalid> {
    if d.is_sign_negative() && !d.is_zero() {
        return Err(invalid(format!(
            "invalid {what}: field `{field}` is negative ({d})"
        )));
    }
    Ok(d)
}

pub(super) fn whole_quantity(what: &str, field: &str, d: Decimal) -> Result<Decimal, Invalid> {
    non_negative(what, field, d)?;
    if !d.fract().is_zero() {
        return Err(invalid(format!(
            "invalid {what}: field `{field}` is not a whole number ({d})"
        )));
    }
    Ok(d.normalize())
}
