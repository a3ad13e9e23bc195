//! Rule 6: payouts.

use crate::{World, action};

#[test]
fn payout_groups_discounts_and_fixed_rates() {
    let mut w = World::new();
    w.contract(
        "p1",
        "pa1",
        r#""payout":{"default":{"percent":"10"},"groups":[{"when":{"customer_status":"new","categories":["shoes"]},"rate":{"fixed":"5.00"}},{"when":{"skus":["H1"]},"rate":{"percent":"50"}}]}"#,
    );
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    // items: 2×30 shoes (fixed 5 once), 1×20 shoes (same group), H1 1×10 (50%), J 1×40 (10%)
    // total 130, discount 13 → bases scale by 0.9: H1 9, J 36 → 5 + 4.5 + 3.6 = 13.1
    let a = action(w.record(r#"{"program_id":"p1","event_type":"sale","order_id":"o1","occurred_at":"2026-10-02T00:00:00Z","customer_status":"new","order_discount":"13","order_tax":"9","order_shipping":"9","items":[{"sku":"S1","category":"shoes","quantity":2,"unit_price":"30"},{"sku":"S2","category":"shoes","quantity":1,"unit_price":"20"},{"sku":"H1","category":"hats","quantity":1,"unit_price":"10"},{"sku":"J","category":"jackets","quantity":1,"unit_price":"40"}]}"#));
    assert_eq!(a.amount.to_string(), "117.000000");
    assert_eq!(a.payout.to_string(), "13.100000");
    assert_eq!(a.delta_payout.to_string(), "13.100000");
    // Returning customer: the shoes take the default 10%: 10% × (54 + 18) + 4.5 + 3.6 = 15.3
    let a = action(w.record(r#"{"program_id":"p1","event_type":"sale","order_id":"o2","occurred_at":"2026-10-02T00:00:00Z","customer_status":"returning","order_discount":"13","items":[{"sku":"S1","category":"shoes","quantity":2,"unit_price":"30"},{"sku":"S2","category":"shoes","quantity":1,"unit_price":"20"},{"sku":"H1","category":"hats","quantity":1,"unit_price":"10"},{"sku":"J","category":"jackets","quantity":1,"unit_price":"40"}]}"#));
    assert_eq!(a.payout.to_string(), "15.300000");
}

#[test]
fn itemless_conversions_and_contracts_without_payout() {
    let mut w = World::new();
    w.contract("p1", "pa1", r#""payout":{"default":{"percent":"7.5"}}"#);
    w.contract("p1", "pa2", "");
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    let a = action(w.record(r#"{"program_id":"p1","event_type":"signup","order_id":"L1","occurred_at":"2026-10-02T00:00:00Z","order_subtotal":"40"}"#));
    assert_eq!(
        (a.amount.to_string(), a.payout.to_string()),
        ("40.000000".into(), "3.000000".into())
    );
    let a = action(w.record(r#"{"program_id":"p1","event_type":"signup","order_id":"L2","occurred_at":"2026-10-02T00:00:00Z"}"#));
    assert_eq!(
        (a.amount.to_string(), a.payout.to_string()),
        ("0.000000".into(), "0.000000".into())
    );
    w.click("c2", "p1", "pa2", "2026-10-01T01:00:00Z");
    let a = action(w.record(r#"{"program_id":"p1","event_type":"signup","order_id":"L3","occurred_at":"2026-10-02T00:00:00Z","order_subtotal":"40"}"#));
    assert_eq!(
        (a.credits[0].partner_id.as_str(), a.payout.to_string()),
        ("pa2", "0.000000".into())
    );
}
