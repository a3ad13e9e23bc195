//! End-to-end benchmark of `attrib run` against a pass-through baseline (issue 5).
//!
//! How to run:
//! - `scripts/bench-pipeline` (arguments go to `cargo bench`): starts a single Apache Kafka 4.1.1
//!   node with `scripts/kafka` (installed on first use), runs every case on librdkafka's mock
//!   cluster and on Kafka, and stops the broker on exit.
//! - `cargo bench --bench pipeline`: the mock cluster only (no `ATTRIB_BENCH_KAFKA`).
//! - A few cases: `ATTRIB_BENCH_CASES=kafka ATTRIB_BENCH_JOURNEYS=0 scripts/bench-pipeline`.
//!
//! For each broker (`mock`: the mock cluster, 16 input partitions; `kafka`: 4), guarantee
//! (at_least_once, exactly_once) and system (attrib, or a pass-through that consumes and
//! re-produces every record with no state, under exactly_once in one transaction per commit
//! interval), in a fresh set of topics:
//! - **records/s**: the input (the demo workload: 90 % clicks, then conversions and changes) is
//!   written first, then the system is started as a child process; the rate is measured between
//!   its first and its last offset commit;
//! - **p50/p99 latency** at half that rate, then at 1,000 records/s (and at `ATTRIB_BENCH_RATES`),
//!   each on fresh topics with a freshly started system: a steady stream for
//!   `ATTRIB_BENCH_LATENCY_SECONDS`, each record timed from its write to the moment a
//!   `read_committed` consumer receives its output. The generator writes **both** input topics
//!   (90 % clicks, 10 % conversions, keys spread over all partitions). The pass-through is timed
//!   on every record, attrib on its conversions (one action each); attrib hands a task's
//!   clicks and conversions out in record-timestamp order, so a conversion waits until a later
//!   click of its partition has been fetched, or at most `input_grace_ms` (500 ms by default)
//!   when the clicks partition is read to its end. That wait is part of attrib's figure: on
//!   average about the gap between two clicks of a partition, at 1,000 records/s 4 ms over
//!   Kafka's 4 partitions and 18 ms over the mock's 16. `ATTRIB_INPUT_GRACE_MS=0
//!   scripts/bench-pipeline` measures without the grace (the children inherit the environment);
//! - **peak RSS** of the child (`VmHWM`) during the records/s run.
//!
//! The mock cluster accepts transactions but never commits their offsets, so its exactly_once
//! cases print "n/a". A last case fills attrib with 1,000,000 journeys (one click on each of
//! 1,000,000 devices, mock cluster, at_least_once) and reports its peak RSS.
//!
//! Settings (environment):
//! - `ATTRIB_BENCH_KAFKA`: a Kafka broker address, set by scripts/bench-pipeline; the kafka
//!   cases are skipped without it;
//! - `ATTRIB_BENCH_RECORDS_MOCK` (default 1000000), `ATTRIB_BENCH_RECORDS_KAFKA` (500000):
//!   records in the records/s run (with too few, all are committed at once and the row fails);
//! - `ATTRIB_BENCH_JOURNEYS` (1000000, 0 to skip the journeys case);
//! - `ATTRIB_BENCH_CASES`: comma-separated `broker/guarantee/system` prefixes to run, e.g.
//!   `kafka`, `kafka/exactly_once`, `mock/at_least_once/attrib`; all by default;
//! - `ATTRIB_BENCH_RATES`: further steady rates to measure latency at, records/s,
//!   comma-separated; printed in a second table;
//! - `ATTRIB_BENCH_LATENCY_SECONDS` (5): length of each latency measurement;
//! - `ATTRIB_BENCH_FETCH_WAIT_MS` (10): `fetch.wait.max.ms` of every consumer (attrib's, the
//!   pass-through's, the latency reader's);
//! - `ATTRIB_BENCH_DEBUG=1`: each latency measurement's mean by tenth, in order received (a
//!   rising series means the system falls behind);
//! - `ATTRIB_BENCH_STITCHING=on|off`: identity stitching (docs/design.md §6) on or off, over
//!   the same stream in which one device in ten is identified (its conversions carry the
//!   customer id; the others' do not), for comparing the two; unset, the stream is the demo's
//!   and stitching is off. With it on, attrib runs both stages; records/s counts the input
//!   records (the customer stage's forwarded ones run meanwhile).

use attrib::ops::settings::{Guarantee, Settings};
use attrib::tools::workload::{self, GenRecord};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod cluster;
mod measure;
mod passthrough;
use cluster::*;
use measure::*;
use passthrough::*;

/// Input partitions: the mock keeps only about 5 MB per partition, so it gets more. Kafka gets
/// 4: under exactly_once attrib commits one transaction per task, and 2 cores run the broker too.
const PARTITIONS_MOCK: i32 = 16;
const PARTITIONS_KAFKA: i32 = 4;
const COMMIT_INTERVAL_MS: u64 = 100;
/// A second latency measurement at a rate every case sustains, so that the figure shows the
/// pipeline's own delay rather than the queue of a saturated machine.
const LOW_RATE: f64 = 1000.0;

