use super::*;

fn apply(t: &mut Tables, key: &str, v: &str) -> Result<TableChange, Invalid> {
    t.apply_config(Some(key.as_bytes()), Some(v.as_bytes()), &Limits::default())
}

#[test]
fn bad_config_is_refused_and_the_previous_version_stays() {
    let mut t = Tables::default();
    apply(
        &mut t,
        "program/p1",
        r#"{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":10}"#,
    )
    .unwrap();
    let e = apply(
        &mut t,
        "program/p1",
        r#"{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":-1}"#,
    )
    .unwrap_err();
    assert!(e.0.contains("referral_window_days"), "{}", e.0);
    assert_eq!(t.programs["p1"].referral_window_days, 10);
    let e = apply(
        &mut t,
        "program/p2",
        r#"{"type":"program","program_id":"p1","account_id":"acme"}"#,
    )
    .unwrap_err();
    assert!(e.0.contains("does not match"), "{}", e.0);
    let c = r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"120"}}}"#;
    let e = apply(&mut t, "contract/p1/pa1", c).unwrap_err();
    assert!(e.0.contains("payout.default.percent"), "{}", e.0);
    let c = r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","active_to":"2025-01-01T00:00:00Z"}"#;
    assert!(
        apply(&mut t, "contract/p1/pa1", c)
            .unwrap_err()
            .0
            .contains("active_to")
    );
    apply(
        &mut t,
        "program/q1",
        r#"{"type":"program","program_id":"q1","account_id":"other"}"#,
    )
    .unwrap();
    let x = r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"specific","programs":["p1","q1"]}"#;
    assert!(
        apply(&mut t, "cross_program/acme", x)
            .unwrap_err()
            .0
            .contains("q1")
    );
    assert_eq!(
        t.apply_config(Some(b"program/p1"), None, &Limits::default())
            .unwrap(),
        TableChange::Deleted
    );
    assert!(t.programs.is_empty() || !t.programs.contains_key("p1"));
}

#[test]
fn the_longest_window_follows_upserts_and_deletes() {
    let mut t = Tables::default();
    let base = t.max_window_days();
    let program = |w: i64| {
        format!(
            r#"{{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":{w}}}"#
        )
    };
    let contract = |partner: &str, w: i64| {
        format!(
            r#"{{"type":"contract","program_id":"p1","partner_id":"{partner}","active_from":"2026-01-01T00:00:00Z","referral_window_days":{w}}}"#
        )
    };
    apply(&mut t, "program/p1", &program(base + 10)).unwrap();
    assert_eq!(t.max_window_days(), base + 10);
    apply(&mut t, "contract/p1/a", &contract("a", base + 20)).unwrap();
    apply(&mut t, "contract/p1/b", &contract("b", base + 20)).unwrap();
    assert_eq!(t.max_window_days(), base + 20);
    // Replacing one of two equal windows keeps the other.
    apply(&mut t, "contract/p1/a", &contract("a", base + 5)).unwrap();
    assert_eq!(t.max_window_days(), base + 20);
    t.apply_config(Some(b"contract/p1/b"), None, &Limits::default())
        .unwrap();
    assert_eq!(t.max_window_days(), base + 10);
    apply(&mut t, "program/p1", &program(base + 1)).unwrap();
    assert_eq!(t.max_window_days(), base + 5);
    t.apply_config(Some(b"contract/p1/a"), None, &Limits::default())
        .unwrap();
    t.apply_config(Some(b"program/p1"), None, &Limits::default())
        .unwrap();
    assert_eq!(t.max_window_days(), base);
    assert!(t.windows.is_empty());
}

#[test]
fn promo_keys_are_upper_case() {
    let mut t = Tables::default();
    let v = r#"{"type":"promo_code","program_id":"p1","code":"Save10","partner_id":"pa2","credit_policy":"always"}"#;
    assert!(
        t.apply_promo(Some(b"p1/Save10"), Some(v.as_bytes()), &Limits::default())
            .is_err()
    );
    t.apply_promo(Some(b"p1/SAVE10"), Some(v.as_bytes()), &Limits::default())
        .unwrap();
    assert_eq!(t.promo("p1", "SAVE10").unwrap().partner_id, "pa2");
    t.apply_promo(Some(b"p1/SAVE10"), None, &Limits::default())
        .unwrap();
    assert!(t.promo("p1", "SAVE10").is_none());
}
