//! Rules 7, 8: reasons and duplicates.

use crate::{World, reason};
use attrib::model::output::Output;

#[test]
fn unknown_program_leaves_no_trace() {
    let mut w = World::new();
    let o = w.record(r#"{"program_id":"nope","event_type":"sale","order_id":"o1","occurred_at":"2026-10-02T00:00:00Z"}"#);
    assert_eq!(reason(o), "unknown_program");
    let o = w.record(r#"{"program_id":"nope","event_type":"sale","order_id":"o1","occurred_at":"2026-10-02T00:00:00Z"}"#);
    assert_eq!(
        reason(o),
        "unknown_program",
        "not a duplicate: the first left no trace"
    );
    assert!(w.journey.orders.is_empty());
}

#[test]
fn duplicates_leave_the_earlier_outcome_untouched() {
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "no_valid_referrer"
    );
    w.click("c1", "p1", "pa1", "2026-10-02T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-03T00:00:00Z", "")),
        "duplicate_order"
    );
    assert!(matches!(
        w.convert("o2", "2026-10-03T00:00:00Z", ""),
        Output::Action(_)
    ));
    assert_eq!(
        reason(w.convert("o2", "2026-10-03T00:00:00Z", "")),
        "duplicate_order"
    );
}

#[test]
fn reason_precedence_over_the_journeys_clicks() {
    let mut w = World::new();
    w.program("p2", r#""account_id":"acme""#);
    w.contract("p1", "pa1", r#""active_to":"2026-01-02T00:00:00Z""#);
    w.click("c0", "p2", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "no_valid_referrer"
    );
    // 32 days old: outside the 30-day window (but inside retention, 30 days + the margin).
    w.click("c1", "p1", "pa1", "2026-08-31T00:00:00Z");
    assert_eq!(
        reason(w.convert("o2", "2026-10-02T00:00:00Z", "")),
        "outside_referral_window"
    );
    w.click("c2", "p1", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o3", "2026-10-02T00:00:00Z", "")),
        "partner_not_active"
    );
}
