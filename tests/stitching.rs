//! Table tests for cross-device identity stitching (docs/design.md §6), one or more per rule,
//! through `replay` (records in file order, as one partition), with hand-worked expectations;
//! and the property that stitching changes nothing for a stream in which no record links.

use attrib::stage::attribution::{Processor, StitchStats};
use attrib::tools::replay::{ReplayOptions, replay_into};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A replay with stitching on (or off), fed record by record.
struct World {
    p: Processor,
}

/// One output line.
#[derive(Debug, Clone)]
struct Out {
    topic: String,
    value: Value,
    headers: Value,
}

impl Out {
    fn reason(&self) -> &str {
        self.value["reason"].as_str().unwrap_or("")
    }

    fn error(&self) -> &str {
        self.headers["attrib.error"].as_str().unwrap_or("")
    }

    /// (partner, click id, click's device) of each credit.
    fn credits(&self) -> Vec<(String, String, String)> {
        self.value["credits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["partner_id"].as_str().unwrap().to_string(),
                    c["click_id"].as_str().unwrap_or("-").to_string(),
                    c["device_id"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    fn touchpoints(&self) -> Vec<String> {
        self.value["journey"]["touchpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["click_id"].as_str().unwrap().to_string())
            .collect()
    }
}

const T0: &str = "2026-11-01T10:00:00Z";

/// `2026-11-01T10:00:00Z` plus `minutes`.
fn at(minutes: i64) -> String {
    let base = attrib::model::time::parse_rfc3339(T0).unwrap();
    attrib::model::time::format_rfc3339(base + minutes * 60_000)
}

impl World {
    fn new(stitching: bool) -> World {
        World::with(ReplayOptions {
            stitching,
            ..Default::default()
        })
    }

    fn with(options: ReplayOptions) -> World {
        let mut w = World {
            p: options.processor(),
        };
        w.send(
            "config",
            Some("program/p1"),
            json!({"type":"program","program_id":"p1","account_id":"acme","currency":"USD"}),
        );
        for partner in ["pa1", "pa2", "pa3"] {
            w.send(
                "config",
                Some(&format!("contract/p1/{partner}")),
                json!({"type":"contract","program_id":"p1","partner_id":partner,"active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}),
            );
        }
        w
    }

    /// Replays one record; returns its outputs.
    fn send(&mut self, topic: &str, key: Option<&str>, value: Value) -> Vec<Out> {
        let line = json!({"topic": topic, "key": key, "value": value}).to_string() + "\n";
        let mut out = Vec::new();
        replay_into(&mut self.p, line.as_bytes(), &mut out, || 0).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Out {
                    topic: v["topic"].as_str().unwrap().to_string(),
                    value: v["value"].clone(),
                    headers: v["headers"].clone(),
                }
            })
            .collect()
    }

    /// Sends a record that must have no output.
    fn quiet(&mut self, topic: &str, key: Option<&str>, value: Value) {
        let out = self.send(topic, key, value);
        assert!(out.is_empty(), "expected no output, got {out:?}");
    }

    /// Sends a record that must have exactly one output.
    fn one(&mut self, topic: &str, key: Option<&str>, value: Value) -> Out {
        let mut out = self.send(topic, key, value);
        assert_eq!(out.len(), 1, "expected one output, got {out:?}");
        out.remove(0)
    }

    fn click(
        &mut self,
        id: &str,
        partner: &str,
        minutes: i64,
        device: Option<&str>,
        customer: Option<&str>,
    ) {
        self.quiet(
            "clicks",
            device,
            json!({"type":"click","click_id":id,"program_id":"p1","partner_id":partner,"occurred_at":at(minutes),"device_id":device,"customer_id":customer}),
        );
    }

    fn identify(&mut self, device: &str, customer: &str, minutes: i64) {
        self.quiet(
            "identities",
            Some(device),
            json!({"type":"identify","device_id":device,"customer_id":customer,"occurred_at":at(minutes)}),
        );
    }

    fn conversion(
        &mut self,
        order: &str,
        minutes: i64,
        device: Option<&str>,
        customer: Option<&str>,
    ) -> Out {
        self.conversion_keyed(device.or(customer), order, minutes, device, customer)
    }

    fn conversion_keyed(
        &mut self,
        key: Option<&str>,
        order: &str,
        minutes: i64,
        device: Option<&str>,
        customer: Option<&str>,
    ) -> Out {
        self.one(
            "conversions",
            key,
            json!({"type":"conversion","program_id":"p1","event_type":"sale","order_id":order,"occurred_at":at(minutes),"device_id":device,"customer_id":customer,"order_subtotal":"100.00"}),
        )
    }

    fn stats(&self) -> StitchStats {
        self.p.stats.stitching
    }
}

// ---------------------------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------------------------

#[test]
fn a_phone_conversion_is_credited_to_the_laptop_click_after_an_identify() {
    for stitching in [false, true] {
        let mut w = World::new(stitching);
        w.click("c-laptop", "pa1", 0, Some("laptop"), None);
        w.identify("laptop", "cu-9", 60);
        w.identify("phone", "cu-9", 24 * 60);
        let o = w.conversion("o-1", 25 * 60, Some("phone"), None);
        if stitching {
            assert_eq!(o.topic, "actions", "{o:?}");
            assert_eq!(
                o.credits(),
                vec![("pa1".into(), "c-laptop".into(), "laptop".into())]
            );
            // The action's own ids stay the conversion's.
            assert_eq!(o.value["device_id"], "phone");
            assert_eq!(o.value["customer_id"], Value::Null);
            assert_eq!(w.stats().links_created, 2);
            assert_eq!(w.stats().journeys_moved, 1, "only the laptop had a journey");
        } else {
            assert_eq!(
                o.reason(),
                "no_valid_referrer",
                "identify records are not read"
            );
            assert_eq!(w.stats(), StitchStats::default());
        }
    }
}

#[test]
fn a_click_with_both_ids_links_its_device_and_moves_its_anonymous_journey() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("tablet"), None);
    w.click("c-2", "pa2", 10, Some("tablet"), Some("cu-1"));
    assert_eq!(w.stats().links_created, 1);
    assert_eq!(w.stats().journeys_moved, 1);
    assert_eq!(w.stats().clicks_moved, 1);
    // A conversion of the customer from a server sees both clicks.
    let o = w.conversion("o-1", 20, None, Some("cu-1"));
    assert_eq!(o.touchpoints(), vec!["c-1", "c-2"]);
    assert_eq!(o.credits()[0].0, "pa2");
    // A later device-only click of the tablet goes to the customer's journey too.
    w.click("c-3", "pa3", 30, Some("tablet"), None);
    let o = w.conversion("o-2", 40, None, Some("cu-1"));
    assert_eq!(o.touchpoints(), vec!["c-1", "c-2", "c-3"]);
    assert_eq!(o.credits()[0].0, "pa3");
}

#[test]
fn a_conversion_with_both_ids_moves_the_journey_before_it_is_attributed() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("phone"), None);
    let o = w.conversion("o-1", 10, Some("phone"), Some("cu-2"));
    assert_eq!(
        o.credits(),
        vec![("pa1".into(), "c-1".into(), "phone".into())]
    );
    assert_eq!(o.value["customer_id"], "cu-2");
    assert_eq!(w.stats().links_created, 1);
}

