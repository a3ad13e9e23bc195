//! Changes and keys.

use crate::{World, at};
use serde_json::{Value, json};

#[test]
fn a_change_keyed_by_a_linked_device_finds_the_order_in_the_customers_journey() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.identify("phone", "cu-1", 1);
    let o = w.conversion("o-1", 10, Some("phone"), None);
    assert_eq!(o.credits()[0].1, "c-1");
    let m = w.one(
        "conversions",
        Some("phone"),
        json!({"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(20),"device_id":"phone","order_subtotal":"50.00"}),
    );
    assert_eq!(m.value["change"], "modified");
    assert_eq!(m.value["amount"], "50.000000");
    // The same change by customer id, keyed by anything, finds it too.
    let r = w.one(
        "conversions",
        Some("whatever"),
        json!({"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(30),"customer_id":"cu-1"}),
    );
    assert_eq!(r.value["change"], "reversed");
}

#[test]
fn key_rules_send_records_to_the_dlq_naming_the_fields() {
    let mut w = World::new(true);
    let o = w.one(
        "conversions",
        Some("d-1"),
        json!({"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(0),"items":[]}),
    );
    assert_eq!(o.topic, "dlq");
    assert!(
        o.error().contains("`device_id`") && o.error().contains("`customer_id`"),
        "{}",
        o.error()
    );
    let o = w.one(
        "clicks",
        Some("d-2"),
        json!({"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":at(0),"device_id":"d-1"}),
    );
    assert_eq!(o.topic, "dlq");
    assert!(
        o.error().contains("keyed `d-2`") && o.error().contains("`device_id` is `d-1`"),
        "{}",
        o.error()
    );
    let o = w.one(
        "identities",
        Some("d-2"),
        json!({"type":"identify","device_id":"d-1","customer_id":"cu-1","occurred_at":at(0)}),
    );
    assert_eq!(o.topic, "dlq");
    assert_eq!(w.stats().links_created, 0, "a refused record does not link");
    let o = w.one("identities", Some("d-1"), Value::Null);
    assert_eq!(o.topic, "dlq");
    assert!(o.error().contains("tombstone"), "{}", o.error());
    let o = w.one(
        "identities",
        Some("d-1"),
        json!({"type":"identify","device_id":"d-1","occurred_at":at(0)}),
    );
    assert!(
        o.error().contains("missing required field `customer_id`"),
        "{}",
        o.error()
    );
    // A null key takes the device_id.
    w.quiet(
        "identities",
        None,
        json!({"type":"identify","device_id":"d-1","customer_id":"cu-1","occurred_at":at(0)}),
    );
    assert_eq!(w.stats().links_created, 1);
    // With stitching off, the same records keep the rules of §1: the click is stored under
    // its key, the change goes to the journey of its key (which has no such order).
    let mut off = World::new(false);
    off.quiet(
        "clicks",
        Some("d-2"),
        json!({"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":at(0),"device_id":"d-1"}),
    );
    let o = off.one(
        "conversions",
        Some("d-1"),
        json!({"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(0),"items":[]}),
    );
    assert_eq!(o.reason(), "unknown_order");
}
