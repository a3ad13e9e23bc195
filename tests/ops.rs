//! Operations checks: what an operator relies on when running attrib.
//!
//! - the metrics of a real run through librdkafka's mock cluster move by exactly what went in
//!   and came out, and `promtool check metrics` accepts the exposition;
//! - the alert rules, their unit tests and the scrape configs pass `promtool`;
//! - the deployment files (compose, Kubernetes, Prometheus, Grafana) parse and agree with the
//!   program: metric names, ports, probe paths, config files and environment variables;
//! - `/health/ready` answers 503 until the pipeline is ready, then 200;
//! - `GET /journeys/{key}` needs the bearer token, and is 404 when disabled.
//!
//! Needs `promtool` (Debian's `prometheus` package; `scripts/setup` installs it).

mod common;

use attrib::model::records::{DlqReason, InputTopic};
use attrib::ops::settings::{Guarantee, JourneysApi, Settings};
use attrib::runtime::Handles;
use attrib::tools::demo::{ReadBack, produce, read_topics, wait_consumed};
use common::{HttpServer, Running, Sample, http_state, parse_metrics, rec};
use rdkafka::mocking::MockCluster;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// Polls `f` until it returns `Some`, failing with `what` after `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Metric helpers
// ---------------------------------------------------------------------------------------------

fn matches(s: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    s.name == name
        && labels
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
}

/// Sum of the samples of `name` whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| s.value)
        .sum()
}

/// The one sample of `name` with exactly these labels' values (others may exist).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .collect();
    assert!(
        found.len() <= 1,
        "several series of {name} {labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
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

fn promtool(args: &[&str], stdin_file: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(repo());
    if let Some(f) = stdin_file {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run promtool (Debian package `prometheus`, see scripts/setup): {e}")
    });
    let text = format!(
        "$ promtool {}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// One end-to-end run, shared by the tests that look at its /metrics scrape
// ---------------------------------------------------------------------------------------------

struct E2e {
    /// The `/metrics` body after everything was processed.
    text: String,
    samples: Vec<Sample>,
    content_type: String,
    /// `/health/ready` status when the scrape was taken.
    ready_status: u16,
    clicks_produced: u64,
    conversions_produced: u64,
    actions: Vec<Json>,
    invalid: Vec<Json>,
    dlq: Vec<ReadBack>,
}

fn e2e() -> &'static E2e {
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

// ---------------------------------------------------------------------------------------------
// 1. Metrics after an end-to-end run
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 2. promtool on the rules and configs
// ---------------------------------------------------------------------------------------------

#[test]
fn promtool_accepts_rules_rule_tests_and_configs() {
    let mut failures = Vec::new();
    for args in [
        &["check", "rules", "deploy/prometheus/alerts.yml"][..],
        &["test", "rules", "deploy/prometheus/alerts_test.yml"][..],
        &["check", "config", "deploy/prometheus/prometheus.yml"][..],
        // Not prometheus-kubernetes.yml: Debian's promtool is built without Kubernetes
        // service discovery ("field kubernetes_sd_configs not found"); it is parsed as YAML
        // and its job name checked below.
    ] {
        let (ok, out) = promtool(args, None);
        eprintln!("{out}");
        if !ok {
            failures.push(out);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 3. Deployment files: parse, and agree with the program
// ---------------------------------------------------------------------------------------------

/// Every YAML file (each document of it) under the given roots, relative to the repository.
fn yaml_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")) {
                out.push(p);
            }
        }
    }
    let mut files = vec![repo().join("docker-compose.yml")];
    for d in ["deploy/kubernetes", "deploy/grafana", "deploy/prometheus"] {
        walk(&repo().join(d), &mut files);
    }
    let mut rel: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    rel.sort();
    rel
}

#[test]
fn deploy_files_parse() {
    let files = yaml_files();
    for must in [
        "docker-compose.yml",
        "deploy/kubernetes/statefulset.yaml",
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/prometheus/alerts.yml",
    ] {
        assert!(
            files.iter().any(|f| f == must),
            "{must} not found in {files:?}"
        );
    }
    for f in &files {
        let text = read(f);
        let mut docs = 0;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{f} is not valid YAML: {e}"));
            assert!(v.is_mapping(), "{f}: a document that is not a mapping");
            docs += 1;
        }
        assert!(docs >= 1, "{f} is empty");
        if f.starts_with("deploy/kubernetes/") {
            let v = yaml(f);
            assert!(
                v["apiVersion"].is_string() && v["kind"].is_string(),
                "{f}: apiVersion/kind"
            );
        }
    }
    let dash: Json = serde_json::from_str(&read("deploy/grafana/dashboards/attrib.json"))
        .expect("deploy/grafana/dashboards/attrib.json is not valid JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));

    // Kustomize lists every manifest of the directory, and only existing ones.
    let k = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix("deploy/kubernetes/"))
        .filter(|f| *f != "kustomization.yaml")
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml resources vs deploy/kubernetes/"
    );

    // Grafana: the dashboard's data sources are the provisioned one, and the provider reads
    // the directory compose mounts the dashboards into.
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = ds["datasources"][0]["uid"].as_str().unwrap().to_string();
    let mut uids = BTreeSet::new();
    collect_datasource_uids(&dash, &mut uids);
    uids.remove("${datasource}");
    uids.remove("$datasource");
    uids.remove("-- Grafana --"); // Grafana's built-in annotation source
    assert!(
        uids.iter().all(|u| *u == uid),
        "dashboard data source uids {uids:?} vs provisioned {uid:?}"
    );
    let prov = yaml("deploy/grafana/provisioning/dashboards/attrib.yml");
    let path = prov["providers"][0]["options"]["path"].as_str().unwrap();
    let compose = yaml("docker-compose.yml");
    let mounts = strings(&compose["services"]["grafana"]["volumes"]);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./deploy/grafana/dashboards:")
                && m.split(':').nth(1) == Some(path)),
        "grafana mounts {mounts:?} vs provider path {path}"
    );
    let home =
        compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            .as_str()
            .unwrap();
    assert_eq!(home, format!("{path}/attrib.json"));
}

