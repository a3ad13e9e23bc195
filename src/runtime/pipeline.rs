//! `attrib run`: the Kafka processor.
//!
//! One processing thread owns the consumer, the producers and the journey store (so no RocksDB
//! call ever runs on an async worker); tokio runs only the HTTP server and signal handling.
//!
//! Under `exactly_once`, each assigned partition number is a task with its own transactional
//! producer (`<application_id>-task-<partition>`). Per commit interval, one transaction per
//! task carries the outputs, the changed journeys (a segment of the compacted changelog
//! `<application_id>-journeys-changelog`, see [`crate::state::changelog`]) and the input offsets; the
//! tasks commit in parallel, on threads of their own, while the processing thread goes on with
//! the next batch (outputs of a task whose commit is running wait for it). RocksDB gets a
//! batch's journeys when its commit starts; a failed commit restarts the pipeline, which never
//! trusts local state after a restart. Under `at_least_once` the outputs are flushed, then
//! offsets committed. Any error restarts the pipeline; local state that cannot be trusted is
//! rebuilt from the changelog before its partition is processed.

use crate::state::changelog::{Marker, RestoreSink, SegmentId};
use crate::formats::codec::{Encoded, OutputTopic};
use crate::ops::http::{HttpState, JourneyLookup};
use crate::runtime::input_order::{Flow, Next, STREAMS, TaskInputs};
use crate::model::journey::Journey;
use crate::ops::metrics::Metrics;
use crate::stage::attribution::{DlqRecord, InRecord, OutRecord, Processor};
use crate::model::records::InputTopic;
use crate::tools::replay::now_ms;
use crate::ops::settings::{Guarantee, Settings};
use crate::state::store::{JourneyStore, META_CHANGELOG_KEY, PartitionMeta, RocksStore, StateWrite};
use anyhow::{Context, Result, anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, info_span, warn};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// What the processing thread shares with the HTTP server, the demo and the tests.
#[derive(Clone)]
pub struct Handles {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub shutdown: Arc<AtomicBool>,
    /// The open journey store, for `GET /journeys/{key}`.
    pub db: Arc<Mutex<Option<Arc<rocksdb::DB>>>>,
    /// Completed commits (for tests and the demo to wait on).
    pub commits: Arc<AtomicU64>,
    /// The processing thread's sign of life, for `/health/live`.
    pub heartbeat: Arc<crate::ops::http::Heartbeat>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            shutdown: Arc::new(AtomicBool::new(false)),
            db: Arc::new(Mutex::new(None)),
            commits: Arc::new(AtomicU64::new(0)),
            heartbeat: Arc::new(crate::ops::http::Heartbeat::default()),
        }
    }
}

impl Handles {
    /// Looks a journey key up in every partition of the open store.
    pub fn journey_lookup(&self) -> JourneyLookup {
        let db = self.db.clone();
        Arc::new(move |key: &[u8]| {
            let Some(db) = db.lock().expect("db lock").clone() else {
                return Ok(None);
            };
            let mut found = Vec::new();
            for item in db.prefix_iterator(b"m") {
                let (k, _) = item?;
                if k.first() != Some(&b'm') || k.len() != 5 {
                    break;
                }
                let p = i32::from_be_bytes([k[1], k[2], k[3], k[4]]);
                let mut jk = vec![b'j'];
                jk.extend_from_slice(&p.to_be_bytes());
                jk.extend_from_slice(key);
                if let Some(v) = db.get(&jk)? {
                    let j = Journey::decode(&v)?;
                    found.push(serde_json::json!({ "partition": p, "journey": journey_json(&j) }));
                }
            }
            Ok(if found.is_empty() {
                None
            } else {
                Some(
                    serde_json::json!({ "key": String::from_utf8_lossy(key), "partitions": found }),
                )
            })
        })
    }
}

fn journey_json(j: &Journey) -> serde_json::Value {
    serde_json::json!({
        "clicks": j.clicks.iter().map(|c| serde_json::json!({
            "click_id": c.click_id, "program_id": c.program_id, "partner_id": c.partner_id,
            "occurred_at": crate::model::time::format_rfc3339(c.occurred_at), "shared_id": c.shared_id, "sub_ids": c.sub_ids.as_slice(),
        })).collect::<Vec<_>>(),
        "orders": j.orders.iter().map(|o| serde_json::json!({
            "program_id": o.program_id, "event_type": o.event_type, "order_id": o.order_id,
            "occurred_at": crate::model::time::format_rfc3339(o.occurred_at),
            "action_id": o.credited.as_ref().map(|_| crate::model::output::action_id(&o.program_id, &o.event_type, &o.order_id)),
            "credited": o.credited.is_some(),
            "reversed": o.credited.as_ref().is_some_and(|c| c.reversed),
            "amount": o.credited.as_ref().map(|c| crate::model::money::round6(c.amount).to_string()),
            "payout": o.credited.as_ref().map(|c| crate::model::money::round6(c.payout).to_string()),
            "partners": o.credited.as_ref().map(|c| c.credits.iter().map(|k| k.partner_id.clone()).collect::<Vec<_>>()),
        })).collect::<Vec<_>>(),
    })
}

/// Runs `attrib run`: HTTP server, signal handling and the supervised processing thread.
pub fn run_until_signal(settings: Settings) -> Result<()> {
    let handles = Handles::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let addr = settings.http_addr.parse()?;
    // Fatal before anything starts: an HTTP address in use (no probes, no metrics) and
    // settings librdkafka refuses.
    let listener = rt.block_on(crate::ops::http::bind(addr))?;
    check_client_settings(&settings)?;
    let http_state = HttpState {
        metrics: handles.metrics.clone(),
        ready: handles.ready.clone(),
        heartbeat: handles.heartbeat.clone(),
        journeys: settings.journeys_api.enabled.then(|| {
            (
                settings.journeys_api.token.clone().unwrap_or_default(),
                handles.journey_lookup(),
            )
        }),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = rt.spawn(async move {
        let stop = async move {
            let _ = http_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::ops::http::serve_on(listener, http_state, stop).await {
            error!("http server failed: {e:#}");
        }
    });
    let shutdown = handles.shutdown.clone();
    rt.spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested; committing and closing");
        shutdown.store(true, Ordering::Release);
    });
    let h = handles.clone();
    let worker = std::thread::Builder::new()
        .name("attrib-processor".into())
        .spawn(move || supervise(&settings, &h))?;
    let result = worker
        .join()
        .map_err(|_| anyhow!("processing thread panicked"))?;
    let _ = stop_tx.send(true);
    let _ = rt.block_on(http);
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Creates (and drops) every kind of client attrib uses, so that an option librdkafka refuses
/// stops start-up with librdkafka's message, which names it.
fn check_client_settings(s: &Settings) -> Result<()> {
    let refused = |e: KafkaError| anyhow!("invalid Kafka client settings (`kafka`): {e}");
    let _: BaseConsumer<LogContext> = consumer_config(s)
        .create_with_context(LogContext)
        .map_err(refused)?;
    let id = task_transactional_id(s, 0);
    let tx = (s.processing_guarantee == Guarantee::ExactlyOnce).then_some(id.as_str());
    let _: ThreadedProducer<ProducerCtx> = producer_config(s, tx)
        .create_with_context(ProducerCtx::new(Arc::new(AtomicU64::new(0)), None))
        .map_err(refused)?;
    Ok(())
}

/// Runs the pipeline until shutdown, restarting it (with backoff) after errors.
pub fn supervise(settings: &Settings, h: &Handles) -> Result<()> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        match run_pipeline(settings, h) {
            Ok(()) => return Ok(()),
            Err(e) => {
                h.ready.store(false, Ordering::Release);
                if h.shutdown.load(Ordering::Acquire) {
                    // Asked to stop (also during start-up): what was open is closed.
                    info!("stopped: {e:#}");
                    return Ok(());
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                error!("pipeline failed, restarting in {backoff:?}: {e:#}");
                let until = Instant::now() + backoff;
                while Instant::now() < until && !h.shutdown.load(Ordering::Acquire) {
                    h.heartbeat.beat();
                    std::thread::sleep(Duration::from_millis(50));
                }
                if h.shutdown.load(Ordering::Acquire) {
                    return Ok(());
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// librdkafka contexts
// ---------------------------------------------------------------------------------------------

fn log_rdkafka(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            error!(target: "librdkafka", "{fac}: {msg}")
        }
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", "{fac}: {msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            info!(target: "librdkafka", "{fac}: {msg}")
        }
        RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac}: {msg}"),
    }
}

/// Logs a client error once per 30 s per distinct text (an unreachable broker makes librdkafka
/// report the same error many times a second).
fn warn_client_error(client: &str, error: &KafkaError, reason: &str) {
    static SEEN: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    let text = format!("{client}{error}: {reason}");
    let mut seen = SEEN.lock().expect("log limiter");
    let seen = seen.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    if seen
        .get(&text)
        .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(30))
    {
        return;
    }
    if seen.len() > 1000 {
        seen.clear();
    }
    seen.insert(text.clone(), now);
    warn!(target: "librdkafka", "{text} (repeats of this message are muted for 30 s)");
}

/// rust-rdkafka hands every error event to the context too, end-of-partition events as
/// `Global(PartitionEOF)`.
fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

/// Logs through `tracing`.
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_rdkafka(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition events are how table and changelog readers know they are done.
        if !is_end_of_partition(&error) {
            warn_client_error("", &error, reason);
        }
    }
}

