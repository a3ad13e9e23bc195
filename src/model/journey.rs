//! The state of one journey key: its clicks and its orders. Stored in RocksDB (bincode) and
//! mirrored to the changelog; only the engine changes it.
//!
//! **Encoding.** A stored journey is a version header and the bincode of [`Journey`]
//! ([`Journey::encode`]). Journeys written before the header existed (version 1: no
//! `device_id` on stored clicks, credits and touchpoints) have no header and still decode, with
//! those `device_id`s `None` ([`Journey::decode`]).

use crate::model::output::{ReferralType, Touchpoint};
use crate::model::records::{CustomerStatus, Id, Item};
use crate::model::tables::Payout;
use crate::model::time::Millis;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClick {
    pub click_id: Id,
    /// The click's `device_id`, shown on the credits and touchpoints it gives.
    pub device_id: Option<Id>,
    pub program_id: Id,
    pub partner_id: Id,
    pub occurred_at: Millis,
    /// Arrival order within the journey: of two clicks at the same time, the later record
    /// counts as later.
    pub seq: u64,
    pub shared_id: Option<Id>,
    /// Inline when there is at most one (the common case): no allocation per click.
    #[serde(with = "inline_ids")]
    pub sub_ids: SubIds,
}

/// The sub ids of a stored click.
pub type SubIds = smallvec::SmallVec<[Id; 1]>;

/// [`SubIds`] as a plain sequence: the same encoding as a `Vec`.
mod inline_ids {
    use super::{Id, SubIds};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ids: &SubIds, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SubIds, D::Error> {
        Vec::<Id>::deserialize(d).map(SubIds::from_vec)
    }
}

impl StoredClick {
    pub fn touchpoint(&self) -> Touchpoint {
        Touchpoint {
            click_id: self.click_id.to_string(),
            device_id: self.device_id.as_ref().map(|d| d.to_string()),
            program_id: self.program_id.to_string(),
            partner_id: self.partner_id.to_string(),
            occurred_at: self.occurred_at,
        }
    }
}

/// One partner's share of a credited order, with the contract terms it was paid under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCredit {
    pub partner_id: String,
    /// The exact weight; payouts are computed from it.
    pub exact_weight: Decimal,
    /// The published (rounded) weight.
    pub weight: Decimal,
    pub referral_type: ReferralType,
    pub click_id: Option<String>,
    /// The standing click's `device_id`; `None` for a promo-code credit.
    pub device_id: Option<String>,
    pub promo_code: Option<String>,
    pub referring_at: Millis,
    pub shared_id: Option<String>,
    pub sub_ids: Vec<String>,
    /// The contract's payout terms as they stood when the conversion was attributed.
    pub terms: Option<Payout>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The previous emission's rounded amount and payout, for deltas.
    pub amount: Decimal,
    pub payout: Decimal,
    pub reversed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredOrder {
    pub program_id: String,
    pub event_type: String,
    pub order_id: String,
    pub occurred_at: Millis,
    pub device_id: Option<String>,
    pub customer_id: Option<String>,
    pub promo_code: Option<String>,
    pub test: bool,
    /// Stream time after which the order is forgotten.
    pub expires_at: Millis,
    /// `None` for a conversion that earned nobody credit (kept to detect duplicates).
    pub credited: Option<Box<CreditedOrder>>,
}

impl StoredOrder {
    pub fn is(&self, program_id: &str, event_type: &str, order_id: &str) -> bool {
        self.order_id == order_id && self.program_id == program_id && self.event_type == event_type
    }
}

/// Remembers that clicks of a program expired, so that a later conversion is told
/// `outside_referral_window` rather than `no_valid_referrer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredClicks {
    pub program_id: Id,
    /// The latest `occurred_at` among the expired clicks of the program.
    pub latest: Millis,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Journey {
    /// Sorted by (occurred_at, seq), oldest first.
    pub clicks: Vec<StoredClick>,
    pub orders: Vec<StoredOrder>,
    pub next_seq: u64,
    pub expired: Vec<ExpiredClicks>,
}

impl Journey {
    pub fn is_empty(&self) -> bool {
        self.clicks.is_empty() && self.orders.is_empty() && self.expired.is_empty()
    }

    /// Inserts a click at index `at` (which keeps the clicks sorted).
    pub fn insert_click(&mut self, at: usize, click: StoredClick) {
        reserve_small(&mut self.clicks);
        self.clicks.insert(at, click);
    }

    /// Appends an order.
    pub fn push_order(&mut self, order: StoredOrder) {
        reserve_small(&mut self.orders);
        self.orders.push(order);
    }

    pub fn order(
        &self,
        program_id: &str,
        event_type: &str,
        order_id: &str,
    ) -> Option<&StoredOrder> {
        self.orders
            .iter()
            .find(|o| o.is(program_id, event_type, order_id))
    }

    pub fn order_mut(
        &mut self,
        program_id: &str,
        event_type: &str,
        order_id: &str,
    ) -> Option<&mut StoredOrder> {
        self.orders
            .iter_mut()
            .find(|o| o.is(program_id, event_type, order_id))
    }

