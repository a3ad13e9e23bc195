//! The processing thread's state, and how a batch of input records becomes outputs.

use super::topology::{CUSTOMERS, stream_input_topic};
use super::{admin::Purge, clients::*, emit::*, failpoint, handles::*, poll::*, task::*};
use crate::model::output::{DlqRecord, OutRecord};
use crate::model::records::InputTopic;
use crate::model::time::now_ms;
use crate::ops::settings::Settings;
use crate::runtime::input_order::{Flow, Next, TaskInputs};
use crate::stage::attribution::{Forward, ForwardPayload, InRecord, Processor};
use crate::state::store::StateWrite;
use anyhow::{Context, Result};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::ThreadedProducer;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The processing guarantee, with what each needs.
pub(super) enum Delivery {
    /// Outputs, state and offsets of a task commit in one transaction of the task's own
    /// producer ([`Worker::tasks`], created when partitions are assigned).
    ExactlyOnce,
    /// One idempotent producer for everything; offsets are committed once it is flushed.
    AtLeastOnce(ThreadedProducer<ProducerCtx>),
}

pub(super) struct Worker {
    pub(super) settings: Settings,
    pub(super) processor: Processor,
    /// How outputs are delivered: the processing guarantee and its producers.
    pub(super) delivery: Delivery,
    /// `exactly_once`: one transactional producer per owned partition (none otherwise).
    pub(super) tasks: BTreeMap<i32, Task>,
    pub(super) delivery_errors: Arc<AtomicU64>,
    /// Next offsets to commit, per (stream, partition).
    pub(super) offsets: HashMap<(usize, i32), i64>,
    /// Outputs of the current batch (for metrics at commit).
    pub(super) outputs: Vec<OutRecord>,
    pub(super) scratch: Vec<OutRecord>,
    pub(super) processed: usize,
    pub(super) batch_started: Instant,
    pub(super) owned: BTreeSet<i32>,
    /// Changelog end offsets at which local state was last known to equal the changelog.
    pub(super) trusted_at: HashMap<i32, i64>,
    /// Refused table records; reported to the DLQ by the owner of partition 0.
    pub(super) table_rejects: Vec<DlqRecord>,
    pub(super) handles: Handles,
    pub(super) changelog: String,
    /// The customers' repartition topic (used with identity stitching on).
    pub(super) repartition: String,
    /// Deletes committed repartition records.
    pub(super) purge: Purge,
    pub(super) last_usage: Instant,
    pub(super) last_sweep: Instant,
    pub(super) next_sweep: i32,
    pub(super) avro_out: Option<crate::formats::avro::AvroOutput>,
    pub(super) formats: crate::formats::codec::TopicFormats,
    /// Partition counts of the output topics (actions, invalid actions, DLQ), when known.
    pub(super) out_partitions: OutPartitions,
    /// The `exactly_once` commit running in the background, if any.
    pub(super) in_flight: Option<InFlight>,
    /// Each task's consumed records, handed out in timestamp order.
    pub(super) inputs: TaskInputs,
    /// The assigned partitions, reused by [`Worker::process_ready`].
    pub(super) scratch_partitions: Vec<i32>,
    /// The names of the task's input streams' topics, by stream
    /// ([`super::topology::stream_topics`]), shared with each record processed.
    pub(super) stream_names: Vec<Arc<str>>,
    /// Wakes the processing thread (records arrived, a background commit ended).
    pub(super) wake: Arc<Wake>,
    /// When enforced processing was last logged (at most every 30 s).
    pub(super) enforced_logged: Option<Instant>,
}

impl Worker {
    /// The stream of a consumed topic: every topic the consumer reads is one of the task's
    /// streams; anything else is refused, never taken for another topic.
    pub(super) fn stream_of(&self, topic: &str) -> Result<usize> {
        self.stream_names
            .iter()
            .position(|n| &**n == topic)
            .ok_or_else(|| anyhow::anyhow!("record of topic `{topic}`, which no task reads"))
    }

