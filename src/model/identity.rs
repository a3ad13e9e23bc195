//! Cross-device identity (docs/design.md §6): which journey a record belongs to, a device's
//! link to its customer, and how both are keyed in the journey store.
//!
//! **Store keys.** With stitching off a journey is stored under the record's Kafka key, as
//! always. With stitching on:
//! - a device's anonymous journey is stored under the device id itself, so the journeys of
//!   devices kept before stitching was turned on become those devices' anonymous journeys;
//! - a customer's journey under `0x00 'c'` + customer id, and a device's link under
//!   `0x00 'l'` + device id. Ids do not start with a NUL byte, so the three never meet, and a
//!   customer's journey stays apart from a device's even when the two ids are the same string.

use crate::model::records::Id;
use crate::model::time::Millis;
use serde::{Deserialize, Serialize};

/// Prefix of a customer's journey in the store.
pub const CUSTOMER_PREFIX: &[u8; 2] = b"\0c";
/// Prefix of a device's link in the store.
pub const LINK_PREFIX: &[u8; 2] = b"\0l";

/// The journey a record belongs to, with stitching on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JourneyRef<'a> {
    /// A customer's journey: every device linked to the customer, and records that name it.
    Customer(&'a str),
    /// A device's anonymous journey, while the device is not linked to a customer.
    Device(&'a [u8]),
}

impl JourneyRef<'_> {
    /// The journey's key in the store, written into `buf` (cleared first).
    pub fn store_key<'b>(&self, buf: &'b mut Vec<u8>) -> &'b [u8] {
        buf.clear();
        match self {
            JourneyRef::Customer(c) => {
                buf.extend_from_slice(CUSTOMER_PREFIX);
                buf.extend_from_slice(c.as_bytes());
            }
            JourneyRef::Device(d) => buf.extend_from_slice(d),
        }
        buf
    }
}

/// The store key of a device's link.
pub fn link_key(device: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(LINK_PREFIX);
    buf.extend_from_slice(device);
}

/// Whether a store key holds a link (not a journey).
pub fn is_link_key(key: &[u8]) -> bool {
    key.starts_with(LINK_PREFIX)
}

/// A device's link to its customer. The first link of a device stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub customer_id: Id,
    /// The latest `occurred_at` of a record that made or used the link, kept to a day's
    /// precision (it is rewritten only when a record is a day or more later), for retention.
    pub seen_at: Millis,
}

/// Version byte of a stored link.
const LINK_VERSION: u8 = 1;

impl Link {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![LINK_VERSION];
        bincode::serialize_into(&mut out, self).expect("links always serialize");
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Link, bincode::Error> {
        match bytes.split_first() {
            Some((&LINK_VERSION, rest)) => bincode::deserialize(rest),
            _ => Err(Box::new(bincode::ErrorKind::Custom(
                "stored link has an unknown version".into(),
            ))),
        }
    }

    /// Whether a record at `t` should rewrite `seen_at` (it is a day or more later).
    pub fn needs_touch(&self, t: Millis) -> bool {
        t >= self
            .seen_at
            .saturating_add(crate::model::time::days_to_ms(1))
    }

    /// Whether retention has forgotten the link at `stream_time`, given how long the
    /// clicks and orders that go through it are kept (`None`: for ever).
    pub fn expired(&self, stream_time: Millis, keep_ms: Option<Millis>) -> bool {
        keep_ms.is_some_and(|k| self.seen_at < stream_time.saturating_sub(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_device_and_link_keys_never_meet() {
        let (mut a, mut b, mut l) = (Vec::new(), Vec::new(), Vec::new());
        let c = JourneyRef::Customer("x").store_key(&mut a).to_vec();
        let d = JourneyRef::Device(b"x").store_key(&mut b).to_vec();
        link_key(b"x", &mut l);
        assert_eq!(d, b"x");
        assert_ne!(c, d);
        assert_ne!(c, l);
        assert!(is_link_key(&l) && !is_link_key(&c) && !is_link_key(&d));
    }

    #[test]
    fn links_round_trip_and_expire() {
        let l = Link {
            customer_id: "cu-1".into(),
            seen_at: 1_000,
        };
        assert_eq!(Link::decode(&l.encode()).unwrap(), l);
        assert!(Link::decode(b"\x09zz").is_err());
        assert!(!l.expired(10_000, None));
        assert!(!l.expired(10_000, Some(9_000)));
        assert!(l.expired(10_001, Some(9_000)));
        assert!(!l.needs_touch(1_000 + 86_399_999));
        assert!(l.needs_touch(1_000 + 86_400_000));
    }
}
