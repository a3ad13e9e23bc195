//! Exactly-once commit patterns on Apache Kafka (issue 12): one transactional producer per task
//! (attrib's design) against one per instance whose transaction carries every task and whose
//! offsets are fenced by the consumer group's metadata (Kafka Streams' `exactly_once_v2`,
//! KIP-447). Both run the same consume → produce → commit loop, without attrib's rules, so
//! that the figures are those of the transaction protocol alone.
//!
//! How to run: `scripts/bench-transactions` (starts a Kafka node with scripts/kafka), or
//! `ATTRIB_BENCH_KAFKA=HOST:PORT cargo bench --bench transactions`.
//!
//! For 16 and 64 input partitions (`ATTRIB_BENCH_PARTITIONS`, comma-separated), and each pattern:
//! - an input topic is filled with `ATTRIB_BENCH_TXN_RECORDS` (200,000) records of 200 bytes;
//! - one consumer in a group reads it; every record is re-produced to the same partition of an
//!   output topic; every 100 ms (attrib's `commit_interval_ms`) the batch is committed: per task,
//!   each partition's producer flushes, sends its offsets and commits, the partitions' commits
//!   running on parallel threads as in attrib; per instance, one producer does it once;
//! - **records/s** over the whole backlog, **p50/p99** of a record's wait from the moment it is
//!   consumed to the end of the commit that makes its output visible to `read_committed`
//!   readers, the **commit** p50/p99, and the process's **threads** and **TCP sockets** during
//!   the run (from /proc/self).
//!
//! Then fencing, as a replaced instance meets it:
//! - per task: a new producer with a task's transactional id (`init_transactions`) aborts the
//!   old owner's open transaction at once; the old producer's commit fails (fenced);
//! - per instance: the transactional id is the instance's, so a task that moves to another
//!   instance meets an open transaction of a dead one only through the output partitions'
//!   last stable offset: the time a `read_committed` reader waits for the new owner's output
//!   is measured, with `transaction.timeout.ms` = `ATTRIB_BENCH_TXN_TIMEOUT_MS` (10,000, Kafka
//!   Streams' value under exactly once).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

type Prod = ThreadedProducer<DefaultProducerContext>;

const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(30);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number")))
        .unwrap_or(default)
}

fn run_id() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("txbench-{n}")
}

fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .unwrap()
    {
        r.unwrap();
    }
}

fn fill(brokers: &str, topic: &str, partitions: i32, records: u64) {
    let p: Prod = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let value = vec![b'x'; 200];
    for i in 0..records {
        let key = i.to_string();
        let part = (i % partitions as u64) as i32;
        send(
            &p,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(value.as_slice())
                .partition(part),
        );
    }
    p.flush(TIMEOUT).unwrap();
}

/// Produces one record, waiting while the producer's queue is full.
fn send(p: &Prod, mut rec: BaseRecord<'_, [u8], [u8]>) {
    while let Err((_, r)) = p.send(rec) {
        rec = r;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn producer(brokers: &str, id: &str, timeout_ms: u64) -> Prod {
    let p: Prod = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", id)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .create()
        .unwrap();
    p.init_transactions(TIMEOUT).unwrap();
    p
}

fn consumer(brokers: &str, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn proc_counts() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let sockets = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0);
    (threads, sockets)
}

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    PerTask,
    PerInstance,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::PerTask => "per task",
            Pattern::PerInstance => "per instance",
        }
    }
}

