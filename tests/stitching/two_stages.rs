//! Two stages: the device stage forwards, the customer stage applies.

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
