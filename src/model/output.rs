//! What attrib writes: attributed actions and invalid actions (docs/design.md §2).

use crate::model::money;
use crate::model::records::CustomerStatus;
use crate::model::time::{self, Millis};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Modified,
    Reversed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Modified => "modified",
            Change::Reversed => "reversed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Reversed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ReferralType {
    Click,
    PromoCode,
    CrossProgramClick,
}

impl ReferralType {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralType::Click => "click",
            ReferralType::PromoCode => "promo_code",
            ReferralType::CrossProgramClick => "cross_program_click",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    UnknownProgram,
    DuplicateOrder,
    PromoCodeNotAssigned,
    PartnerNotActive,
    NoValidReferrer,
    OutsideReferralWindow,
    EventTypeNotInContract,
    UnknownOrder,
    ActionLocked,
    AlreadyReversed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnknownProgram => "unknown_program",
            Reason::DuplicateOrder => "duplicate_order",
            Reason::PromoCodeNotAssigned => "promo_code_not_assigned",
            Reason::PartnerNotActive => "partner_not_active",
            Reason::NoValidReferrer => "no_valid_referrer",
            Reason::OutsideReferralWindow => "outside_referral_window",
            Reason::EventTypeNotInContract => "event_type_not_in_contract",
            Reason::UnknownOrder => "unknown_order",
            Reason::ActionLocked => "action_locked",
            Reason::AlreadyReversed => "already_reversed",
        }
    }
}

/// One journey click as listed in an action's `journey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touchpoint {
    pub click_id: String,
    /// The click's `device_id` (docs/design.md §2, §6 "What the output shows").
    pub device_id: Option<String>,
    pub program_id: String,
    pub partner_id: String,
    #[serde(with = "time::rfc3339")]
    pub occurred_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyView {
    pub touchpoints: Vec<Touchpoint>,
    pub total: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credit {
    pub partner_id: String,
    #[serde(serialize_with = "money::serialize6")]
    pub weight: Decimal,
    #[serde(serialize_with = "money::serialize6")]
    pub payout: Decimal,
    pub referral_type: ReferralType,
    pub click_id: Option<String>,
    /// The `device_id` of the standing click; `None` when it had none and on promo-code credits.
    pub device_id: Option<String>,
    pub promo_code: Option<String>,
    #[serde(with = "time::rfc3339")]
    pub referring_at: Millis,
    pub shared_id: Option<String>,
    pub sub_ids: Vec<String>,
}

/// An attributed action, keyed by `action_id` on the actions topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub action_id: String,
    pub change: Change,
    pub state: State,
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    #[serde(with = "time::rfc3339")]
    pub occurred_at: Millis,
    #[serde(with = "time::rfc3339")]
    pub processed_at: Millis,
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub customer_status: CustomerStatus,
    pub currency: Option<String>,
    #[serde(serialize_with = "money::serialize6")]
    pub amount: Decimal,
    #[serde(serialize_with = "money::serialize6")]
    pub delta_amount: Decimal,
    #[serde(serialize_with = "money::serialize6")]
    pub payout: Decimal,
    #[serde(serialize_with = "money::serialize6")]
    pub delta_payout: Decimal,
    pub credits: Vec<Credit>,
    pub journey: JourneyView,
    pub promo_code: Option<String>,
    pub click_id: Option<String>,
    #[serde(with = "time::rfc3339")]
    pub locking_at: Millis,
    pub test: bool,
}

/// A conversion (or change) that earned nobody credit, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidAction {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    #[serde(with = "time::rfc3339")]
    pub occurred_at: Millis,
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub promo_code: Option<String>,
    pub reason: Reason,
    pub detail: Option<String>,
    pub test: bool,
}

impl InvalidAction {
    /// `<program_id>/<event_type>/<order_id>`
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.program_id, self.event_type, self.order_id)
    }
}

/// What the engine decides for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Action(Box<Action>),
    Invalid(Box<InvalidAction>),
}

/// The deterministic id of the action for an order: a UUID v5 of (program, event type, order).
pub fn action_id(program_id: &str, event_type: &str, order_id: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1e_4c2a_9b7d_4e3f_8a21_5d0c_7b9e_a1f4);
    let mut name = Vec::with_capacity(program_id.len() + event_type.len() + order_id.len() + 2);
    name.extend_from_slice(program_id.as_bytes());
    name.push(0);
    name.extend_from_slice(event_type.as_bytes());
    name.push(0);
    name.extend_from_slice(order_id.as_bytes());
    uuid::Uuid::new_v5(&NAMESPACE, &name).to_string()
}

/// One output record, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum OutRecord {
    Action(Box<Action>),
    Invalid(Box<InvalidAction>),
    Dlq(Box<DlqRecord>),
}

/// A record that could not be decoded or validated: the original key and value, untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct DlqRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Why, as a metric label.
    pub reason: crate::model::records::DlqReason,
    /// What is wrong, for the `attrib.error` header.
    pub error: String,
    pub source_topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DlqRecord {
    /// A low-cardinality label for metrics.
    pub fn reason_label(&self) -> &'static str {
        self.reason.label()
    }
}
