//! The poll loop: input queues per partition, wake-ups, and the pipeline's run.

use super::{admin::*, clients::*, emit::*, handles::*, reader::*, worker::*};
use crate::model::records::InputTopic;
use crate::model::time::now_ms;
use crate::ops::settings::{Guarantee, Settings};
use crate::runtime::input_order::TaskInputs;
use crate::runtime::topology::{repartition_topic, stream_set, stream_topics};
use crate::stage::attribution::{InRecord, Processor, Stitching};
use crate::state::store::RocksStore;
use anyhow::{Result, anyhow};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Clears the journeys API's handle on the store when dropped.
pub(super) struct ReleaseStore(pub(super) Arc<Mutex<Option<Arc<rocksdb::DB>>>>);

impl Drop for ReleaseStore {
    fn drop(&mut self) {
        *self.0.lock().expect("db lock") = None;
    }
}

/// Wakes the processing thread when a partition queue gets records.
#[derive(Default)]
pub(super) struct Wake {
    pub(super) pending: Mutex<bool>,
    pub(super) cond: std::sync::Condvar,
}

impl Wake {
    pub(super) fn notify(&self) {
        *self.pending.lock().expect("wake lock") = true;
        self.cond.notify_one();
    }

    /// Waits up to `timeout` for a notification since the last wait.
    pub(super) fn wait(&self, timeout: Duration) {
        let guard = self.pending.lock().expect("wake lock");
        let (mut guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |pending| !*pending)
            .expect("wake lock");
        *guard = false;
    }
}

/// One input partition's own queue.
pub(super) struct InputQueue {
    pub(super) stream: usize,
    pub(super) partition: i32,
    pub(super) queue: rdkafka::consumer::base_consumer::PartitionQueue<ConsumerCtx>,
    /// A fetch error of this partition was logged (logged once until it reads again).
    pub(super) error_logged: bool,
}

/// One input of the poll loop, from any of its sources: the table consumer, the group
/// consumer (rebalances, errors, and records fetched before their partition's queue was
/// split off) and the input partitions' queues. [`Worker::on_input`] reacts to each.
pub(super) enum Input<'a> {
    /// A record of a table topic (config, promo codes).
    Table(BorrowedMessage<'a>),
    /// A record of an input stream.
    Record {
        stream: usize,
        message: BorrowedMessage<'a>,
    },
    /// An input partition's queue reached the partition's end.
    End { stream: usize, partition: i32 },
    /// An end reported on the group consumer's own queue (not tied to a task's stream).
    StrayEnd(i32),
    /// The group consumer reported trouble (a broker gone, say): the partitions it led may
    /// have stalled, whatever they said about their ends before.
    ConsumerError(KafkaError),
    /// An input partition's queue reported an error: its task waits for it.
    Unreadable {
        stream: usize,
        partition: i32,
        error: KafkaError,
        /// The first error since the partition last read (logged; later ones counted).
        first: bool,
    },
}

/// One turn of the poll loop: when it started, and what its inputs did.
pub(super) struct Turn {
    /// The arrival time of the records read from here on (monotonic, and wall clock in ms):
    /// see [`Turn::arriving`].
    pub(super) now: (Instant, i64),
    /// Input records read.
    pub(super) read: usize,
    /// The group consumer reported trouble.
    pub(super) fetch_trouble: bool,
}

impl Turn {
    fn start() -> Turn {
        Turn {
            now: (Instant::now(), now_ms()),
            read: 0,
            fetch_trouble: false,
        }
    }

    /// Records read from now on arrive now. Called after anything that may have blocked: the
    /// consumer's `poll` runs the rebalance handlers, and an assignment's restore can take
    /// seconds while librdkafka already fetches. Stamped with the turn's start, the records
    /// read right after would count as buffered for those seconds, and a conversion would go
    /// ahead of an empty clicks partition at its end without waiting `input_grace_ms` for a
    /// click produced just before it (see `input_order`).
    fn arriving(&mut self) {
        self.now = (Instant::now(), now_ms());
    }
}

