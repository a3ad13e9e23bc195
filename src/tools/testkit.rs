//! Helpers for the integration tests and benchmarks: producing input, reading outputs back.
//!
//! [`produce`] writes generated records in order, each with a distinct, increasing timestamp
//! ([`next_timestamp`]); [`input_producer`] and [`send_records`] do the same with a producer of
//! the caller's and a choice of timestamps ([`Stamp`]), [`send_waiting`] sends one record
//! through a full queue; [`read_topics`] reads whole output
//! topics back (read_committed); [`wait_consumed`] waits until an in-process pipeline has
//! committed a number of records. The demo ([`crate::tools::demo`]) uses them too.

use crate::ops::settings::Settings;
use crate::runtime::{Handles, LogContext};
use crate::tools::workload::GenRecord;
use anyhow::{Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The next record timestamp of this process: the wall clock, but always above the previous
/// one, so that the timestamp order of everything [`produce`] writes is its production order
/// (attrib merges a task's partitions by timestamp, clicks first on ties).
pub fn next_timestamp() -> i64 {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = crate::model::time::now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let ts = now.max(last + 1);
        match LAST.compare_exchange_weak(last, ts, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return ts,
            Err(seen) => last = seen,
        }
    }
}

/// Writes generated records to their topics, in order, each with a distinct timestamp
/// ([`next_timestamp`]).
pub fn produce(brokers: &str, settings: &Settings, records: &[GenRecord]) -> Result<()> {
    send_records(
        &input_producer(brokers)?,
        settings,
        records,
        Stamp::Distinct,
    )
}

/// The timestamps [`send_records`] gives records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// [`next_timestamp`]: distinct and increasing, so that timestamp order is production order
    /// (faster than 1,000 records/s they run ahead of the clock).
    Distinct,
    /// The wall clock at the write (librdkafka's `CreateTime`), as most producers do.
    WallClock,
}

/// An idempotent producer for [`send_records`] (retries across a leader change must not write
/// a record twice).
pub fn input_producer(brokers: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Writes records in order, stamped as `stamp` says, and waits until they are all acknowledged.
pub fn send_records(
    producer: &ThreadedProducer<DefaultProducerContext>,
    settings: &Settings,
    records: &[GenRecord],
    stamp: Stamp,
) -> Result<()> {
    for r in records {
        let topic = topic_name(settings, r.topic);
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic);
        if stamp == Stamp::Distinct {
            rec = rec.timestamp(next_timestamp());
        }
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        send_waiting(producer, rec);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Sends `record`, waiting while librdkafka's queue is full.
pub fn send_waiting<K, P, C>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    C: rdkafka::producer::ProducerContext,
{
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

pub fn topic_name(s: &Settings, t: crate::model::records::InputTopic) -> &str {
    s.topics.input(t)
}

/// A record read back from an output topic.
#[derive(Debug, Clone)]
pub struct ReadBack {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Reads whole topics (read_committed).
pub fn read_topics(brokers: &str, topics: &[&str]) -> Result<Vec<ReadBack>> {
    let consumer: BaseConsumer<LogContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "attrib-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create_with_context(LogContext)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        for p in md.topics().iter().flat_map(|m| m.partitions()) {
            let (lo, hi) = consumer.fetch_watermarks(t, p.id(), Duration::from_secs(10))?;
            tpl.add_partition_offset(t, p.id(), Offset::Beginning)?;
            if hi > lo {
                ends.insert((t.to_string(), p.id()), hi);
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                if ends.get(&key).is_some_and(|hi| m.offset() + 1 >= *hi) {
                    ends.remove(&key);
                }
                let mut headers = BTreeMap::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        headers.insert(
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(ReadBack {
                    topic: m.topic().to_string(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
            _ => {
                let pos = consumer.position()?;
                ends.retain(|(t, p), hi| !matches!(pos.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *hi));
            }
        }
    }
    if !ends.is_empty() {
        let pos = consumer.position()?;
        let stuck: Vec<String> = ends
            .iter()
            .map(|((t, p), hi)| {
                let at = pos.find_partition(t, *p).map(|e| e.offset());
                format!("{t} [{p}] at {at:?} of {hi}")
            })
            .collect();
        bail!(
            "not read to the end within 60 s (read_committed): {}",
            stuck.join(", ")
        );
    }
    Ok(out)
}

/// Waits until the pipeline has committed `n` journey records (clicks, conversions, identify
/// records), and, with identity stitching on, the customer stage every record the device stage
/// forwarded (the metrics are updated when a batch commits, together with its outputs).
pub fn wait_consumed(h: &Handles, n: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = &h.metrics.consumed;
        let got: u64 = ["clicks", "conversions", "identities"]
            .iter()
            .map(|t| m.with_label_values(&[t]).get())
            .sum();
        let forwarded = h.metrics.forwarded.get();
        let applied = m.with_label_values(&["repartition"]).get();
        if got >= n && applied >= forwarded {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out: {got} of {n} records processed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
