//! Table tests, one group per rule of docs/design.md §3, with hand-computed expectations.

use attrib::model::journey::Journey;
use attrib::model::output::{Action, InvalidAction, Output};
use attrib::model::records::{Event, Limits, decode_click, decode_conversion_topic};
use attrib::model::tables::Tables;
use attrib::model::time::parse_rfc3339;
use attrib::rules::engine::{self, Clock, EngineSettings};

struct World {
    tables: Tables,
    journey: Journey,
    settings: EngineSettings,
    stream_time: i64,
}

fn t(s: &str) -> i64 {
    parse_rfc3339(s).unwrap()
}

impl World {
    fn new() -> World {
        let mut w = World {
            tables: Tables::default(),
            journey: Journey::default(),
            settings: EngineSettings::default(),
            stream_time: 0,
        };
        w.program("p1", r#""account_id":"acme""#);
        w
    }

    fn config(&mut self, key: &str, value: &str) {
        self.tables
            .apply_config(
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &Limits::default(),
            )
            .unwrap();
    }

    fn program(&mut self, id: &str, extra: &str) {
        self.config(
            &format!("program/{id}"),
            &format!(r#"{{"type":"program","program_id":"{id}",{extra}}}"#),
        );
    }

    fn contract(&mut self, program: &str, partner: &str, extra: &str) {
        let sep = if extra.is_empty() { "" } else { "," };
        self.config(
            &format!("contract/{program}/{partner}"),
            &format!(r#"{{"type":"contract","program_id":"{program}","partner_id":"{partner}","active_from":"2026-01-01T00:00:00Z"{sep}{extra}}}"#),
        );
    }

    fn promo(&mut self, program: &str, code: &str, partner: &str, policy: &str, extra: &str) {
        let v = format!(
            r#"{{"type":"promo_code","program_id":"{program}","code":"{code}","partner_id":"{partner}","credit_policy":"{policy}"{extra}}}"#
        );
        self.tables
            .apply_promo(
                Some(format!("{program}/{}", code.to_ascii_uppercase()).as_bytes()),
                Some(v.as_bytes()),
                &Limits::default(),
            )
            .unwrap();
    }

    fn apply(&mut self, e: Event) -> Vec<Output> {
        self.stream_time = self.stream_time.max(e.occurred_at());
        let mut out = Vec::new();
        engine::apply(
            &mut self.journey,
            &self.tables,
            &self.settings,
            &e,
            Clock {
                processed_at: 0,
                stream_time: self.stream_time,
            },
            &mut out,
        );
        out
    }

    fn click(&mut self, id: &str, program: &str, partner: &str, at: &str) {
        let v = format!(
            r#"{{"click_id":"{id}","program_id":"{program}","partner_id":"{partner}","occurred_at":"{at}","shared_id":"s-{id}","sub_ids":["x"]}}"#
        );
        let out = self.apply(Event::Click(
            decode_click(v.as_bytes(), &Limits::default()).unwrap(),
        ));
        assert!(out.is_empty());
    }

    fn record(&mut self, json: &str) -> Output {
        let e = decode_conversion_topic(json.as_bytes(), &Limits::default()).unwrap();
        let mut out = self.apply(e);
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    /// A conversion of 100.00 (one item) in p1 at `at`, with extra fields.
    fn convert(&mut self, order: &str, at: &str, extra: &str) -> Output {
        self.record(&format!(
            r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{at}","items":[{{"sku":"A","category":"shoes","quantity":1,"unit_price":"100.00"}}]{extra}}}"#
        ))
    }
}

fn action(o: Output) -> Box<Action> {
    match o {
        Output::Action(a) => a,
        Output::Invalid(i) => panic!(
            "expected an action, got invalid {:?}: {:?}",
            i.reason, i.detail
        ),
    }
}

fn invalid(o: Output) -> Box<InvalidAction> {
    match o {
        Output::Invalid(i) => i,
        Output::Action(a) => panic!("expected an invalid action, got credits {:?}", a.credits),
    }
}

fn reason(o: Output) -> &'static str {
    invalid(o).reason.as_str()
}

fn partners(a: &Action) -> Vec<(&str, String)> {
    a.credits
        .iter()
        .map(|c| (c.partner_id.as_str(), c.weight.to_string()))
        .collect()
}

// ---- rule 1: eligibility ---------------------------------------------------------------------

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

// ---- rules 2, 3, 5: participations, credit groups, policies ------------------------------------

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

// ---- rule 4: promo codes -------------------------------------------------------------------------

fn promo_world(policy: &str, code_group: &str, click_group: &str) -> World {
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

// ---- rule 6: payouts ----------------------------------------------------------------------------

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

// ---- rules 7, 8: reasons and duplicates ------------------------------------------------------------

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

// ---- rule 9: modifications and reversals ------------------------------------------------------------

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

// ---- journeys, duplicates of clicks, retention --------------------------------------------------------

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

// ---- output: the device of each credit and touchpoint (docs/design.md §2, §6) ------------------

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
