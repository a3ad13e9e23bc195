//! Metrics after an end-to-end run (one run, shared by the tests that look at its /metrics
//! scrape), and the helpers that read a scrape.

use crate::common;
use crate::common::{
    HttpServer, Running, Sample, http_state, metric_value as value, parse_metrics, rec,
};
use crate::promtool::promtool;
use crate::{PARTITIONS, poll, read};
use attrib::model::records::{DlqReason, InputTopic};
use attrib::ops::settings::Guarantee;
use attrib::tools::testkit::{ReadBack, produce, read_topics, wait_consumed};
use rdkafka::mocking::MockCluster;
use rust_decimal::Decimal;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Metric helpers
// ---------------------------------------------------------------------------------------------

/// Sum of the samples of `name` whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.is(name, labels))
        .map(|s| s.value)
        .sum()
}

/// Sums per value of `label`.
fn by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let k = s.labels.get(label).cloned().unwrap_or_default();
        *m.entry(k).or_default() += s.value as u64;
    }
    m.retain(|_, v| *v > 0);
    m
}

// ---------------------------------------------------------------------------------------------
// One end-to-end run, shared by the tests that look at its /metrics scrape
// ---------------------------------------------------------------------------------------------

pub(crate) struct E2e {
    /// The `/metrics` body after everything was processed.
    text: String,
    pub(crate) samples: Vec<Sample>,
    content_type: String,
    /// `/health/ready` status when the scrape was taken.
    ready_status: u16,
    clicks_produced: u64,
    conversions_produced: u64,
    actions: Vec<Json>,
    invalid: Vec<Json>,
    dlq: Vec<ReadBack>,
}

pub(crate) fn e2e() -> &'static E2e {
    static CELL: OnceLock<E2e> = OnceLock::new();
    CELL.get_or_init(run_e2e)
}

fn run_e2e() -> E2e {
    use InputTopic::*;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::AtLeastOnce, dir.path());
    for (t, p) in common::topics_of(&s, PARTITIONS) {
        cluster.create_topic(&t, p, 1).unwrap();
    }
    // The synthetic workload (programs, contracts, promo codes, clicks, conversions with
    // duplicates, modifications, reversals, test conversions, malformed records), plus a
    // refused config record and a click without partner: every output kind and DLQ path.
    let mut w = attrib::tools::workload::generate(7, 4000, 1000);
    w.tables.push(rec(
        Config,
        "program/bad",
        r#"{"type":"program","program_id":"bad","account_id":"acme","locking_days":-4}"#,
    ));
    w.clicks.push(rec(
        Clicks,
        "d-1",
        r#"{"type":"click","click_id":"no-partner","program_id":"shoes","occurred_at":"2026-10-02T10:00:00Z"}"#,
    ));
    produce(&brokers, &s, &w.tables).unwrap();
    let run = Running::start(&s);
    let http = HttpServer::start(http_state(&s, &run.handles));
    run.wait_ready(Duration::from_secs(60));
    let mut expected = 0u64;
    for batch in [&w.clicks, &w.conversions, &w.changes] {
        produce(&brokers, &s, batch).unwrap();
        expected += batch.len() as u64;
        wait_consumed(&run.handles, expected, Duration::from_secs(120)).unwrap();
    }
    let out = read_topics(
        &brokers,
        &[&s.topics.actions, &s.topics.invalid_actions, &s.topics.dlq],
    )
    .unwrap();
    let of = |topic: &str| -> Vec<Json> {
        out.iter()
            .filter(|r| r.topic == topic)
            .map(common::json)
            .collect()
    };
    let actions = of(&s.topics.actions);
    let invalid = of(&s.topics.invalid_actions);
    let dlq: Vec<ReadBack> = out
        .iter()
        .filter(|r| r.topic == s.topics.dlq)
        .cloned()
        .collect();

    // librdkafka reports consumer lag in its statistics (every 5 s): wait until the scrape
    // shows it for every input partition, caught up (0).
    let (text, content_type) = poll(
        Duration::from_secs(60),
        "attrib_consumer_lag_records = 0 for every clicks and conversions partition",
        || {
            let r = http.get("/metrics", &[]);
            assert_eq!(r.status, 200, "{r:?}");
            let samples = parse_metrics(&r.body);
            let lag: Vec<&Sample> = samples
                .iter()
                .filter(|x| x.name == "attrib_consumer_lag_records")
                .filter(|x| {
                    // The `topic` label is the topic's role, not its name.
                    ["clicks", "conversions"]
                        .iter()
                        .any(|t| x.labels.get("topic").map(String::as_str) == Some(*t))
                })
                .collect();
            (lag.len() == 2 * PARTITIONS as usize && lag.iter().all(|x| x.value == 0.0)).then(
                || {
                    (
                        r.body.clone(),
                        r.header("content-type").unwrap_or("").to_string(),
                    )
                },
            )
        },
    );
    let ready_status = http.get("/health/ready", &[]).status;
    eprintln!(
        "end-to-end run: {} clicks and {} conversions in; {} actions, {} invalid actions, {} DLQ records out",
        w.clicks.len(),
        w.conversions.len() + w.changes.len(),
        actions.len(),
        invalid.len(),
        dlq.len()
    );
    run.stop();
    drop(http);
    drop(cluster);
    E2e {
        samples: parse_metrics(&text),
        text,
        content_type,
        ready_status,
        clicks_produced: w.clicks.len() as u64,
        conversions_produced: (w.conversions.len() + w.changes.len()) as u64,
        actions,
        invalid,
        dlq,
    }
}