fn collect_datasource_uids(v: &Json, out: &mut BTreeSet<String>) {
    match v {
        Json::Object(o) => {
            if let Some(Json::Object(ds)) = o.get("datasource") {
                if let Some(u) = ds.get("uid").and_then(Json::as_str) {
                    out.insert(u.to_string());
                }
            }
            o.values().for_each(|x| collect_datasource_uids(x, out));
        }
        Json::Array(a) => a.iter().for_each(|x| collect_datasource_uids(x, out)),
        _ => {}
    }
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A metric selector found in a PromQL expression: the metric name and its matchers' labels.
#[derive(Debug, Default)]
struct PromQl {
    selectors: Vec<(String, Vec<String>)>,
    /// Labels of `by`/`without`/`on`/`ignoring`/`group_*` clauses.
    grouping: Vec<String>,
}

/// A small PromQL scanner: enough to find metric names, matcher labels and grouping labels.
fn promql(expr: &str) -> PromQl {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];
    let c: Vec<char> = expr.chars().collect();
    let mut out = PromQl::default();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident_at = |i: usize| -> (String, usize) {
        let mut j = i;
        while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '_' || c[j] == ':') {
            j += 1;
        }
        (c[i..j].iter().collect(), j)
    };
    // Skips a quoted string starting at i; returns the index after it.
    let skip_string = |i: usize| -> usize {
        let q = c[i];
        let mut j = i + 1;
        while j < c.len() && c[j] != q {
            if c[j] == '\\' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    // Label names of a `{...}` block at i; returns them and the index after `}`.
    let matchers = |i: usize| -> (Vec<String>, usize) {
        let mut labels = Vec::new();
        let mut j = i + 1;
        loop {
            j = skip_ws(j);
            if j >= c.len() || c[j] == '}' {
                return (labels, j + 1);
            }
            if c[j] == ',' {
                j += 1;
                continue;
            }
            if c[j] == '"' || c[j] == '\'' || c[j] == '`' {
                j = skip_string(j);
                continue;
            }
            if c[j].is_ascii_alphabetic() || c[j] == '_' {
                let (name, k) = ident_at(j);
                labels.push(name);
                j = k;
                continue;
            }
            j += 1; // operators
        }
    };
    // Label names of a `(...)` list at i; returns them and the index after `)`.
    let label_list = |i: usize| -> (Vec<String>, usize) {
        let mut labels = Vec::new();
        let mut j = i + 1;
        while j < c.len() && c[j] != ')' {
            if c[j].is_ascii_alphabetic() || c[j] == '_' {
                let (name, k) = ident_at(j);
                labels.push(name);
                j = k;
            } else {
                j += 1;
            }
        }
        (labels, j + 1)
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '"' || ch == '\'' || ch == '`' {
            i = skip_string(i);
        } else if ch == '#' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '[' {
            while i < c.len() && c[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if ch == '{' {
            // A selector without a metric name.
            let (_, j) = matchers(i);
            i = j;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (5m, 1.5e3).
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let (name, j) = ident_at(i);
            let next = skip_ws(j);
            let lower = name.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                if next < c.len() && c[next] == '(' {
                    let (labels, k) = label_list(next);
                    out.grouping.extend(labels);
                    i = k;
                } else {
                    i = j;
                }
            } else if next < c.len() && c[next] == '(' {
                i = j; // a function or an aggregation
            } else if AGGREGATIONS.contains(&lower.as_str()) {
                i = j; // `sum by (...) (...)`
            } else if KEYWORDS.contains(&lower.as_str()) {
                i = j;
            } else {
                let mut labels = Vec::new();
                i = j;
                if next < c.len() && c[next] == '{' {
                    let (l, k) = matchers(next);
                    labels = l;
                    i = k;
                }
                out.selectors.push((name, labels));
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn promql_scanner_finds_metrics_and_labels() {
    let q = promql(
        r#"histogram_quantile(0.99, sum by (le, instance) (rate(attrib_batch_duration_seconds_bucket{job=~"$job", instance=~"$instance"}[$__rate_interval]))) or vector(0) > bool 1 and on (job) up{job="x"} offset 5m"#,
    );
    let names: Vec<&str> = q.selectors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["attrib_batch_duration_seconds_bucket", "up"]);
    assert_eq!(q.selectors[0].1, ["job", "instance"]);
    assert_eq!(q.grouping, ["le", "instance", "job"]);
}

/// Every PromQL expression of the alert rules and the dashboard, with where it is from.
fn deploy_exprs() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let alerts = yaml("deploy/prometheus/alerts.yml");
    for g in alerts["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            exprs.push((
                format!("alerts.yml {name}"),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    fn walk(v: &Json, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Json::Object(o) => {
                let title = o.get("title").and_then(Json::as_str).unwrap_or("");
                let here = if title.is_empty() {
                    path.to_string()
                } else {
                    format!("{path} / {title}")
                };
                for (k, x) in o {
                    if k == "expr" {
                        if let Some(e) = x.as_str() {
                            out.push((format!("dashboard{here}"), e.to_string()));
                        }
                    } else {
                        walk(x, &here, out);
                    }
                }
            }
            Json::Array(a) => a.iter().for_each(|x| walk(x, path, out)),
            _ => {}
        }
    }
    let dash: Json = serde_json::from_str(&read("deploy/grafana/dashboards/attrib.json")).unwrap();
    walk(&dash, "", &mut exprs);
    // Template variables: `label_values(<selector>, <label>)` or plain PromQL.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .or(v["definition"].as_str())
            .unwrap_or("");
        let q = match q.trim().strip_prefix("label_values(") {
            Some(rest) => rest
                .trim_end()
                .trim_end_matches(')')
                .rsplit_once(',')
                .map_or(rest, |(sel, _)| sel)
                .to_string(),
            None => q.to_string(),
        };
        exprs.push((format!("dashboard variable {}", v["name"]), q));
    }
    exprs
}

#[test]
fn alert_and_dashboard_metrics_exist_in_a_real_scrape() {
    let e = e2e();
    let mut labels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &e.samples {
        let l = labels_of.entry(s.name.as_str()).or_default();
        l.extend(s.labels.keys().map(String::as_str));
    }
    // Labels Prometheus adds to every scraped series.
    const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod"];
    let exprs = deploy_exprs();
    assert!(exprs.len() >= 20, "only {} expressions found", exprs.len());
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (from, expr) in &exprs {
        let q = promql(expr);
        if q.selectors.is_empty() {
            problems.push(format!("{from}: no metric in {expr:?}"));
        }
        let mut expr_labels: BTreeSet<&str> = BTreeSet::new();
        for (name, matchers) in &q.selectors {
            used.insert(name.clone());
            if name == "up" {
                continue; // Prometheus' own
            }
            let Some(have) = labels_of.get(name.as_str()) else {
                problems.push(format!("{from}: metric {name} is not in /metrics"));
                continue;
            };
            expr_labels.extend(have.iter().copied());
            for l in matchers {
                if !have.contains(l.as_str()) && !TARGET_LABELS.contains(&l.as_str()) {
                    problems.push(format!("{from}: {name} has no label {l} (it has {have:?})"));
                }
            }
        }
        for l in &q.grouping {
            if !expr_labels.contains(l.as_str()) && !TARGET_LABELS.contains(&l.as_str()) {
                problems.push(format!(
                    "{from}: grouping label {l} is on none of its metrics"
                ));
            }
        }
    }
    // The alert unit tests feed series under real names too.
    let t = yaml("deploy/prometheus/alerts_test.yml");
    for test in t["tests"].as_sequence().unwrap() {
        for s in test["input_series"].as_sequence().into_iter().flatten() {
            let series = s["series"].as_str().unwrap();
            let name = series.split('{').next().unwrap();
            if name != "up" && !labels_of.contains_key(name) {
                problems.push(format!(
                    "alerts_test.yml: input series {name} is not in /metrics"
                ));
            }
            // Label values attrib really emits, from the code's enum.
            if name == "attrib_dlq_records_total" {
                let emitted: Vec<String> = DlqReason::ALL
                    .iter()
                    .map(|r| format!("reason=\"{}\"", r.label()))
                    .collect();
                if !emitted.iter().any(|l| series.contains(l.as_str())) {
                    problems.push(format!(
                        "alerts_test.yml: {series} has a reason attrib never emits ({emitted:?})"
                    ));
                }
            }
        }
    }
    eprintln!("metrics used by alerts and dashboard: {used:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dashboard covers the main metrics.
    for m in [
        "attrib_consumed_records_total",
        "attrib_actions_total",
        "attrib_dlq_records_total",
        "attrib_consumer_lag_records",
        "attrib_ready",
    ] {
        assert!(used.contains(m), "{m} used by no alert or panel");
    }
}

/// `(port, name)` of the attrib container in the StatefulSet, and the container itself.
fn attrib_container(sts: &Yaml) -> &Yaml {
    sts["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "attrib")
        .expect("container `attrib` in statefulset.yaml")
}

fn port_number(v: &Yaml) -> u16 {
    match v {
        Yaml::Number(n) => n.as_u64().unwrap() as u16,
        Yaml::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("not a port number: {s}")),
        other => panic!("not a port: {other:?}"),
    }
}

#[test]
fn ports_and_probe_paths_match_the_http_server() {
    let addr: std::net::SocketAddr = Settings::default().http_addr;
    let port = addr.port();
    assert_eq!(port, 9464);

    // StatefulSet: the container port, the scrape annotations, the probes.
    let sts = yaml("deploy/kubernetes/statefulset.yaml");
    let c = attrib_container(&sts);
    let ports = c["ports"].as_sequence().unwrap();
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("container port named http");
    assert_eq!(port_number(&http["containerPort"]), port, "containerPort");
    let ann = &sts["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        port_number(&ann["prometheus.io/port"]),
        port,
        "prometheus.io/port"
    );
    assert_eq!(ann["prometheus.io/path"].as_str(), Some("/metrics"));
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    for (probe, path) in [
        ("startupProbe", "/health/live"),
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        let g = &c[probe]["httpGet"];
        assert_eq!(g["path"].as_str(), Some(path), "{probe} path");
        let p = &g["port"];
        assert!(
            p.as_str() == Some("http") || port_number(p) == port,
            "{probe} port {p:?}"
        );
    }

    // Services: port and target port.
    for f in [
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/service-headless.yaml",
    ] {
        let svc = yaml(f);
        let sp = &svc["spec"]["ports"][0];
        assert_eq!(port_number(&sp["port"]), port, "{f} port");
        let tp = &sp["targetPort"];
        assert!(
            tp.as_str() == Some("http") || port_number(tp) == port,
            "{f} targetPort {tp:?}"
        );
        // The selector picks the StatefulSet's pods.
        let sel = svc["spec"]["selector"].as_mapping().unwrap();
        let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
        for (k, v) in sel {
            assert_eq!(&pod_labels[k], v, "{f} selector {k:?}");
        }
    }

    // Compose: the published port maps to the container's port; Prometheus scrapes it.
    let compose = yaml("docker-compose.yml");
    let published = strings(&compose["services"]["attrib"]["ports"]);
    assert!(
        published.iter().any(|p| {
            p.trim_end_matches("/tcp")
                .rsplit(':')
                .next()
                .and_then(|x| x.parse::<u16>().ok())
                == Some(port)
        }),
        "compose attrib ports {published:?}"
    );
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let job = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "attrib")
        .expect("scrape job attrib");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(
        targets,
        [format!("attrib:{port}")],
        "prometheus.yml targets"
    );
    assert!(
        compose["services"]["attrib"].is_mapping(),
        "compose service `attrib`"
    );
    // The alert rules' job label is the job Prometheus scrapes attrib under.
    let k8s = yaml("deploy/prometheus/prometheus-kubernetes.yml");
    assert!(
        k8s["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|j| j["job_name"] == "attrib"),
        "prometheus-kubernetes.yml has no job attrib"
    );
    for (from, expr) in deploy_exprs() {
        if let Some(rest) = expr.split("job=\"").nth(1) {
            let job = rest.split('"').next().unwrap();
            assert_eq!(job, "attrib", "{from}: job {job}");
        }
    }

    // The image exposes it.
    let docker = read("deploy/Dockerfile");
    assert!(
        docker.lines().any(|l| l.trim().starts_with("EXPOSE")
            && l.split_whitespace().any(|w| w == port.to_string())),
        "deploy/Dockerfile does not EXPOSE {port}"
    );

    // And those paths answer on the real router.
    let server = HttpServer::start(http_state(&Settings::default(), &Handles::default()));
    let r = server.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("# TYPE attrib_ready gauge"), "{}", r.body);
    assert_eq!(server.get("/health/live", &[]).status, 200);
    assert_eq!(server.get("/health/ready", &[]).status, 503);
}

/// The environment the StatefulSet gives the container; `valueFrom` values are placeholders,
/// `$(VAR)` references are kept (Kubernetes expands them).
fn statefulset_env() -> Vec<(String, String)> {
    let sts = yaml("deploy/kubernetes/statefulset.yaml");
    attrib_container(&sts)["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e["value"]
                .as_str()
                .map_or_else(|| "from-secret".to_string(), str::to_string);
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn compose_attrib_env() -> Vec<(String, String)> {
    let compose = yaml("docker-compose.yml");
    compose["services"]["attrib"]["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn deploy_configs_are_accepted_by_settings() {
    // The ConfigMap's attrib.toml, alone and with the StatefulSet's environment.
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let cm_toml = cm["data"]["attrib.toml"]
        .as_str()
        .expect("data.attrib.toml");
    Settings::parse(cm_toml, std::iter::empty())
        .unwrap_or_else(|e| panic!("configmap.yaml attrib.toml: {e:#}"));
    let pod = Settings::parse(cm_toml, statefulset_env())
        .unwrap_or_else(|e| panic!("configmap.yaml attrib.toml + statefulset env: {e:#}"));
    assert_eq!(
        pod.kafka.common.get("client.id").map(String::as_str),
        Some("$(POD_NAME)")
    );

    // The StatefulSet mounts the ConfigMap where `--config` points, and the state volume
    // where state_dir points.
    let sts = yaml("deploy/kubernetes/statefulset.yaml");
    let c = attrib_container(&sts);
    let args = strings(&c["args"]);
    let config = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config FILE in the container args");
    let (dir, file) = config.rsplit_once('/').unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mount_of = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("volumeMount {name}"))
            .to_string()
    };
    assert_eq!(
        mount_of("config"),
        dir,
        "config volume mount vs --config {config}"
    );
    assert!(cm["data"][file].is_string(), "ConfigMap has no key {file}");
    let volumes = sts["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    let cfg_vol = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(cfg_vol["configMap"]["name"], cm["metadata"]["name"]);
    assert_eq!(
        pod.state_dir,
        PathBuf::from(mount_of("state")),
        "state_dir vs the state volume mount"
    );
    assert!(
        sts["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["metadata"]["name"] == "state"),
        "no volumeClaimTemplate `state`"
    );
    assert_eq!(
        sts["spec"]["serviceName"].as_str(),
        yaml("deploy/kubernetes/service-headless.yaml")["metadata"]["name"].as_str(),
        "serviceName vs the headless Service"
    );

    // deploy/attrib.toml, alone and with the compose environment.
    let example = read("deploy/attrib.toml");
    Settings::parse(&example, std::iter::empty())
        .unwrap_or_else(|e| panic!("deploy/attrib.toml: {e:#}"));
    let local = Settings::parse(&example, compose_attrib_env())
        .unwrap_or_else(|e| panic!("deploy/attrib.toml + compose env: {e:#}"));

    // Compose mounts it where the image's command reads it, and the state volume at state_dir.
    let compose = yaml("docker-compose.yml");
    let vols = strings(&compose["services"]["attrib"]["volumes"]);
    assert!(
        vols.iter()
            .any(|v| v.starts_with("./deploy/attrib.toml:/etc/attrib/attrib.toml")),
        "compose volumes {vols:?}"
    );
    assert!(
        read("deploy/Dockerfile").contains(r#"CMD ["run", "--config", "/etc/attrib/attrib.toml"]"#),
        "Dockerfile CMD reads another config path"
    );
    assert!(
        vols.iter()
            .any(|v| v.split(':').nth(1).map(PathBuf::from).as_ref() == Some(&local.state_dir)),
        "no compose volume at state_dir {}: {vols:?}",
        local.state_dir.display()
    );

    // The compose `topics` service creates exactly the topics this configuration uses.
    let topics = &compose["services"]["topics"];
    assert_eq!(
        topics["environment"]["APPLICATION_ID"].as_str(),
        Some(local.application_id.as_str()),
        "compose topics APPLICATION_ID vs application_id"
    );
    let script = strings(&topics["entrypoint"]).join("\n");
    let t = &local.topics;
    for name in [
        &t.clicks,
        &t.conversions,
        &t.promo_codes,
        &t.config,
        &t.actions,
        &t.invalid_actions,
        &t.dlq,
    ] {
        assert!(
            script.lines().any(|l| {
                let l = l.trim();
                l == format!("create {name}") || l.starts_with(&format!("create {name} "))
            }),
            "the compose topics service does not create {name}"
        );
    }
    assert!(
        script.contains("create \"$${APPLICATION_ID}-journeys-changelog\""),
        "the compose topics service does not create the changelog"
    );
}

/// Whether `Settings` reads the variable: it changes the parsed settings (or is refused, for
/// a setting whose only valid value is its default), or is a librdkafka pass-through.
fn understood(name: &str) -> Result<String, String> {
    if matches!(
        name,
        "ATTRIB_KAFKA_"
            | "ATTRIB_KAFKA_CONSUMER_"
            | "ATTRIB_KAFKA_PRODUCER_"
            | "ATTRIB_KAFKA_ADMIN_"
    ) {
        return Ok("ATTRIB_KAFKA_<OPTION> pass-through".into());
    }
    if let Some(opt) = name.strip_prefix("ATTRIB_KAFKA_") {
        let s = Settings::parse("", [(name.to_string(), "v".to_string())])
            .map_err(|e| e.to_string())?;
        let key = opt.to_ascii_lowercase().replace('_', ".");
        let set = s.kafka.common.get(&key).or_else(|| {
            attrib::ops::settings::ClientKind::ALL.iter().find_map(|k| {
                let section = format!("{}.", k.name());
                s.kafka.section(*k).get(key.strip_prefix(&section)?)
            })
        });
        return if set.map(String::as_str) == Some("v") {
            Ok(format!("librdkafka {key}"))
        } else {
            Err(format!("{name} did not set kafka.{key}"))
        };
    }
    // A token, so that ATTRIB_JOURNEYS_API_ENABLED=true is valid.
    let base_env = || vec![("ATTRIB_JOURNEYS_API_TOKEN".to_string(), "base".to_string())];
    let base = Settings::parse("", base_env()).unwrap();
    let mut refused = None;
    for candidate in [
        "x-test-value",
        "12345",
        "true",
        "at_least_once",
        "127.0.0.1:1",
    ] {
        let mut env = base_env();
        env.push((name.to_string(), candidate.to_string()));
        match Settings::parse("", env) {
            Ok(s) if s != base => return Ok(format!("changes settings with {candidate:?}")),
            Ok(_) => {}
            // Settings refuses a variable that names no setting.
            Err(e) if e.to_string().contains("names no setting") => {
                return Err(format!("{name} names no setting: {e}"));
            }
            Err(e) => refused = Some(e.to_string()),
        }
    }
    match refused {
        Some(e) => Ok(format!("read and validated: {e}")),
        None => Err(format!("{name} is ignored by Settings")),
    }
}

fn env_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(p) = text[i..].find("ATTRIB_") {
        let start = i + p;
        let mut end = start + "ATTRIB_".len();
        while end < b.len()
            && (b[end].is_ascii_uppercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        // A bare `ATTRIB_` (as in "ATTRIB_* variables") names no variable.
        if before_ok && end > start + "ATTRIB_".len() {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn env_vars_in_statefulset_and_compose_are_understood() {
    let mut problems = Vec::new();
    for f in ["deploy/kubernetes/statefulset.yaml", "docker-compose.yml"] {
        // Commented-out examples count: operators uncomment them.
        let names = env_names(&read(f));
        assert!(!names.is_empty(), "{f}: no ATTRIB_* variables");
        for n in names {
            match understood(&n) {
                Ok(how) => eprintln!("{f}: {n}: {how}"),
                Err(e) => problems.push(format!("{f}: {e}")),
            }
        }
    }
    // And the environment actually set there is accepted with the files it goes with.
    for (k, _) in statefulset_env().iter().chain(compose_attrib_env().iter()) {
        if k.starts_with("ATTRIB_") {
            if let Err(e) = understood(k) {
                problems.push(e);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The variables the deployment docs and example configs name must exist too.
#[test]
fn env_vars_documented_in_deploy_are_understood() {
    let mut problems = Vec::new();
    for f in [
        "deploy/attrib.toml",
        "deploy/README.md",
        "deploy/kubernetes/configmap.yaml",
    ] {
        for n in env_names(&read(f)) {
            match understood(&n) {
                Ok(how) => eprintln!("{f}: {n}: {how}"),
                Err(e) => problems.push(format!("{f}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 4. Readiness
// ---------------------------------------------------------------------------------------------

/// Settings, topics on a fresh mock cluster, and the program/contract tables produced.
type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

fn mock_with_tables(s_mod: impl FnOnce(&mut Settings)) -> (Mock, Settings, tempfile::TempDir) {
    use InputTopic::*;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::AtLeastOnce, dir.path());
    s_mod(&mut s);
    for (t, p) in common::topics_of(&s, 2) {
        cluster.create_topic(&t, p, 1).unwrap();
    }
    let tables = vec![
        rec(
            Config,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD","credit_policy":"last_click"}"#,
        ),
        rec(
            Config,
            "contract/p1/pa1",
            r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}"#,
        ),
    ];
    produce(&brokers, &s, &tables).unwrap();
    (cluster, s, dir)
}

#[test]
fn health_ready_is_503_until_the_pipeline_is_ready() {
    let (_cluster, s, _dir) = mock_with_tables(|_| {});
    let handles = Handles::default();
    let server = HttpServer::start(http_state(&s, &handles));

    // Before the pipeline runs: not ready, but alive and scrapeable.
    let r = server.get("/health/ready", &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        server.get("/health/live", &[]).status,
        200,
        "liveness must not wait for readiness"
    );
    assert_eq!(server.get("/metrics", &[]).status, 200);

    let run = Running::start_with(&s, handles);
    poll(Duration::from_secs(60), "/health/ready = 200", || {
        let r = server.get("/health/ready", &[]);
        assert!(matches!(r.status, 200 | 503), "{r:?}");
        (r.status == 200).then_some(())
    });
    assert_eq!(server.get("/health/live", &[]).status, 200);
    run.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. The journeys API
// ---------------------------------------------------------------------------------------------

#[test]
fn journeys_api_needs_the_bearer_token_and_is_404_when_disabled() {
    use InputTopic::*;
    const TOKEN: &str = "ops-test-token-5f2c";
    let (_cluster, s, _dir) = mock_with_tables(|s| {
        s.journeys_api = JourneysApi {
            enabled: true,
            token: Some(TOKEN.into()),
            ..JourneysApi::default()
        };
    });
    let run = Running::start(&s);
    let server = HttpServer::start(http_state(&s, &run.handles));
    run.wait_ready(Duration::from_secs(60));
    let clicks = vec![
        rec(
            Clicks,
            "d-1",
            r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"d-1"}"#,
        ),
        rec(
            Clicks,
            "d-1",
            r#"{"type":"click","click_id":"c-2","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T11:00:00Z","device_id":"d-1"}"#,
        ),
        rec(
            Clicks,
            "d-2",
            r#"{"type":"click","click_id":"c-3","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T09:00:00Z","device_id":"d-2"}"#,
        ),
    ];
    produce(&s.brokers, &s, &clicks).unwrap();
    wait_consumed(&run.handles, 3, Duration::from_secs(60)).unwrap();

    let bearer = format!("Bearer {TOKEN}");
    // Without a token, with a wrong one, with the right one in another scheme: 401.
    for auth in [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some("Bearer ".to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let r = server.get("/journeys/d-1", &headers);
        assert_eq!(r.status, 401, "Authorization {auth:?}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
        assert!(
            !r.body.contains("c-1"),
            "a refused request leaks the journey: {}",
            r.body
        );
    }

    // With the token: the journey, with its click ids.
    let r = poll(Duration::from_secs(30), "GET /journeys/d-1 = 200", || {
        let r = server.get("/journeys/d-1", &[("Authorization", &bearer)]);
        (r.status == 200).then_some(r)
    });
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
    let body: Json = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(body["key"], "d-1", "{body:#}");
    let ids: BTreeSet<&str> = body["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["journey"]["clicks"].as_array().into_iter().flatten())
        .map(|c| c["click_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["c-1", "c-2"]), "{body:#}");
    // Each stored click shows the device it came from.
    let devices: BTreeSet<&str> = body["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .flat_map(|p| p["journey"]["clicks"].as_array().into_iter().flatten())
        .map(|c| c["device_id"].as_str().unwrap_or("(none)"))
        .collect();
    assert_eq!(devices, BTreeSet::from(["d-1"]), "{body:#}");

    // A key with no journey: 404 (with the token).
    let r = server.get("/journeys/no-such-device", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 404, "{r:?}");

    // The same handles served with the API disabled: 404, token or not.
    let mut off = s.clone();
    off.journeys_api = JourneysApi::default();
    let disabled = HttpServer::start(http_state(&off, &run.handles));
    for headers in [vec![], vec![("Authorization", bearer.as_str())]] {
        let r = disabled.get("/journeys/d-1", &headers);
        assert_eq!(r.status, 404, "{r:?}");
        assert!(!r.body.contains("c-1"), "{}", r.body);
    }
    run.stop();
}

/// With identity stitching on, `GET /journeys/{device}` shows the device's link and the
/// journey of its customer (the laptop's click moved there, the phone's order), and
/// `GET /journeys/{customer}` the customer's journey.
#[test]
fn journeys_api_shows_a_devices_link_and_its_customers_journey() {
    use InputTopic::*;
    const TOKEN: &str = "ops-test-token-link";
    let (cluster, s, _dir) = mock_with_tables(|s| {
        s.identity.stitching = true;
        s.journeys_api = JourneysApi {
            enabled: true,
            token: Some(TOKEN.into()),
            ..JourneysApi::default()
        };
    });
    let repartition = attrib::runtime::topology::repartition_topic(&s.application_id);
    cluster.create_topic(&repartition, 2, 1).unwrap();
    let run = Running::start(&s);
    let server = HttpServer::start(http_state(&s, &run.handles));
    run.wait_ready(Duration::from_secs(60));
    let records = vec![
        rec(
            Clicks,
            "laptop",
            r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"laptop"}"#,
        ),
        rec(
            Identities,
            "laptop",
            r#"{"type":"identify","device_id":"laptop","customer_id":"cu-1","occurred_at":"2026-11-01T10:05:00Z"}"#,
        ),
        rec(
            Conversions,
            "phone",
            r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-02T10:00:00Z","device_id":"phone","customer_id":"cu-1","order_subtotal":"10.00"}"#,
        ),
    ];
    produce(&s.brokers, &s, &records).unwrap();
    wait_consumed(&run.handles, 3, Duration::from_secs(60)).unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let body = poll(Duration::from_secs(30), "the laptop's link", || {
        let r = server.get("/journeys/laptop", &[("Authorization", &bearer)]);
        let body: Json = serde_json::from_str(&r.body).ok()?;
        body["link"]["customer_journey"]
            .as_array()
            .is_some_and(|j| !j.is_empty())
            .then_some(body)
    });
    assert_eq!(body["link"]["customer_id"], "cu-1", "{body:#}");
    let journey = &body["link"]["customer_journey"][0]["journey"];
    assert_eq!(journey["clicks"][0]["click_id"], "c-1", "{body:#}");
    assert_eq!(journey["clicks"][0]["device_id"], "laptop", "{body:#}");
    assert_eq!(journey["orders"][0]["order_id"], "o-1", "{body:#}");
    // The laptop has no anonymous journey any more: it moved.
    assert_eq!(body["partitions"], serde_json::json!([]), "{body:#}");
    let r = server.get("/journeys/cu-1", &[("Authorization", &bearer)]);
    let body: Json = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(
        body["customer_journey"][0]["journey"]["orders"][0]["order_id"], "o-1",
        "{body:#}"
    );
    let m = &run.handles.metrics;
    assert_eq!(m.links.with_label_values(&["created"]).get(), 2);
    assert_eq!(m.journeys_moved.get(), 1);
    run.stop();
}

// ---------------------------------------------------------------------------------------------
// 6. Prometheus Operator manifests
// ---------------------------------------------------------------------------------------------

/// `deploy/prometheus/operator/`: the PrometheusRule carries exactly the rule groups of
/// `alerts.yml` (which promtool checks and `alerts_test.yml` tests), and the ServiceMonitor
/// selects exactly one of the attrib Services, by its labels, scrapes a port that Service has,
/// and gives its targets the job name the rules expect.
#[test]
fn prometheus_rule_manifest_matches_alerts_file() {
    let dir = "deploy/prometheus/operator";

    // The kustomization lists both manifests (and nothing else).
    let k = yaml(&format!("{dir}/kustomization.yaml"));
    let listed: BTreeSet<&str> = k["resources"]
        .as_sequence()
        .expect("resources in the operator kustomization.yaml")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["prometheusrule.yaml", "servicemonitor.yaml"]),
        "{dir}/kustomization.yaml resources"
    );

    // PrometheusRule: spec.groups == alerts.yml's groups, as parsed YAML.
    let rule_file = format!("{dir}/prometheusrule.yaml");
    let rule = yaml(&rule_file);
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    assert!(
        rule["metadata"]["labels"]["release"].is_string(),
        "{rule_file}: no `release` label for the Prometheus's ruleSelector"
    );
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let groups = alerts["groups"].as_sequence().expect("alerts.yml groups");
    assert!(!groups.is_empty(), "alerts.yml has no groups");
    assert!(
        rule["spec"]["groups"].as_sequence().is_some(),
        "{rule_file}: no spec.groups"
    );
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "{rule_file}: spec.groups differs from the groups of deploy/prometheus/alerts.yml \
         (regenerate it: see its header)"
    );

    // ServiceMonitor: its selector matches the labels of exactly one attrib Service.
    let sm_file = format!("{dir}/servicemonitor.yaml");
    let sm = yaml(&sm_file);
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(sm["kind"].as_str(), Some("ServiceMonitor"));
    assert!(
        sm["metadata"]["labels"]["release"].is_string(),
        "{sm_file}: no `release` label for the Prometheus's serviceMonitorSelector"
    );
    let wanted = sm["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("ServiceMonitor spec.selector.matchLabels");
    assert!(!wanted.is_empty(), "{sm_file}: empty selector");
    let selected: Vec<(&str, Yaml)> = [
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/service-headless.yaml",
    ]
    .into_iter()
    .map(|f| (f, yaml(f)))
    .filter(|(_, svc)| {
        wanted
            .iter()
            .all(|(k, v)| &svc["metadata"]["labels"][k] == v)
    })
    .collect();
    let names: Vec<&str> = selected.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        names.len(),
        1,
        "{sm_file} must select exactly one Service (two would scrape every pod twice): {names:?}"
    );
    let (svc_file, svc) = &selected[0];

    // Each endpoint's port is a named port of that Service; the path is /metrics.
    let ports: Vec<&str> = svc["spec"]["ports"]
        .as_sequence()
        .expect("Service spec.ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let endpoints = sm["spec"]["endpoints"]
        .as_sequence()
        .expect("ServiceMonitor spec.endpoints");
    assert!(!endpoints.is_empty(), "{sm_file}: no endpoints");
    for e in endpoints {
        let port = e["port"]
            .as_str()
            .expect("ServiceMonitor endpoint `port` (a Service port name)");
        assert!(
            ports.contains(&port),
            "{sm_file}: endpoint port {port:?} is not a port of {svc_file} ({ports:?})"
        );
        assert_eq!(
            e["path"].as_str().unwrap_or("/metrics"),
            "/metrics",
            "{sm_file}: endpoint path"
        );
    }

    // The job label: the Service label named by jobLabel, else the Service's name. The rules
    // expect "attrib" (AttribDown: up{job="attrib"}).
    let job = match sm["spec"]["jobLabel"].as_str() {
        Some(label) => svc["metadata"]["labels"][label].as_str(),
        None => svc["metadata"]["name"].as_str(),
    };
    assert_eq!(job, Some("attrib"), "{sm_file}: job label of its targets");
}

/// The image ships the binary `scripts/dist` makes: no debug sections, a fraction of the
/// release binary's size, still running; its debug info kept beside it and linked.
#[test]
fn the_image_ships_a_stripped_binary() {
    let dockerfile = read("deploy/Dockerfile");
    assert!(
        dockerfile.contains("scripts/dist /out")
            && dockerfile.contains("COPY --from=builder /out/attrib /usr/local/bin/attrib"),
        "deploy/Dockerfile builds with scripts/dist and ships /out/attrib"
    );
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "!scripts/dist"),
        "the build context lets scripts/dist in"
    );
    let out = tempfile::tempdir().unwrap();
    let built = env!("CARGO_BIN_EXE_attrib");
    let status = std::process::Command::new(repo().join("scripts/dist"))
        .arg("--binary")
        .arg(built)
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/dist: {status}");
    let shipped = out.path().join("attrib");
    let sections = std::process::Command::new("readelf")
        .arg("-S")
        .arg("-W")
        .arg(&shipped)
        .output()
        .unwrap();
    let sections = String::from_utf8_lossy(&sections.stdout);
    for debug in [".debug_info", ".debug_line", ".debug_str", ".symtab"] {
        assert!(!sections.contains(debug), "{debug} in the shipped binary");
    }
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let size = std::fs::metadata(&shipped).unwrap().len();
    let full = std::fs::metadata(built).unwrap().len();
    assert!(
        size < 64 << 20 && size * 4 < full,
        "shipped binary {size} bytes (release build {full})"
    );
    let debug = std::fs::metadata(out.path().join("attrib.debug"))
        .unwrap()
        .len();
    assert!(debug > size, "debug info kept beside it: {debug} bytes");
    let version = std::process::Command::new(&shipped)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        concat!("attrib ", env!("CARGO_PKG_VERSION"))
    );
}
