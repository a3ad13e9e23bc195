use super::*;
use std::collections::HashSet;

fn conv(s: &str) -> Result<Event, Invalid> {
    decode_conversion_topic(s.as_bytes(), &Limits::default())
}

#[test]
fn reasons_name_the_field() {
    let l = Limits::default();
    let e = decode_click(br#"{"type":"click","program_id":"p","partner_id":"x","occurred_at":"2026-01-01T00:00:00Z"}"#, &l).unwrap_err();
    assert_eq!(e.0, "invalid click: missing required field `click_id`");
    let e = decode_click(br#"{"click_id":"c","program_id":"p","partner_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"tv"}"#, &l).unwrap_err();
    assert!(
        e.0.contains("`source`") && e.0.contains("unknown variant `tv`"),
        "{}",
        e.0
    );
    let e = decode_click(
        br#"{"click_id":5,"program_id":"p","partner_id":"x","occurred_at":"2026-01-01T00:00:00Z"}"#,
        &l,
    )
    .unwrap_err();
    assert!(
        e.0.contains("`click_id`") && e.0.contains("integer `5`"),
        "{}",
        e.0
    );
    let e = decode_click(br#"{"type":"conversion"}"#, &l).unwrap_err();
    assert_eq!(
        e.0,
        "record of type `conversion` does not belong on the clicks topic"
    );
    let e = decode_click(b"not json", &l).unwrap_err();
    assert!(e.0.starts_with("click is not a JSON object"), "{}", e.0);
}

#[test]
fn each_failure_has_its_reason() {
    let l = Limits::default();
    let reason = |s: &str| decode_click(s.as_bytes(), &l).unwrap_err().reason();
    assert_eq!(reason("not json"), DlqReason::Malformed);
    assert_eq!(reason("{} trailing"), DlqReason::Malformed);
    assert_eq!(reason(r#"{"type":"click"}"#), DlqReason::MissingField);
    assert_eq!(reason(r#"{"type":"conversion"}"#), DlqReason::WrongType);
    assert_eq!(reason(r#"{"click_id":5}"#), DlqReason::InvalidValue);
    let labels: HashSet<&str> = DlqReason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(labels.len(), DlqReason::ALL.len());
}

#[test]
fn integrity_checks() {
    let base = r#""program_id":"p","event_type":"sale","order_id":"o","occurred_at":"2026-01-01T00:00:00Z""#;
    let e = conv(&format!(
        r#"{{{base},"items":[{{"sku":"A","quantity":1.5,"unit_price":"1"}}]}}"#
    ))
    .unwrap_err();
    assert!(
        e.0.contains("items[0].quantity") && e.0.contains("whole"),
        "{}",
        e.0
    );
    let e = conv(&format!(r#"{{{base},"items":[{{"sku":"A","quantity":1,"unit_price":"1"}},{{"sku":"A","quantity":1,"unit_price":"1"}}]}}"#)).unwrap_err();
    assert!(e.0.contains("sku `A`"), "{}", e.0);
    let e = conv(&format!(
        r#"{{{base},"order_discount":"3","items":[{{"sku":"A","quantity":1,"unit_price":"2"}}]}}"#
    ))
    .unwrap_err();
    assert!(e.0.contains("order_discount"), "{}", e.0);
    let e = conv(&format!(r#"{{{base},"order_tax":"-1"}}"#)).unwrap_err();
    assert!(
        e.0.contains("order_tax") && e.0.contains("negative"),
        "{}",
        e.0
    );
    let Event::Conversion(c) = conv(&format!(r#"{{{base},"order_subtotal":12.5}}"#)).unwrap()
    else {
        panic!()
    };
    assert!(c.itemless);
    assert_eq!(c.items[0].unit_price.to_string(), "12.5");
}
