//! Journeys, duplicates of clicks, retention.

use crate::{World, action, reason};

#[test]
fn touchpoints_list_the_first_and_the_49_latest() {
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    for i in 0..60 {
        w.click(
            &format!("c{i:02}"),
            "p1",
            "pa1",
            &format!("2026-10-01T00:{i:02}:00Z"),
        );
    }
    let a = action(w.convert("o1", "2026-10-02T00:00:00Z", ""));
    assert_eq!(a.journey.total, 60);
    assert_eq!(a.journey.touchpoints.len(), 50);
    assert_eq!(a.journey.touchpoints[0].click_id, "c00");
    assert_eq!(a.journey.touchpoints[1].click_id, "c11");
    assert_eq!(a.journey.touchpoints[49].click_id, "c59");
}

#[test]
fn a_repeated_click_id_is_ignored() {
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    w.contract("p1", "pa2", "");
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    w.click("c1", "p1", "pa2", "2026-10-01T05:00:00Z");
    let a = action(w.convert("o1", "2026-10-02T00:00:00Z", ""));
    assert_eq!(a.credits[0].partner_id, "pa1");
    assert_eq!(a.journey.total, 1);
}

#[test]
fn retention_drops_old_clicks_and_orders() {
    let mut w = World::new();
    w.settings.retention_margin_ms = 0;
    w.program("p1", r#""account_id":"acme","locking_days":5"#);
    w.contract("p1", "pa1", "");
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    action(w.convert("o1", "2026-10-02T00:00:00Z", ""));
    // 31 days later the click is past every window and the order past locking.
    w.click("c2", "p1", "pa1", "2026-11-01T00:00:01Z");
    assert_eq!(w.journey.clicks.len(), 1);
    assert!(w.journey.orders.is_empty());
    assert_eq!(reason(w.record(r#"{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o1","occurred_at":"2026-11-01T00:00:02Z"}"#)), "unknown_order");
}
