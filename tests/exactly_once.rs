//! Exactly once, recovery and scale-out on Apache Kafka (started by `scripts/test`; tests that
//! restart or proxy a broker start their own with `scripts/kafka`). attrib runs as child
//! processes (`attrib run`), killed with SIGKILL at random moments; what a `read_committed`
//! consumer reads from the output topics must equal, as a multiset, what `attrib replay`
//! produces for the same input in production order.
//!
//! The input is written as it happens: each device's clicks, then its conversion, then later
//! changes, with devices interleaved, at a steady pace while attrib runs (and is killed), and
//! also as a backlog while attrib is down. Clicks and conversions are on two topics; attrib
//! merges a task's partitions by record timestamp, and `produce` gives every record a distinct,
//! increasing timestamp, so production order is defined.

mod common;

use attrib::model::records::InputTopic;
use attrib::ops::settings::{Guarantee, Settings};
use attrib::tools::demo::{ReadBack, produce, read_topics};
use attrib::tools::workload::GenRecord;
use common::rec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prints the attrib logs of a failed test.
struct Logs(PathBuf);

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the evidence (the logs) for a look after the run.
            let keep = std::env::temp_dir().join(format!("attrib-failed-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                if e.path().is_file() {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
            eprintln!("logs and broker storage kept in {}", keep.display());
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!(
                        "--- {} (last 40 lines)\n{}",
                        e.path().display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
    }
}

/// The tests share one broker and the machine's two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn kills() -> usize {
    std::env::var("ATTRIB_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// An `attrib run` child process.
struct Instance {
    child: Child,
    env: Vec<(String, String)>,
    log: PathBuf,
}

fn settings_env(s: &Settings, instance: &str, state: &Path) -> Vec<(String, String)> {
    let t = &s.topics;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    [
        ("ATTRIB_BROKERS", s.brokers.clone()),
        ("ATTRIB_APPLICATION_ID", s.application_id.clone()),
        ("ATTRIB_INSTANCE_ID", instance.to_string()),
        ("ATTRIB_STATE_DIR", state.display().to_string()),
        ("ATTRIB_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("ATTRIB_PROCESSING_GUARANTEE", "exactly_once".to_string()),
        ("ATTRIB_COMMIT_INTERVAL_MS", "100".to_string()),
        (
            "ATTRIB_LOG_LEVEL",
            std::env::var("ATTRIB_TEST_LOG").unwrap_or_else(|_| "warn,attrib=info".to_string()),
        ),
        ("ATTRIB_TOPICS_CLICKS", t.clicks.clone()),
        ("ATTRIB_TOPICS_CONVERSIONS", t.conversions.clone()),
        ("ATTRIB_TOPICS_IDENTITIES", t.identities.clone()),
        (
            "ATTRIB_IDENTITY_STITCHING",
            s.identity.stitching.to_string(),
        ),
        ("ATTRIB_TOPICS_PROMO_CODES", t.promo_codes.clone()),
        ("ATTRIB_TOPICS_CONFIG", t.config.clone()),
        ("ATTRIB_TOPICS_ACTIONS", t.actions.clone()),
        ("ATTRIB_TOPICS_INVALID_ACTIONS", t.invalid_actions.clone()),
        ("ATTRIB_TOPICS_DLQ", t.dlq.clone()),
        ("ATTRIB_KAFKA_SESSION_TIMEOUT_MS", "6000".to_string()),
        ("ATTRIB_KAFKA_HEARTBEAT_INTERVAL_MS", "1000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(
        std::env::var("ATTRIB_TEST_KAFKA_DEBUG")
            .ok()
            .map(|d| ("ATTRIB_KAFKA_DEBUG".to_string(), d)),
    )
    .collect()
}

impl Instance {
    fn start(env: Vec<(String, String)>, log: PathBuf) -> Instance {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_attrib"))
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Instance { child, env, log }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn restart(&mut self) {
        let mut next = Instance::start(self.env.clone(), self.log.clone());
        std::mem::swap(&mut self.child, &mut next.child);
        // `next` now holds the old (killed) child; dropping it is a no-op.
    }

    /// Waits for the process to end by itself (a failpoint), returning its status.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "attrib did not end within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "attrib exited with {status}; log {}",
                    self.log.display()
                );
                return;
            }
            assert!(Instant::now() < deadline, "attrib did not stop within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails leaves no attrib process behind (it would keep running against a broker
/// that is gone).
impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

fn tables() -> Vec<GenRecord> {
    use InputTopic::*;
    let mut t = vec![
        rec(
            Config,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD","credit_policy":"linear","locking_days":30}"#,
        ),
        rec(
            Config,
            "program/p2",
            r#"{"type":"program","program_id":"p2","account_id":"acme","currency":"USD"}"#,
        ),
        rec(
            Config,
            "cross_program/acme",
            r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"all"}"#,
        ),
        rec(
            PromoCodes,
            "p1/SAVE",
            r#"{"type":"promo_code","program_id":"p1","code":"SAVE","partner_id":"pa0","credit_policy":"always"}"#,
        ),
        rec(
            Config,
            "program/bad",
            r#"{"type":"program","program_id":"bad"}"#,
        ),
    ];
    for p in ["p1", "p2"] {
        for i in 0..5 {
            let group = if i == 4 { "standard" } else { "preferred" };
            t.push(rec(
                Config,
                &format!("contract/{p}/pa{i}"),
                &format!(r#"{{"type":"contract","program_id":"{p}","partner_id":"pa{i}","active_from":"2026-01-01T00:00:00Z","credit_group":"{group}","payout":{{"default":{{"percent":"{}"}},"groups":[{{"when":{{"categories":["shoes"]}},"rate":{{"fixed":"2.50"}}}}]}}}}"#, 5 + i)
            ));
        }
    }
    t
}

/// One wave: clicks of `n` new devices, then (after a barrier) their conversions and changes of
/// the previous wave's conversions.
struct Wave {
    clicks: Vec<GenRecord>,
    conversions: Vec<GenRecord>,
}

fn waves(seed: u64, count: usize, devices: usize) -> Vec<Wave> {
    use InputTopic::*;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Wave> = Vec::new();
    let mut previous: Vec<(String, String, i64)> = Vec::new();
    let base = attrib::model::time::parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
    for w in 0..count {
        let mut wave = Wave {
            clicks: Vec::new(),
            conversions: Vec::new(),
        };
        let mut orders = Vec::new();
        for d in 0..devices {
            let key = format!("w{w}-d{d}");
            let t0 = base + (w as i64) * 3_600_000 + rng.gen_range(0..3_000_000);
            for c in 0..rng.gen_range(0..4) {
                let p = if rng.gen_bool(0.8) { "p1" } else { "p2" };
                wave.clicks.push(rec(Clicks, &key, &format!(
                    r#"{{"type":"click","click_id":"{key}-c{c}","program_id":"{p}","partner_id":"pa{}","occurred_at":"{}","device_id":"{key}"}}"#,
                    rng.gen_range(0..5), attrib::model::time::format_rfc3339(t0 + c * 60_000)
                )));
            }
            if rng.gen_bool(0.05) {
                wave.clicks
                    .push(rec(Clicks, &key, r#"{"type":"click","click_id":"broken"}"#));
            }
            let order = format!("o-{key}");
            let tc = t0 + 600_000;
            let code = if rng.gen_bool(0.1) {
                r#","promo_code":"save""#
            } else {
                ""
            };
            wave.conversions.push(rec(Conversions, &key, &format!(
                r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}","device_id":"{key}","order_discount":"1.00","items":[{{"sku":"A","category":"shoes","quantity":{},"unit_price":"19.99"}},{{"sku":"B","category":"hats","quantity":1,"unit_price":"5.05"}}]{code}}}"#,
                attrib::model::time::format_rfc3339(tc), rng.gen_range(1..4)
            )));
            orders.push((key, order, tc));
        }
        for (key, order, tc) in previous.drain(..) {
            match rng.gen_range(0..6) {
                0 => wave.conversions.push(rec(Conversions, &key, &format!(
                    r#"{{"type":"modification","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}","items":[{{"sku":"A","quantity":0}}]}}"#,
                    attrib::model::time::format_rfc3339(tc + 86_400_000)
                ))),
                1 => wave.conversions.push(rec(Conversions, &key, &format!(
                    r#"{{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}"}}"#,
                    attrib::model::time::format_rfc3339(tc + 86_400_000)
                ))),
                2 => wave.conversions.push(rec(Conversions, &key, r#"not json"#)),
                _ => {}
            }
        }
        previous = orders;
        out.push(wave);
    }
    out
}

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
fn wait_committed(s: &Settings, topic: &str, partitions: i32, timeout: Duration) {
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
fn replay_expectation(s: &Settings, records: &[GenRecord]) -> BTreeMap<String, usize> {
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
fn kafka_output(s: &Settings) -> BTreeMap<String, usize> {
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

/// An Apache Kafka node of the test's own (`scripts/kafka start`), in its own directory: it
/// can be killed and started again on the same data and ports.
struct OwnBroker {
    dir: PathBuf,
    brokers: String,
}

fn scripts_kafka(args: &[&str], env: &[(&str, String)]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
    let out = Command::new(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/kafka {args:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl OwnBroker {
    /// A single-node cluster in `dir`; `advertised` makes it tell clients another port (a
    /// proxy's).
    fn start(dir: &Path, advertised: Option<(u16, u16)>) -> OwnBroker {
        let dir = dir.join("kafka");
        let env: Vec<(&str, String)> = match advertised {
            Some((port, adv)) => vec![
                ("ATTRIB_TEST_KAFKA_PORT", port.to_string()),
                ("ATTRIB_TEST_KAFKA_ADVERTISED_PORT", adv.to_string()),
            ],
            None => vec![],
        };
        let brokers = scripts_kafka(&["start", dir.to_str().unwrap()], &env);
        OwnBroker { dir, brokers }
    }

    /// SIGKILL, a pause, and a start on the same storage and port.
    fn kill9_and_restart(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("pid")).unwrap();
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
        while proc.exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(2));
        scripts_kafka(&["start", self.dir.to_str().unwrap()], &[]);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
        let _ = Command::new(script)
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

/// Settings with fresh topics on the broker `scripts/test` started. `None` outside it.
fn setup(partitions: i32) -> Option<(Settings, tempfile::TempDir)> {
    let brokers = common::real_broker()?;
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_topics(&s.brokers, &common::topics_of(&s, partitions));
    Some((s, dir))
}

/// The read_committed output equals the replay's (and the input topics hold each record once).
fn assert_exact(s: &Settings, dir: &Path, records: &[GenRecord]) {
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

/// The waves' records in the order they happen: within a wave, each device's clicks and then
/// its conversion, devices interleaved at random; the changes of the previous wave's orders
/// in between.
fn natural(seed: u64, count: usize, devices: usize) -> Vec<GenRecord> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut out = Vec::new();
    for w in waves(seed, count, devices) {
        // Per device (by key): its records in order.
        let mut lanes: Vec<std::collections::VecDeque<GenRecord>> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for r in w.clicks.iter().chain(w.conversions.iter()) {
            let key = r.key.clone().unwrap_or_default();
            let i = *index.entry(key).or_insert_with(|| {
                lanes.push(Default::default());
                lanes.len() - 1
            });
            lanes[i].push_back(r.clone());
        }
        while !lanes.is_empty() {
            let i = rng.gen_range(0..lanes.len());
            out.push(lanes[i].pop_front().unwrap());
            if lanes[i].is_empty() {
                lanes.swap_remove(i);
            }
        }
    }
    out
}

/// Produces `records` at a steady pace (8 records every 20 ms) on a thread of its own.
fn produce_paced(s: &Settings, records: Vec<GenRecord>) -> std::thread::JoinHandle<()> {
    let s = s.clone();
    std::thread::spawn(move || {
        let producer = attrib::tools::demo::input_producer(&s.brokers).unwrap();
        for chunk in records.chunks(8) {
            attrib::tools::demo::send_records(
                &producer,
                &s,
                chunk,
                attrib::tools::demo::Stamp::Distinct,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Waits until attrib has committed every input record written so far.
fn wait_all_committed(s: &Settings, partitions: i32) {
    for topic in [&s.topics.clicks, &s.topics.conversions] {
        wait_committed(s, topic, partitions, Duration::from_secs(180));
    }
}

/// `ATTRIB_CRASH_KILLS` kills (10; 30 in `scripts/test --long`) while input is written as it
/// happens, and a phase in the middle that writes a backlog while attrib is down. Kills land
/// inside commits too: the restarted instance must restore only what committed and produce that
/// transaction's outputs again.
#[test]
fn crash_test_sigkill_at_random_moments_output_is_exactly_the_replay() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(2) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    let n = kills();
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let env = settings_env(&s, "crash-0", &dir.path().join("state"));
    let mut inst = Instance::start(env, dir.path().join("attrib.log"));
    let stream = natural(1, n * 2, 40);
    let (first, rest) = stream.split_at(stream.len() * 2 / 5);
    let (backlog, last) = rest.split_at(rest.len() / 3);
    let mut rng = StdRng::seed_from_u64(99);
    let mut killed = 0;
    let mut kill_while =
        |inst: &mut Instance, writer: std::thread::JoinHandle<()>, quota: usize| {
            while killed < quota {
                // Let it work for a random moment, then SIGKILL and restart.
                std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
                inst.kill9();
                killed += 1;
                inst.restart();
            }
            writer.join().unwrap();
        };
    kill_while(&mut inst, produce_paced(&s, first.to_vec()), n / 2);
    // Down: a backlog accumulates, then the restart meets it.
    inst.kill9();
    produce(&s.brokers, &s, backlog).unwrap();
    inst.restart();
    kill_while(&mut inst, produce_paced(&s, last.to_vec()), n);
    all.extend(stream.iter().cloned());
    wait_all_committed(&s, 2);
    inst.stop();
    assert_eq!(killed, n);
    let log = std::fs::read_to_string(dir.path().join("attrib.log")).unwrap();
    assert!(
        replay_expectation(&s, &all).values().sum::<usize>() >= n * 2 * 40,
        "every conversion has an output"
    );
    assert_exact(&s, dir.path(), &all);
    eprintln!(
        "{} task waits gave up on a partition (enforced processing)",
        log.matches("processing ahead of it").count()
    );
    // Fast rejoin (static membership): from each start to its partitions restored.
    let mut rejoins = Vec::new();
    let mut started: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    for line in log.lines() {
        let plain: String = strip_ansi(line);
        let ts = plain
            .split_whitespace()
            .next()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if plain.contains("starting attrib pipeline") {
            started = ts;
        } else if plain.contains("state restored") {
            if let (Some(a), Some(b)) = (started.take(), ts) {
                rejoins.push((b - a).num_milliseconds());
            }
        }
    }
    rejoins.sort();
    eprintln!(
        "start to partitions restored, ms (each start): median {:?}, max {:?}, all {rejoins:?}",
        rejoins.get(rejoins.len() / 2),
        rejoins.last()
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Input written while attrib has never run: on start, a fetch may bring a partition's
/// conversions long before the clicks of the other topic's partition; the task's merge by
/// timestamp must give replay's answer. Clicks carry long landing URLs and the fetches are
/// small, so the clicks partitions need many more fetches than the conversions partitions.
#[test]
fn backlog_written_while_stopped_output_is_exactly_the_replay() {
    backlog_case(false);
}

/// The same backlog, in its natural interleaving, with identity stitching on: one device in
/// five buys logged in (its conversion links it and moves its journey), changes find their
/// order by device id (through the link when there is one), every other record stays
/// anonymous in the device stage. Each customer has one device, so the order in which
/// different devices reach a customer (design §6) plays no part: the output is replay's.
#[test]
fn backlog_with_stitching_on_output_is_exactly_the_replay() {
    backlog_case(true);
}

fn backlog_case(stitching: bool) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut s, dir)) = setup(2) else {
        return;
    };
    s.identity.stitching = stitching;
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    let padding = "x".repeat(3000);
    let stream: Vec<GenRecord> = natural(5, 12, 100)
        .into_iter()
        .map(|mut r| {
            let key = r.key.clone().unwrap_or_default();
            let Some(v) = &r.value else { return r };
            if r.topic == InputTopic::Clicks {
                r.value = Some(v.replacen(
                    r#""type":"click","#,
                    &format!(r#""type":"click","landing_url":"https://shop.example/{padding}","#),
                    1,
                ));
            } else if stitching && v.contains(r#""type":"conversion""#) {
                if key.ends_with('0') || key.ends_with('5') {
                    r.value = Some(v.replacen(
                        &format!(r#""device_id":"{key}""#),
                        &format!(r#""device_id":"{key}","customer_id":"cu-{key}""#),
                        1,
                    ));
                }
            } else if stitching && v.starts_with(r#"{"type":"#) {
                r.value = Some(v.replacen("{", &format!(r#"{{"device_id":"{key}","#), 1));
            }
            r
        })
        .collect();
    all.extend(stream.iter().cloned());
    produce(&s.brokers, &s, &all).unwrap();
    let mut env = settings_env(&s, "backlog-0", &dir.path().join("state"));
    env.push((
        "ATTRIB_KAFKA_MAX_PARTITION_FETCH_BYTES".into(),
        "32768".into(),
    ));
    let inst = Instance::start(env, dir.path().join("attrib.log"));
    wait_all_committed(&s, 2);
    let want = replay_expectation(&s, &all);
    // With stitching on, the customer stage may still be reading what was forwarded.
    wait_output(&s, &want, Duration::from_secs(180));
    inst.stop();
    let credited = want.keys().filter(|k| k.starts_with("actions|")).count();
    assert!(
        credited >= 600,
        "the stream credits most conversions ({credited})"
    );
    if stitching {
        let linked = want
            .keys()
            .filter(|k| k.starts_with("actions|") && k.contains(r#""customer_id":"cu-"#))
            .count();
        assert!(linked >= 50, "logged-in conversions credited ({linked})");
    }
    assert_exact(&s, dir.path(), &all);
}

/// The survivor fences the dead instance's tasks, restores their committed state and goes on
/// from their committed offsets.
#[test]
fn scale_out_two_instances_one_killed_the_other_takes_over() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(4) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let a = Instance::start(
        settings_env(&s, "scale-a", &dir.path().join("a")),
        dir.path().join("a.log"),
    );
    let mut b = Instance::start(
        settings_env(&s, "scale-b", &dir.path().join("b")),
        dir.path().join("b.log"),
    );
    let stream = natural(2, 8, 40);
    let writer = produce_paced(&s, stream.clone());
    std::thread::sleep(Duration::from_secs(3));
    b.kill9();
    writer.join().unwrap();
    all.extend(stream);
    wait_all_committed(&s, 4);
    a.stop();
    assert_exact(&s, dir.path(), &all);
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(
        log.contains("state restored"),
        "the survivor restored the partitions it took over:\n{log}"
    );
}

#[test]
fn restore_from_the_changelog_after_the_state_dir_is_deleted() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(2) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    use InputTopic::*;
    produce(&s.brokers, &s, &tables()).unwrap();
    let state = dir.path().join("state");
    let inst = Instance::start(
        settings_env(&s, "restore-0", &state),
        dir.path().join("attrib.log"),
    );
    produce(&s.brokers, &s, &[rec(Clicks, "dev-r", r#"{"type":"click","click_id":"before","program_id":"p1","partner_id":"pa3","occurred_at":"2026-10-01T00:00:00Z","device_id":"dev-r"}"#)]).unwrap();
    wait_committed(&s, &s.topics.clicks, 2, Duration::from_secs(60));
    inst.stop();
    std::fs::remove_dir_all(&state).unwrap();
    let inst = Instance::start(
        settings_env(&s, "restore-0", &state),
        dir.path().join("attrib.log"),
    );
    produce(&s.brokers, &s, &[rec(Conversions, "dev-r", r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"after","occurred_at":"2026-10-02T00:00:00Z","device_id":"dev-r","order_subtotal":"100"}"#)]).unwrap();
    wait_committed(&s, &s.topics.conversions, 2, Duration::from_secs(60));
    inst.stop();
    let out = read_topics(&s.brokers, &[&s.topics.actions]).unwrap();
    assert_eq!(out.len(), 1, "one action");
    let a = common::json(&out[0]);
    assert_eq!(a["credits"][0]["partner_id"], "pa3");
    assert_eq!(a["credits"][0]["click_id"], "before");
    assert_eq!(a["payout"], "8.000000");
    let log = std::fs::read_to_string(dir.path().join("attrib.log")).unwrap();
    assert!(log.contains("state restored"), "{log}");
}

/// The broker is killed (SIGKILL) mid-stream and started again on its data.
#[test]
fn broker_restart_mid_stream_attrib_recovers_and_output_is_exact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if common::real_broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _logs = Logs(dir.path().to_path_buf());
    let mut broker = OwnBroker::start(dir.path(), None);
    let s = common::test_settings(&broker.brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_topics(&s.brokers, &common::topics_of(&s, 2));
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let inst = Instance::start(
        settings_env(&s, "broker-0", &dir.path().join("state")),
        dir.path().join("attrib.log"),
    );
    let stream = natural(3, 6, 40);
    let (before, after) = stream.split_at(stream.len() / 2);
    let writer = produce_paced(&s, before.to_vec());
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill9_and_restart();
    writer.join().unwrap();
    produce_paced(&s, after.to_vec()).join().unwrap();
    all.extend(stream.iter().cloned());
    wait_all_committed(&s, 2);
    inst.stop();
    assert_exact(&s, dir.path(), &all);
}

/// A TCP proxy in front of the broker that can lose the broker's answers to one client's
/// producer connections: the broker stores what was sent, the client never hears so. This is
/// what a broker crash or a network fault between the write and its acknowledgement does.
struct AckLosingProxy {
    port: u16,
    losing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AckLosingProxy {
    /// Forwards to `upstream`; answers are lost on connections where the client whose
    /// `client.id` contains `client` sent a Produce request, while [`Self::lose_acks`] runs.
    fn start(upstream: u16, client: &str) -> AckLosingProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let losing = Arc::new(AtomicBool::new(false));
        let (flag, client) = (losing.clone(), client.as_bytes().to_vec());
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let producing = Arc::new(AtomicBool::new(false));
                let (mut c_in, mut c_out) = (down.try_clone().unwrap(), down);
                let (mut u_in, mut u_out) = (up.try_clone().unwrap(), up);
                let (p1, client) = (producing.clone(), client.clone());
                std::thread::spawn(move || {
                    while let Some(frame) = read_frame(&mut c_in) {
                        // Request header: api_key i16, version i16, correlation i32, client_id.
                        if frame.len() >= 14 {
                            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
                            let len = i16::from_be_bytes([frame[12], frame[13]]).max(0) as usize;
                            let id = &frame[14..(14 + len).min(frame.len())];
                            if api_key == 0 && id.windows(client.len()).any(|w| w == client) {
                                p1.store(true, Ordering::Release);
                            }
                        }
                        if std::io::Write::write_all(&mut u_out, &frame).is_err() {
                            break;
                        }
                    }
                    let _ = u_out.shutdown(std::net::Shutdown::Both);
                });
                let flag = flag.clone();
                std::thread::spawn(move || {
                    while let Some(frame) = read_frame(&mut u_in) {
                        if flag.load(Ordering::Acquire) && producing.load(Ordering::Acquire) {
                            continue;
                        }
                        if std::io::Write::write_all(&mut c_out, &frame).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        AckLosingProxy { port, losing }
    }

    /// Loses the answers for a while (longer than the client's request timeout, so that it
    /// sends the same batches again and the broker answers them as duplicates).
    fn lose_acks(&self, pause: Duration) {
        use std::sync::atomic::Ordering;
        self.losing.store(true, Ordering::Release);
        std::thread::sleep(pause);
        self.losing.store(false, Ordering::Release);
    }
}

/// One size-prefixed Kafka frame, the size included.
fn read_frame(r: &mut impl std::io::Read) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    r.read_exact(&mut size).ok()?;
    let n = i32::from_be_bytes(size).max(0) as usize;
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&size);
    r.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// Acknowledgements of attrib's writes are lost and its sends repeated: librdkafka reports the
/// repeats (duplicates to the broker) as delivered without an offset. The committed changelog
/// end must still cover every committed segment, or a restore drops the last one (found in a
/// broker-restart run: conversions credited before were then `unknown_order`).
#[test]
fn lost_acknowledgements_retried_sends_output_is_exact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if common::real_broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _logs = Logs(dir.path().to_path_buf());
    let kafka_port = free_port();
    let proxy = AckLosingProxy::start(kafka_port, "ack-0");
    let broker = OwnBroker::start(dir.path(), Some((kafka_port, proxy.port)));
    let s = common::test_settings(&broker.brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_topics(&s.brokers, &common::topics_of(&s, 2));
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let state = dir.path().join("state");
    let mut env = settings_env(&s, "ack-0", &state);
    env.push(("ATTRIB_KAFKA_SOCKET_TIMEOUT_MS".into(), "1500".into()));
    let mut inst = Instance::start(env, dir.path().join("attrib.log"));
    let stream = natural(4, 6, 40);
    for part in stream.chunks(stream.len() / 3 + 1) {
        let writer = produce_paced(&s, part.to_vec());
        // Mid-stream: the answers to the transaction's writes are lost, then the instance
        // dies right after its commit, and the restart restores from the changelog.
        std::thread::sleep(Duration::from_millis(300));
        proxy.lose_acks(Duration::from_millis(3000));
        std::thread::sleep(Duration::from_millis(1500));
        inst.kill9();
        inst.restart();
        writer.join().unwrap();
    }
    all.extend(stream.iter().cloned());
    wait_all_committed(&s, 2);
    inst.stop();
    assert_exact(&s, dir.path(), &all);
    let log = std::fs::read_to_string(dir.path().join("attrib.log")).unwrap();
    let unknown = log.matches("acknowledged without offsets").count();
    let timed_out = log.to_lowercase().matches("timed out").count();
    eprintln!(
        "{timed_out} log lines of timed-out requests; {unknown} commits had changelog records acknowledged without offsets"
    );
    // Kafka answers a repeated batch with its first offsets (librdkafka reports them as
    // delivered); brokers that answer DUPLICATE_SEQUENCE_NUMBER give none (the fallback).
    assert!(
        timed_out + unknown > 0,
        "the proxy made librdkafka's requests time out and send again"
    );
}

/// A three-node Apache Kafka cluster of the test's own (`scripts/kafka cluster-start`):
/// replication factor 3 and `min.insync.replicas` 2 for every topic, Kafka's transaction and
/// offsets topics included.
struct Cluster {
    dir: PathBuf,
    brokers: String,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let dir = dir.join("cluster");
        let brokers = scripts_kafka(&["cluster-start", dir.to_str().unwrap(), "3"], &[]);
        Cluster { dir, brokers }
    }

    /// The node leading a partition (node ids are 1..=3, as the nodes' indexes).
    fn leader(&self, topic: &str, partition: i32) -> i32 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()[0].partitions()[partition as usize].leader()
    }

    fn kill9(&self, node: i32) {
        scripts_kafka(
            &["node-kill", self.dir.to_str().unwrap(), &node.to_string()],
            &[],
        );
    }

    fn restart(&self, node: i32) {
        scripts_kafka(
            &["node-start", self.dir.to_str().unwrap(), &node.to_string()],
            &[],
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
        let _ = Command::new(script)
            .args(["cluster-stop", self.dir.to_str().unwrap()])
            .status();
    }
}

/// Broker failover, as Kafka Streams' EOS system tests bounce brokers: mid-stream the leader of
/// a partition attrib reads is killed (SIGKILL) and later started again, then the leader of a
/// partition it writes; attrib goes on by itself and the read_committed output equals replay's.
#[test]
fn failover_three_brokers_leaders_killed_output_is_exact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if common::real_broker().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _logs = Logs(dir.path().to_path_buf());
    let cluster = Cluster::start(dir.path());
    let s = common::test_settings(&cluster.brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_replicated_topics(&s.brokers, &common::topics_of(&s, 2), 3);
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let inst = Instance::start(
        settings_env(&s, "failover-0", &dir.path().join("state")),
        dir.path().join("attrib.log"),
    );
    let stream = natural(6, 8, 40);
    let writer = produce_paced(&s, stream.clone());
    let mut killed = Vec::new();
    for topic in [s.topics.clicks.clone(), s.topics.actions.clone()] {
        std::thread::sleep(Duration::from_secs(2));
        let leader = cluster.leader(&topic, 0);
        eprintln!(
            "{:?}: killing node {leader}, the leader of {topic} [0]",
            std::time::SystemTime::now()
        );
        cluster.kill9(leader);
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart(leader);
        killed.push(leader);
    }
    writer.join().unwrap();
    all.extend(stream.iter().cloned());
    wait_all_committed(&s, 2);
    inst.stop();
    assert_eq!(killed.len(), 2);
    assert_exact(&s, dir.path(), &all);
}

// ---------------------------------------------------------------------------------------------
// Cross-device identity stitching: the device stage, the repartition topic, the customer stage
// ---------------------------------------------------------------------------------------------

/// One wave of a cross-device stream: first the clicks and links (identify records, clicks
/// that carry both ids), then the conversions and the changes of the previous wave's orders.
/// Every link and move is in an earlier phase than the conversions that depend on it; the
/// clicks of one customer have distinct times, so the order in which different devices'
/// records reach the customer's journey changes nothing (docs/design.md §6, Order of
/// processing).
fn cross_device_waves(
    seed: u64,
    count: usize,
    customers: usize,
) -> Vec<(Vec<GenRecord>, Vec<GenRecord>)> {
    use InputTopic::*;
    let mut rng = StdRng::seed_from_u64(seed);
    let base = attrib::model::time::parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
    let ts = |ms: i64| attrib::model::time::format_rfc3339(ms);
    let mut out = Vec::new();
    // (customer, its devices, whether each is linked yet)
    let mut known: Vec<(String, Vec<(String, bool)>)> = Vec::new();
    let mut orders: Vec<(String, String, String, i64)> = Vec::new(); // (key, device, customer, t)
    let mut click_no = 0;
    for w in 0..count {
        let t0 = base + w as i64 * 3_600_000;
        // Lanes: each device's records in order; lanes interleaved at random.
        let mut links: BTreeMap<String, Vec<GenRecord>> = BTreeMap::new();
        let mut convs: BTreeMap<String, Vec<GenRecord>> = BTreeMap::new();
        let mut at = 0i64;
        let mut next_t = |rng: &mut StdRng| {
            at += 1_000 + rng.gen_range(0..1_000);
            t0 + at
        };
        for c in 0..customers {
            let cust = format!("cu-{w}-{c}");
            let devices: Vec<(String, bool)> = (0..rng.gen_range(2..4))
                .map(|d| (format!("d-{w}-{c}-{d}"), false))
                .collect();
            known.push((cust, devices));
        }
        let first_new = known.len() - customers;
        for (i, (cust, devices)) in known.iter_mut().enumerate() {
            let new = i >= first_new;
            if !new && !rng.gen_bool(0.3) {
                continue;
            }
            for (d, (device, linked)) in devices.iter_mut().enumerate() {
                let lane = links.entry(device.clone()).or_default();
                for _ in 0..rng.gen_range(0..3) {
                    click_no += 1;
                    let t = next_t(&mut rng);
                    lane.push(rec(Clicks, device, &format!(
                        r#"{{"type":"click","click_id":"x-{click_no}","program_id":"p1","partner_id":"pa{}","occurred_at":"{}","device_id":"{device}"}}"#,
                        rng.gen_range(0..5), ts(t)
                    )));
                }
                if *linked {
                    continue;
                }
                // Link this device now: by identify (device 0), by a click with both ids
                // (device 1); the others stay anonymous until a later wave or a conversion.
                let t = next_t(&mut rng);
                if d == 0 || (!new && rng.gen_bool(0.5)) {
                    lane.push(rec(Identities, device, &format!(
                        r#"{{"type":"identify","device_id":"{device}","customer_id":"{cust}","occurred_at":"{}"}}"#,
                        ts(t)
                    )));
                    *linked = true;
                } else if d == 1 {
                    click_no += 1;
                    lane.push(rec(Clicks, device, &format!(
                        r#"{{"type":"click","click_id":"x-{click_no}","program_id":"p1","partner_id":"pa{}","occurred_at":"{}","device_id":"{device}","customer_id":"{cust}"}}"#,
                        rng.gen_range(0..5), ts(t)
                    )));
                    *linked = true;
                }
            }
        }
        // Conversions: one per new customer, from one of its devices, linked or not, with
        // the customer's id or without; a server-side one (customer only) now and then.
        for (cust, devices) in &known[first_new..] {
            let (device, _) = &devices[rng.gen_range(0..devices.len())];
            let t = next_t(&mut rng) + 600_000;
            let order = format!("o-{cust}");
            let (key, ids) = match rng.gen_range(0..4) {
                0 => (device.clone(), format!(r#""device_id":"{device}""#)),
                1 => (
                    device.clone(),
                    format!(r#""device_id":"{device}","customer_id":"{cust}""#),
                ),
                2 => (cust.clone(), format!(r#""customer_id":"{cust}""#)),
                _ => (device.clone(), format!(r#""device_id":"{device}""#)),
            };
            convs.entry(key.clone()).or_default().push(rec(Conversions, &key, &format!(
                r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}",{ids},"items":[{{"sku":"A","category":"shoes","quantity":{},"unit_price":"19.99"}}]}}"#,
                ts(t), rng.gen_range(1..4)
            )));
            orders.push((key, device.clone(), cust.clone(), t));
        }
        // Changes of earlier orders: through the device's link, or by customer id.
        for (_, device, cust, t) in orders.iter().filter(|o| o.3 < t0) {
            if !rng.gen_bool(0.3) {
                continue;
            }
            let order = format!("o-{cust}");
            let (key, ids) = if rng.gen_bool(0.5) {
                (device.clone(), format!(r#""device_id":"{device}""#))
            } else {
                (cust.clone(), format!(r#""customer_id":"{cust}""#))
            };
            convs.entry(key.clone()).or_default().push(rec(Conversions, &key, &format!(
                r#"{{"type":"modification","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}",{ids},"items":[{{"sku":"A","quantity":1}}]}}"#,
                ts(t + 3_600_000 * (count as i64 + 1))
            )));
        }
        orders.retain(|o| o.3 >= t0);
        // A change without ids: the DLQ, with stitching on.
        if rng.gen_bool(0.5) {
            convs.entry("nobody".into()).or_default().push(rec(Conversions, "nobody",
                r#"{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-none","occurred_at":"2026-10-02T00:00:00Z"}"#));
        }
        let interleave = |rng: &mut StdRng, lanes: BTreeMap<String, Vec<GenRecord>>| {
            let mut lanes: Vec<std::collections::VecDeque<GenRecord>> = lanes
                .into_values()
                .map(Into::into)
                .filter(|l: &std::collections::VecDeque<GenRecord>| !l.is_empty())
                .collect();
            let mut out = Vec::new();
            while !lanes.is_empty() {
                let i = rng.gen_range(0..lanes.len());
                out.push(lanes[i].pop_front().unwrap());
                if lanes[i].is_empty() {
                    lanes.swap_remove(i);
                }
            }
            out
        };
        let a = interleave(&mut rng, links);
        let b = interleave(&mut rng, convs);
        out.push((a, b));
    }
    out
}

/// Waits until what a read_committed consumer reads equals `want` (failing early on extras).
fn wait_output(s: &Settings, want: &BTreeMap<String, usize>, timeout: Duration) {
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

/// Identity stitching through Kafka, exactly once: two instances run the device and customer
/// stages; a generated cross-device stream is written in waves (links and moves before the
/// conversions that depend on them; each wave processed before the next), and an instance is
/// SIGKILLed during most waves (between a forward and the customer stage's commit, at times).
/// After every wave, the read_committed output equals `replay`'s with stitching on.
#[test]
fn cross_device_stitching_two_instances_killed_output_is_exactly_the_replay() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut s, dir)) = setup(3) else {
        return;
    };
    s.identity.stitching = true;
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let mut a = Instance::start(
        settings_env(&s, "xd-a", &dir.path().join("a")),
        dir.path().join("a.log"),
    );
    let mut b = Instance::start(
        settings_env(&s, "xd-b", &dir.path().join("b")),
        dir.path().join("b.log"),
    );
    let mut rng = StdRng::seed_from_u64(77);
    let producer = attrib::tools::demo::input_producer(&s.brokers).unwrap();
    let waves = cross_device_waves(11, 6, 20);
    let mut cross_device_credits = 0;
    for (w, (links, conversions)) in waves.into_iter().enumerate() {
        for phase in [links, conversions] {
            let kill_at = rng.gen_range(0..phase.len().max(1));
            for (i, r) in phase.iter().enumerate() {
                attrib::tools::demo::send_records(
                    &producer,
                    &s,
                    std::slice::from_ref(r),
                    attrib::tools::demo::Stamp::Distinct,
                )
                .unwrap();
                if i == kill_at && w % 3 != 2 {
                    let victim = if rng.gen_bool(0.5) { &mut a } else { &mut b };
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
                    victim.kill9();
                    victim.restart();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            all.extend(phase);
            wait_output(&s, &replay_expectation(&s, &all), Duration::from_secs(180));
        }
        eprintln!("wave {w}: output exact");
    }
    for (k, n) in kafka_output(&s) {
        if k.starts_with("actions|") {
            let v: serde_json::Value =
                serde_json::from_str(k.splitn(3, '|').nth(2).unwrap()).unwrap();
            if v["credits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["device_id"] != v["device_id"])
            {
                cross_device_credits += n;
            }
        }
    }
    assert!(
        cross_device_credits > 5,
        "{cross_device_credits} cross-device credits"
    );
    a.stop();
    b.stop();
    assert_exact(&s, dir.path(), &all);
    // Every kill was followed by a restore; committed repartition records were purged.
    let logs: String = ["a.log", "b.log"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
        .collect();
    assert!(
        logs.matches("state restored").count() >= 2,
        "restores after the kills"
    );
    let repartition = attrib::runtime::topology::repartition_topic(&s.application_id);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .unwrap();
    let purged: i64 = (0..3)
        .map(|p| {
            c.fetch_watermarks(&repartition, p, Duration::from_secs(10))
                .unwrap()
                .0
        })
        .sum();
    assert!(purged > 0, "committed repartition records are deleted");
}

/// With stitching on, identities must be co-partitioned with clicks and conversions: attrib
/// does not start its tasks, and says which topics have which counts.
#[test]
fn stitching_refuses_identities_with_another_partition_count() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(brokers) = common::real_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    s.identity.stitching = true;
    let topics: Vec<(String, i32)> = common::topics_of(&s, 3)
        .into_iter()
        .map(|(t, n)| {
            if t == s.topics.identities {
                (t, 2)
            } else {
                (t, n)
            }
        })
        .collect();
    common::create_topics(&s.brokers, &topics);
    let log = dir.path().join("a.log");
    let mut a = Instance::start(
        settings_env(&s, "copart", &dir.path().join("a")),
        log.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("co-partitioned") {
            assert!(
                text.contains(&format!("`{}` (3 partitions)", s.topics.clicks))
                    && text.contains(&format!("`{}` (2 partitions)", s.topics.identities)),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no co-partitioning error in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.kill9();
}

/// A move in flight (docs/design.md §6): the process dies right after the device stage has
/// forwarded a device's journey (on the broker, its transaction open), and then right after
/// the customer stage has applied it (before its commit). Each crash is a failpoint
/// (`ATTRIB_TEST_FAILPOINT`), as a SIGKILL at that exact point would be. The first wave links
/// the laptop and buys on it (that conversion follows the move through the laptop's task, so
/// its credit shows the move was applied); the second, once the first is processed, buys on the
/// phone. The output is the replay's.
#[test]
fn a_move_in_flight_survives_a_crash_in_either_stage() {
    use InputTopic::*;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut s, dir)) = setup(2) else {
        return;
    };
    s.identity.stitching = true;
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    all.extend([
        rec(Clicks, "laptop", r#"{"type":"click","click_id":"k-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-10-01T10:00:00Z","device_id":"laptop"}"#),
        rec(Clicks, "laptop", r#"{"type":"click","click_id":"k-2","program_id":"p1","partner_id":"pa2","occurred_at":"2026-10-01T11:00:00Z","device_id":"laptop"}"#),
        rec(Identities, "laptop", r#"{"type":"identify","device_id":"laptop","customer_id":"cu-7","occurred_at":"2026-10-01T12:00:00Z"}"#),
        rec(Conversions, "laptop", r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-6","occurred_at":"2026-10-01T13:00:00Z","device_id":"laptop","items":[{"sku":"A","quantity":1,"unit_price":"10.00"}]}"#),
    ]);
    produce(&s.brokers, &s, &all).unwrap();
    let log = dir.path().join("a.log");
    let env = settings_env(&s, "move", &dir.path().join("a"));
    for point in ["forward-move", "apply-move"] {
        let mut env = env.clone();
        env.push(("ATTRIB_TEST_FAILPOINT".into(), point.into()));
        let mut a = Instance::start(env, log.clone());
        let status = a.wait_exit(Duration::from_secs(90));
        assert!(!status.success(), "{point}: {status}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!("failpoint {point}: aborting")),
            "{text}"
        );
    }
    let a = Instance::start(env, log.clone());
    wait_output(&s, &replay_expectation(&s, &all), Duration::from_secs(120));
    let phone = vec![rec(
        Conversions,
        "phone",
        r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-7","occurred_at":"2026-10-02T09:00:00Z","device_id":"phone","customer_id":"cu-7","items":[{"sku":"A","quantity":1,"unit_price":"40.00"}]}"#,
    )];
    produce(&s.brokers, &s, &phone).unwrap();
    all.extend(phone);
    wait_output(&s, &replay_expectation(&s, &all), Duration::from_secs(120));
    a.stop();
    assert_exact(&s, dir.path(), &all);
    let out = kafka_output(&s);
    let o7: Vec<&String> = out
        .keys()
        .filter(|k| k.contains(r#""order_id":"o-7""#))
        .collect();
    assert_eq!(o7.len(), 1, "{o7:?}");
    assert!(
        o7[0].contains(r#""credits":[{"click_id":"k-1","device_id":"laptop""#),
        "o-7, bought on the phone, is credited to the laptop's clicks: {}",
        o7[0]
    );
}

/// `GET /journeys/{key}` on either of two instances answers for the keys of both: the one
/// that does not own the key's partition asks the one that does (found through the consumer
/// group), and a lookup it forwards is answered from the owner's store only.
#[test]
fn journey_lookup_on_either_instance_answers_for_keys_of_both() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(4) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    const TOKEN: &str = "lookup-token-7d1e";
    let with_api = |name: &str| {
        let mut env = settings_env(&s, name, &dir.path().join(name));
        env.push(("ATTRIB_JOURNEYS_API_ENABLED".into(), "true".into()));
        env.push(("ATTRIB_JOURNEYS_API_TOKEN".into(), TOKEN.into()));
        env
    };
    let all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let a = Instance::start(with_api("lookup-a"), dir.path().join("a.log"));
    let b = Instance::start(with_api("lookup-b"), dir.path().join("b.log"));
    let url_of = |i: &Instance| {
        let addr = &i
            .env
            .iter()
            .find(|(k, _)| k == "ATTRIB_HTTP_ADDR")
            .unwrap()
            .1;
        format!("http://{addr}")
    };
    let (url_a, url_b) = (url_of(&a), url_of(&b));
    let stream = natural(5, 2, 30);
    produce_paced(&s, stream.clone()).join().unwrap();
    wait_all_committed(&s, 4);
    let keys: BTreeSet<String> = stream
        .iter()
        .filter(|r| r.topic == InputTopic::Clicks)
        .filter_map(|r| r.key.clone())
        .collect();
    assert!(keys.len() >= 20, "{} keys", keys.len());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let get = |base: &str, key: &str, forwarded: bool| -> (u16, String) {
        let mut req = agent
            .get(&format!("{base}/journeys/{key}"))
            .header("Authorization", &format!("Bearer {TOKEN}"));
        if forwarded {
            req = req.header("x-attrib-forwarded", "1");
        }
        let mut resp = req.call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    };
    let mut served_by: BTreeMap<String, usize> = BTreeMap::new();
    for key in &keys {
        let mut answers = Vec::new();
        for base in [&url_a, &url_b] {
            let (status, body) = get(base, key, false);
            assert_eq!(status, 200, "{key} on {base}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["key"], key.as_str(), "{body}");
            let journey = &v["partitions"][0]["journey"];
            let items = journey["clicks"].as_array().unwrap().len()
                + journey["orders"].as_array().unwrap().len();
            assert!(items > 0, "{key}: {body}");
            answers.push(v);
        }
        assert_eq!(
            answers[0], answers[1],
            "{key}: both instances give the owner's answer"
        );
        let owner = answers[0]["instance"].as_str().unwrap().to_string();
        assert!(owner == url_a || owner == url_b, "{owner}");
        // Forwarded lookups are answered from the receiver's own store only.
        let other = if owner == url_a { &url_b } else { &url_a };
        assert_eq!(
            get(other, key, true).0,
            404,
            "{key} forwarded to a non-owner"
        );
        assert_eq!(
            get(&owner, key, true).0,
            200,
            "{key} forwarded to its owner"
        );
        *served_by.entry(owner).or_default() += 1;
    }
    assert_eq!(
        served_by.len(),
        2,
        "both instances own keys of the stream: {served_by:?}"
    );
    for base in [&url_a, &url_b] {
        let (status, body) = get(base, "no-such-device", false);
        assert_eq!((status, body.as_str()), (404, "no journey with this key"));
    }
    eprintln!("lookups answered on both instances; owners {served_by:?}");
    a.stop();
    b.stop();
}
