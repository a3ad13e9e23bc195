//! The state of one journey key: its clicks and its orders. Stored in RocksDB (bincode) and
//! mirrored to the changelog; only the engine changes it.

use crate::model::output::{ReferralType, Touchpoint};
use crate::model::records::{CustomerStatus, Id, Item};
use crate::model::tables::Payout;
use crate::model::time::Millis;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClick {
    pub click_id: Id,
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

    /// Encodes the journey for the store (bincode).
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("journeys always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Journey, bincode::Error> {
        bincode::deserialize(bytes)
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
mod tests {
    use super::*;

    /// Journeys stored before ids were compact (plain strings and vectors) still decode, and
    /// encode to the same bytes.
    #[test]
    fn stored_clicks_keep_their_encoding() {
        #[derive(Serialize)]
        struct PlainClick {
            click_id: String,
            program_id: String,
            partner_id: String,
            occurred_at: Millis,
            seq: u64,
            shared_id: Option<String>,
            sub_ids: Vec<String>,
        }
        let long = "a-sub-id-longer-than-twenty-four-bytes".to_string();
        for sub_ids in [vec![], vec!["s1".to_string()], vec!["s1".to_string(), long]] {
            let plain = PlainClick {
                click_id: "c-1".into(),
                program_id: "shoes".into(),
                partner_id: "a-partner-id-longer-than-twenty-four".into(),
                occurred_at: 1_790_812_800_000,
                seq: 3,
                shared_id: Some("post-1".into()),
                sub_ids: sub_ids.clone(),
            };
            let bytes = bincode::serialize(&plain).unwrap();
            let stored: StoredClick = bincode::deserialize(&bytes).unwrap();
            assert_eq!(stored.sub_ids.len(), sub_ids.len());
            assert_eq!(stored.partner_id, plain.partner_id);
            assert_eq!(bincode::serialize(&stored).unwrap(), bytes);
        }
    }
}
