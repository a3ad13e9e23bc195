//! Input records: their JSON wire form, and validation into the checked types the engine uses.
//!
//! Every wire struct has only optional fields so that a missing field, a field of the wrong
//! type and an unknown enum value each get their own readable reason (docs/design.md §2). A reason is
//! what lands in the DLQ's `attrib.error` header.

use crate::model::money;
use crate::model::time::{self, Millis};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashSet;

/// A short identifier (click, program and partner ids, shared ids, sub ids): kept inline up to
/// 24 bytes, so that a click and the journey that stores it allocate nothing for their ids.
/// Serializes as a plain string (the same bincode and JSON as `String`).
pub type Id = compact_str::CompactString;

/// The input topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputTopic {
    Clicks,
    Conversions,
    /// Device → customer links (docs/design.md §6); read only with identity stitching on.
    Identities,
    PromoCodes,
    Config,
}

impl InputTopic {
    /// The name `replay` files use for the topic.
    pub fn replay_name(self) -> &'static str {
        match self {
            InputTopic::Clicks => "clicks",
            InputTopic::Conversions => "conversions",
            InputTopic::Identities => "identities",
            InputTopic::PromoCodes => "promo_codes",
            InputTopic::Config => "config",
        }
    }

    pub fn from_replay_name(s: &str) -> Option<Self> {
        Some(match s {
            "clicks" => InputTopic::Clicks,
            "conversions" => InputTopic::Conversions,
            "identities" => InputTopic::Identities,
            "promo_codes" => InputTopic::PromoCodes,
            "config" => InputTopic::Config,
            _ => return None,
        })
    }
}

/// Size limits on input (docs/design.md §2 fixes `shared_id` ≤ 255; the rest are settings).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted record value, in bytes.
    pub max_record_bytes: usize,
    /// Most items on one conversion or modification.
    pub max_items: usize,
    /// Longest id, code, sku, category, currency or other short string, in characters.
    pub max_id_len: usize,
    /// Longest `landing_url`, in characters.
    pub max_url_len: usize,
    /// Most `sub_ids` on a click.
    pub max_sub_ids: usize,
    /// Most clicks kept per journey; the oldest are dropped first (and counted).
    pub max_clicks_per_journey: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 1 << 20,
            max_items: 1000,
            max_id_len: 255,
            max_url_len: 4096,
            max_sub_ids: 20,
            max_clicks_per_journey: 1000,
        }
    }
}

/// A `shared_id` is at most this long (docs/design.md §2).
pub const MAX_SHARED_ID_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickSource {
    TrackingLink,
    VanityUrl,
    UniqueDomain,
    StatTag,
    App,
    Api,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    New,
    Returning,
    #[default]
    Unknown,
}

impl CustomerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::New => "new",
            CustomerStatus::Returning => "returning",
            CustomerStatus::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoPolicy {
    Always,
    IfInvolved,
    IfWinner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProgramKind {
    #[default]
    Standard,
    Creator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CreditPolicy {
    #[default]
    LastClick,
    FirstClick,
    Linear,
    PositionBased,
    TimeDecay,
}

/// Credit groups, ordered so that a higher group compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CreditGroup {
    NonPreferred,
    Standard,
    #[default]
    Preferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    All,
    Specific,
}

// ---------------------------------------------------------------------------------------------
// Checked records
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Click {
    pub click_id: Id,
    pub program_id: Id,
    pub partner_id: Id,
    pub occurred_at: Millis,
    pub device_id: Option<Id>,
    pub customer_id: Option<Id>,
    pub shared_id: Option<Id>,
    pub sub_ids: Vec<Id>,
}

/// One line of an order. Itemless conversions carry one item with no sku or category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub sku: Option<String>,
    pub category: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    pub occurred_at: Millis,
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub click_id: Option<String>,
    pub promo_code: Option<String>,
    pub customer_status: CustomerStatus,
    pub currency: Option<String>,
    pub order_discount: Decimal,
    /// Normalised: an itemless conversion has one item priced at `order_subtotal` (0 if absent).
    pub items: Vec<Item>,
    pub itemless: bool,
    pub test: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Modification {
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    pub occurred_at: Millis,
    /// (sku, new quantity)
    pub items: Vec<(String, Decimal)>,
    pub order_subtotal: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reversal {
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    pub occurred_at: Millis,
}

/// An identify record (docs/design.md §6): the device belongs to the customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Identify {
    pub device_id: Id,
    pub customer_id: Id,
    pub occurred_at: Millis,
}

/// A journey event: what arrives on the partitioned topics.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Click(Click),
    Conversion(Conversion),
    Modification(Modification),
    Reversal(Reversal),
    /// Links a device to a customer; changes no journey by itself.
    Identify(Identify),
}

