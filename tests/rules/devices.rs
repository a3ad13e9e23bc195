//! Output: the device of each credit and touchpoint (docs/design.md §2, §6).

use crate::promo_codes::promo_world;
use crate::{World, action};
use attrib::model::output::Action;
use attrib::model::records::{Event, Limits, decode_click};

impl World {
    /// A click with a `device_id` (or none), under the same journey key as every record here.
    fn click_on(&mut self, id: &str, partner: &str, at: &str, device: Option<&str>) {
        let device = device.map_or(String::new(), |d| format!(r#","device_id":"{d}""#));
        let v = format!(
            r#"{{"click_id":"{id}","program_id":"p1","partner_id":"{partner}","occurred_at":"{at}","customer_id":"cu-1"{device}}}"#
        );
        let out = self.apply(Event::Click(
            decode_click(v.as_bytes(), &Limits::default()).unwrap(),
        ));
        assert!(out.is_empty());
    }
}

fn devices(a: &Action) -> (Vec<Option<&str>>, Vec<Option<&str>>) {
    (
        a.credits.iter().map(|c| c.device_id.as_deref()).collect(),
        a.journey
            .touchpoints
            .iter()
            .map(|t| t.device_id.as_deref())
            .collect(),
    )
}

#[test]
fn credits_and_touchpoints_carry_the_device_of_their_click() {
    // One journey (key cu-1, no stitching), clicks from three devices: d-1, d-2 and none. The
    // conversion happens on d-2.
    let mut w = World::new();
    w.program("p1", r#""account_id":"acme","credit_policy":"linear""#);
    for p in ["pa1", "pa2", "pa3"] {
        w.contract("p1", p, r#""payout":{"default":{"percent":"10"}}"#);
    }
    w.click_on("c-1", "pa1", "2026-11-18T12:00:00Z", Some("d-1"));
    w.click_on("c-2", "pa2", "2026-11-19T12:00:00Z", Some("d-2"));
    w.click_on("c-3", "pa3", "2026-11-19T18:00:00Z", None);
    let conv = r#","device_id":"d-2","customer_id":"cu-1""#;
    let a = action(w.convert("o-1", "2026-11-20T12:00:00Z", conv));
    let clicks: Vec<_> = a.credits.iter().map(|c| c.click_id.as_deref()).collect();
    assert_eq!(clicks, [Some("c-1"), Some("c-2"), Some("c-3")]);
    assert_eq!(
        devices(&a),
        (
            vec![Some("d-1"), Some("d-2"), None],
            vec![Some("d-1"), Some("d-2"), None]
        )
    );
    // The action's own ids stay the conversion's.
    assert_eq!(a.device_id.as_deref(), Some("d-2"));
    assert_eq!(a.customer_id.as_deref(), Some("cu-1"));
    // In the JSON, right after `click_id`, and null when the click had none.
    let json = serde_json::to_string(&a).unwrap();
    for part in [
        r#""referral_type":"click","click_id":"c-1","device_id":"d-1","promo_code":null,"#,
        r#""click_id":"c-3","device_id":null,"promo_code":null,"#,
        r#"{"click_id":"c-1","device_id":"d-1","program_id":"p1","partner_id":"pa1","#,
        r#"{"click_id":"c-3","device_id":null,"program_id":"p1","partner_id":"pa3","#,
    ] {
        assert!(json.contains(part), "{part} not in {json}");
    }

    // A modification repeats them.
    let m = action(w.record(r#"{"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-21T12:00:00Z","items":[{"sku":"A","quantity":2}]}"#));
    assert_eq!(m.change.as_str(), "modified");
    assert_eq!(devices(&m), devices(&a));

    // last_click: only the winner, from d-1 (a conversion on d-2 credited to another device).
    w.program("p1", r#""account_id":"acme","credit_policy":"last_click""#);
    w.click_on("c-4", "pa1", "2026-11-21T12:00:00Z", Some("d-1"));
    let b = action(w.convert("o-2", "2026-11-21T13:00:00Z", conv));
    assert_eq!(b.credits.len(), 1);
    assert_eq!(b.credits[0].click_id.as_deref(), Some("c-4"));
    assert_eq!(b.credits[0].device_id.as_deref(), Some("d-1"));
    assert_eq!(b.device_id.as_deref(), Some("d-2"));
    assert_eq!(devices(&b).1, [Some("d-1"), Some("d-2"), None, Some("d-1")]);
}

#[test]
fn a_promo_code_credit_has_no_device() {
    let mut w = promo_world("always", "preferred", "preferred");
    w.click_on("c-2", "clicker", "2026-10-03T00:00:00Z", Some("d-1"));
    let a = action(w.convert(
        "o1",
        "2026-10-04T00:00:00Z",
        r#","promo_code":"save10","device_id":"d-2""#,
    ));
    assert_eq!(a.credits.len(), 1);
    assert_eq!(a.credits[0].referral_type.as_str(), "promo_code");
    assert_eq!(a.credits[0].device_id, None);
    // The touchpoints still list the clicks' devices (c1 had none).
    assert_eq!(devices(&a), (vec![None], vec![None, Some("d-1")]));
    let json = serde_json::to_string(&a).unwrap();
    assert!(
        json.contains(r#""click_id":null,"device_id":null,"promo_code":"save10","#),
        "{json}"
    );
}