#[test]
fn metrics_count_what_went_in_and_came_out() {
    let e = e2e();
    let m = &e.samples;
    assert!(
        e.content_type.starts_with("text/plain") && e.content_type.contains("version=0.0.4"),
        "content-type {:?}",
        e.content_type
    );
    // The run must have produced every kind of output, or the comparisons below prove little.
    assert!(e.actions.len() > 100, "{} actions", e.actions.len());
    assert!(!e.invalid.is_empty(), "no invalid actions");
    assert!(e.dlq.len() >= 3, "{} DLQ records", e.dlq.len());
    assert!(
        e.actions.iter().any(|a| a["test"] == true),
        "no test action in the workload"
    );
    assert!(
        e.actions.iter().any(|a| a["change"] != "created"),
        "no modified/reversed action in the workload"
    );

    // Input.
    assert_eq!(
        value(m, "attrib_consumed_records_total", &[("topic", "clicks")]),
        Some(e.clicks_produced as f64),
        "attrib_consumed_records_total{{topic=\"clicks\"}}"
    );
    assert_eq!(
        value(
            m,
            "attrib_consumed_records_total",
            &[("topic", "conversions")]
        ),
        Some(e.conversions_produced as f64),
        "attrib_consumed_records_total{{topic=\"conversions\"}}"
    );

    // Actions, by every label (program, referral type of the latest credit, change).
    let mut want: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for a in &e.actions {
        let rt = a["credits"]
            .as_array()
            .and_then(|c| c.last())
            .and_then(|c| c["referral_type"].as_str())
            .unwrap_or("none");
        *want
            .entry((
                a["program_id"].as_str().unwrap().into(),
                rt.into(),
                a["change"].as_str().unwrap().into(),
            ))
            .or_default() += 1;
    }
    let mut got: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for s in m.iter().filter(|s| s.name == "attrib_actions_total") {
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        *got.entry((l("program"), l("referral_type"), l("change")))
            .or_default() += s.value as u64;
    }
    got.retain(|_, v| *v > 0);
    assert_eq!(
        sum(m, "attrib_actions_total", &[]),
        e.actions.len() as f64,
        "attrib_actions_total summed vs records on the actions topic"
    );
    assert_eq!(
        got, want,
        "attrib_actions_total by (program, referral_type, change)"
    );

    // Invalid actions by reason.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for i in &e.invalid {
        *want
            .entry(i["reason"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        by_label(m, "attrib_invalid_actions_total", "reason"),
        want,
        "attrib_invalid_actions_total by reason vs the invalid-actions topic"
    );

    // DLQ: the total, and by reason: every label one of attrib's reasons; the records that are
    // not JSON at all, and the tombstones, counted under theirs.
    assert_eq!(
        sum(m, "attrib_dlq_records_total", &[]),
        e.dlq.len() as f64,
        "attrib_dlq_records_total summed vs records on the DLQ topic"
    );
    let got = by_label(m, "attrib_dlq_records_total", "reason");
    let labels: Vec<&str> = DlqReason::ALL.iter().map(|r| r.label()).collect();
    for reason in got.keys() {
        assert!(labels.contains(&reason.as_str()), "unknown reason {reason}");
    }
    let not_json = e
        .dlq
        .iter()
        .filter(|d| {
            d.value
                .as_deref()
                .is_some_and(|v| serde_json::from_slice::<serde_json::Value>(v).is_err())
        })
        .count() as u64;
    let tombstones = e.dlq.iter().filter(|d| d.value.is_none()).count() as u64;
    assert!(not_json > 0, "the workload sends records that are not JSON");
    assert_eq!(
        got.get("malformed").copied().unwrap_or(0),
        not_json,
        "{got:?}"
    );
    assert_eq!(
        got.get("tombstone").copied().unwrap_or(0),
        tombstones,
        "{got:?}"
    );

    // Commits.
    let commits = value(m, "attrib_transactions_total", &[("result", "commit")]).unwrap_or(0.0);
    assert!(
        commits > 0.0,
        "attrib_transactions_total{{result=\"commit\"}} = {commits}"
    );
    assert_eq!(
        value(m, "attrib_transactions_total", &[("result", "abort")]).unwrap_or(0.0),
        0.0,
        "no aborts in a clean run"
    );
    assert_eq!(
        value(m, "attrib_transaction_commit_duration_seconds_count", &[]),
        Some(commits),
        "one commit-duration observation per commit"
    );
    assert_eq!(
        value(m, "attrib_batch_duration_seconds_count", &[]),
        Some(commits),
        "one batch-duration observation per commit"
    );
    // One event-time lag observation per action and invalid action.
    assert_eq!(
        value(m, "attrib_event_time_lag_seconds_count", &[]),
        Some((e.actions.len() + e.invalid.len()) as f64),
        "attrib_event_time_lag_seconds_count"
    );

    // Payout of created, non-test actions.
    let mut usd = Decimal::ZERO;
    let mut currencies = BTreeSet::new();
    for a in &e.actions {
        if a["change"] == "created" && a["test"] == false {
            let cur = a["currency"].as_str().unwrap_or("");
            currencies.insert(cur.to_string());
            if cur == "USD" {
                usd += a["payout"].as_str().unwrap().parse::<Decimal>().unwrap();
            }
        }
    }
    assert_eq!(currencies, BTreeSet::from(["USD".to_string()]));
    // The exact decimal's nearest double: no sum of floats in between.
    let usd_f: f64 = usd.try_into().unwrap();
    let metric = value(m, "attrib_payout_amount_total", &[("currency", "USD")]).unwrap_or(0.0);
    assert_eq!(
        metric, usd_f,
        "attrib_payout_amount_total{{currency=\"USD\"}} = {metric}, created non-test payouts = {usd}"
    );
    assert!(usd > Decimal::ZERO);
    // Net payout: added minus removed over every emission (created, modified, reversed).
    let (mut added, mut removed) = (Decimal::ZERO, Decimal::ZERO);
    for a in e.actions.iter().filter(|a| a["test"] == false) {
        let d: Decimal = a["delta_payout"].as_str().unwrap().parse().unwrap();
        if d > Decimal::ZERO {
            added += d;
        } else {
            removed -= d;
        }
    }
    assert!(
        removed > Decimal::ZERO,
        "the workload modifies and reverses actions"
    );
    for (direction, want) in [("added", added), ("removed", removed)] {
        let got = value(
            m,
            "attrib_payout_delta_amount_total",
            &[("currency", "USD"), ("direction", direction)],
        );
        assert_eq!(got, Some(f64::try_from(want).unwrap()), "{direction}");
    }

    // Assignment.
    assert_eq!(
        value(m, "attrib_assigned_partitions", &[]),
        Some(PARTITIONS as f64),
        "the only instance holds every partition"
    );
    assert!(value(m, "attrib_rebalances_total", &[]).unwrap_or(0.0) >= 1.0);
    for t in ["clicks", "conversions"] {
        let series = m
            .iter()
            .filter(|x| x.name == "attrib_consumer_lag_records")
            .filter(|x| x.labels.get("topic").map(String::as_str) == Some(t))
            .count();
        assert_eq!(
            series, PARTITIONS as usize,
            "a lag series per {t} partition"
        );
        assert_eq!(
            sum(m, "attrib_consumer_lag_records", &[("topic", t)]),
            0.0,
            "lag of {t} once everything is consumed"
        );
    }

    // promtool accepts the exposition.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &e.text).unwrap();
    let (ok, out) = promtool(&["check", "metrics"], Some(&file));
    eprintln!("{out}");
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n--- metrics ---\n{}",
        e.text
    );
}