#[test]
fn a_conversion_of_an_unknown_program_still_links() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("phone"), None);
    let o = w.one(
        "conversions",
        Some("phone"),
        json!({"type":"conversion","program_id":"nope","event_type":"sale","order_id":"o-0","occurred_at":at(5),"device_id":"phone","customer_id":"cu-3"}),
    );
    assert_eq!(o.reason(), "unknown_program");
    assert_eq!(w.stats().links_created, 1);
    let o = w.conversion("o-1", 10, None, Some("cu-3"));
    assert_eq!(o.credits()[0].1, "c-1", "the phone's click moved");
}

#[test]
fn the_first_link_stands_and_a_conflict_is_counted() {
    let mut w = World::new(true);
    w.identify("shared", "cu-a", 0);
    w.identify("shared", "cu-b", 1);
    assert_eq!(w.stats().link_conflicts, 1);
    // The conflicting click is processed under its own customer, and does not move the device.
    w.click("c-b", "pa2", 2, Some("shared"), Some("cu-b"));
    assert_eq!(w.stats().link_conflicts, 2);
    w.click("c-anon", "pa1", 3, Some("shared"), None);
    let a = w.conversion("o-a", 10, None, Some("cu-a"));
    assert_eq!(a.touchpoints(), vec!["c-anon"]);
    let b = w.conversion("o-b", 10, None, Some("cu-b"));
    assert_eq!(b.touchpoints(), vec!["c-b"]);
    // Repeating the standing link is no conflict.
    w.identify("shared", "cu-a", 20);
    assert_eq!(w.stats().link_conflicts, 2);
    assert_eq!(w.stats().links_created, 1);
}

// ---------------------------------------------------------------------------------------------
// Which journey
// ---------------------------------------------------------------------------------------------

