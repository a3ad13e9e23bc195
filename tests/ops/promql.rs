//! The metrics and labels that the alerts and dashboards query exist in a real scrape.

use crate::metrics::e2e;
use crate::{read, yaml};
use attrib::model::records::DlqReason;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

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
pub(crate) fn deploy_exprs() -> Vec<(String, String)> {
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
