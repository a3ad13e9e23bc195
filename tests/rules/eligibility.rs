//! Rule 1: eligibility.

use crate::{World, action, partners, reason};
use attrib::model::output::Output;

#[test]
fn window_end_is_inclusive_and_one_ms_later_is_outside() {
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    let a = action(w.convert("o1", "2026-10-31T00:00:00Z", ""));
    assert_eq!(partners(&a), vec![("pa1", "1.000000".into())]);
    assert_eq!(
        reason(w.convert("o2", "2026-10-31T00:00:00.001Z", "")),
        "outside_referral_window"
    );
}

#[test]
fn a_contract_window_overrides_the_program_window() {
    let mut w = World::new();
    w.contract("p1", "pa1", r#""referral_window_days":2"#);
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-03T00:00:01Z", "")),
        "outside_referral_window"
    );
    assert!(matches!(
        w.convert("o2", "2026-10-03T00:00:00Z", ""),
        Output::Action(_)
    ));
}

#[test]
fn clicks_after_the_conversion_or_too_close_do_not_count() {
    let mut w = World::new();
    w.program(
        "p1",
        r#""account_id":"acme","min_click_to_conversion_secs":60"#,
    );
    w.contract("p1", "pa1", "");
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-01T00:00:59Z", "")),
        "outside_referral_window"
    );
    assert!(matches!(
        w.convert("o2", "2026-10-01T00:01:00Z", ""),
        Output::Action(_)
    ));
    let mut w = World::new();
    w.contract("p1", "pa1", "");
    w.click("c1", "p1", "pa1", "2026-10-02T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-01T00:00:00Z", "")),
        "outside_referral_window"
    );
}

#[test]
fn a_contract_ending_exactly_at_t_is_not_active() {
    let mut w = World::new();
    w.contract("p1", "pa1", r#""active_to":"2026-10-05T00:00:00Z""#);
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-05T00:00:00Z", "")),
        "partner_not_active"
    );
    assert!(matches!(
        w.convert("o2", "2026-10-04T23:59:59.999Z", ""),
        Output::Action(_)
    ));
}

#[test]
fn event_types_of_the_contract() {
    let mut w = World::new();
    w.contract("p1", "pa1", r#""event_types":["lead"]"#);
    w.contract("p1", "pa2", r#""event_types":[]"#);
    w.click("c1", "p1", "pa1", "2026-10-01T00:00:00Z");
    w.click("c2", "p1", "pa2", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "event_type_not_in_contract"
    );
}

#[test]
fn cross_program_tracking() {
    let setup = |scope: &str| {
        let mut w = World::new();
        w.program("p2", r#""account_id":"acme""#);
        w.program("p3", r#""account_id":"acme""#);
        w.program("cr", r#""account_id":"acme","kind":"creator""#);
        w.program("other", r#""account_id":"globex""#);
        w.contract("p1", "pa1", "");
        w.contract("p1", "pa2", "");
        w.contract("p1", "pa3", "");
        w.config(
            "cross_program/acme",
            &format!(r#"{{"type":"cross_program","account_id":"acme","enabled":true,{scope}}}"#),
        );
        w
    };
    // scope all: a click in p2 counts for p1, as a cross-program click.
    let mut w = setup(r#""scope":"all""#);
    w.click("c1", "p2", "pa1", "2026-10-01T00:00:00Z");
    let a = action(w.convert("o1", "2026-10-02T00:00:00Z", ""));
    assert_eq!(a.credits[0].referral_type.as_str(), "cross_program_click");
    // specific: only listed programs.
    let mut w = setup(r#""scope":"specific","programs":["p1","p2"]"#);
    w.click("c1", "p3", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "no_valid_referrer"
    );
    w.click("c2", "p2", "pa2", "2026-10-01T00:00:00Z");
    assert_eq!(
        action(w.convert("o2", "2026-10-02T00:00:00Z", "")).credits[0].partner_id,
        "pa2"
    );
    // a creator program's clicks never count elsewhere, nor another account's.
    let mut w = setup(r#""scope":"all""#);
    w.click("c1", "cr", "pa1", "2026-10-01T00:00:00Z");
    w.click("c2", "other", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "no_valid_referrer"
    );
    // disabled: nothing crosses.
    let mut w = setup(r#""scope":"all""#);
    w.config(
        "cross_program/acme",
        r#"{"type":"cross_program","account_id":"acme","enabled":false}"#,
    );
    w.click("c1", "p2", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "no_valid_referrer"
    );
}

#[test]
fn a_creator_program_gets_no_cross_program_credit_but_its_own_clicks_count() {
    let mut w = World::new();
    w.program("p1", r#""account_id":"acme","kind":"creator""#);
    w.program("p2", r#""account_id":"acme""#);
    w.config(
        "cross_program/acme",
        r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"all"}"#,
    );
    w.contract("p1", "pa1", "");
    w.click("c1", "p2", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        reason(w.convert("o1", "2026-10-02T00:00:00Z", "")),
        "no_valid_referrer"
    );
    w.click("c2", "p1", "pa1", "2026-10-01T00:00:00Z");
    assert_eq!(
        action(w.convert("o2", "2026-10-02T00:00:00Z", "")).credits[0]
            .referral_type
            .as_str(),
        "click"
    );
}
