//! Which journey.

use crate::{World, at};
use serde_json::json;

#[test]
fn a_customer_journey_and_a_device_journey_with_the_same_id_are_different() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("x"), None);
    let o = w.conversion("o-1", 10, None, Some("x"));
    assert_eq!(o.reason(), "no_valid_referrer");
    let o = w.conversion("o-2", 10, Some("x"), None);
    assert_eq!(o.credits()[0].1, "c-1");
}

#[test]
fn a_customer_only_record_belongs_to_the_customer_whatever_its_key() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("d"), Some("cu-1"));
    let o = w.conversion_keyed(Some("anything"), "o-1", 10, None, Some("cu-1"));
    assert_eq!(o.credits()[0].1, "c-1");
    let o = w.conversion_keyed(None, "o-2", 10, None, Some("cu-1"));
    assert_eq!(o.credits()[0].1, "c-1");
}

#[test]
fn a_record_with_neither_id_belongs_to_the_device_of_its_key() {
    let mut w = World::new(true);
    w.identify("d-1", "cu-1", 0);
    // A click with neither id, keyed by a linked device, goes to the device's customer.
    w.quiet(
        "clicks",
        Some("d-1"),
        json!({"type":"click","click_id":"c-bare","program_id":"p1","partner_id":"pa1","occurred_at":at(1)}),
    );
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    assert_eq!(
        o.credits(),
        vec![("pa1".into(), "c-bare".into(), "-".into())],
        "a bare click shows no device_id"
    );
}
