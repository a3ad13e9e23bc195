//! Input records' wire forms (parsed, not yet checked) and their validation into the
//! checked records.

use super::invalid::{
    check_len, check_type, non_negative, optional_id, parse_json, required, required_id,
    whole_quantity,
};
use super::{
    Click, ClickSource, Conversion, CustomerStatus, Event, Id, Identify, Invalid, Item, Limits,
    MAX_SHARED_ID_LEN, Modification, Reversal, invalid,
};
use crate::model::money;
use crate::model::time::{self, Millis};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;

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