/// A consumed Kafka record as the processor's input.
pub(super) fn in_record<'a>(m: &'a BorrowedMessage<'_>, topic: InputTopic) -> InRecord<'a> {
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
pub(super) fn marker_path(s: &Settings) -> PathBuf {
    s.state_dir.join("clean-shutdown.json")
}

pub(super) fn take_marker(s: &Settings) -> HashMap<i32, i64> {
    let path = marker_path(s);
    let marks = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %path.display(), "cannot remove the clean-shutdown marker: {e}");
        }
    }
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
    let clicks_partitions = check_copartitioned(settings, &tables)?;
    ensure_internal_topics(settings, &tables, clicks_partitions)?;
    let stream_names: Vec<Arc<str>> = stream_topics(settings)
        .iter()
        .map(|n| Arc::from(n.as_str()))
        .collect();

    let state_dir = settings.state_dir.join(&settings.application_id);
    let trusted_at = take_marker(settings);
    let store = RocksStore::open(&state_dir)?;
    *h.db.lock().expect("db lock") = Some(store.shared());
    // Whatever ends this run (an error during start-up included), the journeys API lets go
    // of the store, so that the next run can open it.
    let _release = ReleaseStore(h.db.clone());
    let delivery_errors = Arc::new(AtomicU64::new(0));
    // Under exactly_once the producers are per task, created when partitions are assigned.
    let delivery = if eos {
        Delivery::ExactlyOnce
    } else {
        Delivery::AtLeastOnce(
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
        // With stitching on, each task runs the device stage over its input partitions and
        // the customer stage over its repartition partition (docs/exactly-once.md).
        .with_stitching_mode(if settings.identity.stitching {
            Stitching::Forward
        } else {
            Stitching::Off
        })
        // Avro input is recognised per record whatever the output format; JSON is unaffected.
        .with_avro(Arc::new(crate::formats::avro::AvroInput::from_settings(
            settings,
        )?)),
        delivery,
        tasks: BTreeMap::new(),
        delivery_errors,
        offsets: HashMap::new(),
        outputs: Vec::new(),
        scratch: Vec::new(),
        processed: 0,
        batch_started: Instant::now(),
        owned: BTreeSet::new(),
        trusted_at,
        table_rejects: Vec::new(),
        handles: h.clone(),
        changelog: settings.changelog_topic(),
        repartition: repartition_topic(&settings.application_id),
        purge: Default::default(),
        last_usage: Instant::now() - Duration::from_secs(60),
        last_sweep: Instant::now(),
        next_sweep: 0,
        avro_out: crate::formats::avro::AvroOutput::from_settings(settings)?,
        formats: crate::formats::codec::TopicFormats::from_settings(settings),
        out_partitions: OutPartitions::read(settings, &tables, clicks_partitions),
        in_flight: None,
        inputs: TaskInputs::with_streams(settings.order_settings(), stream_set(settings)),
        scratch_partitions: Vec::new(),
        stream_names: stream_names.clone(),
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

    let consumer: Arc<BaseConsumer<ConsumerCtx>> = Arc::new(
        consumer_config(settings)
            .create_with_context(ConsumerCtx::new(worker.clone(), h.metrics.clone()))?,
    );
    // Every input partition gets a queue of its own, so that a task reads its partitions
    // separately and knows which one has reached its end (librdkafka keeps the split across
    // assignments). Records that reach the consumer's queue anyway are buffered the same way.
    // Series that start at zero, so that rates and alerts see them before the first error.
    for stream in 0..stream_names.len() {
        h.metrics
            .input_errors
            .with_label_values(&[crate::runtime::topology::stream_role(stream)]);
    }
    let mut queues = Vec::with_capacity(clicks_partitions * stream_names.len());
    for p in 0..clicks_partitions as i32 {
        for (stream, topic) in stream_names.iter().map(|n| &**n).enumerate() {
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
    let subscribed: Vec<&str> = stream_names.iter().map(|n| &**n).collect();
    consumer.subscribe(&subscribed)?;
    let interval = settings.commit_interval;
    let mut last_commit = Instant::now();
    let mut last_tables = Instant::now() - Duration::from_secs(1);
    let mut was_unreadable = false;
    let result = (|| -> Result<()> {
        loop {
            h.heartbeat.beat();
            if h.shutdown.requested() {
                break;
            }
            let mut turn = Turn::start();
            // Table updates first (checked every few milliseconds, not per record), so that
            // events see the newest config.
            if last_tables.elapsed() >= Duration::from_millis(5) {
                last_tables = Instant::now();
                loop {
                    match tables.poll(Duration::ZERO) {
                        Some(Ok(m)) => {
                            let mut w = worker.lock().expect("worker lock");
                            w.on_input(Input::Table(m), &consumer, &mut turn)?;
                        }
                        Some(Err(KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => warn!("table consumer: {e}"),
                        None => break,
                    }
                }
            }
            // Rebalances and errors (and records fetched before their queue was split). The
            // rebalance handlers run inside `poll` and lock the worker themselves.
            while let Some(msg) = consumer.poll(Duration::ZERO) {
                turn.arriving();
                let mut w = worker.lock().expect("worker lock");
                let input = match msg {
                    Ok(message) => Input::Record {
                        stream: w.stream_of(message.topic())?,
                        message,
                    },
                    Err(KafkaError::PartitionEOF(p)) => Input::StrayEnd(p),
                    Err(e) => Input::ConsumerError(e),
                };
                w.on_input(input, &consumer, &mut turn)?;
            }
            let mut w = worker.lock().expect("worker lock");
            if let Some(e) = consumer.context().take_rebalance_error() {
                return Err(e);
            }
            if turn.fetch_trouble {
                w.forget_ends();
            }
            turn.arriving();
            w.read_queues(&mut queues, &consumer, &mut turn)?;
            let read = turn.read;
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

impl Worker {
    /// After a fetch problem, no input partition counts as read to its end until librdkafka
    /// says so again (after its next record): a task whose clicks partition had reached its end
    /// before its leader died would otherwise process conversions ahead of clicks still on the
    /// way. Such a task waits for the partition, at most `max_task_idle_ms`. (Seeking the
    /// partitions to make librdkafka report their ends sooner was tried: a seek while the
    /// leader is away could leave a partition without fetches.)
    pub(super) fn forget_ends(&mut self) {
        let forgotten = self.inputs.forget_ends();
        if !forgotten.is_empty() {
            debug!(
                partitions = forgotten.len(),
                "connection trouble: input ends forgotten until reported again"
            );
        }
    }

    /// Hands what the partition queues hold to [`Worker::on_input`] (a bounded number per
    /// queue and call).
    pub(super) fn read_queues(
        &mut self,
        queues: &mut [InputQueue],
        consumer: &BaseConsumer<ConsumerCtx>,
        turn: &mut Turn,
    ) -> Result<()> {
        for q in queues.iter_mut() {
            for _ in 0..1000 {
                let input = match q.queue.poll(Duration::ZERO) {
                    Some(Ok(message)) => {
                        q.error_logged = false;
                        Input::Record {
                            stream: q.stream,
                            message,
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => Input::End {
                        stream: q.stream,
                        partition: q.partition,
                    },
                    Some(Err(error)) => {
                        let first = !q.error_logged;
                        q.error_logged = true;
                        self.on_input(
                            Input::Unreadable {
                                stream: q.stream,
                                partition: q.partition,
                                error,
                                first,
                            },
                            consumer,
                            turn,
                        )?;
                        break;
                    }
                    None => break,
                };
                self.on_input(input, consumer, turn)?;
            }
        }
        Ok(())
    }

    /// Reacts to one input of the poll loop.
    pub(super) fn on_input(
        &mut self,
        input: Input<'_>,
        consumer: &BaseConsumer<ConsumerCtx>,
        turn: &mut Turn,
    ) -> Result<()> {
        match input {
            Input::Table(m) => self.apply_table(&m),
            Input::Record { stream, message } => {
                self.buffer(stream, &message, turn.now, consumer);
                turn.read += 1;
            }
            Input::End { stream, partition } => self.inputs.end_of_partition(stream, partition),
            Input::StrayEnd(p) => {
                debug!(partition = p, "end of partition on the consumer's queue");
            }
            Input::ConsumerError(e) => {
                turn.fetch_trouble = true;
                debug!("consumer: {e}");
            }
            Input::Unreadable {
                stream,
                partition,
                error,
                first,
            } => {
                let role = crate::runtime::topology::stream_role(stream);
                self.handles
                    .metrics
                    .input_errors
                    .with_label_values(&[role])
                    .inc();
                if first {
                    error!(
                        topic = &*self.stream_names[stream],
                        partition, "cannot read input partition (its task waits for it): {error}"
                    );
                }
            }
        }
        Ok(())
    }
}
