//! Cross-device identity stitching (docs/design.md §6), pure: the key rules, the link a record
//! makes, the journey it belongs to, and the move of a device's anonymous journey into its
//! customer's.
//!
//! The stage calls [`route`] for every journey record with stitching on, applies the link (and,
//! for a device's first link, [`merge`]s its anonymous journey into the customer's) and then
//! hands the record to the engine on the journey [`Route::journey`] names.

use crate::model::identity::JourneyRef;
use crate::model::journey::Journey;
use crate::model::records::{DlqReason, Event, Invalid};
use crate::rules::engine::EngineSettings;

/// Where a record goes, with stitching on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The device the record links to a customer, and that customer: set for an identify, a
    /// click or a conversion that carries both ids.
    pub link: Option<(&'a [u8], &'a str)>,
    /// The journey the record belongs to, when it names the customer itself; otherwise the
    /// device whose link decides (its customer's journey if linked, else its own).
    pub target: Target<'a>,
}

/// The journey a record belongs to, before the device's link is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The record names its customer.
    Customer(&'a str),
    /// The record names a device only (or, for a click or conversion without ids, its key does).
    Device(&'a [u8]),
    /// An identify record: it changes no journey.
    None,
}

impl<'a> Target<'a> {
    /// The journey, given the device's linked customer (if the target is a device).
    pub fn journey(self, linked: Option<&'a str>) -> Option<JourneyRef<'a>> {
        match self {
            Target::Customer(c) => Some(JourneyRef::Customer(c)),
            Target::Device(d) => Some(match linked {
                Some(c) => JourneyRef::Customer(c),
                None => JourneyRef::Device(d),
            }),
            Target::None => None,
        }
    }
}

/// Applies the key rules of §6 to a decoded record and its Kafka key (`None`: a null key),
/// and says which link it makes and where it goes; a record that breaks a rule gets the DLQ
/// reason, naming the fields.
pub fn route<'a>(key: Option<&'a [u8]>, event: &'a Event) -> Result<Route<'a>, Invalid> {
    let (device, customer) = event.ids();
    if let (Some(d), Some(k)) = (device, key) {
        if k != d.as_bytes() {
            return Err(Invalid::new(
                DlqReason::BadKey,
                format!(
                    "{} keyed `{}` but its `device_id` is `{d}`: with identity stitching on, a record that carries a `device_id` must be keyed by it",
                    event.kind(),
                    String::from_utf8_lossy(k)
                ),
            ));
        }
    }
    let links = matches!(
        event,
        Event::Identify(_) | Event::Click(_) | Event::Conversion(_)
    );
    if !links && device.is_none() && customer.is_none() {
        return Err(Invalid::new(
            DlqReason::MissingField,
            format!(
                "{} carries neither `device_id` nor `customer_id`: with identity stitching on, a change finds its order through them, not through its key",
                event.kind()
            ),
        ));
    }
    let link = match (links, device, customer) {
        (true, Some(d), Some(c)) => Some((d.as_bytes(), c)),
        _ => None,
    };
    let target = match (event, customer, device) {
        (Event::Identify(_), _, _) => Target::None,
        (_, Some(c), _) => Target::Customer(c),
        (_, None, Some(d)) => Target::Device(d.as_bytes()),
        (_, None, None) => match key {
            Some(k) => Target::Device(k),
            None => {
                return Err(Invalid::new(
                    DlqReason::BadKey,
                    format!(
                        "{} has a null key and neither `device_id` nor `customer_id`",
                        event.kind()
                    ),
                ));
            }
        },
    };
    Ok(Route { link, target })
}

/// What a move did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub clicks: usize,
    /// Clicks whose id the customer's journey already had (the customer's click stays).
    pub clicks_dropped: usize,
    pub orders: usize,
    /// Orders the customer's journey already had (the customer's order stays).
    pub orders_dropped: usize,
    /// Oldest clicks dropped because the merged journey was over the limit.
    pub clicks_dropped_by_limit: usize,
}

/// Moves a device's anonymous journey `src` into the customer's journey `dst` (§6 "Moving a
/// journey"): the moved clicks arrive now, in their own arrival order, after the customer's
/// clicks; a click id or an order the customer's journey already has keeps the customer's;
/// expired-click marks merge; the journey limit applies to the merged journey.
pub fn merge(dst: &mut Journey, src: Journey, settings: &EngineSettings) -> Moved {
    let mut moved = Moved::default();
    let mut clicks = src.clicks;
    clicks.sort_by_key(|c| c.seq);
    for mut c in clicks {
        if dst.clicks.iter().any(|k| k.click_id == c.click_id) {
            moved.clicks_dropped += 1;
            continue;
        }
        c.seq = dst.next_seq;
        dst.next_seq += 1;
        let at = dst
            .clicks
            .partition_point(|k| k.occurred_at <= c.occurred_at);
        dst.insert_click(at, c);
        moved.clicks += 1;
    }
    if dst.clicks.len() > settings.max_clicks_per_journey {
        let n = dst.clicks.len() - settings.max_clicks_per_journey;
        dst.clicks.drain(..n);
        moved.clicks_dropped_by_limit = n;
    }
    for o in src.orders {
        if dst
            .order(&o.program_id, &o.event_type, &o.order_id)
            .is_some()
        {
            moved.orders_dropped += 1;
        } else {
            dst.push_order(o);
            moved.orders += 1;
        }
    }
    for e in src.expired {
        match dst
            .expired
            .iter_mut()
            .find(|x| x.program_id == e.program_id)
        {
            Some(x) => x.latest = x.latest.max(e.latest),
            None => dst.expired.push(e),
        }
    }
    moved
}

/// A link is kept at least this long after the last record that made or used it: a device
/// belongs to its customer for longer than a click or an order is kept.
pub const MIN_LINK_KEEP_DAYS: i64 = 365;

/// How long a link is kept after the last record that made or used it: a year, or longer if
/// the clicks and orders that went through it can still be needed (`None`, for ever, while no
/// program is configured).
pub fn link_keep_ms(
    tables: &crate::model::tables::Tables,
    settings: &EngineSettings,
) -> Option<crate::model::time::Millis> {
    use crate::model::time::days_to_ms;
    let clicks = crate::rules::engine::click_keep_ms(tables, settings)?;
    let orders = days_to_ms(tables.max_locking_days()).saturating_add(settings.retention_margin_ms);
    Some(clicks.max(orders).max(days_to_ms(MIN_LINK_KEEP_DAYS)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::records::{Identify, Reversal};

    fn reversal(device: Option<&str>, customer: Option<&str>) -> Event {
        Event::Reversal(Reversal {
            device_id: device.map(String::from),
            customer_id: customer.map(String::from),
            program_id: "p".into(),
            event_type: "sale".into(),
            order_id: "o".into(),
            occurred_at: 0,
        })
    }

    #[test]
    fn key_rules_give_their_reasons() {
        let e = reversal(None, None);
        assert_eq!(
            route(Some(b"d"), &e).unwrap_err().reason(),
            DlqReason::MissingField
        );
        let e = reversal(Some("d-1"), None);
        assert_eq!(
            route(Some(b"d-2"), &e).unwrap_err().reason(),
            DlqReason::BadKey
        );
        let r = route(None, &e).unwrap();
        assert_eq!(r.target, Target::Device(b"d-1"));
        assert_eq!(r.link, None, "a change never links");
        let e = reversal(Some("d-1"), Some("cu"));
        let r = route(Some(b"d-1"), &e).unwrap();
        assert_eq!((r.link, r.target), (None, Target::Customer("cu")));
        let e = Event::Identify(Identify {
            device_id: "d-1".into(),
            customer_id: "cu".into(),
            occurred_at: 0,
        });
        let r = route(None, &e).unwrap();
        assert_eq!(
            (r.link, r.target),
            (Some((&b"d-1"[..], "cu")), Target::None)
        );
    }
}