#[test]
fn a_customer_journey_and_a_device_journey_with_the_same_id_are_different() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("x"), None);
    let o = w.conversion("o-1", 10, None, Some("x"));
    assert_eq!(o.reason(), "no_valid_referrer");
    let o = w.conversion("o-2", 10, Some("x"), None);
    assert_eq!(o.credits()[0].1, "c-1");
}

#[test]
fn a_customer_only_record_belongs_to_the_customer_whatever_its_key() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("d"), Some("cu-1"));
    let o = w.conversion_keyed(Some("anything"), "o-1", 10, None, Some("cu-1"));
    assert_eq!(o.credits()[0].1, "c-1");
    let o = w.conversion_keyed(None, "o-2", 10, None, Some("cu-1"));
    assert_eq!(o.credits()[0].1, "c-1");
}

#[test]
fn a_record_with_neither_id_belongs_to_the_device_of_its_key() {
    let mut w = World::new(true);
    w.identify("d-1", "cu-1", 0);
    // A click with neither id, keyed by a linked device, goes to the device's customer.
    w.quiet(
        "clicks",
        Some("d-1"),
        json!({"type":"click","click_id":"c-bare","program_id":"p1","partner_id":"pa1","occurred_at":at(1)}),
    );
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    assert_eq!(
        o.credits(),
        vec![("pa1".into(), "c-bare".into(), "-".into())],
        "a bare click shows no device_id"
    );
}

// ---------------------------------------------------------------------------------------------
// Moving a journey
// ---------------------------------------------------------------------------------------------