impl ConsumerContext for LogContext {}

struct ProducerCtx {
    delivery_errors: Arc<AtomicU64>,
    /// A task producer's changelog topic, whose delivered offsets it tracks.
    changelog: Option<Arc<str>>,
    /// The highest changelog offset this producer has had acknowledged (`-1`: none).
    changelog_end: AtomicI64,
    /// Changelog records acknowledged without an offset since the last look: librdkafka
    /// reports a retried send that the broker had already stored (`DUPLICATE_SEQUENCE_NUMBER`,
    /// e.g. across a broker restart) as delivered at offset -1, so `changelog_end` is stale.
    changelog_unknown: AtomicU64,
}

impl ProducerCtx {
    fn new(delivery_errors: Arc<AtomicU64>, changelog: Option<Arc<str>>) -> Self {
        ProducerCtx {
            delivery_errors,
            changelog,
            changelog_end: AtomicI64::new(-1),
            changelog_unknown: AtomicU64::new(0),
        }
    }
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_rdkafka(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        warn_client_error("producer: ", &error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                self.delivery_errors.fetch_add(1, Ordering::Relaxed);
                warn!("output record not delivered: {e}");
            }
            Ok(m) => {
                if self.changelog.as_deref() == Some(m.topic()) {
                    if m.offset() >= 0 {
                        self.changelog_end.fetch_max(m.offset(), Ordering::AcqRel);
                    } else {
                        self.changelog_unknown.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }
    }
}

struct ConsumerCtx {
    worker: Arc<Mutex<Worker>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_rdkafka(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        // End-of-partition events reach the poll too (they order a task's input).
        if !is_end_of_partition(&error) {
            warn_client_error("consumer: ", &error, reason);
        }
    }
    fn stats(&self, s: Statistics) {
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic, &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut w = self.worker.lock().expect("worker lock");
            let lost = consumer.assignment_lost();
            let result = if lost {
                w.abort_all()
            } else {
                w.commit_and_wait(consumer)
            };
            if let Err(e) = result {
                w.failed.get_or_insert(e);
            }
            let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            w.revoke(&partitions, lost);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.metrics.rebalances.inc();
        if let Rebalance::Assign(tpl) = rebalance {
            // A partition paused (its buffer full) before a rebalance starts afresh.
            if let Err(e) = consumer.resume(tpl) {
                warn!("cannot resume assigned partitions: {e}");
            }
            let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let mut w = self.worker.lock().expect("worker lock");
            let result = w.assign(&partitions);
            if let Err(e) = result {
                w.failed.get_or_insert(e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------------------------

fn base_config(s: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers);
    c.set(
        "client.id",
        format!("{}-{}", s.application_id, s.instance_id()),
    );
    // Consumer-only settings are set again by the consumers' own configurations.
    for (k, v) in &s.kafka {
        if !is_consumer_only(k) {
            c.set(k, v);
        }
    }
    c
}

fn consumer_config(s: &Settings) -> ClientConfig {
    let mut c = base_config(s);
    c.set("group.id", &s.application_id)
        // Clicks and conversions of one key are co-partitioned: the range assignor hands the
        // same partition number of both topics to the same member.
        .set("partition.assignment.strategy", "range")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // End-of-partition events tell a task that an empty partition is read to its end
        // (see `crate::runtime::input_order`).
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "5000");
    // Static membership (KIP-345) when the instance is named: a restarted instance takes its
    // partitions back at once instead of after the session timeout of its dead self.
    if let Some(id) = &s.instance_id {
        c.set("group.instance.id", format!("{}-{id}", s.application_id));
    }
    for (k, v) in &s.kafka {
        c.set(k, v);
    }
    c
}

/// A consumer outside the group, for tables and restores.
fn reader_config(s: &Settings, purpose: &str) -> ClientConfig {
    let mut c = base_config(s);
    c.set("group.id", format!("{}-{purpose}", s.application_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    for (k, v) in &s.kafka {
        c.set(k, v);
    }
    c
}

/// A producer; with a transactional id for an `exactly_once` task.
fn producer_config(s: &Settings, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = base_config(s);
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id)
            .set("transaction.timeout.ms", "60000");
    }
    // The user's settings win over the defaults above.
    for (k, v) in &s.kafka {
        if !is_consumer_only(k) {
            c.set(k, v);
        }
    }
    c
}

/// `kafka` settings that librdkafka would ignore (with a warning) on a producer.
fn is_consumer_only(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "isolation.level",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "partition.assignment.strategy",
        "group.instance.id",
        "group.protocol",
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.wait.max.ms",
        "max.partition.fetch.bytes",
        "queued.min.messages",
        "queued.max.messages.kbytes",
    ];
    KEYS.contains(&key)
}

// ---------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------

/// Waits until the cluster answers a metadata request: says so once within seconds when it
/// does not (then every 30 s), and gives up when shutdown is asked for.
fn wait_for_cluster(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
    shutdown: &AtomicBool,
    heartbeat: &crate::ops::http::Heartbeat,
) -> Result<()> {
    let started = Instant::now();
    let mut last_log: Option<Instant> = None;
    loop {
        heartbeat.beat();
        match consumer.fetch_metadata(Some(&s.topics.clicks), Duration::from_secs(2)) {
            Ok(_) => {
                if last_log.is_some() {
                    info!(brokers = %s.brokers, "Kafka is reachable");
                }
                return Ok(());
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    warn!(
                        brokers = %s.brokers,
                        waited_seconds = started.elapsed().as_secs(),
                        "cannot reach Kafka ({e}); retrying"
                    );
                    last_log = Some(Instant::now());
                }
            }
        }
        if shutdown.load(Ordering::Acquire) {
            bail!("shutdown while waiting for Kafka");
        }
    }
}

fn partition_count(consumer: &BaseConsumer<impl ConsumerContext>, topic: &str) -> Result<usize> {
    let md = consumer
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .with_context(|| format!("cannot read metadata of {topic}"))?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if n == 0 {
        bail!("topic `{topic}` does not exist (create it, or check the `topics` settings)");
    }
    Ok(n)
}

/// Creates the changelog topic if missing, with as many partitions as the clicks topic.
fn ensure_changelog(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
    partitions: usize,
) -> Result<()> {
    let name = s.changelog_topic();
    if let Ok(n) = partition_count(consumer, &name) {
        if n != partitions {
            bail!(
                "changelog topic `{name}` has {n} partitions, but `{}` has {partitions}",
                s.topics.clicks
            );
        }
        return Ok(());
    }
    let admin: AdminClient<LogContext> = base_config(s).create_with_context(LogContext)?;
    let topic = NewTopic::new(&name, partitions as i32, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let results = futures::executor::block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)),
    ))?;
    for r in results {
        match r {
            Ok(_) => info!("created changelog topic {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create changelog topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Assigns every given partition from its beginning and reads up to the end it had when the
/// call started, calling `f` for each record. The consumer stays assigned afterwards.
fn read_to_end(
    consumer: &BaseConsumer<LogContext>,
    assignments: &[(String, i32)],
    (shutdown, heartbeat): (&AtomicBool, &crate::ops::http::Heartbeat),
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for (t, p) in assignments {
        let (lo, hi) = consumer.fetch_watermarks(t, *p, KAFKA_TIMEOUT)?;
        tpl.add_partition_offset(t, *p, Offset::Beginning)?;
        if hi > lo {
            remaining.insert((t.clone(), *p), hi);
        }
    }
    consumer.assign(&tpl)?;
    while !remaining.is_empty() {
        heartbeat.beat();
        if shutdown.load(Ordering::Acquire) {
            bail!("shutdown while reading {:?}", remaining.keys().next());
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                f(&m)?;
                let key = (m.topic().to_string(), m.partition());
                if remaining.get(&key).is_some_and(|hi| m.offset() + 1 >= *hi) {
                    remaining.remove(&key);
                }
                continue;
            }
            // The event names the partition, not the topic: the positions below decide.
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => warn!("while reading tables or changelog: {e}"),
        }
        // A partition is done once its position has reached the end it had at the start
        // (per topic and partition; librdkafka moves the position past transaction markers).
        let positions = consumer.position()?;
        remaining.retain(
            |(t, p), hi| match positions.find_partition(t, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o < *hi,
                _ => true,
            },
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The worker: processor + producers + transaction state
// ---------------------------------------------------------------------------------------------

/// Under `exactly_once`, each owned partition number (a *task*: that partition of clicks, of
/// conversions and of the changelog) has its own transactional producer with the stable id
/// `<application_id>-task-<partition>`. Whoever is assigned the task next initialises that id,
/// which fences the previous owner and aborts any transaction it left open — also when it died
/// and the broker never times transactions out. This is Kafka Streams' per-task model
/// (`exactly_once`, before `exactly_once_v2`); see docs/exactly-once.md.
struct Task {
    producer: Arc<ThreadedProducer<ProducerCtx>>,
    txn_open: bool,
    /// The previous transaction is being committed in the background: work of the partition
    /// waits in `deferred` for the next one (a producer has one transaction at a time).
    committing: bool,
    /// Records were processed while committing: the next transaction begins once it is done.
    deferred_begin: bool,
    /// Outputs of those records, sent when the next transaction begins.
    deferred: Vec<Encoded>,
    /// Names this producer's changelog segments.
    token: u64,
    seq: u64,
    /// The last committed changelog segment of the partition.
    head: Option<SegmentId>,
    /// Next offsets of the partition in each input topic, committed with every transaction.
    positions: Vec<(String, i64)>,
}

impl Task {
    fn next_segment(&self) -> SegmentId {
        SegmentId {
            token: self.token,
            seq: self.seq + 1,
        }
    }
}

fn task_transactional_id(s: &Settings, partition: i32) -> String {
    format!("{}-task-{partition}", s.application_id)
}

struct Worker {
    settings: Settings,
    processor: Processor,
    /// `at_least_once`: one idempotent producer for everything.
    shared: Option<ThreadedProducer<ProducerCtx>>,
    /// `exactly_once`: one transactional producer per owned partition.
    tasks: BTreeMap<i32, Task>,
    delivery_errors: Arc<AtomicU64>,
    eos: bool,
    /// Next offsets to commit, per (topic, partition).
    offsets: HashMap<(InputTopic, i32), i64>,
    /// Outputs of the current batch (for metrics at commit).
    outputs: Vec<OutRecord>,
    scratch: Vec<OutRecord>,
    processed: usize,
    batch_started: Instant,
    owned: BTreeSet<i32>,
    /// Changelog end offsets at which local state was last known to equal the changelog.
    trusted_at: HashMap<i32, i64>,
    /// Refused table records; reported to the DLQ by the owner of partition 0.
    table_rejects: Vec<DlqRecord>,
    handles: Handles,
    failed: Option<anyhow::Error>,
    changelog: String,
    last_usage: Instant,
    last_sweep: Instant,
    next_sweep: i32,
    avro_out: Option<crate::formats::avro::AvroOutput>,
    formats: crate::formats::codec::TopicFormats,
    /// Partition counts of the output topics (actions, invalid actions, DLQ), when known.
    out_partitions: OutPartitions,
    /// The `exactly_once` commit running in the background, if any.
    in_flight: Option<InFlight>,
    /// Each task's consumed records, handed out in timestamp order.
    inputs: TaskInputs,
    /// The assigned partitions, reused by [`Worker::process_ready`].
    scratch_partitions: Vec<i32>,
    /// The clicks and conversions topics' names, shared with each record processed.
    stream_names: [Arc<str>; STREAMS],
    /// Wakes the processing thread (records arrived, a background commit ended).
    wake: Arc<Wake>,
    /// When enforced processing was last logged (at most every 30 s).
    enforced_logged: Option<Instant>,
}

/// The tasks' commits of one batch, each on its own thread, while the processing thread goes
/// on with the next batch.
struct InFlight {
    started: Instant,
    jobs: Vec<CommitJob>,
}

/// How long a background commit may take before it counts as stuck. Each of its Kafka calls
/// has [`KAFKA_TIMEOUT`], but librdkafka's `send_offsets_to_transaction` waits without one
/// (`RD_POLL_INFINITE`, trusting its request handlers to answer): during a broker failover
/// it was seen never to return.
const COMMIT_DEADLINE: Duration = Duration::from_secs(90);

/// A background commit's end, or that it did not end in time.
enum Joined<T> {
    Done(T),
    Stuck,
}

/// Joins `handle` if its thread ends by `deadline`; otherwise detaches it.
fn join_by<T>(handle: std::thread::JoinHandle<Result<T>>, deadline: Instant) -> Joined<Result<T>> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return Joined::Stuck;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Joined::Done(
        handle
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the commit thread panicked"))),
    )
}

struct CommitJob {
    partition: i32,
    /// The input positions the transaction commits.
    positions: Vec<(String, i64)>,
    handle: std::thread::JoinHandle<Result<()>>,
}

/// Where a task's outputs go: task `p` writes to partition `p mod n` of each output topic,
/// so with as many output as input partitions every output partition has one writer (one
/// open transaction at a time) and a journey's outputs stay in order in one partition.
#[derive(Clone, Copy, Debug, Default)]
struct OutPartitions {
    actions: Option<i32>,
    invalid_actions: Option<i32>,
    dlq: Option<i32>,
}

impl OutPartitions {
    fn read(s: &Settings, md: &BaseConsumer<impl ConsumerContext>, inputs: usize) -> Self {
        let count = |topic: &str| match partition_count(md, topic) {
            Ok(n) => {
                if n < inputs {
                    warn!(
                        topic,
                        partitions = n,
                        inputs,
                        "output topic has fewer partitions than the input topics: tasks share its partitions (see docs/exactly-once.md)"
                    );
                }
                Some(n as i32)
            }
            Err(e) => {
                warn!("{e:#}; its records are partitioned by key");
                None
            }
        };
        OutPartitions {
            actions: count(&s.topics.actions),
            invalid_actions: count(&s.topics.invalid_actions),
            dlq: count(&s.topics.dlq),
        }
    }

    /// The partition of `topic` that task `task` writes to.
    fn of(&self, topic: OutputTopic, task: i32) -> Option<i32> {
        let n = match topic {
            OutputTopic::Actions => self.actions,
            OutputTopic::InvalidActions => self.invalid_actions,
            OutputTopic::Dlq => self.dlq,
        }?;
        Some(task.rem_euclid(n.max(1)))
    }
}

/// Waits until every record sent is acknowledged (or failed). rdkafka's `flush` on a
/// `ThreadedProducer` sleeps in steps of 100 ms, because its background thread takes the
/// delivery events that `flush` polls for; this checks the queue every 200 µs instead.
fn flush(producer: &ThreadedProducer<ProducerCtx>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            bail!(
                "{} records not acknowledged within {timeout:?}",
                producer.in_flight_count()
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// The offset of the last changelog record a task's producer wrote, once they are all
/// acknowledged. From the delivery reports, unless one came without an offset: then the
/// partition's log end (uncommitted records included), which is one past the task's `End`
/// marker as the task is the partition's only writer and has not committed yet.
fn changelog_end(s: &Settings, changelog: &str, partition: i32, ctx: &ProducerCtx) -> Result<i64> {
    if ctx.changelog_unknown.swap(0, Ordering::AcqRel) == 0 {
        return Ok(ctx.changelog_end.load(Ordering::Acquire));
    }
    let mut c = reader_config(s, "restore");
    c.set("isolation.level", "read_uncommitted");
    let reader: BaseConsumer<LogContext> = c.create_with_context(LogContext)?;
    let (_, hi) = reader
        .fetch_watermarks(changelog, partition, KAFKA_TIMEOUT)
        .context("cannot read the changelog's end")?;
    warn!(
        partition,
        end = hi,
        "changelog records acknowledged without offsets (a retried send); using the log end"
    );
    ctx.changelog_end.fetch_max(hi - 1, Ordering::AcqRel);
    Ok(hi - 1)
}

/// Produces one record, waiting while librdkafka's queue is full.
fn send(
    producer: &ThreadedProducer<ProducerCtx>,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, String)],
) -> Result<()> {
    let mut hs = OwnedHeaders::new_with_capacity(headers.len());
    for (k, v) in headers {
        hs = hs.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(hs);
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
        }
    }
}

impl Worker {
    /// Under `exactly_once`, begins the transaction of `partition`'s task if it is not open.
    fn begin(&mut self, partition: i32) -> Result<()> {
        if self.shared.is_some() {
            return Ok(());
        }
        let task = self
            .tasks
            .get_mut(&partition)
            .ok_or_else(|| not_assigned(partition))?;
        if task.committing {
            task.deferred_begin = true;
            return Ok(());
        }
        if !task.txn_open {
            task.producer
                .begin_transaction()
                .context("cannot begin transaction")?;
            task.txn_open = true;
        }
        Ok(())
    }

    /// The producer for work of `partition` (call [`Worker::begin`] first).
    fn producer(&self, partition: i32) -> Result<&ThreadedProducer<ProducerCtx>> {
        match &self.shared {
            Some(p) => Ok(p),
            None => self
                .tasks
                .get(&partition)
                .map(|t| &*t.producer)
                .ok_or_else(|| not_assigned(partition)),
        }
    }

    /// The input topic kind of a consumed topic's name.
    fn input_topic(&self, name: &str) -> InputTopic {
        if name == self.settings.topics.clicks {
            InputTopic::Clicks
        } else {
            InputTopic::Conversions
        }
    }

    fn txn_open(&self) -> bool {
        self.tasks.values().any(|t| t.txn_open)
    }

    fn send_output(&mut self, partition: i32, o: &OutRecord) -> Result<()> {
        let Encoded {
            topic,
            key,
            value,
            headers,
        } = crate::formats::codec::encode(o, self.formats, self.avro_out.as_ref())?;
        self.begin(partition)?;
        if let Some(task) = self.tasks.get_mut(&partition).filter(|t| t.committing) {
            task.deferred.push(Encoded {
                topic,
                key,
                value,
                headers,
            });
            return Ok(());
        }
        self.send_encoded(partition, topic, key.as_deref(), value.as_deref(), &headers)
    }

    fn send_encoded(
        &self,
        partition: i32,
        topic: OutputTopic,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, String)],
    ) -> Result<()> {
        let t = &self.settings.topics;
        let name = match topic {
            OutputTopic::Actions => &t.actions,
            OutputTopic::InvalidActions => &t.invalid_actions,
            OutputTopic::Dlq => &t.dlq,
        };
        send(
            self.producer(partition)?,
            name,
            self.out_partitions.of(topic, partition),
            key,
            value,
            headers,
        )
    }

    /// Buffers a consumed record of `stream` (0 clicks, 1 conversions) for its task, pausing
    /// the partition when its buffer is full.
    fn buffer(
        &mut self,
        stream: usize,
        m: &BorrowedMessage<'_>,
        now: (Instant, i64),
        consumer: &BaseConsumer<ConsumerCtx>,
    ) {
        let flow = self.inputs.push(
            stream,
            m.partition(),
            m.offset(),
            m.timestamp().to_millis(),
            m.key(),
            m.payload(),
            now.0,
            now.1,
        );
        self.flow(consumer, stream, m.partition(), flow);
    }

    fn flow(
        &self,
        consumer: &BaseConsumer<ConsumerCtx>,
        stream: usize,
        partition: i32,
        flow: Flow,
    ) {
        if flow == Flow::Keep {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.stream_topic(stream), partition);
        let r = if flow == Flow::Pause {
            debug!(stream, partition, "input buffer full; partition paused");
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = r {
            warn!("cannot pause or resume partition {partition}: {e}");
        }
    }

    fn stream_topic(&self, stream: usize) -> &str {
        let t = &self.settings.topics;
        if stream == 0 {
            &t.clicks
        } else {
            &t.conversions
        }
    }

    /// Processes what the tasks' input order allows (at most up to the batch size); returns
    /// when a waiting task may go on at the latest.
    fn process_ready(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<Option<Instant>> {
        let mut inputs = std::mem::take(&mut self.inputs);
        let result = self.process_inputs(&mut inputs, consumer);
        let enforced = std::mem::take(&mut inputs.enforced);
        if enforced > 0 {
            self.handles.metrics.enforced_processing.inc_by(enforced);
            if self
                .enforced_logged
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
            {
                self.enforced_logged = Some(Instant::now());
                warn!(
                    records = enforced,
                    max_task_idle_ms = self.settings.max_task_idle_ms,
                    "a task waited in vain for one of its input partitions; processing ahead of it (attrib_enforced_processing_total)"
                );
            }
        }
        self.inputs = inputs;
        result
    }

    fn process_inputs(
        &mut self,
        inputs: &mut TaskInputs,
        consumer: &BaseConsumer<ConsumerCtx>,
    ) -> Result<Option<Instant>> {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut partitions = std::mem::take(&mut self.scratch_partitions);
        partitions.clear();
        partitions.extend(inputs.partitions());
        for &p in &partitions {
            while self.processed < self.settings.max_batch_records {
                match inputs.next(p, now) {
                    Next::Take(stream) => {
                        let r = inputs.front(stream, p).expect("a head to take");
                        let topic = if stream == 0 {
                            InputTopic::Clicks
                        } else {
                            InputTopic::Conversions
                        };
                        let source = self.stream_names[stream].clone();
                        let rec = InRecord {
                            topic,
                            source_topic: &source,
                            partition: p,
                            offset: r.offset,
                            key: r.key,
                            value: r.value,
                        };
                        self.handle(&rec)?;
                        let flow = inputs.pop(stream, p);
                        self.flow(consumer, stream, p, flow);
                    }
                    Next::WaitUntil(t) => {
                        wake = Some(wake.map_or(t, |w| w.min(t)));
                        break;
                    }
                    Next::Empty => break,
                }
            }
        }
        self.scratch_partitions = partitions;
        Ok(wake)
    }

    fn handle(&mut self, rec: &InRecord<'_>) -> Result<()> {
        let partition = rec.partition;
        // Begins the task's transaction even when the record has no output: its offset is
        // committed in it.
        self.begin(partition)?;
        let mut out = std::mem::take(&mut self.scratch);
        self.processor.process(rec, now_ms(), &mut out)?;
        for o in out.drain(..) {
            self.send_output(partition, &o)?;
            self.outputs.push(o);
        }
        self.scratch = out;
        self.offsets.insert((rec.topic, partition), rec.offset + 1);
        self.processed += 1;
        Ok(())
    }

    fn apply_table(&mut self, m: &BorrowedMessage<'_>) {
        let topic = if m.topic() == self.settings.topics.config {
            InputTopic::Config
        } else {
            InputTopic::PromoCodes
        };
        let rec = in_record(m, topic);
        if let Some(d) = self.processor.apply_table(&rec) {
            warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "refused table record: {}",
                d.error
            );
            self.handles
                .metrics
                .dlq
                .with_label_values(&[d.reason_label()])
                .inc();
            self.table_rejects.push(d);
        }
    }

    /// The owner of partition 0 reports refused table records it has not reported yet, in
    /// partition 0's transaction, with the reported position in partition 0's metadata.
    fn report_table_rejects(&mut self) -> Result<()> {
        if !self.owned.contains(&0) || self.table_rejects.is_empty() {
            return Ok(());
        }
        let marks = self
            .processor
            .store()
            .meta(0)?
            .unwrap_or_default()
            .table_dlq_marks;
        let pending_meta = self.processor.stream_time(0).is_some();
        let mark_of = |marks: &[(String, i32, i64)], t: &str, p: i32| {
            marks
                .iter()
                .find(|(mt, mp, _)| mt == t && *mp == p)
                .map_or(0, |m| m.2)
        };
        let mut current = if pending_meta {
            self.processor.meta_mut(0)?.table_dlq_marks.clone()
        } else {
            marks
        };
        let todo: Vec<DlqRecord> = self
            .table_rejects
            .iter()
            .filter(|d| d.offset >= mark_of(&current, &d.source_topic, d.partition))
            .cloned()
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        for d in todo {
            let o = OutRecord::Dlq(Box::new(d.clone()));
            self.send_output(0, &o)?;
            match current
                .iter_mut()
                .find(|(t, p, _)| *t == d.source_topic && *p == d.partition)
            {
                Some(m) => m.2 = d.offset + 1,
                None => current.push((d.source_topic.clone(), d.partition, d.offset + 1)),
            }
        }
        self.processor.meta_mut(0)?.table_dlq_marks = current;
        Ok(())
    }

    /// Commits outputs, state and offsets together: one transaction per task with work. Under
    /// `exactly_once` the tasks' commits run in the background while processing goes on (see
    /// [`InFlight`]); the previous batch's commit is finished first.
    fn commit(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<()> {
        self.finish_in_flight()?;
        self.report_table_rejects()?;
        if self.processed == 0 && !self.txn_open() && self.processor.pending() == 0 {
            return Ok(());
        }
        let sweep = self.sweep_one()?;
        let started = Instant::now();
        let span = info_span!(
            "commit",
            records = self.processed,
            outputs = self.outputs.len()
        );
        let _g = span.enter();
        if self.eos {
            self.commit_tasks(consumer, sweep)?;
        } else {
            let writes = self.processor.drain_writes();
            if let Some((p, w)) = &sweep {
                self.send_changelog_writes(*p, w)?;
            }
            for w in &writes {
                self.send_changelog_writes(w.partition, &w.writes)?;
            }
            self.commit_at_least_once(consumer)?;
            self.processor.apply_writes(&writes)?;
            self.commit_done(started);
        }
        self.after_commit();
        Ok(())
    }

    /// Commits and waits until the commit has ended (revocation, shutdown).
    fn commit_and_wait(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<()> {
        self.commit(consumer)?;
        self.finish_in_flight()
    }

    fn send_changelog_writes(&mut self, partition: i32, writes: &[StateWrite]) -> Result<()> {
        self.begin(partition)?;
        let producer = self.producer(partition)?;
        for (k, v) in writes {
            send(
                producer,
                &self.changelog,
                Some(partition),
                Some(k),
                v.as_deref(),
                &[],
            )?;
        }
        Ok(())
    }

    fn send_marker(&mut self, partition: i32, marker: &Marker) -> Result<()> {
        self.begin(partition)?;
        send(
            self.producer(partition)?,
            &self.changelog,
            Some(partition),
            Some(META_CHANGELOG_KEY),
            Some(&marker.encode()),
            &[],
        )
    }

    /// Per task with work: a changelog segment (`Begin`, journeys, `End` with the metadata),
    /// the input offsets named after the segment, and the commit, which runs on a thread of
    /// its own (flush, offsets, `EndTxn`: round trips) while this thread goes on. Local RocksDB
    /// gets the batch's journeys now, as the next batch reads them; should a commit fail, the
    /// pipeline restarts and every partition is restored from the changelog (a restart never
    /// trusts local state: the clean-shutdown marker is read once per process).
    fn commit_tasks(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        sweep: Option<(i32, Vec<StateWrite>)>,
    ) -> Result<()> {
        let open: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.txn_open)
            .map(|(p, _)| *p)
            .collect();
        // Every task in a transaction writes its segment, with or without journey changes.
        for p in &open {
            self.processor.meta_mut(*p)?;
        }
        let mut writes = self.processor.drain_writes();
        for w in writes.iter_mut() {
            let task = self.tasks.get(&w.partition).ok_or_else(|| {
                anyhow!("partition {} is not assigned to this instance", w.partition)
            })?;
            let id = task.next_segment();
            let parent = task.head;
            w.meta.segment = Some(id);
            self.send_marker(w.partition, &Marker::Begin { id, parent })?;
            if let Some((_, sw)) = sweep.as_ref().filter(|(p, _)| *p == w.partition) {
                self.send_changelog_writes(w.partition, sw)?;
            }
            self.send_changelog_writes(w.partition, &w.writes)?;
            self.send_marker(
                w.partition,
                &Marker::End {
                    id,
                    meta: w.meta.clone(),
                },
            )?;
        }
        // What each commit needs, gathered before any starts (a failure here leaves every
        // transaction open, to be aborted).
        let mut work = Vec::new();
        for (&p, task) in &self.tasks {
            if !task.txn_open {
                continue;
            }
            let id = task.next_segment();
            let mut tpl = TopicPartitionList::new();
            let mut positions = Vec::new();
            for (topic, position) in &task.positions {
                let kind = self.input_topic(topic);
                let next = self.offsets.get(&(kind, p)).copied().unwrap_or(*position);
                positions.push((topic.clone(), next));
                tpl.add_partition_offset(topic, p, Offset::Offset(next))?;
                if let Some(mut e) = tpl.find_partition(topic, p) {
                    e.set_metadata(id.to_string());
                }
            }
            let gm = consumer
                .group_metadata()
                .ok_or_else(|| anyhow!("no consumer group metadata"))?;
            work.push((p, tpl, positions, gm));
        }
        let mut jobs = Vec::new();
        for (p, tpl, positions, gm) in work {
            let task = self.tasks.get_mut(&p).expect("task gathered above");
            task.txn_open = false;
            task.committing = true;
            let producer = task.producer.clone();
            let (settings, changelog) = (self.settings.clone(), self.changelog.clone());
            let wake = self.wake.clone();
            let handle = std::thread::Builder::new()
                .name(format!("attrib-commit-{p}"))
                .spawn(move || {
                    let r = commit_task(&settings, &changelog, p, &producer, tpl, &gm)
                        .with_context(|| format!("partition {p}"));
                    wake.notify();
                    r
                })?;
            jobs.push(CommitJob {
                partition: p,
                positions,
                handle,
            });
        }
        self.processor.apply_writes(&writes)?;
        self.in_flight = Some(InFlight {
            started: Instant::now(),
            jobs,
        });
        Ok(())
    }

    /// Whether a background commit has ended and waits to be finished.
    fn in_flight_ended(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.jobs.iter().all(|j| j.handle.is_finished()))
    }

    /// Waits for the background commit; on success the tasks go on with the work that waited
    /// for it. A failed commit aborts its transaction and fails the pipeline (which restarts
    /// from the committed state; other tasks may have committed).
    fn finish_in_flight(&mut self) -> Result<()> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let m = self.handles.metrics.clone();
        let mut first_error = None;
        let deadline = f.started + COMMIT_DEADLINE;
        for job in f.jobs {
            let outcome = join_by(job.handle, deadline);
            let Some(task) = self.tasks.get_mut(&job.partition) else {
                continue;
            };
            task.committing = false;
            match outcome {
                Joined::Done(Ok(())) => {
                    m.transactions.with_label_values(&["commit"]).inc();
                    task.head = Some(task.next_segment());
                    task.seq += 1;
                    task.positions = job.positions;
                }
                Joined::Stuck => {
                    // The producer is left to its thread (it cannot be used or destroyed
                    // while a call of its is running); the restart's new producer with the
                    // task's transactional id fences it and aborts its transaction.
                    m.transactions.with_label_values(&["abort"]).inc();
                    m.stuck_commits.inc();
                    error!(
                        partition = job.partition,
                        "a transaction commit did not return within {COMMIT_DEADLINE:?}; \
                         abandoning the task's producer and restarting from the committed state"
                    );
                    task.deferred.clear();
                    task.deferred_begin = false;
                    first_error.get_or_insert(anyhow!(
                        "partition {}: transaction commit stuck for {COMMIT_DEADLINE:?}",
                        job.partition
                    ));
                }
                Joined::Done(Err(e)) => {
                    m.transactions.with_label_values(&["abort"]).inc();
                    if let Err(a) = task.producer.abort_transaction(KAFKA_TIMEOUT) {
                        warn!(partition = job.partition, error = %a, "cannot abort the failed transaction");
                    }
                    task.deferred.clear();
                    task.deferred_begin = false;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.commit_done(f.started);
        // Work that came in meanwhile: its transaction begins now.
        let waiting: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.deferred_begin)
            .map(|(p, _)| *p)
            .collect();
        for p in waiting {
            let task = self.tasks.get_mut(&p).expect("task of a waiting partition");
            task.deferred_begin = false;
            let mut deferred = std::mem::take(&mut task.deferred);
            self.begin(p)?;
            for e in &deferred {
                self.send_encoded(p, e.topic, e.key.as_deref(), e.value.as_deref(), &e.headers)?;
            }
            // The buffer keeps its capacity for the next commit.
            deferred.clear();
            if let Some(task) = self.tasks.get_mut(&p) {
                task.deferred = deferred;
            }
        }
        Ok(())
    }

    fn commit_at_least_once(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<()> {
        let producer = self
            .shared
            .as_ref()
            .expect("at_least_once has a shared producer");
        flush(producer, KAFKA_TIMEOUT).context("cannot flush outputs")?;
        let errors = self.delivery_errors.swap(0, Ordering::AcqRel);
        if errors > 0 {
            bail!("{errors} output records were not delivered");
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &self.offsets {
            let name = match t {
                InputTopic::Clicks => &self.settings.topics.clicks,
                _ => &self.settings.topics.conversions,
            };
            tpl.add_partition_offset(name, *p, Offset::Offset(*o))?;
        }
        if tpl.count() > 0 {
            consumer
                .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                .context("cannot commit offsets")?;
        }
        self.handles
            .metrics
            .transactions
            .with_label_values(&["commit"])
            .inc();
        Ok(())
    }

    /// A commit has ended (successfully).
    fn commit_done(&mut self, started: Instant) {
        self.handles
            .metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.handles.commits.fetch_add(1, Ordering::AcqRel);
    }

    /// Metrics and batch bookkeeping once a batch is committed or handed to the background
    /// commit: what follows is the next batch.
    fn after_commit(&mut self) {
        let m = &self.handles.metrics;
        if self.last_usage.elapsed() > Duration::from_secs(5) {
            self.last_usage = Instant::now();
            let store = self.processor.store();
            let (live, hit) = store.usage();
            m.journeys.set(store.journeys() as i64);
            m.rocksdb_live.set(live as i64);
            m.block_cache_hit.set(hit);
        }
        m.batch_duration
            .observe(self.batch_started.elapsed().as_secs_f64());
        m.record_stats(&std::mem::take(&mut self.processor.stats));
        m.record_outputs(&self.outputs);
        let now = now_ms();
        for o in &self.outputs {
            let t = match o {
                OutRecord::Action(a) => a.occurred_at,
                OutRecord::Invalid(i) => i.occurred_at,
                OutRecord::Dlq(_) => continue,
            };
            m.event_lag.observe(((now - t) as f64 / 1000.0).max(0.0));
        }
        self.outputs.clear();
        self.offsets.clear();
        self.processed = 0;
        self.batch_started = Instant::now();
    }

    /// Retention for journeys no record touches: once a minute, one owned partition is swept
    /// (expired clicks and orders dropped, empty journeys deleted); the changes go to the
    /// changelog in the partition's transaction.
    fn sweep_one(&mut self) -> Result<Option<(i32, Vec<StateWrite>)>> {
        if self.last_sweep.elapsed() < Duration::from_secs(60) || self.owned.is_empty() {
            return Ok(None);
        }
        self.last_sweep = Instant::now();
        let p = *self
            .owned
            .range(self.next_sweep..)
            .next()
            .or_else(|| self.owned.iter().next())
            .expect("owned is not empty");
        self.next_sweep = p + 1;
        let writes = self.processor.sweep(p)?;
        if writes.is_empty() {
            return Ok(None);
        }
        debug!(partition = p, journeys = writes.len(), "retention sweep");
        self.begin(p)?;
        Ok(Some((p, writes)))
    }

    /// Aborts every open transaction.
    fn abort_open(&mut self) {
        // A background commit ends first (its outcome does not matter any more: the
        // pipeline restarts from whatever committed).
        if let Some(f) = self.in_flight.take() {
            for job in f.jobs {
                if let Joined::Stuck = join_by(job.handle, f.started + COMMIT_DEADLINE) {
                    self.handles.metrics.stuck_commits.inc();
                    error!(partition = job.partition, "a transaction commit did not return within {COMMIT_DEADLINE:?}; abandoning the task's producer");
                    // Its transaction is aborted by the next owner's initialisation.
                    if let Some(task) = self.tasks.get_mut(&job.partition) {
                        task.txn_open = false;
                    }
                }
            }
        }
        for task in self.tasks.values_mut() {
            task.committing = false;
            task.deferred.clear();
            task.deferred_begin = false;
            if task.txn_open {
                task.txn_open = false;
                self.handles
                    .metrics
                    .transactions
                    .with_label_values(&["abort"])
                    .inc();
                let _ = task.producer.abort_transaction(KAFKA_TIMEOUT);
            }
        }
    }

    /// Drops uncommitted work (the assignment was lost).
    fn abort_all(&mut self) -> Result<()> {
        self.abort_open();
        bail!("consumer-group assignment lost; restarting from committed state")
    }

    fn revoke(&mut self, partitions: &BTreeSet<i32>, lost: bool) {
        for p in partitions {
            self.processor.close_partition(*p);
            self.inputs.revoke(*p);
            self.owned.remove(p);
            // The next owner initialises the task's transactional id.
            self.tasks.remove(p);
            if lost {
                self.trusted_at.remove(p);
            }
        }
        if !lost && self.failed.is_none() {
            // Our commit is the changelog's end now, unless another instance writes to it.
            let reader: Result<BaseConsumer<LogContext>> = reader_config(&self.settings, "restore")
                .create_with_context(LogContext)
                .map_err(Into::into);
            if let Ok(reader) = reader {
                for p in partitions {
                    if let Ok((_, hi)) = reader.fetch_watermarks(&self.changelog, *p, KAFKA_TIMEOUT)
                    {
                        self.trusted_at.insert(*p, hi);
                    }
                }
            }
        }
        self.handles.metrics.assigned.set(self.owned.len() as i64);
    }

    /// Takes newly assigned partitions over: initialises their tasks' transactional ids (which
    /// aborts what a previous owner left open), then restores the state that local RocksDB
    /// cannot vouch for.
    fn assign(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        self.handles.ready.store(false, Ordering::Release);
        if self.eos {
            self.start_tasks(partitions)?;
        }
        let reader: BaseConsumer<LogContext> =
            reader_config(&self.settings, "restore").create_with_context(LogContext)?;
        let committed = if self.eos {
            self.committed(&reader, partitions)?
        } else {
            HashMap::new()
        };
        let mut restore = Vec::new();
        for p in partitions {
            let (_, hi) = reader.fetch_watermarks(&self.changelog, *p, KAFKA_TIMEOUT)?;
            if self.trusted_at.get(p) != Some(&hi) {
                restore.push(*p);
            }
        }
        if !restore.is_empty() {
            let started = Instant::now();
            info!(partitions = ?restore, "restoring state from {}", self.changelog);
            let records = self.restore(&reader, &restore, &committed)?;
            let m = &self.handles.metrics;
            m.restore_records.inc_by(records);
            m.restore_seconds.set(started.elapsed().as_secs_f64());
            info!(
                records,
                seconds = started.elapsed().as_secs_f64(),
                "state restored"
            );
        }
        for p in partitions {
            self.owned.insert(*p);
            self.inputs.assign(*p);
            self.trusted_at.remove(p);
            let head = self.processor.store().meta(*p)?.and_then(|m| m.segment);
            if let Some(task) = self.tasks.get_mut(p) {
                task.head = head;
                task.positions = committed
                    .get(p)
                    .map(|c| c.positions.clone())
                    .unwrap_or_default();
            }
        }
        self.handles.metrics.assigned.set(self.owned.len() as i64);
        self.handles.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The consumer group's committed input offsets of the partitions (the log start where
    /// nothing is committed yet) and the changelog segment they were committed with.
    fn committed(
        &self,
        reader: &BaseConsumer<LogContext>,
        partitions: &BTreeSet<i32>,
    ) -> Result<HashMap<i32, Committed>> {
        let mut c = base_config(&self.settings);
        c.set("group.id", &self.settings.application_id)
            .set("enable.auto.commit", "false");
        let group: BaseConsumer<LogContext> = c.create_with_context(LogContext)?;
        let t = &self.settings.topics;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            for topic in [&t.clicks, &t.conversions] {
                tpl.add_partition(topic, *p);
            }
            // Only exactly_once commits an offset on the changelog (one left over from a run
            // under exactly_once must not cut an at_least_once restore short).
            if self.eos {
                tpl.add_partition(&self.changelog, *p);
            }
        }
        let got = group
            .committed_offsets(tpl, KAFKA_TIMEOUT)
            .context("cannot read the committed offsets")?;
        let mut out: HashMap<i32, Committed> = HashMap::new();
        for e in got.elements() {
            let p = e.partition();
            if e.topic() == self.changelog {
                if let Offset::Offset(o) = e.offset() {
                    out.entry(p).or_default().changelog_end = Some(o);
                }
                continue;
            }
            let next = match e.offset() {
                Offset::Offset(o) => o,
                _ => reader.fetch_watermarks(e.topic(), p, KAFKA_TIMEOUT)?.0,
            };
            let entry = out.entry(p).or_default();
            entry.positions.push((e.topic().to_string(), next));
            if let Some(id) = SegmentId::parse(e.metadata()) {
                entry.segment = Some(id);
            }
        }
        Ok(out)
    }

    /// Creates and initialises the transactional producers of the partitions' tasks, in
    /// parallel (each initialisation is a round trip to the transaction coordinator).
    fn start_tasks(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        let new: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        let settings = &self.settings;
        let errors = &self.delivery_errors;
        let started = per_partition(new.iter().map(|&p| (p, ())).collect(), |p, ()| {
            start_task(settings, p, errors.clone())
        });
        for (p, r) in started {
            let producer = r?;
            self.tasks.insert(
                p,
                Task {
                    producer: Arc::new(producer),
                    txn_open: false,
                    committing: false,
                    deferred_begin: false,
                    deferred: Vec::new(),
                    token: rand::random(),
                    seq: 0,
                    head: None,
                    positions: Vec::new(),
                },
            );
        }
        Ok(())
    }
}

/// One task's commit: waits until its records are acknowledged, adds the input offsets and
/// the changelog end to the transaction, and commits it.
fn commit_task(
    s: &Settings,
    changelog: &str,
    p: i32,
    producer: &ThreadedProducer<ProducerCtx>,
    mut tpl: TopicPartitionList,
    gm: &ConsumerGroupMetadata,
) -> Result<()> {
    // The segment's `End` acknowledged, its offset is known: the group's offset on the
    // changelog partition, committed with the inputs' offsets, says where the committed
    // changelog ends (nisshi 0.7.0 returns no offset metadata).
    flush(producer, KAFKA_TIMEOUT).context("cannot flush the transaction's records")?;
    let end = changelog_end(s, changelog, p, producer.context())?;
    if end >= 0 {
        tpl.add_partition_offset(changelog, p, Offset::Offset(end + 1))?;
    }
    if tpl.count() > 0 {
        producer
            .send_offsets_to_transaction(&tpl, gm, KAFKA_TIMEOUT)
            .context("cannot add offsets to the transaction")?;
    }
    producer
        .commit_transaction(KAFKA_TIMEOUT)
        .context("transaction commit failed")
}

/// Runs `f` for every partition's item on its own scoped thread (Kafka round trips that can
/// overlap); results in the items' order.
fn per_partition<T: Send, R: Send>(
    items: Vec<(i32, T)>,
    f: impl Fn(i32, T) -> Result<R> + Sync,
) -> Vec<(i32, Result<R>)> {
    let f = &f;
    std::thread::scope(|s| {
        let running: Vec<_> = items
            .into_iter()
            .map(|(p, item)| (p, s.spawn(move || f(p, item))))
            .collect();
        running
            .into_iter()
            .map(|(p, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("partition {p}: worker thread panicked")));
                (p, r)
            })
            .collect()
    })
}

fn not_assigned(partition: i32) -> anyhow::Error {
    anyhow!("partition {partition} is not assigned to this instance")
}

/// A task's transactional producer, initialised: a previous owner is fenced from here on.
fn start_task(
    s: &Settings,
    partition: i32,
    delivery_errors: Arc<AtomicU64>,
) -> Result<ThreadedProducer<ProducerCtx>> {
    let id = task_transactional_id(s, partition);
    let producer: ThreadedProducer<ProducerCtx> = producer_config(s, Some(&id))
        .create_with_context(ProducerCtx::new(
            delivery_errors,
            Some(s.changelog_topic().into()),
        ))?;
    producer
        .init_transactions(KAFKA_TIMEOUT)
        .with_context(|| format!("cannot initialise transactions for {id}"))?;
    debug!(transactional_id = %id, "task started");
    Ok(producer)
}

impl Worker {
    /// Rebuilds the local state of `partitions` from the changelog, keeping only committed
    /// segments (see [`crate::state::changelog`]); returns the records read.
    fn restore(
        &mut self,
        reader: &BaseConsumer<LogContext>,
        partitions: &[i32],
        committed: &HashMap<i32, Committed>,
    ) -> Result<u64> {
        let mut records = 0u64;
        for p in partitions {
            self.processor.store_mut().drop_partition(*p)?;
        }
        let mut restores: HashMap<i32, (crate::state::changelog::Restore, PartitionMeta)> = HashMap::new();
        let assignments: Vec<(String, i32)> = partitions
            .iter()
            .map(|p| (self.changelog.clone(), *p))
            .collect();
        let store = self.processor.store_mut();
        let (shutdown, heartbeat) = (
            self.handles.shutdown.clone(),
            self.handles.heartbeat.clone(),
        );
        let ends: HashMap<i32, i64> = committed
            .iter()
            .filter_map(|(p, c)| Some((*p, c.changelog_end?)))
            .collect();
        read_to_end(reader, &assignments, (&shutdown, &heartbeat), |m| {
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() >= *end)
            {
                return Ok(());
            }
            records += 1;
            let (restore, meta) = restores.entry(m.partition()).or_default();
            let mut sink = Sink {
                store: &mut *store,
                partition: m.partition(),
                meta,
            };
            restore.record(m.key().unwrap_or_default(), m.payload(), &mut sink)
        })?;
        for (p, (restore, mut meta)) in restores {
            let mut sink = Sink {
                store: &mut *store,
                partition: p,
                meta: &mut meta,
            };
            // Read up to the committed end, the last segment read is the committed one.
            let last = committed
                .get(&p)
                .filter(|c| c.changelog_end.is_none())
                .and_then(|c| c.segment);
            let (_, dropped) = restore.finish(last, &mut sink)?;
            // Metadata alone (no journey written after it) still has to reach the store.
            sink.apply(&[], None)?;
            if dropped > 0 {
                warn!(
                    partition = p,
                    segments = dropped,
                    "changelog segments of aborted or unfinished transactions skipped"
                );
            }
        }
        Ok(records)
    }
}

/// Input positions of one partition as committed by the consumer group.
#[derive(Default)]
struct Committed {
    positions: Vec<(String, i64)>,
    segment: Option<SegmentId>,
    /// Where the committed changelog of the partition ends (exclusive), when known: records
    /// from there on belong to transactions that did not commit.
    changelog_end: Option<i64>,
}

/// Applies restored changelog records to one partition of the store.
struct Sink<'a> {
    store: &'a mut dyn JourneyStore,
    partition: i32,
    meta: &'a mut PartitionMeta,
}

impl RestoreSink for Sink<'_> {
    fn apply(&mut self, writes: &[StateWrite], meta: Option<&PartitionMeta>) -> Result<()> {
        if let Some(m) = meta {
            *self.meta = m.clone();
        }
        self.store.write(self.partition, writes, self.meta)
    }
}

/// Clears the journeys API's handle on the store when dropped.
struct ReleaseStore(Arc<Mutex<Option<Arc<rocksdb::DB>>>>);

impl Drop for ReleaseStore {
    fn drop(&mut self) {
        *self.0.lock().expect("db lock") = None;
    }
}

/// Wakes the processing thread when a partition queue gets records.
#[derive(Default)]
struct Wake {
    pending: Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Wake {
    fn notify(&self) {
        *self.pending.lock().expect("wake lock") = true;
        self.cond.notify_one();
    }

    /// Waits up to `timeout` for a notification since the last wait.
    fn wait(&self, timeout: Duration) {
        let guard = self.pending.lock().expect("wake lock");
        let (mut guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |pending| !*pending)
            .expect("wake lock");
        *guard = false;
    }
}

/// One input partition's own queue.
struct InputQueue {
    stream: usize,
    partition: i32,
    queue: rdkafka::consumer::base_consumer::PartitionQueue<ConsumerCtx>,
    /// A fetch error of this partition was logged (logged once until it reads again).
    error_logged: bool,
}

impl Worker {
    /// After a fetch problem, no input partition counts as read to its end until librdkafka
    /// says so again (after its next record): a task whose clicks partition had reached its end
    /// before its leader died would otherwise process conversions ahead of clicks still on the
    /// way. Such a task waits for the partition, at most `max_task_idle_ms`. (Seeking the
    /// partitions to make librdkafka report their ends sooner was tried: a seek while the
    /// leader is away could leave a partition without fetches.)
    fn forget_ends(&mut self) {
        let forgotten = self.inputs.forget_ends();
        if !forgotten.is_empty() {
            debug!(
                partitions = forgotten.len(),
                "connection trouble: input ends forgotten until reported again"
            );
        }
    }

