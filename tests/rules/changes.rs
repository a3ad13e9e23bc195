//! Rule 9: modifications and reversals.

use crate::{World, action, invalid, reason, t};

#[test]
fn modifications_reversals_deltas_and_locking() {
    let mut w = World::new();
    w.program("p1", r#""account_id":"acme","locking_days":10"#);
    w.contract("p1", "pa1", r#""payout":{"default":{"percent":"10"}}"#);
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    let base = r#""program_id":"p1","event_type":"sale","order_id":"o1""#;
    let a = action(w.record(&format!(r#"{{{base},"occurred_at":"2026-10-02T00:00:00Z","order_discount":"10","items":[{{"sku":"A","quantity":2,"unit_price":"30"}},{{"sku":"B","quantity":1,"unit_price":"40"}}]}}"#)));
    assert_eq!(
        (a.amount.to_string(), a.payout.to_string()),
        ("90.000000".into(), "9.000000".into())
    );
    assert_eq!(a.locking_at, t("2026-10-12T00:00:00Z"));
    // Remove A; the discount is shared again over what remains (40 − 10).
    let m = action(w.record(&format!(r#"{{"type":"modification",{base},"occurred_at":"2026-10-03T00:00:00Z","items":[{{"sku":"A","quantity":0}},{{"sku":"Z","quantity":5}}]}}"#)));
    assert_eq!(m.change.as_str(), "modified");
    assert_eq!(m.action_id, a.action_id);
    assert_eq!(
        (m.amount.to_string(), m.delta_amount.to_string()),
        ("30.000000".into(), "-60.000000".into())
    );
    assert_eq!(
        (m.payout.to_string(), m.delta_payout.to_string()),
        ("3.000000".into(), "-6.000000".into())
    );
    assert_eq!(m.credits[0].payout.to_string(), "3.000000");
    assert_eq!(m.occurred_at, a.occurred_at);
    // Discount larger than what remains: capped at the items' total.
    let m = action(w.record(&format!(r#"{{"type":"modification",{base},"occurred_at":"2026-10-03T00:00:00Z","items":[{{"sku":"B","quantity":0}},{{"sku":"A","quantity":0}}]}}"#)));
    assert_eq!(
        (m.amount.to_string(), m.delta_amount.to_string()),
        ("0.000000".into(), "-30.000000".into())
    );
    let r = action(w.record(&format!(
        r#"{{"type":"reversal",{base},"occurred_at":"2026-10-11T23:59:59.999Z"}}"#
    )));
    assert_eq!(
        (
            r.change.as_str(),
            r.payout.to_string(),
            r.delta_payout.to_string()
        ),
        ("reversed", "0.000000".into(), "0.000000".into())
    );
    assert_eq!(r.state, attrib::model::output::State::Reversed);
    // After locking (but inside retention) a reversed action still answers already_reversed.
    assert_eq!(
        reason(w.record(&format!(
            r#"{{"type":"reversal",{base},"occurred_at":"2026-10-15T00:00:00Z"}}"#
        ))),
        "already_reversed"
    );
    // Locking: a change at the locking time is refused.
    let base2 = r#""program_id":"p1","event_type":"sale","order_id":"o2""#;
    action(w.record(&format!(
        r#"{{{base2},"occurred_at":"2026-10-02T00:00:00Z","order_subtotal":"10"}}"#
    )));
    let i = invalid(w.record(&format!(
        r#"{{"type":"reversal",{base2},"occurred_at":"2026-10-12T00:00:00Z"}}"#
    )));
    assert_eq!(i.reason.as_str(), "action_locked");
    assert_eq!(i.occurred_at, t("2026-10-12T00:00:00Z"));
    assert_eq!(reason(w.record(r#"{"type":"modification","program_id":"p1","event_type":"sale","order_id":"o9","occurred_at":"2026-10-05T00:00:00Z"}"#)), "unknown_order");
}

#[test]
fn itemless_modification_sets_a_new_subtotal_and_test_flags_carry() {
    let mut w = World::new();
    w.contract("p1", "pa1", r#""payout":{"default":{"percent":"10"}}"#);
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    let a = action(w.record(r#"{"program_id":"p1","event_type":"lead","order_id":"L","occurred_at":"2026-10-02T00:00:00Z","order_subtotal":"50","test":true}"#));
    assert!(a.test);
    let m = action(w.record(r#"{"type":"modification","program_id":"p1","event_type":"lead","order_id":"L","occurred_at":"2026-10-03T00:00:00Z","order_subtotal":"20"}"#));
    assert!(m.test);
    assert_eq!(
        (m.amount.to_string(), m.delta_payout.to_string()),
        ("20.000000".into(), "-3.000000".into())
    );
}