impl Event {
    pub fn occurred_at(&self) -> Millis {
        match self {
            Event::Click(c) => c.occurred_at,
            Event::Conversion(c) => c.occurred_at,
            Event::Modification(m) => m.occurred_at,
            Event::Reversal(r) => r.occurred_at,
            Event::Identify(i) => i.occurred_at,
        }
    }

    /// The record's `device_id` and `customer_id`.
    pub fn ids(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Event::Click(c) => (c.device_id.as_deref(), c.customer_id.as_deref()),
            Event::Conversion(c) => (c.device_id.as_deref(), c.customer_id.as_deref()),
            Event::Modification(m) => (m.device_id.as_deref(), m.customer_id.as_deref()),
            Event::Reversal(r) => (r.device_id.as_deref(), r.customer_id.as_deref()),
            Event::Identify(i) => (Some(&i.device_id), Some(&i.customer_id)),
        }
    }

    /// The record's name in messages: `click`, `conversion`, `modification`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Click(_) => "click",
            Event::Conversion(_) => "conversion",
            Event::Modification(_) => "modification",
            Event::Reversal(_) => "reversal",
            Event::Identify(_) => "identify",
        }
    }

    /// The journey key derived from the payload, for records sent with a null key.
    pub fn derived_key(&self) -> Option<&str> {
        let (device, customer) = self.ids();
        device.or(customer)
    }
}

// ---------------------------------------------------------------------------------------------
// Wire forms
// ---------------------------------------------------------------------------------------------

/// A string field that is only checked, not kept: borrowed from the input where it has no
/// escapes. Type errors read as for `String` ("expected a string").
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[derive(Deserialize)]
struct RawClick<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    click_id: Option<Id>,
    program_id: Option<Id>,
    partner_id: Option<Id>,
    #[serde(default, with = "time::rfc3339::option")]
    occurred_at: Option<Millis>,
    device_id: Option<Id>,
    customer_id: Option<Id>,
    #[serde(borrow)]
    media_id: Option<Text<'a>>,
    shared_id: Option<Id>,
    sub_ids: Option<Vec<Id>>,
    #[allow(dead_code)]
    source: Option<ClickSource>,
    #[serde(borrow)]
    landing_url: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RawIdentify<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    device_id: Option<Id>,
    customer_id: Option<Id>,
    #[serde(default, with = "time::rfc3339::option")]
    occurred_at: Option<Millis>,
}

#[derive(Deserialize)]
struct RawItem {
    sku: Option<String>,
    category: Option<String>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    quantity: Option<Decimal>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    unit_price: Option<Decimal>,
}

#[derive(Deserialize)]
struct RawConversion {
    #[serde(rename = "type")]
    kind: Option<String>,
    program_id: Option<String>,
    event_type: Option<String>,
    order_id: Option<String>,
    #[serde(default, with = "time::rfc3339::option")]
    occurred_at: Option<Millis>,
    device_id: Option<String>,
    customer_id: Option<String>,
    click_id: Option<String>,
    promo_code: Option<String>,
    customer_status: Option<CustomerStatus>,
    currency: Option<String>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    order_subtotal: Option<Decimal>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    order_discount: Option<Decimal>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    order_tax: Option<Decimal>,
    #[serde(default, deserialize_with = "money::deserialize_opt")]
    order_shipping: Option<Decimal>,
    items: Option<Vec<RawItem>>,
    test: Option<bool>,
    #[allow(dead_code)]
    reason: Option<String>,
}

/// A journey record (clicks or conversions topic) in its wire form: parsed, not yet checked.
/// `replay` parses it straight out of its input line with [`RawEventSeed`].
pub struct RawEvent<'a>(RawEventKind<'a>);

enum RawEventKind<'a> {
    Click(RawClick<'a>),
    Conversion(RawConversion),
}

