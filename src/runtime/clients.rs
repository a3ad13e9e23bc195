//! Client contexts (logging, delivery reports, rebalances) and the configurations of every client.

use super::worker::*;
use crate::ops::metrics::Metrics;
use crate::ops::settings::{ClientKind, Settings};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

pub(super) const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn log_rdkafka(level: RDKafkaLogLevel, fac: &str, msg: &str) {
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
pub(super) fn warn_client_error(client: &str, error: &KafkaError, reason: &str) {
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
pub(super) fn is_end_of_partition(error: &KafkaError) -> bool {
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

pub(super) struct ProducerCtx {
    pub(super) delivery_errors: Arc<AtomicU64>,
    /// A task producer's changelog topic, whose delivered offsets it tracks.
    pub(super) changelog: Option<Arc<str>>,
    /// The highest changelog offset this producer has had acknowledged (`-1`: none).
    pub(super) changelog_end: AtomicI64,
    /// Changelog records acknowledged without an offset since the last look: librdkafka
    /// reports a retried send that the broker had already stored (`DUPLICATE_SEQUENCE_NUMBER`,
    /// e.g. across a broker restart) as delivered at offset -1, so `changelog_end` is stale.
    pub(super) changelog_unknown: AtomicU64,
}

impl ProducerCtx {
    pub(super) fn new(delivery_errors: Arc<AtomicU64>, changelog: Option<Arc<str>>) -> Self {
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

pub(super) struct ConsumerCtx {
    pub(super) worker: Arc<Mutex<Worker>>,
    pub(super) metrics: Arc<Metrics>,
    /// The first error of a rebalance handler: librdkafka's callbacks cannot return one, so
    /// the poll loop takes it after `poll` ([`ConsumerCtx::take_rebalance_error`]).
    pub(super) rebalance_error: Mutex<Option<anyhow::Error>>,
}

impl ConsumerCtx {
    pub(super) fn new(worker: Arc<Mutex<Worker>>, metrics: Arc<Metrics>) -> ConsumerCtx {
        ConsumerCtx {
            worker,
            metrics,
            rebalance_error: Mutex::new(None),
        }
    }

    /// The error a rebalance handler returned since the last call, if any.
    pub(super) fn take_rebalance_error(&self) -> Option<anyhow::Error> {
        self.rebalance_error
            .lock()
            .expect("rebalance error lock")
            .take()
    }

    fn keep_rebalance_error(&self, result: anyhow::Result<()>) {
        if let Err(e) = result {
            self.rebalance_error
                .lock()
                .expect("rebalance error lock")
                .get_or_insert(e);
        }
    }
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
    /// `attrib_consumer_lag_records`: per owned input partition, the end a `read_committed`
    /// consumer can reach (the last stable offset) minus the position attrib last committed.
    /// Under `exactly_once` the position is the one the task's last committed transaction
    /// stored (librdkafka's own `consumer_lag` only sees commits made through the consumer, so
    /// it never falls); under `at_least_once` it is librdkafka's figure. Partitions this
    /// instance no longer owns are dropped.
    fn stats(&self, s: Statistics) {
        // Called from the consumer's poll, which the processing thread makes without the
        // worker lock; if it is held anyway, this interval's figures are skipped.
        let Ok(w) = self.worker.try_lock() else {
            return;
        };
        let gauge = &self.metrics.consumer_lag;
        gauge.reset();
        for (topic, t) in &s.topics {
            for (p, part) in &t.partitions {
                if *p < 0 || !w.owned.contains(p) {
                    continue;
                }
                let Ok(stream) = w.stream_of(topic) else {
                    continue;
                };
                if let Some(lag) = partition_lag(&w, topic, *p, part) {
                    let role = super::topology::stream_role(stream);
                    gauge.with_label_values(&[role, &p.to_string()]).set(lag);
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let lost = consumer.assignment_lost();
            let result =
                self.worker
                    .lock()
                    .expect("worker lock")
                    .on_revoke(consumer, &partitions, lost);
            self.keep_rebalance_error(result);
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
            let result = self.worker.lock().expect("worker lock").assign(&partitions);
            self.keep_rebalance_error(result);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client configuration
// ---------------------------------------------------------------------------------------------

/// The options every client gets from attrib, before its kind's own.
fn common_config(s: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &s.brokers);
    c.set(
        "client.id",
        format!("{}-{}", s.application_id, s.instance_id()),
    );
    c
}

/// The user's options for `kind` (`[kafka]` and `[kafka.<kind>]`), over attrib's defaults.
fn user_options(c: &mut ClientConfig, s: &Settings, kind: ClientKind) {
    for (k, v) in s.kafka.for_client(kind) {
        c.set(k, v);
    }
}

/// An admin client's configuration.
pub(super) fn admin_config(s: &Settings) -> ClientConfig {
    let mut c = common_config(s);
    user_options(&mut c, s, ClientKind::Admin);
    c
}

pub(super) fn consumer_config(s: &Settings) -> ClientConfig {
    let mut c = group_reader_config(s);
    // Clicks and conversions of one key are co-partitioned: the range assignor hands the
    // same partition number of both topics to the same member.
    c.set("partition.assignment.strategy", "range")
        .set("auto.offset.reset", "earliest")
        // End-of-partition events tell a task that an empty partition is read to its end
        // (see `crate::runtime::input_order`).
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "5000");
    // Static membership (KIP-345) when the instance is named: a restarted instance takes its
    // partitions back at once instead of after the session timeout of its dead self.
    if let Some(id) = &s.instance_id {
        c.set("group.instance.id", format!("{}-{id}", s.application_id));
    }
    user_options(&mut c, s, ClientKind::Consumer);
    // Other instances find this one's journeys API through the group (see `directory`).
    if s.journeys_api.enabled {
        let id = c.get("client.id").unwrap_or_default().to_string();
        let url = super::directory::advertised_url(s);
        c.set("client.id", super::directory::client_id_with_url(&id, &url));
    }
    c
}

/// A consumer of the group that only reads its committed offsets (never subscribes).
pub(super) fn group_reader_config(s: &Settings) -> ClientConfig {
    let mut c = common_config(s);
    c.set("group.id", &s.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed");
    user_options(&mut c, s, ClientKind::Consumer);
    c
}

/// A consumer outside the group, for tables and restores.
pub(super) fn reader_config(s: &Settings, purpose: &str) -> ClientConfig {
    let mut c = common_config(s);
    c.set("group.id", format!("{}-{purpose}", s.application_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    user_options(&mut c, s, ClientKind::Consumer);
    c
}

/// A producer; with a transactional id for an `exactly_once` task.
pub(super) fn producer_config(s: &Settings, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = common_config(s);
    c.set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    if let Some(id) = transactional_id {
        // Per-task fencing never waits for this timeout (the next owner's init_transactions
        // aborts what the previous one left open); it bounds how long a transaction of a dead
        // instance whose task nobody re-initialises holds readers back. See
        // docs/exactly-once.md, "Per-task producers against one producer per instance".
        c.set("transactional.id", id)
            .set("transaction.timeout.ms", "60000");
    }
    // The user's settings win over the defaults above.
    user_options(&mut c, s, ClientKind::Producer);
    c
}

// ---------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------

/// The lag of one owned input partition (see [`ConsumerCtx::stats`]); `None` while unknown.
fn partition_lag(
    w: &Worker,
    topic: &str,
    partition: i32,
    part: &rdkafka::statistics::Partition,
) -> Option<i64> {
    if !w.eos() {
        return (part.consumer_lag >= 0).then_some(part.consumer_lag);
    }
    let committed = w
        .tasks
        .get(&partition)?
        .positions
        .iter()
        .find(|(t, _)| t == topic)
        .map(|(_, o)| *o)?;
    let end = if part.ls_offset >= 0 {
        part.ls_offset
    } else {
        part.hi_offset
    };
    (end >= 0 && committed >= 0).then(|| (end - committed).max(0))
}
