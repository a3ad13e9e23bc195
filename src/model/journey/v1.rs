use super::{ExpiredClicks, Id, SubIds, inline_ids};
use crate::model::output::ReferralType;
use crate::model::records::{CustomerStatus, Item};
use crate::model::tables::Payout;
use crate::model::time::{self, Millis};
use rust_decimal::Decimal;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct StoredClick {
    pub click_id: Id,
    pub program_id: Id,
    pub partner_id: Id,
    pub occurred_at: Millis,
    pub seq: u64,
    pub shared_id: Option<Id>,
    #[serde(with = "inline_ids")]
    pub sub_ids: SubIds,
}

#[derive(Deserialize)]
pub struct Touchpoint {
    pub click_id: String,
    pub program_id: String,
    pub partner_id: String,
    #[serde(with = "time::rfc3339")]
    pub occurred_at: Millis,
}

#[derive(Deserialize)]
pub struct StoredCredit {
    pub partner_id: String,
    pub exact_weight: Decimal,
    pub weight: Decimal,
    pub referral_type: ReferralType,
    pub click_id: Option<String>,
    pub promo_code: Option<String>,
    pub referring_at: Millis,
    pub shared_id: Option<String>,
    pub sub_ids: Vec<String>,
    pub terms: Option<Payout>,
}

#[derive(Deserialize)]
pub struct CreditedOrder {
    pub customer_status: CustomerStatus,
    pub currency: Option<String>,
    pub click_id: Option<String>,
    pub locking_at: Millis,
    pub items: Vec<Item>,
    pub itemless: bool,
    pub order_discount: Decimal,
    pub credits: Vec<StoredCredit>,
    pub touchpoints: Vec<Touchpoint>,
    pub touchpoints_total: u32,
    pub amount: Decimal,
    pub payout: Decimal,
    pub reversed: bool,
}

#[derive(Deserialize)]
pub struct StoredOrder {
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    pub occurred_at: Millis,
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub promo_code: Option<String>,
    pub test: bool,
    pub expires_at: Millis,
    pub credited: Option<Box<CreditedOrder>>,
}

#[derive(Deserialize)]
pub struct Journey {
    pub clicks: Vec<StoredClick>,
    pub orders: Vec<StoredOrder>,
    pub next_seq: u64,
    pub expired: Vec<ExpiredClicks>,
}