    /// Drops what retention no longer needs (docs/design.md §3 rule 11); returns the number of clicks
    /// dropped.
    /// `click_keep_ms` None keeps every click (no program is configured yet, so no window is
    /// known).
    pub fn expire(&mut self, stream_time: Millis, click_keep_ms: Option<Millis>) -> usize {
        let before = self.clicks.len();
        if let Some(keep) = click_keep_ms {
            let cutoff = stream_time.saturating_sub(keep);
            let n = self.clicks.partition_point(|c| c.occurred_at < cutoff);
            for c in self.clicks.drain(..n) {
                match self
                    .expired
                    .iter_mut()
                    .find(|e| e.program_id == c.program_id)
                {
                    Some(e) => e.latest = e.latest.max(c.occurred_at),
                    None => self.expired.push(ExpiredClicks {
                        program_id: c.program_id,
                        latest: c.occurred_at,
                    }),
                }
            }
            // Marks are kept for a year after their latest click.
            let forget = stream_time.saturating_sub(crate::model::time::days_to_ms(365));
            self.expired.retain(|e| e.latest >= forget);
        }
        self.orders.retain(|o| o.expires_at > stream_time);
        before - self.clicks.len()
    }

    /// Encodes the journey for the store: [`HEADER`], then bincode.
    pub fn encode(&self) -> Vec<u8> {
        let size = bincode::serialized_size(self).expect("journeys always serialize") as usize;
        let mut out = Vec::with_capacity(HEADER.len() + size);
        out.extend_from_slice(&HEADER);
        bincode::serialize_into(&mut out, self).expect("journeys always serialize");
        out
    }

    /// Decodes a stored journey of this version ([`HEADER`]) or of version 1 (no header).
    pub fn decode(bytes: &[u8]) -> Result<Journey, bincode::Error> {
        match bytes.strip_prefix(&HEADER[..]) {
            Some(rest) => bincode::deserialize(rest),
            None => bincode::deserialize::<v1::Journey>(bytes).map(Journey::from),
        }
    }
}

/// The header of a stored journey: `u64::MAX − 2` (version 2), little-endian. A version 1
/// journey starts with its number of clicks as a little-endian `u64`, which is never that large.
pub const HEADER: [u8; 8] = (u64::MAX - 2).to_le_bytes();

/// The stored journey of version 1, before clicks, credits and touchpoints kept the click's
/// `device_id`: read only, to decode journeys stored by earlier versions (they decode with
/// those `device_id`s `None`). The field order is the encoding: do not change it.
mod v1;

impl From<v1::Journey> for Journey {
    fn from(j: v1::Journey) -> Journey {
        let clicks = j
            .clicks
            .into_iter()
            .map(|c| StoredClick {
                click_id: c.click_id,
                device_id: None,
                program_id: c.program_id,
                partner_id: c.partner_id,
                occurred_at: c.occurred_at,
                seq: c.seq,
                shared_id: c.shared_id,
                sub_ids: c.sub_ids,
            })
            .collect();
        let orders = j
            .orders
            .into_iter()
            .map(|o| StoredOrder {
                program_id: o.program_id,
                event_type: o.event_type,
                order_id: o.order_id,
                occurred_at: o.occurred_at,
                device_id: o.device_id,
                customer_id: o.customer_id,
                promo_code: o.promo_code,
                test: o.test,
                expires_at: o.expires_at,
                credited: o.credited.map(|c| Box::new(CreditedOrder::from(*c))),
            })
            .collect();
        Journey {
            clicks,
            orders,
            next_seq: j.next_seq,
            expired: j.expired,
        }
    }
}

impl From<v1::CreditedOrder> for CreditedOrder {
    fn from(c: v1::CreditedOrder) -> CreditedOrder {
        CreditedOrder {
            customer_status: c.customer_status,
            currency: c.currency,
            click_id: c.click_id,
            locking_at: c.locking_at,
            items: c.items,
            itemless: c.itemless,
            order_discount: c.order_discount,
            credits: c
                .credits
                .into_iter()
                .map(|k| StoredCredit {
                    partner_id: k.partner_id,
                    exact_weight: k.exact_weight,
                    weight: k.weight,
                    referral_type: k.referral_type,
                    click_id: k.click_id,
                    device_id: None,
                    promo_code: k.promo_code,
                    referring_at: k.referring_at,
                    shared_id: k.shared_id,
                    sub_ids: k.sub_ids,
                    terms: k.terms,
                })
                .collect(),
            touchpoints: c
                .touchpoints
                .into_iter()
                .map(|t| Touchpoint {
                    click_id: t.click_id,
                    device_id: None,
                    program_id: t.program_id,
                    partner_id: t.partner_id,
                    occurred_at: t.occurred_at,
                })
                .collect(),
            touchpoints_total: c.touchpoints_total,
            amount: c.amount,
            payout: c.payout,
            reversed: c.reversed,
        }
    }
}

/// Most journeys hold one or two clicks and at most one order, and many are kept in memory at
/// once: a full vector of fewer than 4 elements grows by one (a `Vec` would jump to 4 at once),
/// larger ones grow as usual.
fn reserve_small<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() && v.len() < 4 {
        v.reserve_exact(1);
    }
}

#[cfg(test)]
mod tests;
