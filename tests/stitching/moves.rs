//! Moving a journey.

use crate::{World, at};
use attrib::tools::replay::ReplayOptions;
use serde_json::json;

#[test]
fn moved_clicks_arrive_at_the_move_so_they_win_a_tie_of_equal_times() {
    let mut w = World::new(true);
    // The phone's anonymous click comes first in the file, at the same time as the customer's.
    w.click("c-phone", "pa2", 0, Some("phone"), None);
    w.click("c-laptop", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.identify("phone", "cu-1", 5);
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    // last_click: of two clicks at the same time, the later arrival counts as later.
    assert_eq!(o.credits()[0].1, "c-phone");
    assert_eq!(o.touchpoints(), vec!["c-laptop", "c-phone"]);
}

#[test]
fn a_moved_click_id_the_customer_has_keeps_the_customers_click() {
    let mut w = World::new(true);
    w.click("c-same", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.click("c-same", "pa2", 5, Some("phone"), None);
    w.click("c-other", "pa3", 1, Some("phone"), None);
    w.identify("phone", "cu-1", 6);
    assert_eq!(w.stats().clicks_dropped_in_moves, 1);
    assert_eq!(w.stats().clicks_moved, 1);
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    assert_eq!(o.touchpoints(), vec!["c-same", "c-other"]);
    assert_eq!(
        o.credits()[0],
        ("pa3".into(), "c-other".into(), "phone".into())
    );
}

#[test]
fn a_moved_order_the_customer_has_keeps_the_customers_order() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.click("c-2", "pa2", 0, Some("phone"), None);
    let customers = w.conversion("o-1", 10, None, Some("cu-1"));
    let phones = w.conversion("o-1", 11, Some("phone"), None);
    assert_eq!(customers.credits()[0].0, "pa1");
    assert_eq!(phones.credits()[0].0, "pa2");
    assert_eq!(customers.value["action_id"], phones.value["action_id"]);
    w.identify("phone", "cu-1", 20);
    assert_eq!(w.stats().orders_dropped_in_moves, 1);
    // A change keyed by the phone now reaches the customer's order.
    let m = w.one(
        "conversions",
        Some("phone"),
        json!({"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(30),"device_id":"phone"}),
    );
    assert_eq!(m.value["change"], "reversed");
    assert_eq!(m.credits()[0].0, "pa1");
    // A second conversion of the order is a duplicate.
    let d = w.conversion("o-1", 40, Some("phone"), None);
    assert_eq!(d.reason(), "duplicate_order");
}

#[test]
fn expired_click_marks_move_with_the_journey() {
    let mut w = World::new(true);
    w.click("c-old", "pa1", 0, Some("phone"), None);
    // 70 days later (window 30 + margin 30 passed) another record of the phone expires it.
    w.quiet(
        "clicks",
        Some("phone"),
        json!({"type":"click","click_id":"c-p2","program_id":"p2","partner_id":"pa1","occurred_at":at(70 * 24 * 60),"device_id":"phone"}),
    );
    w.identify("phone", "cu-1", 70 * 24 * 60 + 1);
    let o = w.conversion("o-1", 70 * 24 * 60 + 2, None, Some("cu-1"));
    assert_eq!(o.reason(), "outside_referral_window", "{o:?}");
}

#[test]
fn the_journey_limit_applies_to_the_merged_journey() {
    let mut options = ReplayOptions {
        stitching: true,
        ..Default::default()
    };
    options.engine.max_clicks_per_journey = 3;
    let mut w = World::with(options);
    w.click("c-1", "pa1", 1, Some("laptop"), Some("cu-1"));
    w.click("c-2", "pa1", 2, Some("laptop"), Some("cu-1"));
    w.click("c-3", "pa2", 3, Some("phone"), None);
    w.click("c-4", "pa2", 4, Some("phone"), None);
    w.identify("phone", "cu-1", 5);
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    assert_eq!(
        o.touchpoints(),
        vec!["c-2", "c-3", "c-4"],
        "the oldest is dropped"
    );
}
