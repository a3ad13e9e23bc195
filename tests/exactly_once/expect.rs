//! What the output must be (`attrib replay`'s) and what a read_committed consumer reads back,
//! and waiting for attrib to commit its input.

use attrib::model::records::InputTopic;
use attrib::ops::settings::Settings;
use attrib::tools::testkit::{ReadBack, read_topics};
use attrib::tools::workload::GenRecord;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The consumer group's committed offsets, summed per topic.
fn committed(s: &Settings, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.application_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(10)) {
        Ok(tpl) => tpl
            .elements()
            .iter()
            .map(|e| {
                if let Offset::Offset(o) = e.offset() {
                    o
                } else {
                    0
                }
            })
            .sum(),
        Err(_) => 0,
    }
}

/// The partitions of a topic.
fn input_partitions(s: &Settings, topic: &str) -> Vec<i32> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

fn end_offset(s: &Settings, topic: &str, partition: i32) -> i64 {
    end_offsets_of(s, topic, &[partition])
}

fn end_offsets(s: &Settings, topic: &str, partitions: i32) -> i64 {
    end_offsets_of(s, topic, &(0..partitions).collect::<Vec<_>>())
}

fn end_offsets_of(s: &Settings, topic: &str, partitions: &[i32]) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .unwrap();
    partitions
        .iter()
        .map(|p| {
            c.fetch_watermarks(topic, *p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum()
}

/// Waits until attrib has committed everything written to `topic` so far. With transactional
/// producers the end offset includes commit markers; the consumer's committed offset skips
/// past them, so `committed >= end - markers` is checked as "no progress possible" instead:
/// the committed offsets must reach the end offsets of the input topic (which has no markers).
pub(crate) fn wait_committed(s: &Settings, topic: &str, partitions: i32, timeout: Duration) {
    let want = end_offsets(s, topic, partitions);
    let deadline = Instant::now() + timeout;
    loop {
        let got = committed(s, topic, partitions);
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "attrib committed {got} of {want} records of {topic} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A comparable form of an output record: topic kind, key, value without `processed_at`; DLQ
/// records by their original value and source topic kind.
fn canonical(
    s: &Settings,
    topic_kind: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    source: Option<&str>,
) -> String {
    let key = key
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    match topic_kind {
        "dlq" => {
            let src = source.unwrap_or("");
            let src = if src == s.topics.clicks || src == "clicks" {
                "clicks"
            } else if src == s.topics.identities || src == "identities" {
                "identities"
            } else if src == s.topics.conversions || src == "conversions" {
                "conversions"
            } else if src == s.topics.config || src == "config" {
                "config"
            } else {
                "promo_codes"
            };
            format!(
                "dlq|{src}|{key}|{}",
                String::from_utf8_lossy(value.unwrap_or_default())
            )
        }
        _ => {
            let mut v: serde_json::Value = serde_json::from_slice(value.unwrap()).unwrap();
            v.as_object_mut().unwrap().remove("processed_at");
            format!("{topic_kind}|{key}|{v}")
        }
    }
}

fn multiset(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_default() += 1;
    }
    m
}

/// What `attrib replay` gives for the records, in the order they were written.
pub(crate) fn replay_expectation(s: &Settings, records: &[GenRecord]) -> BTreeMap<String, usize> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        records
            .iter()
            .map(|r| r.replay_line() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attrib"))
        .arg("replay")
        .arg(&input)
        .env(
            "ATTRIB_IDENTITY_STITCHING",
            s.identity.stitching.to_string(),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    multiset(text.lines().map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let kind = v["topic"].as_str().unwrap();
        let key = v["key"].as_str().map(|k| k.as_bytes().to_vec());
        if kind == "dlq" {
            let value = match &v["value"] {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let src = v["headers"]["attrib.source.topic"]
                .as_str()
                .map(str::to_string);
            canonical(s, kind, key.as_deref(), Some(&value), src.as_deref())
        } else {
            canonical(
                s,
                kind,
                key.as_deref(),
                Some(v["value"].to_string().as_bytes()),
                None,
            )
        }
    }))
}

/// What a `read_committed` consumer (a payout system) reads from the output topics.
pub(crate) fn kafka_output(s: &Settings) -> BTreeMap<String, usize> {
    let out: Vec<ReadBack> = read_topics(
        &s.brokers,
        &[&s.topics.actions, &s.topics.invalid_actions, &s.topics.dlq],
    )
    .unwrap();
    output_of(s, &out)
}

fn output_of(s: &Settings, out: &[ReadBack]) -> BTreeMap<String, usize> {
    multiset(out.iter().map(|r| {
        let kind = if r.topic == s.topics.actions {
            "actions"
        } else if r.topic == s.topics.invalid_actions {
            "invalid_actions"
        } else {
            "dlq"
        };
        let value = if kind == "dlq" {
            // Replay keeps a JSON value as JSON; compare JSON values in their compact form.
            r.value.as_deref().map(|v| {
                serde_json::from_slice::<serde_json::Value>(v)
                    .map(|j| j.to_string().into_bytes())
                    .unwrap_or_else(|_| v.to_vec())
            })
        } else {
            r.value.clone()
        };
        canonical(
            s,
            kind,
            r.key.as_deref(),
            value.as_deref(),
            r.headers.get("attrib.source.topic").map(String::as_str),
        )
    }))
}

fn assert_same(want: &BTreeMap<String, usize>, got: &BTreeMap<String, usize>) {
    let mut diffs = Vec::new();
    for (k, n) in want {
        let g = got.get(k).copied().unwrap_or(0);
        if g != *n {
            diffs.push(format!(
                "expected {n}× got {g}×: {}",
                &k[..k.len().min(300)]
            ));
        }
    }
    for (k, n) in got {
        if !want.contains_key(k) {
            diffs.push(format!("unexpected {n}×: {}", &k[..k.len().min(300)]));
        }
    }
    let total: usize = want.values().sum();
    let missing = diffs.iter().filter(|d| d.starts_with("expected")).count();
    // The first ten of each kind.
    let shown: Vec<String> = diffs
        .iter()
        .filter(|d| d.starts_with("expected"))
        .take(10)
        .chain(
            diffs
                .iter()
                .filter(|d| d.starts_with("unexpected"))
                .take(10),
        )
        .cloned()
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {total} outputs differ from replay ({missing} missing or miscounted, {} unexpected):\n{}",
        diffs.len(),
        diffs.len() - missing,
        shown.join("\n")
    );
}

/// The read_committed output equals the replay's (and the input topics hold each record once).
pub(crate) fn assert_exact(s: &Settings, dir: &Path, records: &[GenRecord]) {
    for (kind, topic) in [
        (InputTopic::Clicks, &s.topics.clicks),
        (InputTopic::Conversions, &s.topics.conversions),
    ] {
        let written = records.iter().filter(|r| r.topic == kind).count() as i64;
        let stored: i64 = input_partitions(s, topic)
            .into_iter()
            .map(|p| end_offset(s, topic, p))
            .sum();
        assert_eq!(stored, written, "{topic} holds each record written once");
    }
    let want = replay_expectation(s, records);
    let got = kafka_output(s);
    assert_same(&want, &got);
    let logs = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    eprintln!(
        "{} outputs exact; {} restores skipped aborted changelog segments",
        got.values().sum::<usize>(),
        logs.matches("segments of aborted or unfinished transactions skipped")
            .count()
    );
}

/// Waits until attrib has committed every input record written so far.
pub(crate) fn wait_all_committed(s: &Settings, partitions: i32) {
    for topic in [&s.topics.clicks, &s.topics.conversions] {
        wait_committed(s, topic, partitions, Duration::from_secs(180));
    }
}

/// Waits until what a read_committed consumer reads equals `want` (failing early on extras).
pub(crate) fn wait_output(s: &Settings, want: &BTreeMap<String, usize>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let total: usize = want.values().sum();
    loop {
        let got = kafka_output(s);
        if &got == want {
            return;
        }
        let n: usize = got.values().sum();
        if n > total || Instant::now() >= deadline {
            assert_same(want, &got);
            panic!("output did not reach the replay's within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
