//! Producing outputs, changelog records and markers into a task's transaction.

use super::{admin::*, clients::*, task::*, worker::*};
use crate::formats::codec::{Encoded, OutputTopic};
use crate::model::output::OutRecord;
use crate::ops::settings::Settings;
use crate::stage::attribution::Forward;
use crate::state::changelog::Marker;
use crate::state::store::{META_CHANGELOG_KEY, StateWrite};
use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::warn;

/// Where a task's outputs go: task `p` writes to partition `p mod n` of each output topic,
/// so with as many output as input partitions every output partition has one writer (one
/// open transaction at a time) and a journey's outputs stay in order in one partition.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct OutPartitions {
    pub(super) actions: Option<i32>,
    pub(super) invalid_actions: Option<i32>,
    pub(super) dlq: Option<i32>,
    /// The customers' repartition topic's partitions (with identity stitching on).
    pub(super) customers: Option<i32>,
}

impl OutPartitions {
    pub(super) fn read(
        s: &Settings,
        md: &BaseConsumer<impl ConsumerContext>,
        inputs: usize,
    ) -> Self {
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
            // Created by attrib with the inputs' count (checked at start).
            customers: s.identity.stitching.then_some(inputs as i32),
        }
    }

    /// The partition of `topic` that task `task` writes the record keyed `key` to: the
    /// task's own for the output topics, the key's for the repartition topic.
    pub(super) fn of(&self, topic: OutputTopic, task: i32, key: Option<&[u8]>) -> Option<i32> {
        let n = match topic {
            OutputTopic::Actions => self.actions,
            OutputTopic::InvalidActions => self.invalid_actions,
            OutputTopic::Dlq => self.dlq,
            OutputTopic::Customers => {
                let n = self.customers?;
                return Some(key_partition(key.unwrap_or_default(), n));
            }
        }?;
        Some(task.rem_euclid(n.max(1)))
    }
}

/// The partition of `key` among `n`, as Kafka's default partitioner places a keyed record
/// (murmur2 of the key, made positive, modulo `n`), so that tools agree on where a customer's
/// records are.
pub(super) fn key_partition(key: &[u8], n: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % n.max(1) as u32) as i32
}

/// Kafka's `Utils.murmur2` (seed 0x9747b28c).
pub(super) fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Waits until every record sent is acknowledged (or failed). rdkafka's `flush` on a
/// `ThreadedProducer` sleeps in steps of 100 ms, because its background thread takes the
/// delivery events that `flush` polls for; this checks the queue every 200 µs instead.
pub(super) fn flush(producer: &ThreadedProducer<ProducerCtx>, timeout: Duration) -> Result<()> {
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
pub(super) fn changelog_end(
    s: &Settings,
    changelog: &str,
    partition: i32,
    ctx: &ProducerCtx,
) -> Result<i64> {
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
pub(super) fn send(
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
    pub(super) fn begin(&mut self, partition: i32) -> Result<()> {
        if let Delivery::AtLeastOnce(_) = self.delivery {
            return Ok(());
        }
        let task = self
            .tasks
            .get_mut(&partition)
            .ok_or_else(|| not_assigned(partition))?;
        match &mut task.txn {
            Txn::Open => {}
            Txn::Committing { waiting } => {
                waiting.get_or_insert_with(|| std::mem::take(&mut task.spare));
            }
            Txn::Idle => {
                task.producer
                    .begin_transaction()
                    .context("cannot begin transaction")?;
                task.txn = Txn::Open;
            }
        }
        Ok(())
    }

    /// The producer for work of `partition` (call [`Worker::begin`] first).
    pub(super) fn producer(&self, partition: i32) -> Result<&ThreadedProducer<ProducerCtx>> {
        match &self.delivery {
            Delivery::AtLeastOnce(p) => Ok(p),
            Delivery::ExactlyOnce => self
                .tasks
                .get(&partition)
                .map(|t| &*t.producer)
                .ok_or_else(|| not_assigned(partition)),
        }
    }

    pub(super) fn send_output(&mut self, partition: i32, o: &OutRecord) -> Result<()> {
        let Encoded {
            topic,
            key,
            value,
            headers,
        } = crate::formats::codec::encode(o, self.formats, self.avro_out.as_ref())?;
        let e = Encoded {
            topic,
            key,
            value,
            headers,
        };
        self.send_encoded_or_defer(partition, e)
    }

    /// Sends in `partition`'s transaction, or keeps for the next one while the previous
    /// commits.
    fn send_encoded_or_defer(&mut self, partition: i32, e: Encoded) -> Result<()> {
        self.begin(partition)?;
        if let Some(Txn::Committing {
            waiting: Some(waiting),
        }) = self.tasks.get_mut(&partition).map(|t| &mut t.txn)
        {
            waiting.push(e);
            return Ok(());
        }
        self.send_encoded(
            partition,
            e.topic,
            e.key.as_deref(),
            e.value.as_deref(),
            &e.headers,
        )
    }

    pub(super) fn send_encoded(
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
            OutputTopic::Customers => &self.repartition,
        };
        send(
            self.producer(partition)?,
            name,
            self.out_partitions.of(topic, partition, key),
            key,
            value,
            headers,
        )
    }

    /// Forwards a record to the customer stage, in `partition`'s transaction.
    pub(super) fn send_forward(&mut self, partition: i32, f: &Forward) -> Result<()> {
        let e = Encoded {
            topic: OutputTopic::Customers,
            key: Some(f.customer.as_bytes().to_vec()),
            value: Some(f.payload.encode()),
            headers: Vec::new(),
        };
        self.send_encoded_or_defer(partition, e)
    }

    pub(super) fn send_changelog_writes(
        &mut self,
        partition: i32,
        writes: &[StateWrite],
    ) -> Result<()> {
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

    pub(super) fn send_marker(&mut self, partition: i32, marker: &Marker) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of Kafka's `Utils.murmur2` (its unit tests and the Java client's placements).
    #[test]
    fn murmur2_is_kafkas() {
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        for n in 1..8 {
            assert!((0..n).contains(&key_partition(b"cu-9", n)));
        }
    }
}