struct Figures {
    rate: f64,
    /// (p50, p99) in ms.
    half: (f64, f64),
    low: (f64, f64),
    /// (rate, (p50, p99)) at the `ATTRIB_BENCH_RATES`.
    sweep: Vec<(f64, (f64, f64))>,
    rss: f64,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("passthrough") {
        passthrough();
        return;
    }
    let mut rows = Vec::new();
    let cluster = MockCluster::new(1).expect("mock cluster");
    let mock = cluster.bootstrap_servers();
    let kafka = std::env::var("ATTRIB_BENCH_KAFKA").unwrap_or_default();
    let mut brokers = vec![(
        "mock",
        mock.as_str(),
        Some(&cluster),
        env_usize("ATTRIB_BENCH_RECORDS_MOCK", 1_000_000),
        PARTITIONS_MOCK,
    )];
    if kafka.is_empty() {
        eprintln!("kafka: skipped (no ATTRIB_BENCH_KAFKA; scripts/bench-pipeline starts a broker)");
    } else {
        brokers.push((
            "kafka",
            kafka.as_str(),
            None,
            env_usize("ATTRIB_BENCH_RECORDS_KAFKA", 500_000),
            PARTITIONS_KAFKA,
        ));
    }
    let cases = std::env::var("ATTRIB_BENCH_CASES").unwrap_or_default();
    let wanted = |id: &str| cases.is_empty() || cases.split(',').any(|c| id.starts_with(c.trim()));
    for (name, addr, mock, n, parts) in brokers {
        for g in [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce] {
            for system in [System::PassThrough, System::Attrib] {
                let id = format!("{name}/{}/{}", guarantee_name(g), system.name());
                if !wanted(&id) {
                    continue;
                }
                rows.push(run_case(name, addr, mock, g, system, n, parts));
            }
        }
    }
    println!();
    println!(
        "| broker | guarantee | system | records | records/s | p50/p99 ms at half that rate | p50/p99 ms at {LOW_RATE}/s | peak RSS MiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!("{r}");
    }
    if rows.iter().any(|r| r.system == System::Attrib) {
        let grace = std::env::var("ATTRIB_INPUT_GRACE_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(Settings::default().input_grace.as_millis() as u64);
        println!();
        println!(
            "Latency: the generator writes both input topics (90 % clicks, 10 % conversions, over all partitions); \
             attrib is timed on its conversions, which wait for a later click of their partition, or at most \
             input_grace_ms ({grace} ms here) when that partition is read to its end."
        );
    }
    if !extra_rates().is_empty() {
        println!();
        println!("| broker | guarantee | system | records/s | p50 ms | p99 ms |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for r in &rows {
            for (rate, (p50, p99)) in r.result.iter().flat_map(|f| &f.sweep) {
                println!(
                    "| {} | {} | {} | {rate:.0} | {p50:.0} | {p99:.0} |",
                    r.broker,
                    guarantee_name(r.guarantee),
                    r.system.name()
                );
            }
        }
    }
    let journeys = env_usize("ATTRIB_BENCH_JOURNEYS", 1_000_000);
    if journeys > 0 {
        journeys_rss(&cluster, journeys);
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum System {
    Attrib,
    PassThrough,
}

/// `fetch.wait.max.ms` of every consumer in the bench (`ATTRIB_BENCH_FETCH_WAIT_MS`, 10).
fn fetch_wait_ms() -> u64 {
    env_usize("ATTRIB_BENCH_FETCH_WAIT_MS", 10) as u64
}

fn extra_rates() -> Vec<f64> {
    std::env::var("ATTRIB_BENCH_RATES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect()
}

/// `ATTRIB_BENCH_STITCHING`: `Some(on)` when set to `on` or `off`.
fn stitching() -> Option<bool> {
    match std::env::var("ATTRIB_BENCH_STITCHING").ok()?.trim() {
        "on" => Some(true),
        "off" => Some(false),
        other => panic!("ATTRIB_BENCH_STITCHING is `on` or `off`, not `{other}`"),
    }
}

fn guarantee_name(g: Guarantee) -> &'static str {
    match g {
        Guarantee::AtLeastOnce => "at_least_once",
        Guarantee::ExactlyOnce => "exactly_once",
    }
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Attrib => "attrib",
            System::PassThrough => "pass-through",
        }
    }
}

struct Row {
    broker: &'static str,
    guarantee: Guarantee,
    system: System,
    records: usize,
    result: Result<Figures, String>,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (g, s) = (guarantee_name(self.guarantee), self.system.name());
        match &self.result {
            Ok(x) => write!(
                f,
                "| {} | {g} | {s} | {} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} |",
                self.broker, self.records, x.rate, x.half.0, x.half.1, x.low.0, x.low.1, x.rss
            ),
            Err(e) => write!(
                f,
                "| {} | {g} | {s} | {} | failed: {e} | | | |",
                self.broker, self.records
            ),
        }
    }
}

fn run_case(
    broker: &'static str,
    brokers: &str,
    mock: Option<&Mock<'_>>,
    g: Guarantee,
    system: System,
    n: usize,
    parts: i32,
) -> Row {
    eprintln!("== {broker} {g:?} {system:?}: {n} records");
    let result = case(brokers, mock, g, system, n, parts).map_err(|e| {
        if mock.is_some() && g == Guarantee::ExactlyOnce {
            // librdkafka's mock cluster accepts transactions but never commits their offsets.
            format!("n/a on the mock cluster ({e})")
        } else {
            e.to_string()
        }
    });
    if let Err(e) = &result {
        eprintln!("   failed: {e}");
    }
    Row {
        broker,
        guarantee: g,
        system,
        records: n,
        result,
    }
}

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}

fn settings_for(brokers: &str, g: Guarantee) -> Settings {
    let id = unique();
    let mut s = Settings {
        brokers: brokers.to_string(),
        processing_guarantee: g,
        ..Settings::default()
    };
    s.application_id = format!("bench-{id}");
    s.identity.stitching = stitching() == Some(true);
    for name in s.topics.names_mut() {
        *name = format!("{name}-{id}");
    }
    s
}
