//! Links.

use crate::{World, at};
use attrib::stage::attribution::StitchStats;
use serde_json::{Value, json};

#[test]
fn a_phone_conversion_is_credited_to_the_laptop_click_after_an_identify() {
    for stitching in [false, true] {
        let mut w = World::new(stitching);
        w.click("c-laptop", "pa1", 0, Some("laptop"), None);
        w.identify("laptop", "cu-9", 60);
        w.identify("phone", "cu-9", 24 * 60);
        let o = w.conversion("o-1", 25 * 60, Some("phone"), None);
        if stitching {
            assert_eq!(o.topic, "actions", "{o:?}");
            assert_eq!(
                o.credits(),
                vec![("pa1".into(), "c-laptop".into(), "laptop".into())]
            );
            // The action's own ids stay the conversion's.
            assert_eq!(o.value["device_id"], "phone");
            assert_eq!(o.value["customer_id"], Value::Null);
            assert_eq!(w.stats().links_created, 2);
            assert_eq!(w.stats().journeys_moved, 1, "only the laptop had a journey");
        } else {
            assert_eq!(
                o.reason(),
                "no_valid_referrer",
                "identify records are not read"
            );
            assert_eq!(w.stats(), StitchStats::default());
        }
    }
}

#[test]
fn a_click_with_both_ids_links_its_device_and_moves_its_anonymous_journey() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("tablet"), None);
    w.click("c-2", "pa2", 10, Some("tablet"), Some("cu-1"));
    assert_eq!(w.stats().links_created, 1);
    assert_eq!(w.stats().journeys_moved, 1);
    assert_eq!(w.stats().clicks_moved, 1);
    // A conversion of the customer from a server sees both clicks.
    let o = w.conversion("o-1", 20, None, Some("cu-1"));
    assert_eq!(o.touchpoints(), vec!["c-1", "c-2"]);
    assert_eq!(o.credits()[0].0, "pa2");
    // A later device-only click of the tablet goes to the customer's journey too.
    w.click("c-3", "pa3", 30, Some("tablet"), None);
    let o = w.conversion("o-2", 40, None, Some("cu-1"));
    assert_eq!(o.touchpoints(), vec!["c-1", "c-2", "c-3"]);
    assert_eq!(o.credits()[0].0, "pa3");
}

#[test]
fn a_conversion_with_both_ids_moves_the_journey_before_it_is_attributed() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("phone"), None);
    let o = w.conversion("o-1", 10, Some("phone"), Some("cu-2"));
    assert_eq!(
        o.credits(),
        vec![("pa1".into(), "c-1".into(), "phone".into())]
    );
    assert_eq!(o.value["customer_id"], "cu-2");
    assert_eq!(w.stats().links_created, 1);
}

#[test]
fn a_conversion_of_an_unknown_program_still_links() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("phone"), None);
    let o = w.one(
        "conversions",
        Some("phone"),
        json!({"type":"conversion","program_id":"nope","event_type":"sale","order_id":"o-0","occurred_at":at(5),"device_id":"phone","customer_id":"cu-3"}),
    );
    assert_eq!(o.reason(), "unknown_program");
    assert_eq!(w.stats().links_created, 1);
    let o = w.conversion("o-1", 10, None, Some("cu-3"));
    assert_eq!(o.credits()[0].1, "c-1", "the phone's click moved");
}

#[test]
fn the_first_link_stands_and_a_conflict_is_counted() {
    let mut w = World::new(true);
    w.identify("shared", "cu-a", 0);
    w.identify("shared", "cu-b", 1);
    assert_eq!(w.stats().link_conflicts, 1);
    // The conflicting click is processed under its own customer, and does not move the device.
    w.click("c-b", "pa2", 2, Some("shared"), Some("cu-b"));
    assert_eq!(w.stats().link_conflicts, 2);
    w.click("c-anon", "pa1", 3, Some("shared"), None);
    let a = w.conversion("o-a", 10, None, Some("cu-a"));
    assert_eq!(a.touchpoints(), vec!["c-anon"]);
    let b = w.conversion("o-b", 10, None, Some("cu-b"));
    assert_eq!(b.touchpoints(), vec!["c-b"]);
    // Repeating the standing link is no conflict.
    w.identify("shared", "cu-a", 20);
    assert_eq!(w.stats().link_conflicts, 2);
    assert_eq!(w.stats().links_created, 1);
}