    /// Moves what the partition queues hold into the tasks' buffers (a bounded number per
    /// queue and call); returns the records read.
    fn read_queues(
        &mut self,
        queues: &mut [InputQueue],
        consumer: &BaseConsumer<ConsumerCtx>,
    ) -> usize {
        let now = (Instant::now(), now_ms());
        let mut read = 0;
        for q in queues.iter_mut() {
            for _ in 0..1000 {
                match q.queue.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        self.buffer(q.stream, &m, now, consumer);
                        q.error_logged = false;
                        read += 1;
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => {
                        self.inputs.end_of_partition(q.stream, q.partition);
                    }
                    Some(Err(e)) => {
                        let topic = self.stream_names[q.stream].clone();
                        self.handles
                            .metrics
                            .input_errors
                            .with_label_values(&[&*topic])
                            .inc();
                        if !q.error_logged {
                            q.error_logged = true;
                            error!(
                                topic = &*topic,
                                partition = q.partition,
                                "cannot read input partition (its task waits for it): {e}"
                            );
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
        read
    }
}

/// A consumed Kafka record as the processor's input.
fn in_record<'a>(m: &'a BorrowedMessage<'_>, topic: InputTopic) -> InRecord<'a> {
    InRecord {
        topic,
        source_topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        value: m.payload(),
    }
}

/// Clean-shutdown marker: per partition, the changelog end offset matching local state.
fn marker_path(s: &Settings) -> PathBuf {
    s.state_dir.join("clean-shutdown.json")
}

fn take_marker(s: &Settings) -> HashMap<i32, i64> {
    let path = marker_path(s);
    let marks = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    marks
}

/// One run of the pipeline, until shutdown (Ok) or an error.
pub fn run_pipeline(settings: &Settings, h: &Handles) -> Result<()> {
    let eos = settings.processing_guarantee == Guarantee::ExactlyOnce;
    let t = &settings.topics;
    info!(brokers = %settings.brokers, guarantee = ?settings.processing_guarantee, "starting attrib pipeline");

    // Tables first: read whole before any event is processed.
    let tables: BaseConsumer<LogContext> =
        reader_config(settings, &format!("tables-{}", settings.instance_id()))
            .create_with_context(LogContext)?;
    wait_for_cluster(settings, &tables, &h.shutdown, &h.heartbeat)?;
    let clicks_partitions = partition_count(&tables, &t.clicks)?;
    let conv_partitions = partition_count(&tables, &t.conversions)?;
    if clicks_partitions != conv_partitions {
        bail!(
            "topics `{}` ({clicks_partitions} partitions) and `{}` ({conv_partitions}) must have the same number of partitions",
            t.clicks,
            t.conversions
        );
    }
    ensure_changelog(settings, &tables, clicks_partitions)?;

    let state_dir = settings.state_dir.join(&settings.application_id);
    let trusted_at = take_marker(settings);
    let store = RocksStore::open(&state_dir)?;
    *h.db.lock().expect("db lock") = Some(store.shared());
    // Whatever ends this run (an error during start-up included), the journeys API lets go
    // of the store, so that the next run can open it.
    let _release = ReleaseStore(h.db.clone());
    let delivery_errors = Arc::new(AtomicU64::new(0));
    // Under exactly_once the producers are per task, created when partitions are assigned.
    let shared = if eos {
        None
    } else {
        Some(
            producer_config(settings, None)
                .create_with_context(ProducerCtx::new(delivery_errors.clone(), None))?,
        )
    };
    let wake = Arc::new(Wake::default());
    let worker = Arc::new(Mutex::new(Worker {
        settings: settings.clone(),
        processor: Processor::new(
            Box::new(store),
            settings.engine_settings(),
            settings.limits.clone(),
        )
        // Avro input is recognised per record whatever the output format; JSON is unaffected.
        .with_avro(Arc::new(crate::formats::avro::AvroInput::from_settings(settings)?)),
        shared,
        tasks: BTreeMap::new(),
        delivery_errors,
        eos,
        offsets: HashMap::new(),
        outputs: Vec::new(),
        scratch: Vec::new(),
        processed: 0,
        batch_started: Instant::now(),
        owned: BTreeSet::new(),
        trusted_at,
        table_rejects: Vec::new(),
        handles: h.clone(),
        failed: None,
        changelog: settings.changelog_topic(),
        last_usage: Instant::now() - Duration::from_secs(60),
        last_sweep: Instant::now(),
        next_sweep: 0,
        avro_out: crate::formats::avro::AvroOutput::from_settings(settings)?,
        formats: crate::formats::codec::TopicFormats::from_settings(settings),
        out_partitions: OutPartitions::read(settings, &tables, clicks_partitions),
        in_flight: None,
        inputs: TaskInputs::new(settings.order_settings()),
        scratch_partitions: Vec::new(),
        stream_names: [t.clicks.as_str().into(), t.conversions.as_str().into()],
        wake: wake.clone(),
        enforced_logged: None,
    }));

    let mut table_parts = Vec::new();
    for topic in [&t.config, &t.promo_codes] {
        for p in 0..partition_count(&tables, topic)? {
            table_parts.push((topic.clone(), p as i32));
        }
    }
    let load_started = Instant::now();
    {
        let mut w = worker.lock().expect("worker lock");
        let mut read = 0u64;
        read_to_end(&tables, &table_parts, (&h.shutdown, &h.heartbeat), |m| {
            read += 1;
            w.apply_table(m);
            Ok(())
        })?;
        info!(
            records = read,
            refused = w.table_rejects.len(),
            partitions = table_parts.len(),
            seconds = load_started.elapsed().as_secs_f64(),
            "tables loaded"
        );
        h.metrics
            .record_stats(&std::mem::take(&mut w.processor.stats));
    }
    // The table consumer stays assigned and keeps following the tables.
    h.ready.store(true, Ordering::Release);

    let consumer: Arc<BaseConsumer<ConsumerCtx>> =
        Arc::new(consumer_config(settings).create_with_context(ConsumerCtx {
            worker: worker.clone(),
            metrics: h.metrics.clone(),
        })?);
    // Every input partition gets a queue of its own, so that a task reads its partitions
    // separately and knows which one has reached its end (librdkafka keeps the split across
    // assignments). Records that reach the consumer's queue anyway are buffered the same way.
    // Series that start at zero, so that rates and alerts see them before the first error.
    for topic in [&t.clicks, &t.conversions] {
        h.metrics.input_errors.with_label_values(&[topic.as_str()]);
    }
    let mut queues = Vec::with_capacity(clicks_partitions * STREAMS);
    for p in 0..clicks_partitions as i32 {
        for (stream, topic) in [&t.clicks, &t.conversions].into_iter().enumerate() {
            let mut q = consumer
                .split_partition_queue(topic, p)
                .ok_or_else(|| anyhow!("cannot make a queue for {topic} [{p}]"))?;
            let w = wake.clone();
            q.set_nonempty_callback(move || w.notify());
            queues.push(InputQueue {
                stream,
                partition: p,
                queue: q,
                error_logged: false,
            });
        }
    }
    consumer.subscribe(&[&t.clicks, &t.conversions])?;
    let interval = Duration::from_millis(settings.commit_interval_ms);
    let mut last_commit = Instant::now();
    let mut last_tables = Instant::now() - Duration::from_secs(1);
    let mut was_unreadable = false;
    let result = (|| -> Result<()> {
        loop {
            h.heartbeat.beat();
            if h.shutdown.load(Ordering::Acquire) {
                break;
            }
            // Table updates first (checked every few milliseconds, not per record), so that
            // events see the newest config.
            if last_tables.elapsed() >= Duration::from_millis(5) {
                last_tables = Instant::now();
                loop {
                    match tables.poll(Duration::ZERO) {
                        Some(Ok(m)) => worker.lock().expect("worker lock").apply_table(&m),
                        Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => warn!("table consumer: {e}"),
                        None => break,
                    }
                }
            }
            // Rebalances and errors (and records fetched before their queue was split).
            let mut read = 0usize;
            let mut fetch_trouble = false;
            while let Some(msg) = consumer.poll(Duration::ZERO) {
                let mut w = worker.lock().expect("worker lock");
                match msg {
                    Ok(m) => {
                        let stream = usize::from(m.topic() != t.clicks);
                        w.buffer(stream, &m, (Instant::now(), now_ms()), &consumer);
                        read += 1;
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        debug!(partition = p, "end of partition on the consumer's queue");
                    }
                    Err(e) => {
                        // Connection trouble (a broker gone, say): the partitions it led
                        // may have stalled, whatever they said about their ends before.
                        fetch_trouble = true;
                        debug!("consumer: {e}");
                    }
                }
            }
            let mut w = worker.lock().expect("worker lock");
            if let Some(e) = w.failed.take() {
                return Err(e);
            }
            if fetch_trouble {
                w.forget_ends();
            }
            read += w.read_queues(&mut queues, &consumer);
            // An input partition that cannot be read makes the instance not ready (its task
            // waits for it) until it reads again.
            let unreadable = queues.iter().any(|q| q.error_logged);
            if unreadable {
                h.ready.store(false, Ordering::Release);
            } else if was_unreadable {
                h.ready.store(true, Ordering::Release);
            }
            was_unreadable = unreadable;
            let processed_before = w.processed;
            let due = w.process_ready(&consumer)?;
            let progressed = read > 0 || w.processed > processed_before;
            if last_commit.elapsed() >= interval || w.processed >= settings.max_batch_records {
                w.commit(&consumer)?;
                last_commit = Instant::now();
            } else if w.in_flight_ended() {
                // The background commit has ended: the work that waited for it goes out now.
                w.finish_in_flight()?;
            }
            drop(w);
            if !progressed {
                // Nothing to do: sleep until input arrives, a waiting task may go on, the
                // next commit is due, or (at most) 50 ms for rebalances and the tables.
                let mut wait = interval
                    .saturating_sub(last_commit.elapsed())
                    .min(Duration::from_millis(50));
                if let Some(due) = due {
                    wait = wait.min(due.saturating_duration_since(Instant::now()));
                }
                wake.wait(wait);
            }
        }
        let mut w = worker.lock().expect("worker lock");
        w.commit_and_wait(&consumer)?;
        w.processor.store().persist()?;
        // Record where local state equals the changelog, so the next start can skip restores.
        let mut marks = HashMap::new();
        for p in w.owned.clone() {
            if let Ok((_, hi)) = tables.fetch_watermarks(&w.changelog, p, KAFKA_TIMEOUT) {
                marks.insert(p, hi);
            }
        }
        std::fs::write(marker_path(settings), serde_json::to_vec(&marks)?)?;
        info!("clean shutdown; state marked reusable");
        Ok(())
    })();
    if result.is_err() {
        worker.lock().expect("worker lock").abort_open();
    }
    // The queues hold the consumer; it closes (leaving the group) once they are gone.
    drop(queues);
    drop(consumer);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_that_ends_in_time_is_joined_with_its_result() {
        let h = std::thread::spawn(|| -> Result<u8> { Ok(7) });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(matches!(join_by(h, deadline), Joined::Done(Ok(7))));
        let h = std::thread::spawn(|| -> Result<u8> { bail!("refused") });
        assert!(matches!(join_by(h, deadline), Joined::Done(Err(_))));
    }

    #[test]
    fn a_commit_that_does_not_end_by_the_deadline_is_abandoned() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Blocks until the test ends, like a Kafka call that never returns.
        let h = std::thread::spawn(move || -> Result<()> {
            let _ = rx.recv();
            Ok(())
        });
        let r = join_by(h, Instant::now() + Duration::from_millis(50));
        assert!(matches!(r, Joined::Stuck));
        drop(tx);
    }
}
