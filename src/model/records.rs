//! Input records: their JSON wire form, and validation into the checked types the engine uses.
//!
//! Every wire struct has only optional fields so that a missing field, a field of the wrong
//! type and an unknown enum value each get their own readable reason (docs/design.md §2). A reason is
//! what lands in the DLQ's `attrib.error` header.
mod decode;
mod invalid;
#[cfg(test)]
mod tests;

pub use decode::{
    JourneyTopic, RawEvent, RawEventSeed, decode_click, decode_conversion_topic, decode_identify,
};
pub use invalid::{DlqReason, Invalid, invalid};
pub(crate) use invalid::{check_len, optional_id, parse_json, required, required_id};

use crate::model::time::Millis;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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