    /// Whether outputs, state and offsets commit in transactions (`exactly_once`).
    pub(super) fn eos(&self) -> bool {
        matches!(self.delivery, Delivery::ExactlyOnce)
    }

    pub(super) fn txn_open(&self) -> bool {
        self.tasks.values().any(Task::is_open)
    }

    /// Buffers a consumed record of `stream` (0 clicks, 1 conversions) for its task, pausing
    /// the partition when its buffer is full.
    pub(super) fn buffer(
        &mut self,
        stream: usize,
        m: &BorrowedMessage<'_>,
        now: (Instant, i64),
        consumer: &BaseConsumer<ConsumerCtx>,
    ) {
        // A Confluent-framed record's writer schema is fetched now, off this thread, so that
        // it is known (or on its way) when the record's turn comes.
        if let (Some(avro), Some(value)) = (&self.processor.avro, m.payload()) {
            avro.prefetch(value);
        }
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

    pub(super) fn flow(
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

    pub(super) fn stream_topic(&self, stream: usize) -> &str {
        &self.stream_names[stream]
    }

    /// Processes what the tasks' input order allows (at most up to the batch size); returns
    /// when a waiting task may go on at the latest.
    pub(super) fn process_ready(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
    ) -> Result<Option<Instant>> {
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
                    max_task_idle_ms = self.settings.max_task_idle.as_millis() as u64,
                    "a task waited in vain for one of its input partitions; processing ahead of it (attrib_enforced_processing_total)"
                );
            }
        }
        self.inputs = inputs;
        result
    }

    pub(super) fn process_inputs(
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
                        let source = self.stream_names[stream].clone();
                        let rec = InRecord {
                            topic: stream_input_topic(stream),
                            source_topic: &source,
                            partition: p,
                            offset: r.offset,
                            key: r.key,
                            value: r.value,
                        };
                        self.handle(stream, &rec)?;
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

    pub(super) fn handle(&mut self, stream: usize, rec: &InRecord<'_>) -> Result<()> {
        let partition = rec.partition;
        // Begins the task's transaction even when the record has no output: its offset is
        // committed in it.
        self.begin(partition)?;
        let mut out = std::mem::take(&mut self.scratch);
        if stream == CUSTOMERS {
            // The customer stage: a record the device stage forwarded, keyed by the customer.
            let payload = ForwardPayload::decode(rec.value.unwrap_or_default())
                .with_context(|| format!("{} [{partition}] at {}", rec.source_topic, rec.offset))?;
            let is_move = matches!(payload, ForwardPayload::Move(_));
            self.processor
                .process_forwarded(rec, payload, now_ms(), &mut out)?;
            if is_move && failpoint::armed("apply-move") {
                failpoint::crash("apply-move");
            }
        } else {
            self.processor.process(rec, now_ms(), &mut out)?;
            // The device stage's forwards, in order, through this task's producer.
            let forwards: Vec<Forward> = self.processor.take_forwards().collect();
            for f in forwards {
                self.send_forward(partition, &f)?;
                if matches!(f.payload, ForwardPayload::Move(_)) && failpoint::armed("forward-move")
                {
                    // On the broker, in the open transaction (not waiting for a commit).
                    self.finish_in_flight()?;
                    flush(self.producer(partition)?, KAFKA_TIMEOUT)?;
                    failpoint::crash("forward-move");
                }
            }
        }
        for o in out.drain(..) {
            self.send_output(partition, &o)?;
            self.outputs.push(o);
        }
        self.scratch = out;
        self.offsets.insert((stream, partition), rec.offset + 1);
        self.processed += 1;
        Ok(())
    }

    pub(super) fn apply_table(&mut self, m: &BorrowedMessage<'_>) {
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
    pub(super) fn report_table_rejects(&mut self) -> Result<()> {
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

    /// Metrics and batch bookkeeping once a batch is committed or handed to the background
    /// commit: what follows is the next batch.
    pub(super) fn after_commit(&mut self) {
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
    pub(super) fn sweep_one(&mut self) -> Result<Option<(i32, Vec<StateWrite>)>> {
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
}
