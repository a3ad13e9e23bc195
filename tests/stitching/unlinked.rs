//! Property: stitching changes nothing when no record links.

use attrib::tools::replay::{ReplayOptions, replay_into};
use proptest::prelude::*;
use serde_json::Value;

/// The workload's stream with no record carrying both ids: `customer_id` dropped, and changes
/// given the `device_id` of their key (with stitching on a change is found by its ids).
fn unlinked_stream(seed: u64, clicks: usize) -> String {
    let w = attrib::tools::workload::generate(seed, clicks, (clicks / 6).max(5));
    let mut text = String::new();
    for r in w.all() {
        let mut line: Value = serde_json::from_str(&r.replay_line()).unwrap();
        let key = line["key"].clone();
        if let Some(v) = line["value"].as_object_mut() {
            v.remove("customer_id");
            if matches!(
                v.get("type").and_then(Value::as_str),
                Some("modification" | "reversal")
            ) {
                v.insert("device_id".into(), key);
            }
        }
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

fn replay_text(stitching: bool, text: &str) -> String {
    let mut p = ReplayOptions {
        stitching,
        ..Default::default()
    }
    .processor();
    let mut out = Vec::new();
    replay_into(&mut p, text.as_bytes(), &mut out, || 0).unwrap();
    String::from_utf8(out).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    /// With stitching on, a stream in which no record carries both ids gives the output of
    /// stitching off, byte for byte.
    #[test]
    fn stitching_changes_nothing_when_no_record_links(seed in 0u64..1_000_000, clicks in 200usize..1_500) {
        let text = unlinked_stream(seed, clicks);
        let off = replay_text(false, &text);
        let on = replay_text(true, &text);
        prop_assert!(off.lines().any(|l| l.contains("\"topic\":\"actions\"")));
        prop_assert!(off == on, "outputs differ for seed {seed}");
    }
}