struct Figures {
    rate: f64,
    wait: (f64, f64),
    commit: (f64, f64),
    threads: usize,
    sockets: usize,
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The producers' transactions of one commit: offsets per partition.
fn commit_one(p: &Prod, tpl: &TopicPartitionList, gm: &ConsumerGroupMetadata) {
    p.flush(TIMEOUT).unwrap();
    p.send_offsets_to_transaction(tpl, gm, TIMEOUT).unwrap();
    p.commit_transaction(TIMEOUT).unwrap();
}

fn run(brokers: &str, pattern: Pattern, partitions: i32, records: u64) -> Figures {
    let id = run_id();
    let (input, output) = (format!("{id}-in"), format!("{id}-out"));
    create_topics(brokers, &[&input, &output], partitions);
    fill(brokers, &input, partitions, records);
    let c = consumer(brokers, &id, &input);
    let timeout_ms = 60_000;
    let producers: BTreeMap<i32, Prod> = match pattern {
        Pattern::PerTask => (0..partitions)
            .map(|p| (p, producer(brokers, &format!("{id}-t_{p}"), timeout_ms)))
            .collect(),
        Pattern::PerInstance => [(-1, producer(brokers, &format!("{id}-i"), timeout_ms))]
            .into_iter()
            .collect(),
    };
    let of = |p: i32| match pattern {
        Pattern::PerTask => &producers[&p],
        Pattern::PerInstance => &producers[&-1],
    };
    // Producers (by partition, or -1 for the instance's) with a transaction open.
    let mut open: BTreeSet<i32> = BTreeSet::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut polled: Vec<Instant> = Vec::new();
    let (mut waits, mut commits) = (Vec::new(), Vec::new());
    let (mut done, mut threads, mut sockets) = (0u64, 0, 0);
    let mut started = None;
    let mut last_commit = Instant::now();
    while done < records {
        if let Some(m) = c.poll(Duration::from_millis(5)) {
            let m = m.unwrap();
            started.get_or_insert_with(Instant::now);
            let part = m.partition();
            let pr = of(part);
            let key = if pattern == Pattern::PerTask {
                part
            } else {
                -1
            };
            if open.insert(key) {
                pr.begin_transaction().unwrap();
            }
            let mut rec = BaseRecord::to(&output)
                .partition(part)
                .payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            send(pr, rec);
            next.insert(part, m.offset() + 1);
            polled.push(Instant::now());
        }
        if last_commit.elapsed() < COMMIT_INTERVAL || polled.is_empty() {
            continue;
        }
        if threads == 0 && done > 0 {
            (threads, sockets) = proc_counts();
        }
        let gm = c.group_metadata().unwrap();
        let t0 = Instant::now();
        let offsets = |parts: &mut dyn Iterator<Item = (&i32, &i64)>| {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in parts {
                tpl.add_partition_offset(&input, *p, Offset::Offset(*o))
                    .unwrap();
            }
            tpl
        };
        match pattern {
            Pattern::PerTask => std::thread::scope(|s| {
                for &p in &open {
                    let tpl = offsets(&mut next.iter().filter(|(q, _)| **q == p));
                    let (pr, gm) = (&producers[&p], &gm);
                    s.spawn(move || commit_one(pr, &tpl, gm));
                }
            }),
            Pattern::PerInstance => {
                commit_one(&producers[&-1], &offsets(&mut next.iter()), &gm);
            }
        }
        open.clear();
        let end = Instant::now();
        commits.push((end - t0).as_secs_f64() * 1000.0);
        for t in polled.drain(..) {
            waits.push((end - t).as_secs_f64() * 1000.0);
            done += 1;
        }
        last_commit = end;
    }
    let elapsed = started.unwrap().elapsed().as_secs_f64();
    Figures {
        rate: records as f64 / elapsed,
        wait: (pct(&mut waits, 0.5), pct(&mut waits, 0.99)),
        commit: (pct(&mut commits, 0.5), pct(&mut commits, 0.99)),
        threads,
        sockets,
    }
}

/// Per task: a new owner's `init_transactions` fences the old producer of the same task.
fn fencing_per_task(brokers: &str) -> String {
    let id = run_id();
    let out = format!("{id}-fence");
    create_topics(brokers, &[&out], 1);
    let old = producer(brokers, &format!("{id}-t_0"), 60_000);
    write_in_transaction(&old, &out, "old");
    let t0 = Instant::now();
    let new = producer(brokers, &format!("{id}-t_0"), 60_000);
    write_in_transaction(&new, &out, "new");
    new.commit_transaction(TIMEOUT).unwrap();
    let visible = wait_visible(brokers, &out, "new");
    let old_commit = old.commit_transaction(TIMEOUT);
    format!(
        "per task: the new owner's output readable after {:.0} ms (init_transactions aborted the old transaction); the old producer's commit: {}",
        (visible - t0).as_secs_f64() * 1000.0,
        match old_commit {
            Ok(()) => "succeeded (NOT fenced)".to_string(),
            Err(e) => format!("refused ({e})"),
        }
    )
}

/// Per instance: the dead instance's transaction stays open until the broker's timeout, and
/// holds back every read_committed reader of the partitions it wrote.
fn fencing_per_instance(brokers: &str, timeout_ms: u64) -> String {
    let id = run_id();
    let out = format!("{id}-fence");
    create_topics(brokers, &[&out], 1);
    let dead = producer(brokers, &format!("{id}-i-dead"), timeout_ms);
    write_in_transaction(&dead, &out, "dead");
    // The instance dies without aborting: its producer is never used again.
    std::mem::forget(dead);
    let t0 = Instant::now();
    let new = producer(brokers, &format!("{id}-i-new"), timeout_ms);
    write_in_transaction(&new, &out, "new");
    new.commit_transaction(TIMEOUT).unwrap();
    let visible = wait_visible(brokers, &out, "new");
    format!(
        "per instance: the new owner's output readable after {:.0} ms (transaction.timeout.ms {timeout_ms}: the dead instance's open transaction holds the last stable offset until the broker aborts it)",
        (visible - t0).as_secs_f64() * 1000.0
    )
}

/// Begins a transaction and writes `payload` to partition 0 of `topic`, acknowledged.
fn write_in_transaction(p: &Prod, topic: &str, payload: &str) {
    p.begin_transaction().unwrap();
    send(
        p,
        BaseRecord::to(topic)
            .partition(0)
            .payload(payload.as_bytes()),
    );
    p.flush(TIMEOUT).unwrap();
}

fn wait_visible(brokers: &str, topic: &str, payload: &str) -> Instant {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", run_id())
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(10)) {
            if m.payload() == Some(payload.as_bytes()) {
                return Instant::now();
            }
        }
    }
    panic!("{payload} never became readable on {topic}");
}

