//! Rules 2, 3, 5: participations, credit groups, policies.

use crate::{World, action, partners};
use attrib::model::output::Action;

#[test]
fn last_click_wins_and_one_partner_is_one_participation() {
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    w.contract("p1", "pa2", "");
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    w.click("c2", "p1", "pa2", "2026-10-02T00:00:00Z");
    w.click("c3", "p1", "pa1", "2026-10-03T00:00:00Z");
    let a = action(w.convert("o1", "2026-10-04T00:00:00Z", ""));
    assert_eq!(partners(&a), vec![("pa1", "1.000000".into())]);
    assert_eq!(a.credits[0].click_id.as_deref(), Some("c3"));
    assert_eq!(a.credits[0].shared_id.as_deref(), Some("s-c3"));
    assert_eq!(a.journey.total, 3);
}

#[test]
fn same_time_clicks_the_later_record_counts_as_later() {
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    w.contract("p1", "pa2", "");
    w.click("c1", "p1", "pa2", "2026-10-01T00:00:00Z");
    w.click("c2", "p1", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        action(w.convert("o1", "2026-10-04T00:00:00Z", "")).credits[0].partner_id,
        "pa1"
    );
}

#[test]
fn first_click_uses_each_partners_earliest_click() {
    let mut w = World::new();
    w.program("p1", r#""account_id":"acme","credit_policy":"first_click""#);
    w.contract("p1", "pa1", "");
    w.contract("p1", "pa2", "");
    w.click("c1", "p1", "pa2", "2026-10-02T00:00:00Z");
    w.click("c2", "p1", "pa1", "2026-10-01T00:00:00Z");
    w.click("c3", "p1", "pa1", "2026-10-03T00:00:00Z");
    let a = action(w.convert("o1", "2026-10-04T00:00:00Z", ""));
    assert_eq!(partners(&a), vec![("pa1", "1.000000".into())]);
    assert_eq!(a.credits[0].click_id.as_deref(), Some("c2"));
}

#[test]
fn only_the_highest_credit_group_competes() {
    let mut w = World::new();
    w.contract("p1", "pa1", r#""credit_group":"standard""#);
    w.contract("p1", "pa2", r#""credit_group":"preferred""#);
    w.contract("p1", "pa3", r#""credit_group":"non_preferred""#);
    w.click("c1", "p1", "pa2", "2026-10-01T00:00:00Z");
    w.click("c2", "p1", "pa1", "2026-10-02T00:00:00Z");
    w.click("c3", "p1", "pa3", "2026-10-03T00:00:00Z");
    assert_eq!(
        partners(&action(w.convert("o1", "2026-10-04T00:00:00Z", ""))),
        vec![("pa2", "1.000000".into())]
    );
}

fn multi(policy: &str, n: usize) -> Box<Action> {
    let mut w = World::new();
    w.program(
        "p1",
        &format!(r#""account_id":"acme","credit_policy":"{policy}","time_decay_half_life_days":1"#),
    );
    for i in 0..n {
        w.contract(
            "p1",
            &format!("pa{i}"),
            r#""payout":{"default":{"percent":"10"}}"#,
        );
        w.click(
            &format!("c{i}"),
            "p1",
            &format!("pa{i}"),
            &format!("2026-10-0{}T00:00:00Z", i + 1),
        );
    }
    action(w.convert("o1", "2026-10-09T00:00:00Z", ""))
}

#[test]
fn linear_weights_round_and_the_latest_takes_the_rest() {
    let a = multi("linear", 3);
    assert_eq!(
        partners(&a),
        vec![
            ("pa0", "0.333333".into()),
            ("pa1", "0.333333".into()),
            ("pa2", "0.333334".into())
        ]
    );
    // payout = 10.00; credit payouts from the exact weights: 3.333333, 3.333333, rest 3.333334
    assert_eq!(a.payout.to_string(), "10.000000");
    let pays: Vec<String> = a.credits.iter().map(|c| c.payout.to_string()).collect();
    assert_eq!(pays, ["3.333333", "3.333333", "3.333334"]);
}

#[test]
fn position_based_weights() {
    assert_eq!(
        multi("position_based", 1).credits[0].weight.to_string(),
        "1.000000"
    );
    let two: Vec<String> = multi("position_based", 2)
        .credits
        .iter()
        .map(|c| c.weight.to_string())
        .collect();
    assert_eq!(two, ["0.500000", "0.500000"]);
    let four: Vec<String> = multi("position_based", 4)
        .credits
        .iter()
        .map(|c| c.weight.to_string())
        .collect();
    assert_eq!(four, ["0.400000", "0.100000", "0.100000", "0.400000"]);
    let five: Vec<String> = multi("position_based", 5)
        .credits
        .iter()
        .map(|c| c.weight.to_string())
        .collect();
    assert_eq!(
        five,
        ["0.400000", "0.066667", "0.066667", "0.066667", "0.399999"]
    );
}

#[test]
fn time_decay_weights() {
    // Clicks 8, 7 and 6 days before T with a 1-day half-life: 2^-8, 2^-7, 2^-6 ∝ 1, 2, 4.
    let a = multi("time_decay", 3);
    let w: Vec<String> = a.credits.iter().map(|c| c.weight.to_string()).collect();
    assert_eq!(w, ["0.142857", "0.285714", "0.571429"]);
    let pays: Vec<String> = a.credits.iter().map(|c| c.payout.to_string()).collect();
    // 10 × 1/7 = 1.4285714…, 10 × 2/7 = 2.857142…, rest 5.714286
    assert_eq!(pays, ["1.428571", "2.857143", "5.714286"]);
}