#[test]
fn moved_clicks_arrive_at_the_move_so_they_win_a_tie_of_equal_times() {
    let mut w = World::new(true);
    // The phone's anonymous click comes first in the file, at the same time as the customer's.
    w.click("c-phone", "pa2", 0, Some("phone"), None);
    w.click("c-laptop", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.identify("phone", "cu-1", 5);
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    // last_click: of two clicks at the same time, the later arrival counts as later.
    assert_eq!(o.credits()[0].1, "c-phone");
    assert_eq!(o.touchpoints(), vec!["c-laptop", "c-phone"]);
}

#[test]
fn a_moved_click_id_the_customer_has_keeps_the_customers_click() {
    let mut w = World::new(true);
    w.click("c-same", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.click("c-same", "pa2", 5, Some("phone"), None);
    w.click("c-other", "pa3", 1, Some("phone"), None);
    w.identify("phone", "cu-1", 6);
    assert_eq!(w.stats().clicks_dropped_in_moves, 1);
    assert_eq!(w.stats().clicks_moved, 1);
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    assert_eq!(o.touchpoints(), vec!["c-same", "c-other"]);
    assert_eq!(
        o.credits()[0],
        ("pa3".into(), "c-other".into(), "phone".into())
    );
}

#[test]
fn a_moved_order_the_customer_has_keeps_the_customers_order() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.click("c-2", "pa2", 0, Some("phone"), None);
    let customers = w.conversion("o-1", 10, None, Some("cu-1"));
    let phones = w.conversion("o-1", 11, Some("phone"), None);
    assert_eq!(customers.credits()[0].0, "pa1");
    assert_eq!(phones.credits()[0].0, "pa2");
    assert_eq!(customers.value["action_id"], phones.value["action_id"]);
    w.identify("phone", "cu-1", 20);
    assert_eq!(w.stats().orders_dropped_in_moves, 1);
    // A change keyed by the phone now reaches the customer's order.
    let m = w.one(
        "conversions",
        Some("phone"),
        json!({"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(30),"device_id":"phone"}),
    );
    assert_eq!(m.value["change"], "reversed");
    assert_eq!(m.credits()[0].0, "pa1");
    // A second conversion of the order is a duplicate.
    let d = w.conversion("o-1", 40, Some("phone"), None);
    assert_eq!(d.reason(), "duplicate_order");
}

#[test]
fn expired_click_marks_move_with_the_journey() {
    let mut w = World::new(true);
    w.click("c-old", "pa1", 0, Some("phone"), None);
    // 70 days later (window 30 + margin 30 passed) another record of the phone expires it.
    w.quiet(
        "clicks",
        Some("phone"),
        json!({"type":"click","click_id":"c-p2","program_id":"p2","partner_id":"pa1","occurred_at":at(70 * 24 * 60),"device_id":"phone"}),
    );
    w.identify("phone", "cu-1", 70 * 24 * 60 + 1);
    let o = w.conversion("o-1", 70 * 24 * 60 + 2, None, Some("cu-1"));
    assert_eq!(o.reason(), "outside_referral_window", "{o:?}");
}

#[test]
fn the_journey_limit_applies_to_the_merged_journey() {
    let mut options = ReplayOptions {
        stitching: true,
        ..Default::default()
    };
    options.engine.max_clicks_per_journey = 3;
    let mut w = World::with(options);
    w.click("c-1", "pa1", 1, Some("laptop"), Some("cu-1"));
    w.click("c-2", "pa1", 2, Some("laptop"), Some("cu-1"));
    w.click("c-3", "pa2", 3, Some("phone"), None);
    w.click("c-4", "pa2", 4, Some("phone"), None);
    w.identify("phone", "cu-1", 5);
    let o = w.conversion("o-1", 10, None, Some("cu-1"));
    assert_eq!(
        o.touchpoints(),
        vec!["c-2", "c-3", "c-4"],
        "the oldest is dropped"
    );
}

// ---------------------------------------------------------------------------------------------
// Changes and keys
// ---------------------------------------------------------------------------------------------

#[test]
fn a_change_keyed_by_a_linked_device_finds_the_order_in_the_customers_journey() {
    let mut w = World::new(true);
    w.click("c-1", "pa1", 0, Some("laptop"), Some("cu-1"));
    w.identify("phone", "cu-1", 1);
    let o = w.conversion("o-1", 10, Some("phone"), None);
    assert_eq!(o.credits()[0].1, "c-1");
    let m = w.one(
        "conversions",
        Some("phone"),
        json!({"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(20),"device_id":"phone","order_subtotal":"50.00"}),
    );
    assert_eq!(m.value["change"], "modified");
    assert_eq!(m.value["amount"], "50.000000");
    // The same change by customer id, keyed by anything, finds it too.
    let r = w.one(
        "conversions",
        Some("whatever"),
        json!({"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(30),"customer_id":"cu-1"}),
    );
    assert_eq!(r.value["change"], "reversed");
}

#[test]
fn key_rules_send_records_to_the_dlq_naming_the_fields() {
    let mut w = World::new(true);
    let o = w.one(
        "conversions",
        Some("d-1"),
        json!({"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(0),"items":[]}),
    );
    assert_eq!(o.topic, "dlq");
    assert!(
        o.error().contains("`device_id`") && o.error().contains("`customer_id`"),
        "{}",
        o.error()
    );
    let o = w.one(
        "clicks",
        Some("d-2"),
        json!({"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":at(0),"device_id":"d-1"}),
    );
    assert_eq!(o.topic, "dlq");
    assert!(
        o.error().contains("keyed `d-2`") && o.error().contains("`device_id` is `d-1`"),
        "{}",
        o.error()
    );
    let o = w.one(
        "identities",
        Some("d-2"),
        json!({"type":"identify","device_id":"d-1","customer_id":"cu-1","occurred_at":at(0)}),
    );
    assert_eq!(o.topic, "dlq");
    assert_eq!(w.stats().links_created, 0, "a refused record does not link");
    let o = w.one("identities", Some("d-1"), Value::Null);
    assert_eq!(o.topic, "dlq");
    assert!(o.error().contains("tombstone"), "{}", o.error());
    let o = w.one(
        "identities",
        Some("d-1"),
        json!({"type":"identify","device_id":"d-1","occurred_at":at(0)}),
    );
    assert!(
        o.error().contains("missing required field `customer_id`"),
        "{}",
        o.error()
    );
    // A null key takes the device_id.
    w.quiet(
        "identities",
        None,
        json!({"type":"identify","device_id":"d-1","customer_id":"cu-1","occurred_at":at(0)}),
    );
    assert_eq!(w.stats().links_created, 1);
    // With stitching off, the same records keep the rules of §1: the click is stored under
    // its key, the change goes to the journey of its key (which has no such order).
    let mut off = World::new(false);
    off.quiet(
        "clicks",
        Some("d-2"),
        json!({"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":at(0),"device_id":"d-1"}),
    );
    let o = off.one(
        "conversions",
        Some("d-1"),
        json!({"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":at(0),"items":[]}),
    );
    assert_eq!(o.reason(), "unknown_order");
}

// ---------------------------------------------------------------------------------------------
// Property: stitching changes nothing when no record links
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Two stages: the device stage forwards, the customer stage applies
// ---------------------------------------------------------------------------------------------

mod two_stages {
    use attrib::model::output::OutRecord;
    use attrib::model::records::InputTopic;
    use attrib::stage::attribution::{InRecord, Processor, Stitching};
    use attrib::state::store::MemoryStore;
    use attrib::tools::replay::{ReplayOptions, replay_into, write_output};
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use std::hash::{Hash, Hasher};

    #[derive(Deserialize)]
    struct Line<'a> {
        topic: &'a str,
        #[serde(borrow)]
        key: Option<&'a RawValue>,
        #[serde(borrow)]
        value: Option<&'a RawValue>,
    }

    fn partition_of(key: &[u8], n: i32) -> i32 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % n as u64) as i32
    }

    /// Runs `text` through the two-stage topology in one process: input records on partition
    /// hash(key) of the device stage, each forward delivered at once to partition
    /// hash(customer) of the customer stage. Returns the action and invalid-action lines, and
    /// the number of DLQ records.
    fn two_stages(text: &str, partitions: i32) -> (Vec<String>, usize, u64) {
        let mut p = Processor::new(
            Box::new(MemoryStore::default()),
            Default::default(),
            Default::default(),
        )
        .with_stitching_mode(Stitching::Forward);
        let (mut lines, mut dlq) = (Vec::new(), 0);
        let mut out = Vec::new();
        for (offset, text) in text.lines().enumerate() {
            // A line replay refuses as a line is a DLQ record here too.
            let Ok(line) = serde_json::from_str::<Line>(text) else {
                dlq += 1;
                continue;
            };
            let Some(topic) = InputTopic::from_replay_name(line.topic) else {
                dlq += 1;
                continue;
            };
            let Ok(key) = line.key.map_or(Ok(None), |k| {
                serde_json::from_str::<Option<String>>(k.get())
            }) else {
                dlq += 1;
                continue;
            };
            let value = line.value.map(|v| v.get()).filter(|v| *v != "null");
            let route_key = key.clone().unwrap_or_else(|| {
                let v: serde_json::Value =
                    serde_json::from_str(value.unwrap_or("{}")).unwrap_or_default();
                v["device_id"]
                    .as_str()
                    .or(v["customer_id"].as_str())
                    .unwrap_or("")
                    .to_string()
            });
            let rec = InRecord {
                topic,
                source_topic: line.topic,
                partition: partition_of(route_key.as_bytes(), partitions),
                offset: offset as i64,
                key: key.as_deref().map(str::as_bytes),
                value: value.map(str::as_bytes),
            };
            p.process(&rec, 0, &mut out).unwrap();
            let forwards: Vec<_> = p.take_forwards().collect();
            for f in forwards {
                let rec = InRecord {
                    topic: InputTopic::Conversions,
                    source_topic: "repartition",
                    partition: partition_of(f.customer.as_bytes(), partitions),
                    offset: offset as i64,
                    key: Some(f.customer.as_bytes()),
                    value: None,
                };
                p.process_forwarded(&rec, f.payload, 0, &mut out).unwrap();
            }
            for o in out.drain(..) {
                if matches!(o, OutRecord::Dlq(_)) {
                    dlq += 1;
                    continue;
                }
                let mut buf = Vec::new();
                write_output(&mut buf, &o).unwrap();
                lines.push(String::from_utf8(buf).unwrap());
            }
        }
        (lines, dlq, p.stats.stitching.records_forwarded)
    }

    fn replay_lines(text: &str) -> (Vec<String>, usize) {
        let mut p = ReplayOptions {
            stitching: true,
            ..Default::default()
        }
        .processor();
        let mut out = Vec::new();
        replay_into(&mut p, text.as_bytes(), &mut out, || 0).unwrap();
        let all = String::from_utf8(out).unwrap();
        let dlq = all
            .lines()
            .filter(|l| l.starts_with(r#"{"topic":"dlq""#))
            .count();
        let lines = all
            .lines()
            .filter(|l| !l.starts_with(r#"{"topic":"dlq""#))
            .map(|l| format!("{l}\n"))
            .collect();
        (lines, dlq)
    }

    /// The device stage forwarding to the customer stage gives, on a generated cross-device
    /// stream, exactly the actions and invalid actions of `replay` (forwards delivered at once,
    /// as the Kafka topology delivers them when each wave is processed before the next).
    #[test]
    fn forwarding_through_the_customer_stage_equals_replay() {
        let out = std::process::Command::new("python3")
            .args([
                "tests/reference/gen_stream.py",
                "4242",
                "20000",
                "--stitching",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let (want, want_dlq) = replay_lines(&text);
        assert!(want.len() > 1000);
        for partitions in [1, 4] {
            let (got, dlq, forwarded) = two_stages(&text, partitions);
            assert!(forwarded > 1000, "{forwarded} forwarded");
            assert_eq!(dlq, want_dlq, "{partitions} partitions: DLQ records");
            assert_eq!(got.len(), want.len(), "{partitions} partitions: outputs");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{partitions} partitions: output {i} differs");
            }
        }
    }
}
