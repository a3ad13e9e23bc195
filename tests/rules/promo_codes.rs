//! Rule 4: promo codes.

use crate::{World, action, partners, reason, t};

pub(crate) fn promo_world(policy: &str, code_group: &str, click_group: &str) -> World {
    let mut w = World::new();
    w.contract(
        "p1",
        "clicker",
        &format!(r#""credit_group":"{click_group}""#),
    );
    w.contract(
        "p1",
        "coder",
        &format!(r#""credit_group":"{code_group}","payout":{{"default":{{"percent":"5"}}}}"#),
    );
    w.promo(
        "p1",
        "Save10",
        "coder",
        policy,
        r#","valid_from":"2026-10-04T00:00:00Z""#,
    );
    w.click("c1", "p1", "clicker", "2026-10-01T00:00:00Z");
    w
}

#[test]
fn an_always_code_beats_clicks_of_its_own_group_but_not_higher_groups() {
    let mut w = promo_world("always", "preferred", "preferred");
    let a = action(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"save10""#));
    assert_eq!(partners(&a), vec![("coder", "1.000000".into())]);
    let c = &a.credits[0];
    assert_eq!(
        (
            c.referral_type.as_str(),
            c.promo_code.as_deref(),
            c.click_id.as_deref()
        ),
        ("promo_code", Some("save10"), None)
    );
    assert_eq!(c.referring_at, t("2026-10-04T00:00:00Z"));
    assert!(c.sub_ids.is_empty());
    assert_eq!(a.promo_code.as_deref(), Some("save10"));
    assert_eq!(a.payout.to_string(), "5.000000");
    let mut w = promo_world("always", "standard", "preferred");
    assert_eq!(
        action(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"SAVE10""#)).credits[0]
            .partner_id,
        "clicker"
    );
}

#[test]
fn a_code_valid_from_exactly_t_counts_and_one_ms_earlier_does_not() {
    let mut w = World::new();
    w.contract("p1", "coder", "");
    w.promo(
        "p1",
        "Save10",
        "coder",
        "always",
        r#","valid_from":"2026-10-04T00:00:00Z","valid_to":"2026-10-05T00:00:00Z""#,
    );
    assert_eq!(
        reason(w.convert(
            "o0",
            "2026-10-03T23:59:59.999Z",
            r#","promo_code":"save10""#
        )),
        "promo_code_not_assigned"
    );
    assert_eq!(
        action(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"save10""#)).credits[0]
            .partner_id,
        "coder"
    );
    assert_eq!(
        reason(w.convert("o2", "2026-10-05T00:00:00Z", r#","promo_code":"save10""#)),
        "promo_code_not_assigned"
    );
}

#[test]
fn if_involved_needs_a_participation_of_the_codes_partner() {
    let mut w = promo_world("if_involved", "preferred", "preferred");
    assert_eq!(
        action(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"save10""#)).credits[0]
            .partner_id,
        "clicker"
    );
    w.click("c2", "p1", "coder", "2026-10-01T00:00:00Z");
    w.click("c3", "p1", "clicker", "2026-10-02T00:00:00Z");
    let a = action(w.convert("o2", "2026-10-04T00:00:00Z", r#","promo_code":"save10""#));
    assert_eq!(partners(&a), vec![("coder", "1.000000".into())]);
    assert_eq!(a.credits[0].referral_type.as_str(), "promo_code");
}

#[test]
fn if_winner_only_records_the_code_on_the_winner() {
    let mut w = promo_world("if_winner", "preferred", "preferred");
    w.click("c2", "p1", "coder", "2026-10-02T00:00:00Z");
    let a = action(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"save10""#));
    assert_eq!(a.credits[0].partner_id, "coder");
    assert_eq!(a.credits[0].referral_type.as_str(), "click");
    assert_eq!(a.credits[0].promo_code.as_deref(), Some("save10"));
    w.click("c3", "p1", "clicker", "2026-10-03T00:00:00Z");
    let a = action(w.convert("o2", "2026-10-04T00:00:00Z", r#","promo_code":"save10""#));
    assert_eq!(a.credits[0].partner_id, "clicker");
    assert_eq!(a.credits[0].promo_code, None);
}

#[test]
fn invalid_codes_never_credit_but_are_reported() {
    let mut w = promo_world("always", "preferred", "preferred");
    let a = action(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"NOPE""#));
    assert_eq!(a.credits[0].partner_id, "clicker");
    assert_eq!(a.promo_code.as_deref(), Some("NOPE"));
    let mut w = World::new();
    w.promo("p1", "X", "ghost", "always", "");
    assert_eq!(
        reason(w.convert("o1", "2026-10-04T00:00:00Z", r#","promo_code":"x""#)),
        "partner_not_active"
    );
    assert_eq!(
        reason(w.convert("o2", "2026-10-04T00:00:00Z", r#","promo_code":"y""#)),
        "promo_code_not_assigned"
    );
}