impl RawEvent<'_> {
    /// Checks the record as [`decode_click`] or [`decode_conversion_topic`] would.
    pub fn validate(self, limits: &Limits) -> Result<Event, Invalid> {
        match self.0 {
            RawEventKind::Click(r) => validate_click(r, limits).map(Event::Click),
            RawEventKind::Conversion(r) => validate_conversion_topic(r, limits),
        }
    }
}

/// Deserializes the wire form of a journey topic's record. A failure carries no readable
/// reason: callers fall back to [`decode_click`] or [`decode_conversion_topic`] for that.
#[derive(Debug, Clone, Copy)]
pub struct RawEventSeed(pub JourneyTopic);

/// The topics whose records are journey events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JourneyTopic {
    Clicks,
    Conversions,
}

impl<'de> serde::de::DeserializeSeed<'de> for RawEventSeed {
    type Value = RawEvent<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawEvent<'de>, D::Error> {
        Ok(RawEvent(match self.0 {
            JourneyTopic::Clicks => RawEventKind::Click(RawClick::deserialize(d)?),
            JourneyTopic::Conversions => RawEventKind::Conversion(RawConversion::deserialize(d)?),
        }))
    }
}

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

fn check_type(
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

fn non_negative(what: &str, field: &str, d: Decimal) -> Result<Decimal, Invalid> {
    if d.is_sign_negative() && !d.is_zero() {
        return Err(invalid(format!(
            "invalid {what}: field `{field}` is negative ({d})"
        )));
    }
    Ok(d)
}

fn whole_quantity(what: &str, field: &str, d: Decimal) -> Result<Decimal, Invalid> {
    non_negative(what, field, d)?;
    if !d.fract().is_zero() {
        return Err(invalid(format!(
            "invalid {what}: field `{field}` is not a whole number ({d})"
        )));
    }
    Ok(d.normalize())
}

/// Decodes and validates a record of the clicks topic.
pub fn decode_click(bytes: &[u8], limits: &Limits) -> Result<Click, Invalid> {
    validate_click(parse_json("click", bytes)?, limits)
}

/// Checks a parsed click.
fn validate_click(r: RawClick, limits: &Limits) -> Result<Click, Invalid> {
    check_type(
        "click",
        r.kind.as_ref().map(AsRef::as_ref),
        &["click"],
        "clicks",
    )?;
    let w = "click";
    let click = Click {
        click_id: required_id(w, "click_id", r.click_id, limits)?,
        program_id: required_id(w, "program_id", r.program_id, limits)?,
        partner_id: required_id(w, "partner_id", r.partner_id, limits)?,
        occurred_at: required(w, "occurred_at", r.occurred_at)?,
        device_id: optional_id(w, "device_id", r.device_id, limits)?,
        customer_id: optional_id(w, "customer_id", r.customer_id, limits)?,
        shared_id: r.shared_id,
        sub_ids: r.sub_ids.unwrap_or_default(),
    };
    optional_id(w, "media_id", r.media_id, limits)?;
    if let Some(s) = &click.shared_id {
        check_len(w, "shared_id", s, MAX_SHARED_ID_LEN)?;
    }
    if click.sub_ids.len() > limits.max_sub_ids {
        return Err(invalid(format!(
            "invalid click: field `sub_ids` has {} entries, more than {}",
            click.sub_ids.len(),
            limits.max_sub_ids
        )));
    }
    for (i, s) in click.sub_ids.iter().enumerate() {
        check_len(w, &format!("sub_ids[{i}]"), s, limits.max_id_len)?;
    }
    if let Some(u) = &r.landing_url {
        check_len(w, "landing_url", u.as_ref(), limits.max_url_len)?;
    }
    Ok(click)
}

/// Decodes and validates a record of the identities topic (docs/design.md §6).
pub fn decode_identify(bytes: &[u8], limits: &Limits) -> Result<Identify, Invalid> {
    let r: RawIdentify = parse_json("identify", bytes)?;
    check_type(
        "identify",
        r.kind.as_ref().map(AsRef::as_ref),
        &["identify"],
        "identities",
    )?;
    let w = "identify";
    Ok(Identify {
        device_id: required_id(w, "device_id", r.device_id, limits)?,
        customer_id: required_id(w, "customer_id", r.customer_id, limits)?,
        occurred_at: required(w, "occurred_at", r.occurred_at)?,
    })
}

/// Decodes and validates a record of the conversions topic (conversion, modification, reversal).
pub fn decode_conversion_topic(bytes: &[u8], limits: &Limits) -> Result<Event, Invalid> {
    validate_conversion_topic(parse_json("conversion", bytes)?, limits)
}

/// Checks a parsed record of the conversions topic.
fn validate_conversion_topic(r: RawConversion, limits: &Limits) -> Result<Event, Invalid> {
    let kind = r.kind.clone().unwrap_or_else(|| "conversion".to_string());
    check_type(
        "conversion",
        Some(&kind),
        &["conversion", "modification", "reversal"],
        "conversions",
    )?;
    let w = kind.as_str();
    let program_id = required_id(w, "program_id", r.program_id, limits)?;
    let event_type = required_id(w, "event_type", r.event_type, limits)?;
    let order_id = required_id(w, "order_id", r.order_id, limits)?;
    let occurred_at = required(w, "occurred_at", r.occurred_at)?;
    let device_id = optional_id(w, "device_id", r.device_id, limits)?;
    let customer_id = optional_id(w, "customer_id", r.customer_id, limits)?;
    let items = r.items.unwrap_or_default();
    if items.len() > limits.max_items {
        return Err(invalid(format!(
            "invalid {w}: field `items` has {} entries, more than {}",
            items.len(),
            limits.max_items
        )));
    }
    match w {
        "reversal" => Ok(Event::Reversal(Reversal {
            device_id,
            customer_id,
            program_id,
            event_type,
            order_id,
            occurred_at,
        })),
        "modification" => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.into_iter().enumerate() {
                let sku = required_id(w, &format!("items[{i}].sku"), it.sku, limits)?;
                let q = required(w, &format!("items[{i}].quantity"), it.quantity)?;
                let q = whole_quantity(w, &format!("items[{i}].quantity"), q)?;
                if !seen.insert(sku.clone()) {
                    return Err(invalid(format!(
                        "invalid modification: sku `{sku}` is listed more than once"
                    )));
                }
                out.push((sku, q));
            }
            let order_subtotal = match r.order_subtotal {
                Some(d) => Some(non_negative(w, "order_subtotal", d)?),
                None => None,
            };
            Ok(Event::Modification(Modification {
                device_id,
                customer_id,
                program_id,
                event_type,
                order_id,
                occurred_at,
                items: out,
                order_subtotal,
            }))
        }
        _ => {
            for (f, v) in [
                ("order_subtotal", r.order_subtotal),
                ("order_discount", r.order_discount),
                ("order_tax", r.order_tax),
                ("order_shipping", r.order_shipping),
            ] {
                if let Some(v) = v {
                    non_negative(w, f, v)?;
                }
            }
            let itemless = items.is_empty();
            let mut out = Vec::with_capacity(items.len().max(1));
            if itemless {
                out.push(Item {
                    sku: None,
                    category: None,
                    quantity: Decimal::ONE,
                    unit_price: r.order_subtotal.unwrap_or(Decimal::ZERO),
                });
            }
            let mut seen = HashSet::new();
            for (i, it) in items.into_iter().enumerate() {
                let quantity = match it.quantity {
                    Some(q) => whole_quantity(w, &format!("items[{i}].quantity"), q)?,
                    None => Decimal::ONE,
                };
                let unit_price = match it.unit_price {
                    Some(p) => non_negative(w, &format!("items[{i}].unit_price"), p)?,
                    None => Decimal::ZERO,
                };
                let sku = optional_id(w, &format!("items[{i}].sku"), it.sku, limits)?;
                let category =
                    optional_id(w, &format!("items[{i}].category"), it.category, limits)?;
                if let Some(s) = &sku {
                    if !seen.insert(s.clone()) {
                        return Err(invalid(format!(
                            "invalid conversion: sku `{s}` is listed more than once"
                        )));
                    }
                }
                out.push(Item {
                    sku,
                    category,
                    quantity,
                    unit_price,
                });
            }
            let order_discount = r.order_discount.unwrap_or(Decimal::ZERO);
            let total: Decimal = out.iter().map(|i| i.quantity * i.unit_price).sum();
            if order_discount > total {
                return Err(invalid(format!(
                    "invalid conversion: field `order_discount` ({order_discount}) is more than the item total ({total})"
                )));
            }
            Ok(Event::Conversion(Conversion {
                program_id,
                event_type,
                order_id,
                occurred_at,
                device_id,
                customer_id,
                click_id: optional_id(w, "click_id", r.click_id, limits)?,
                promo_code: optional_id(w, "promo_code", r.promo_code, limits)?,
                customer_status: r.customer_status.unwrap_or_default(),
                currency: optional_id(w, "currency", r.currency, limits)?,
                order_discount,
                items: out,
                itemless,
                test: r.test.unwrap_or(false),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(s: &str) -> Result<Event, Invalid> {
        decode_conversion_topic(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn reasons_name_the_field() {
        let l = Limits::default();
        let e = decode_click(br#"{"type":"click","program_id":"p","partner_id":"x","occurred_at":"2026-01-01T00:00:00Z"}"#, &l).unwrap_err();
        assert_eq!(e.0, "invalid click: missing required field `click_id`");
        let e = decode_click(br#"{"click_id":"c","program_id":"p","partner_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"tv"}"#, &l).unwrap_err();
        assert!(
            e.0.contains("`source`") && e.0.contains("unknown variant `tv`"),
            "{}",
            e.0
        );
        let e = decode_click(br#"{"click_id":5,"program_id":"p","partner_id":"x","occurred_at":"2026-01-01T00:00:00Z"}"#, &l).unwrap_err();
        assert!(
            e.0.contains("`click_id`") && e.0.contains("integer `5`"),
            "{}",
            e.0
        );
        let e = decode_click(br#"{"type":"conversion"}"#, &l).unwrap_err();
        assert_eq!(
            e.0,
            "record of type `conversion` does not belong on the clicks topic"
        );
        let e = decode_click(b"not json", &l).unwrap_err();
        assert!(e.0.starts_with("click is not a JSON object"), "{}", e.0);
    }

    #[test]
    fn each_failure_has_its_reason() {
        let l = Limits::default();
        let reason = |s: &str| decode_click(s.as_bytes(), &l).unwrap_err().reason();
        assert_eq!(reason("not json"), DlqReason::Malformed);
        assert_eq!(reason("{} trailing"), DlqReason::Malformed);
        assert_eq!(reason(r#"{"type":"click"}"#), DlqReason::MissingField);
        assert_eq!(reason(r#"{"type":"conversion"}"#), DlqReason::WrongType);
        assert_eq!(reason(r#"{"click_id":5}"#), DlqReason::InvalidValue);
        let labels: HashSet<&str> = DlqReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DlqReason::ALL.len());
    }

    #[test]
    fn integrity_checks() {
        let base = r#""program_id":"p","event_type":"sale","order_id":"o","occurred_at":"2026-01-01T00:00:00Z""#;
        let e = conv(&format!(
            r#"{{{base},"items":[{{"sku":"A","quantity":1.5,"unit_price":"1"}}]}}"#
        ))
        .unwrap_err();
        assert!(
            e.0.contains("items[0].quantity") && e.0.contains("whole"),
            "{}",
            e.0
        );
        let e = conv(&format!(r#"{{{base},"items":[{{"sku":"A","quantity":1,"unit_price":"1"}},{{"sku":"A","quantity":1,"unit_price":"1"}}]}}"#)).unwrap_err();
        assert!(e.0.contains("sku `A`"), "{}", e.0);
        let e = conv(&format!(r#"{{{base},"order_discount":"3","items":[{{"sku":"A","quantity":1,"unit_price":"2"}}]}}"#)).unwrap_err();
        assert!(e.0.contains("order_discount"), "{}", e.0);
        let e = conv(&format!(r#"{{{base},"order_tax":"-1"}}"#)).unwrap_err();
        assert!(
            e.0.contains("order_tax") && e.0.contains("negative"),
            "{}",
            e.0
        );
        let Event::Conversion(c) = conv(&format!(r#"{{{base},"order_subtotal":12.5}}"#)).unwrap()
        else {
            panic!()
        };
        assert!(c.itemless);
        assert_eq!(c.items[0].unit_price.to_string(), "12.5");
    }
}
