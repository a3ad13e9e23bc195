//! Test helpers shared by the Kafka tests: one end-to-end body run against every broker.
#![allow(dead_code)]

use attrib::model::records::InputTopic;
use attrib::ops::settings::{Guarantee, Settings};
use attrib::runtime::{self, Handles};
use attrib::tools::testkit::{ReadBack, produce, read_topics, wait_consumed};
use attrib::tools::workload::GenRecord;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The real broker the test command started, if any. With `ATTRIB_REQUIRE_BROKER=1` (set by
/// `scripts/test`) a missing broker fails the test instead of skipping it.
pub fn real_broker() -> Option<String> {
    match std::env::var("ATTRIB_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            if std::env::var("ATTRIB_REQUIRE_BROKER").as_deref() == Ok("1") {
                panic!("ATTRIB_REQUIRE_BROKER=1 but ATTRIB_TEST_BROKERS is not set");
            }
            eprintln!("skipped: no real broker (run scripts/test, which starts Apache Kafka)");
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}", n % 1_000_000_000_000)
}

/// Settings with unique topic names, so that runs never see each other's records.
pub fn test_settings(brokers: &str, guarantee: Guarantee, state_dir: &std::path::Path) -> Settings {
    let id = unique("t");
    let mut s = Settings {
        brokers: brokers.into(),
        processing_guarantee: guarantee,
        ..Settings::default()
    };
    s.application_id = format!("attrib-{id}");
    s.state_dir = state_dir.to_path_buf();
    s.http_addr = "127.0.0.1:0".parse().unwrap();
    s.commit_interval = std::time::Duration::from_millis(100);
    for name in s.topics.names_mut() {
        *name = format!("{name}-{id}");
    }
    s
}

/// Every topic of the settings with its partition count.
pub fn topics_of(s: &Settings, partitions: i32) -> Vec<(String, i32)> {
    let t = &s.topics;
    vec![
        (t.clicks.clone(), partitions),
        (t.conversions.clone(), partitions),
        (t.identities.clone(), partitions),
        (s.changelog_topic(), partitions),
        (t.promo_codes.clone(), 1),
        (t.config.clone(), 1),
        (t.actions.clone(), partitions),
        (t.invalid_actions.clone(), partitions),
        (t.dlq.clone(), partitions),
    ]
}

/// Creates topics through the admin API.
pub fn create_topics(brokers: &str, topics: &[(String, i32)]) {
    create_replicated_topics(brokers, topics, 1);
}