fn main() {
    let Ok(brokers) = std::env::var("ATTRIB_BENCH_KAFKA") else {
        eprintln!(
            "ATTRIB_BENCH_KAFKA is not set (scripts/bench-transactions sets it); nothing to do"
        );
        return;
    };
    if std::env::args().any(|a| a == "--test") {
        return; // `cargo test --benches`: nothing to check here
    }
    let records = env_num("ATTRIB_BENCH_TXN_RECORDS", 200_000);
    let timeout_ms = env_num("ATTRIB_BENCH_TXN_TIMEOUT_MS", 10_000);
    let parts: Vec<i32> = std::env::var("ATTRIB_BENCH_PARTITIONS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .map(|p| p.trim().parse().expect("ATTRIB_BENCH_PARTITIONS: numbers"))
        .collect();
    println!(
        "| partitions | pattern | records/s | wait p50 / p99 ms | commit p50 / p99 ms | threads | TCP sockets |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for &n in &parts {
        for pattern in [Pattern::PerTask, Pattern::PerInstance] {
            let f = run(&brokers, pattern, n, records);
            println!(
                "| {n} | {} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {} | {} |",
                pattern.name(),
                f.rate,
                f.wait.0,
                f.wait.1,
                f.commit.0,
                f.commit.1,
                f.threads,
                f.sockets
            );
        }
    }
    println!();
    println!("{}", fencing_per_task(&brokers));
    println!("{}", fencing_per_instance(&brokers, timeout_ms));
}
