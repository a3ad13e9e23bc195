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
    let t = &mut s.topics;
    for name in [
        &mut t.clicks,
        &mut t.conversions,
        &mut t.identities,
        &mut t.promo_codes,
        &mut t.config,
        &mut t.actions,
        &mut t.invalid_actions,
        &mut t.dlq,
    ] {
        *name = format!("{name}-{id}");
    }
    s
}

type Mock<'a> = MockCluster<'a, DefaultProducerContext>;

fn create_topics(s: &Settings, mock: Option<&Mock<'_>>, partitions: i32) -> anyhow::Result<()> {
    let t = &s.topics;
    let changelog = s.changelog_topic();
    let repartition = attrib::runtime::topology::repartition_topic(&s.application_id);
    let mut spec = vec![
        (&t.clicks, partitions, false),
        (&t.conversions, partitions, false),
        (&changelog, partitions, true),
        (&t.actions, partitions, false),
        (&t.invalid_actions, partitions, false),
        (&t.dlq, partitions, false),
        (&t.config, 1, true),
        (&t.promo_codes, 1, true),
    ];
    if s.identity.stitching {
        spec.push((&t.identities, partitions, false));
        // attrib creates it on Kafka; the mock cluster gets it here.
        if mock.is_some() {
            spec.push((&repartition, partitions, false));
        }
    }
    if let Some(cluster) = mock {
        for (n, p, _) in spec {
            cluster.create_topic(n, p, 1)?;
        }
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()?;
    let new: Vec<NewTopic> = spec
        .iter()
        .map(|(n, p, compact)| {
            let nt = NewTopic::new(n, *p, TopicReplication::Fixed(1));
            if *compact {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    for r in futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create {t}: {e}"))?;
    }
    // Kafka answers CreateTopics once the controller has recorded them; the broker takes the
    // partitions' leadership a moment later (until then: NOT_LEADER_OR_FOLLOWER).
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (n, p, _) in spec {
        for p in 0..p {
            while let Err(e) = c.fetch_watermarks(n, p, Duration::from_secs(10)) {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{n} [{p}] has no leader after 30 s: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Deletes a measurement's topics on Kafka once it is done, so that a run does not pile up
/// hundreds of partitions and gigabytes of logs on the broker (the mock cluster's go with it).
fn drop_topics(s: &Settings, mock: Option<&Mock<'_>>) {
    if mock.is_some() {
        return;
    }
    let t = &s.topics;
    let changelog = s.changelog_topic();
    let names = [
        t.clicks.as_str(),
        &t.conversions,
        &changelog,
        &t.actions,
        &t.invalid_actions,
        &t.dlq,
        &t.config,
        &t.promo_codes,
    ];
    let result = (|| -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &s.brokers)
            .create()?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in futures::executor::block_on(admin.delete_topics(&names, &opts))? {
            r.map_err(|(t, e)| anyhow::anyhow!("{t}: {e}"))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("   cannot delete the topics: {e}");
    }
}

/// Starts `attrib run` or the pass-through as a child process.
fn start(s: &Settings, system: System, state: &std::path::Path) -> anyhow::Result<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let g = guarantee_name(s.processing_guarantee);
    let t = &s.topics;
    let env = [
        ("ATTRIB_BROKERS", s.brokers.clone()),
        ("ATTRIB_APPLICATION_ID", s.application_id.clone()),
        ("ATTRIB_INSTANCE_ID", "bench-0".to_string()),
        ("ATTRIB_STATE_DIR", state.display().to_string()),
        ("ATTRIB_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("ATTRIB_PROCESSING_GUARANTEE", g.to_string()),
        ("ATTRIB_COMMIT_INTERVAL_MS", COMMIT_INTERVAL_MS.to_string()),
        ("ATTRIB_LOG_LEVEL", "warn".to_string()),
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
        ("ATTRIB_METRICS_PORT", port.to_string()),
        // The mock cluster answers an empty fetch only after fetch.wait.max.ms (librdkafka's
        // default 500 ms) even when records arrive meanwhile; Kafka answers as soon as they
        // do, and after fetch.wait.max.ms when none do. One short wait on every broker keeps
        // the figures comparable.
        (
            "ATTRIB_KAFKA_FETCH_WAIT_MAX_MS",
            fetch_wait_ms().to_string(),
        ),
    ];
    let mut cmd = match system {
        System::Attrib => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_attrib"));
            c.arg("run");
            c
        }
        System::PassThrough => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("passthrough");
            c
        }
    };
    cmd.envs(
        env.iter()
            .filter(|(k, _)| *k != "ATTRIB_METRICS_PORT")
            .map(|(k, v)| (*k, v)),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    Ok(cmd.spawn()?)
}

/// Writes `records` in order, stamped with the wall clock at the write (librdkafka's
/// `CreateTime`), like the latency generator; not with `testkit::produce`'s distinct milliseconds,
/// which run ahead of the clock at these rates (a broker refuses timestamps more than
/// `log.message.timestamp.after.max.ms` ahead). Every click is written before every
/// conversion, and attrib takes the click on a tie.
fn produce(s: &Settings, records: &[GenRecord]) -> anyhow::Result<()> {
    let producer = attrib::tools::testkit::input_producer(&s.brokers)?;
    attrib::tools::testkit::send_records(
        &producer,
        s,
        records,
        attrib::tools::testkit::Stamp::WallClock,
    )
}

/// A client that reads the consumer group's committed offsets (kept for the whole case, so
/// that each reading is one round trip).
fn group_reader(s: &Settings) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.application_id)
        .create()?)
}

/// The sum of the consumer group's committed offsets over the input topics.
fn committed(c: &BaseConsumer, s: &Settings, parts: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition(&s.topics.clicks, p);
        tpl.add_partition(&s.topics.conversions, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|t| {
            t.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn end_offsets(s: &Settings, parts: i32) -> anyhow::Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()?;
    let mut sum = 0;
    for p in 0..parts {
        for t in [&s.topics.clicks, &s.topics.conversions] {
            sum += c.fetch_watermarks(t, p, Duration::from_secs(10))?.1;
        }
    }
    Ok(sum)
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn stop(mut child: Child) {
    if let Err(e) = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
    {
        eprintln!("SIGTERM to attrib {}: {e}", child.id());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(e) = child.kill() {
        eprintln!("SIGKILL to attrib {}: {e}", child.id());
    }
    if let Err(e) = child.wait() {
        eprintln!("waiting for attrib {}: {e}", child.id());
    }
}

/// Waits until the committed offsets reach `target`; returns (first commit time, its sum,
/// last commit time).
fn wait_committed(
    c: &BaseConsumer,
    s: &Settings,
    parts: i32,
    target: i64,
    timeout: Duration,
) -> anyhow::Result<(Instant, i64, Instant)> {
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, i64)> = None;
    let (mut last, mut moved) = (-1, Instant::now());
    loop {
        let got = committed(c, s, parts);
        let now = Instant::now();
        if got > 0 && first.is_none() {
            first = Some((now, got));
        }
        if got != last {
            (last, moved) = (got, now);
        }
        anyhow::ensure!(
            now - moved < Duration::from_secs(30),
            "no progress for 30 s at {got} of {target} committed"
        );
        if got >= target {
            let (t0, n0) = first.unwrap_or((now, 0));
            return Ok((t0, n0, now));
        }
        anyhow::ensure!(
            now < deadline,
            "committed {got} of {target} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn case(
    brokers: &str,
    mock: Option<&Mock<'_>>,
    g: Guarantee,
    system: System,
    n: usize,
    parts: i32,
) -> anyhow::Result<Figures> {
    let s = settings_for(brokers, g);
    create_topics(&s, mock, parts)?;
    let w = workload::generate(7, n * 9 / 10, (n / 8).max(10));
    produce(&s, &w.tables)?;
    let mut input: Vec<GenRecord> = w
        .clicks
        .iter()
        .chain(&w.conversions)
        .chain(&w.changes)
        .cloned()
        .collect();
    if stitching().is_some() {
        workload::identify_one_in(10, &mut input);
    }
    produce(&s, &input)?;
    let total = end_offsets(&s, parts)?;
    let reader = group_reader(&s)?;
    let state = tempfile::tempdir()?;
    let child = start(&s, system, state.path())?;
    let pid = child.id();
    let measured = (|| -> anyhow::Result<(f64, f64)> {
        let (t0, n0, t1) = wait_committed(&reader, &s, parts, total, Duration::from_secs(600))?;
        anyhow::ensure!(
            n0 < total,
            "all {total} records were committed at the first commit seen: too few for a rate"
        );
        let secs = (t1 - t0).as_secs_f64().max(0.001);
        let rate = (total - n0) as f64 / secs;
        eprintln!(
            "   {} records in {secs:.2} s: {rate:.0} records/s",
            total - n0
        );
        Ok((rate, peak_rss_mib(pid)))
    })();
    stop(child);
    drop_topics(&s, mock);
    let (rate, rss) = measured?;
    let fresh = |r: f64| latency_case(brokers, mock, g, system, r, parts);
    let half = fresh((rate / 2.0).max(100.0))?;
    let low = fresh(LOW_RATE)?;
    let mut sweep = Vec::new();
    for r in extra_rates() {
        sweep.push((r, fresh(r)?));
    }
    Ok(Figures {
        rate,
        half,
        low,
        sweep,
        rss,
    })
}

/// A latency measurement on fresh topics with a freshly started system: the mock cluster's
/// fetch cost grows with the batches a partition holds (it looks a fetch offset up by walking
/// every stored batch), so a measurement after others on the same topics would measure the
/// broker's history. Kafka indexes offsets, but gets the same fresh start, so that the brokers'
/// figures compare.
fn latency_case(
    brokers: &str,
    mock: Option<&Mock<'_>>,
    g: Guarantee,
    system: System,
    rate: f64,
    parts: i32,
) -> anyhow::Result<(f64, f64)> {
    let s = settings_for(brokers, g);
    create_topics(&s, mock, parts)?;
    produce(&s, &workload::generate(7, 10, 10).tables)?;
    let state = tempfile::tempdir()?;
    let child = start(&s, system, state.path())?;
    let result = latency(&s, system, rate, parts);
    stop(child);
    drop_topics(&s, mock);
    result
}

/// A steady stream at `rate` records/s (90 % clicks, 10 % conversions) for a few seconds;
/// p50 and p99 of write → output received by a read_committed consumer, in ms.
fn latency(s: &Settings, system: System, rate: f64, parts: i32) -> anyhow::Result<(f64, f64)> {
    let out_topics = [&s.topics.actions, &s.topics.invalid_actions];
    let consumer: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", format!("{}-latency", s.application_id))
        .set("fetch.wait.max.ms", fetch_wait_ms().to_string())
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in out_topics {
        for p in 0..parts {
            let (_, hi) = consumer.fetch_watermarks(t, p, Duration::from_secs(10))?;
            tpl.add_partition_offset(t, p, Offset::Offset(hi))?;
        }
    }
    consumer.assign(&tpl)?;
    warm_up(s, &consumer)?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seconds = env_usize("ATTRIB_BENCH_LATENCY_SECONDS", 5) as f64;
    let count = (rate * seconds) as usize;
    let producer_thread = {
        let (sent, s) = (sent.clone(), s.clone());
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                .set("bootstrap.servers", &s.brokers)
                // librdkafka's default (part of every latency figure).
                .set("linger.ms", "5")
                .create()?;
            let start = Instant::now();
            let mut measured = 0;
            for i in 0..count {
                // Paced per millisecond (a sleep of tens of microseconds overshoots).
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now())
                    && wait >= Duration::from_millis(1)
                {
                    std::thread::sleep(wait);
                }
                let key = format!("lat-{i}");
                let conversion = i % 10 == 9;
                let (topic, value) = if conversion {
                    (&s.topics.conversions, conversion_json(&key))
                } else {
                    (
                        &s.topics.clicks,
                        format!(
                            r#"{{"type":"click","click_id":"{key}","program_id":"shoes","partner_id":"coupons-r-us","occurred_at":"2026-06-01T00:00:00Z","device_id":"{key}"}}"#
                        ),
                    )
                };
                // Pass-through outputs every record, attrib one per conversion.
                if conversion || system == System::PassThrough {
                    sent.lock().unwrap().insert(key.clone(), Instant::now());
                    measured += 1;
                }
                let mut rec = BaseRecord::to(topic).key(&key).payload(&value);
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((_, back)) => {
                            rec = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(measured)
        })
    };
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds) + Duration::from_secs(60);
    let mut expected: Option<usize> = None;
    while Instant::now() < deadline {
        if expected.is_none() && producer_thread.is_finished() {
            expected = Some(0);
        }
        if let Some(m) = consumer.poll(Duration::from_millis(20)) {
            let m = m?;
            let now = Instant::now();
            let id = match system {
                System::PassThrough => m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                System::Attrib => m
                    .payload()
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
                    .and_then(|v| v["order_id"].as_str().map(str::to_string)),
            };
            if let Some(t) = id.and_then(|id| sent.lock().unwrap().remove(&id)) {
                latencies.push((now - t).as_secs_f64() * 1000.0);
            }
        }
        if expected.is_some() && sent.lock().unwrap().is_empty() {
            break;
        }
    }
    let measured = producer_thread.join().expect("producer thread")?;
    anyhow::ensure!(!latencies.is_empty(), "no output received");
    if latencies.len() < measured {
        eprintln!(
            "   {} of {measured} outputs received in time",
            latencies.len()
        );
    }
    if std::env::var("ATTRIB_BENCH_DEBUG").is_ok() {
        let n = latencies.len();
        for k in 0..10 {
            let part = &latencies[k * n / 10..(k + 1) * n / 10];
            let avg = part.iter().sum::<f64>() / part.len().max(1) as f64;
            eprint!(" {avg:.0}");
        }
        eprintln!(" (mean ms by tenth, in order received)");
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| latencies[((latencies.len() - 1) as f64 * f).round() as usize];
    eprintln!(
        "   latency at {rate:.0} records/s: p50 {:.1} ms, p99 {:.1} ms",
        q(0.5),
        q(0.99)
    );
    Ok((q(0.5), q(0.99)))
}

/// A sale of 10.00 by the device `key`, order id `key`.
fn conversion_json(key: &str) -> String {
    format!(
        r#"{{"type":"conversion","program_id":"shoes","event_type":"sale","order_id":"{key}","occurred_at":"2026-06-01T00:00:00Z","device_id":"{key}","order_subtotal":"10.00"}}"#
    )
}

/// Waits until the system answers (started, partitions assigned, tables read): a conversion
/// and its output, which the reader then skips.
fn warm_up(s: &Settings, reader: &BaseConsumer<DefaultConsumerContext>) -> anyhow::Result<()> {
    let warm = GenRecord {
        topic: attrib::model::records::InputTopic::Conversions,
        key: Some("warm-up".into()),
        value: Some(conversion_json("warm-up")),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next_send = Instant::now();
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the system did not answer within 120 s"
        );
        if Instant::now() >= next_send {
            produce(s, std::slice::from_ref(&warm))?;
            next_send = Instant::now() + Duration::from_secs(5);
        }
        if let Some(m) = reader.poll(Duration::from_millis(50)) {
            m?;
            // Whatever else the warm-up left comes within a moment.
            while let Some(m) = reader.poll(Duration::from_millis(200)) {
                m?;
            }
            return Ok(());
        }
    }
}

/// One click on each of `devices` devices through attrib (mock, at_least_once), fed in chunks
/// the mock cluster can hold; prints attrib's peak RSS and the journeys it stores.
fn journeys_rss(cluster: &Mock<'_>, devices: usize) {
    let s = settings_for(&cluster.bootstrap_servers(), Guarantee::AtLeastOnce);
    let parts = 16;
    if let Err(e) = (|| -> anyhow::Result<()> {
        let admin_topics = [
            (&s.topics.clicks, parts),
            (&s.topics.conversions, parts),
            (&s.changelog_topic(), parts),
        ];
        for (t, p) in admin_topics {
            cluster.create_topic(t, p, 1)?;
        }
        for t in [
            &s.topics.actions,
            &s.topics.invalid_actions,
            &s.topics.dlq,
            &s.topics.config,
            &s.topics.promo_codes,
        ] {
            cluster.create_topic(t, 1, 1)?;
        }
        let w = workload::generate(7, 10, 10);
        produce(&s, &w.tables)?;
        let state = tempfile::tempdir()?;
        let child = start(&s, System::Attrib, state.path())?;
        let pid = child.id();
        let reader = group_reader(&s)?;
        let started = Instant::now();
        let chunk = 100_000;
        let mut sent = 0;
        let result = (|| -> anyhow::Result<()> {
            while sent < devices {
                let n = chunk.min(devices - sent);
                let clicks: Vec<GenRecord> = (sent..sent + n)
                    .map(|i| {
                        let key = format!("rss-{i}");
                        GenRecord {
                            topic: attrib::model::records::InputTopic::Clicks,
                            key: Some(key.clone()),
                            value: Some(format!(
                                r#"{{"type":"click","click_id":"{key}","program_id":"shoes","partner_id":"coupons-r-us","occurred_at":"2026-06-01T00:00:00Z","device_id":"{key}"}}"#
                            )),
                        }
                    })
                    .collect();
                produce(&s, &clicks)?;
                sent += n;
                let end = end_offsets(&s, parts)?;
                wait_committed(&reader, &s, parts, end, Duration::from_secs(300))?;
            }
            Ok(())
        })();
        let rss = peak_rss_mib(pid);
        stop(child);
        result?;
        println!();
        println!(
            "attrib with {devices} journeys (mock, at_least_once, {parts} partitions): peak RSS {rss:.0} MiB, {:.0} clicks/s including the feeding",
            devices as f64 / started.elapsed().as_secs_f64()
        );
        Ok(())
    })() {
        println!("journeys RSS: failed: {e}");
    }
}

/// The baseline: consume every input record and produce it unchanged to the actions topic,
/// with the same commit interval; under exactly_once in one transaction per interval.
fn passthrough() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let eos = var("ATTRIB_PROCESSING_GUARANTEE") == "exactly_once";
    let brokers = var("ATTRIB_BROKERS");
    let group = var("ATTRIB_APPLICATION_ID");
    let (clicks, conversions, out) = (
        var("ATTRIB_TOPICS_CLICKS"),
        var("ATTRIB_TOPICS_CONVERSIONS"),
        var("ATTRIB_TOPICS_ACTIONS"),
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", var("ATTRIB_KAFKA_FETCH_WAIT_MAX_MS"))
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&clicks, &conversions])
        .expect("subscribe");
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    if eos {
        pc.set("transactional.id", format!("{group}-passthrough"));
    }
    let producer: ThreadedProducer<DefaultProducerContext> = pc.create().expect("producer");
    let timeout = Duration::from_secs(30);
    if eos {
        producer
            .init_transactions(timeout)
            .expect("init transactions");
        producer.begin_transaction().expect("begin");
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook_flag(&stop);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&out);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(v) = m.payload() {
                rec = rec.payload(v);
            }
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            offsets.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        }
        if last.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS) && !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in offsets.drain() {
                tpl.add_partition_offset(&t, p, Offset::Offset(o))
                    .expect("offset");
            }
            if eos {
                let gm = consumer.group_metadata().expect("group metadata");
                producer
                    .send_offsets_to_transaction(&tpl, &gm, timeout)
                    .expect("offsets");
                producer.commit_transaction(timeout).expect("commit");
                producer.begin_transaction().expect("begin");
            } else {
                // Not `flush`: on a ThreadedProducer it sleeps in 100 ms steps (attrib neither).
                while producer.in_flight_count() > 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                consumer
                    .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                    .expect("commit");
            }
            last = Instant::now();
        }
    }
}

/// Sets `flag` on SIGTERM (a thread waiting on the signal through tokio).
fn signal_hook_flag(flag: &Arc<AtomicBool>) {
    let flag = flag.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal");
            term.recv().await;
        });
        flag.store(true, Ordering::Release);
    });
}