/// Creates topics with `replication` replicas each and, above one replica,
/// `min.insync.replicas` 2 (a write needs two copies).
pub fn create_replicated_topics(brokers: &str, topics: &[(String, i32)], replication: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| {
            let t = NewTopic::new(n, *p, TopicReplication::Fixed(replication));
            let t = if replication > 1 {
                t.set("min.insync.replicas", "2")
            } else {
                t
            };
            if n.contains("promo-codes") || n.contains("config") || n.ends_with("changelog") {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let res = futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap();
    for r in res {
        r.map_err(|(t, e)| format!("cannot create {t}: {e}"))
            .unwrap();
    }
}

pub fn rec(topic: InputTopic, key: &str, value: &str) -> GenRecord {
    GenRecord {
        topic,
        key: Some(key.into()),
        value: Some(value.into()),
    }
}

pub struct Running {
    pub handles: Handles,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn start(s: &Settings) -> Running {
        let handles = Handles::default();
        let h = handles.clone();
        let s = s.clone();
        let thread = std::thread::spawn(move || runtime::supervise(&s, &h));
        Running {
            handles,
            thread: Some(thread),
        }
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.handles.ready.load(Ordering::Acquire) {
            assert!(
                Instant::now() < deadline,
                "pipeline not ready in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) {
        self.handles.shutdown.request();
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

pub fn json(r: &ReadBack) -> serde_json::Value {
    serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()
}

/// The end-to-end test body: config, promo codes, clicks and conversions in; the expected
/// actions out; a malformed record on each input topic in the DLQ with its headers while the
/// records around it are processed.
pub fn end_to_end(brokers: &str, s: &Settings) {
    use InputTopic::*;
    let tables = vec![
        rec(
            Config,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD","credit_policy":"last_click"}"#,
        ),
        rec(
            Config,
            "program/bad",
            r#"{"type":"program","program_id":"bad","account_id":"acme","locking_days":-4}"#,
        ),
        rec(
            Config,
            "contract/p1/pa1",
            r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}"#,
        ),
        rec(
            Config,
            "contract/p1/pa2",
            r#"{"type":"contract","program_id":"p1","partner_id":"pa2","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"fixed":"3.00"}}}"#,
        ),
        rec(
            PromoCodes,
            "p1/SAVE",
            r#"{"type":"promo_code","program_id":"p1","code":"save","partner_id":"pa2","credit_policy":"always"}"#,
        ),
        rec(
            PromoCodes,
            "p1/WRONG",
            r#"{"type":"promo_code","program_id":"p1","code":"other","partner_id":"pa2","credit_policy":"always"}"#,
        ),
    ];
    produce(brokers, s, &tables).unwrap();
    let run = Running::start(s);
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
            r#"{"type":"click","click_id":"c-2","program_id":"p1","occurred_at":"2026-11-01T10:00:00Z"}"#,
        ),
        rec(
            Clicks,
            "d-2",
            r#"{"type":"click","click_id":"c-3","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T09:00:00Z","device_id":"d-2"}"#,
        ),
    ];
    produce(brokers, s, &clicks).unwrap();
    wait_consumed(&run.handles, 3, Duration::from_secs(60)).unwrap();
    let conversions = vec![
        rec(
            Conversions,
            "d-1",
            r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-02T10:00:00Z","device_id":"d-1","order_discount":"5.00","items":[{"sku":"A1","category":"shoes","quantity":2,"unit_price":"30.00"}]}"#,
        ),
        rec(
            Conversions,
            "d-2",
            r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-2"}"#,
        ),
        rec(
            Conversions,
            "d-2",
            r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-3","occurred_at":"2026-11-02T10:00:00Z","device_id":"d-2","promo_code":"SAVE","order_subtotal":"80"}"#,
        ),
    ];
    produce(brokers, s, &conversions).unwrap();
    wait_consumed(&run.handles, 6, Duration::from_secs(60)).unwrap();

    let out = read_topics(
        brokers,
        &[&s.topics.actions, &s.topics.invalid_actions, &s.topics.dlq],
    )
    .unwrap();
    let actions: Vec<serde_json::Value> = out
        .iter()
        .filter(|r| r.topic == s.topics.actions)
        .map(json)
        .collect();
    assert_eq!(actions.len(), 2, "{actions:#?}");
    let o1 = actions
        .iter()
        .find(|a| a["order_id"] == "o-1")
        .expect("action for o-1");
    assert_eq!(o1["credits"][0]["partner_id"], "pa1");
    assert_eq!(o1["credits"][0]["referral_type"], "click");
    assert_eq!(o1["amount"], "55.000000");
    assert_eq!(o1["payout"], "5.500000");
    assert_eq!(o1["currency"], "USD");
    let o3 = actions
        .iter()
        .find(|a| a["order_id"] == "o-3")
        .expect("action for o-3");
    assert_eq!(o3["credits"][0]["partner_id"], "pa2");
    assert_eq!(o3["credits"][0]["referral_type"], "promo_code");
    assert_eq!(o3["payout"], "3.000000");
    let action_key = out
        .iter()
        .find(|r| r.topic == s.topics.actions)
        .unwrap()
        .key
        .clone()
        .unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["action_id"].as_str().unwrap().as_bytes() == action_key.as_slice()),
        "actions are keyed by action_id"
    );

    let dlq: Vec<&ReadBack> = out.iter().filter(|r| r.topic == s.topics.dlq).collect();
    let by_topic = |t: &str| {
        dlq.iter()
            .find(|r| r.headers.get("attrib.source.topic").map(String::as_str) == Some(t))
            .copied()
    };
    for (topic, field) in [
        (&s.topics.config, "locking_days"),
        (&s.topics.promo_codes, "does not match"),
        (&s.topics.clicks, "partner_id"),
        (&s.topics.conversions, "occurred_at"),
    ] {
        let r = by_topic(topic).unwrap_or_else(|| panic!("no DLQ record from {topic}: {dlq:#?}"));
        let err = &r.headers["attrib.error"];
        assert!(err.contains(field), "{topic}: {err}");
        assert!(r.headers.contains_key("attrib.source.partition"));
        assert!(r.headers["attrib.source.offset"].parse::<i64>().is_ok());
        assert!(r.value.is_some(), "the original value is kept");
    }
    assert_eq!(dlq.len(), 4, "{dlq:#?}");
    let m = &run.handles.metrics;
    assert_eq!(m.consumed.with_label_values(&["clicks"]).get(), 3);
    assert_eq!(m.consumed.with_label_values(&["conversions"]).get(), 3);
    if s.processing_guarantee == attrib::ops::settings::Guarantee::ExactlyOnce {
        wait_lag_zero(m, &["clicks", "conversions"], 2);
    }
    run.stop();
}

/// Waits until `attrib_consumer_lag_records` shows every partition of `topics` and all are 0
/// (everything was processed and committed): the lag comes from the committed transactions,
/// not from librdkafka's view of the consumer's own commits, which never fell under
/// `exactly_once`.
pub fn wait_lag_zero(m: &attrib::ops::metrics::Metrics, topics: &[&str], partitions: i32) {
    use prometheus::core::Collector;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = m
            .consumer_lag
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().to_vec())
            .map(|x| {
                let label = |n: &str| {
                    x.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                ((label("topic"), label("partition")), x.get_gauge().value())
            })
            .collect::<Vec<_>>();
        let all_there = topics.iter().all(|t| {
            (0..partitions).all(|p| {
                last.iter()
                    .any(|((topic, part), _)| topic == t && *part == p.to_string())
            })
        });
        if all_there && last.iter().all(|(_, v)| *v == 0.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("consumer lag not 0 on every partition of {topics:?} within 40 s: {last:?}");
}

// ---------------------------------------------------------------------------------------------
// Operations helpers: the pipeline with caller-made handles, the HTTP router on a loopback
// port, a minimal HTTP/1.1 client and a parser for the Prometheus text format.
// ---------------------------------------------------------------------------------------------

impl Running {
    /// Like [`Running::start`], with handles the caller made first (e.g. to serve HTTP before
    /// the pipeline starts).
    pub fn start_with(s: &Settings, handles: Handles) -> Running {
        let h = handles.clone();
        let s = s.clone();
        let thread = std::thread::spawn(move || runtime::supervise(&s, &h));
        Running {
            handles,
            thread: Some(thread),
        }
    }
}

/// The HTTP state `attrib run` builds from its settings and handles.
pub fn http_state(s: &Settings, h: &Handles) -> attrib::ops::http::HttpState {
    attrib::ops::http::HttpState {
        metrics: h.metrics.clone(),
        ready: h.ready.clone(),
        heartbeat: h.heartbeat.clone(),
        journeys: s.journeys_api.enabled.then(|| {
            (
                s.journeys_api.token.clone().unwrap_or_default(),
                h.journey_lookup(),
            )
        }),
    }
}

/// attrib's HTTP router served on 127.0.0.1:<free port> by a tokio runtime of its own; stops
/// when dropped.
pub struct HttpServer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    pub fn start(state: attrib::ops::http::HttpState) -> HttpServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(async move {
            axum::serve(listener, attrib::ops::http::router(state))
                .with_graceful_shutdown(async move {
                    // A dropped sender stops the server too.
                    if rx.await.is_err() {
                        eprintln!("test HTTP server: stop sender dropped");
                    }
                })
                .await
                .unwrap();
        });
        HttpServer {
            addr,
            stop: Some(tx),
            rt: Some(rt),
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(self.addr, path, headers)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            if tx.send(()).is_err() {
                eprintln!("test HTTP server had stopped already");
            }
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `GET` over a fresh connection (`Connection: close`), with a 30 s timeout.
pub fn http_get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size_text = String::from_utf8_lossy(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether the sample is of `name` and its labels include `labels`.
    pub fn is(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// The one sample of `name` with these labels' values (others may exist), if any.
pub fn metric_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples.iter().filter(|s| s.is(name, labels)).collect();
    assert!(
        found.len() <= 1,
        "several series of {name} {labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

/// Parses the Prometheus text exposition format (0.0.4): sample lines only.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name = line[..name_end].to_string();
        let mut labels = std::collections::BTreeMap::new();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            let mut chars = rest[1..].char_indices();
            let mut key = String::new();
            let end;
            loop {
                let (i, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                match c {
                    '}' => {
                        end = i + 2;
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            let (_, c) = chars.next().expect("unclosed label value");
                            match c {
                                '"' => break,
                                '\\' => match chars.next().expect("escape").1 {
                                    'n' => value.push('\n'),
                                    other => value.push(other),
                                },
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            rest = &rest[end..];
        }
        let value_text = rest.split_whitespace().next().expect("sample value");
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}