/// `attrib_ready` is what the AttribNotReady alert and the dashboard's "ready" panels read:
/// it must say 1 while `/health/ready` says 200.
#[test]
fn ready_gauge_agrees_with_health_ready() {
    let e = e2e();
    assert_eq!(
        e.ready_status, 200,
        "/health/ready at the time of the scrape"
    );
    assert_eq!(
        value(&e.samples, "attrib_ready", &[]),
        Some(1.0),
        "attrib_ready while /health/ready answers 200 (AttribNotReady fires on attrib_ready == 0)"
    );
}

/// The dashboard's "journeys stored" panel reads `attrib_journeys_stored`: after a run that
/// stored hundreds of journeys it must not say 0.
#[test]
fn journeys_stored_gauge_counts_stored_journeys() {
    let e = e2e();
    let stored = value(&e.samples, "attrib_journeys_stored", &[]).unwrap_or(0.0);
    assert!(
        stored > 0.0,
        "attrib_journeys_stored = {stored} after {} clicks on 1000 devices",
        e.clicks_produced
    );
}

/// Every metric the README's Metrics section lists is exposed (histograms as `_bucket`).
#[test]
fn readme_metrics_exist_in_a_real_scrape() {
    let e = e2e();
    let readme = read("README.md");
    let section = readme
        .split("### Metrics")
        .nth(1)
        .expect("README has a Metrics section")
        .split("\n#")
        .next()
        .unwrap();
    let mut listed = BTreeSet::new();
    for part in section.split('`').skip(1).step_by(2) {
        let name = part.split('{').next().unwrap();
        if name.starts_with("attrib_") {
            listed.insert(name.to_string());
        }
    }
    assert!(listed.len() >= 15, "{listed:?}");
    let names: BTreeSet<&str> = e.samples.iter().map(|s| s.name.as_str()).collect();
    let missing: Vec<&String> = listed
        .iter()
        .filter(|n| !names.contains(n.as_str()) && !names.contains(format!("{n}_bucket").as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "listed in README but not in /metrics: {missing:?}"
    );
}
