//! Exactly-once tasks: one transactional producer per input partition, and their background commits.

use super::topology::{StageId, TaskId};
use super::{clients::*, emit::*};
use crate::formats::codec::Encoded;
use crate::ops::settings::Settings;
use crate::state::changelog::{CommitMeta, SegmentId};
use anyhow::{Context, Result, anyhow};
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{Producer, ThreadedProducer};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tracing::debug;

/// Under `exactly_once`, each owned partition number (a *task*: that partition of clicks, of
/// conversions and of the changelog) has its own transactional producer with the stable id
/// `<application_id>-attribution_<partition>` (see [`super::topology`]). Whoever is assigned the task next initialises that id,
/// which fences the previous owner and aborts any transaction it left open — also when it died
/// and the broker never times transactions out. This is Kafka Streams' per-task model
/// (`exactly_once`, before `exactly_once_v2`); see docs/exactly-once.md.
pub(super) struct Task {
    pub(super) producer: Arc<ThreadedProducer<ProducerCtx>>,
    /// Where the task's producer is in its transactions.
    pub(super) txn: Txn,
    /// An empty buffer kept for the next [`Txn::Committing`] wait (its capacity is reused).
    pub(super) spare: Vec<Encoded>,
    /// Names this producer's changelog segments.
    pub(super) token: u64,
    pub(super) seq: u64,
    /// The last committed changelog segment of the partition.
    pub(super) head: Option<SegmentId>,
    /// Next offsets of the partition in each input topic, committed with every transaction.
    pub(super) positions: Vec<(String, i64)>,
}

/// A task's transaction state.
pub(super) enum Txn {
    /// No transaction open: the next work begins one.
    Idle,
    /// A transaction is open: outputs and changelog records go into it.
    Open,
    /// The previous transaction commits in the background (a producer has one transaction at
    /// a time). `Some` once work came in meanwhile: its outputs, sent when the next
    /// transaction begins, right after the commit.
    Committing { waiting: Option<Vec<Encoded>> },
}

impl Task {
    pub(super) fn new(producer: Arc<ThreadedProducer<ProducerCtx>>, token: u64) -> Task {
        Task {
            producer,
            txn: Txn::Idle,
            spare: Vec::new(),
            token,
            seq: 0,
            head: None,
            positions: Vec::new(),
        }
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.txn, Txn::Open)
    }

    /// Ends a background commit: the task is idle, and returns the work that waited, if any.
    pub(super) fn commit_ended(&mut self) -> Option<Vec<Encoded>> {
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Committing { waiting } => waiting,
            other => {
                self.txn = other;
                None
            }
        }
    }

    pub(super) fn next_segment(&self) -> SegmentId {
        SegmentId {
            token: self.token,
            seq: self.seq + 1,
        }
    }
}

pub(super) fn task_transactional_id(s: &Settings, partition: i32) -> String {
    TaskId::new(StageId::Attribution, partition).transactional_id(&s.application_id)
}

/// The tasks' commits of one batch, each on its own thread, while the processing thread goes
/// on with the next batch.
pub(super) struct InFlight {
    pub(super) started: Instant,
    pub(super) jobs: Vec<CommitJob>,
}

/// How long a background commit may take before it counts as stuck. Each of its Kafka calls
/// has [`KAFKA_TIMEOUT`], but librdkafka's `send_offsets_to_transaction` waits without one
/// (`RD_POLL_INFINITE`, trusting its request handlers to answer): during a broker failover
/// it was seen never to return.
pub(super) const COMMIT_DEADLINE: Duration = Duration::from_secs(90);

/// A background commit's end, or that it did not end in time.
pub(super) enum Joined<T> {
    Done(T),
    Stuck,
}

/// Joins `handle` if its thread ends by `deadline`; otherwise detaches it.
pub(super) fn join_by<T>(
    handle: std::thread::JoinHandle<Result<T>>,
    deadline: Instant,
) -> Joined<Result<T>> {
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

pub(super) struct CommitJob {
    pub(super) partition: i32,
    /// The input positions the transaction commits.
    pub(super) positions: Vec<(String, i64)>,
    pub(super) handle: std::thread::JoinHandle<Result<()>>,
}

/// One task's commit: waits until its records are acknowledged, adds the input offsets and
/// the changelog end to the transaction, and commits it.
pub(super) fn commit_task(
    s: &Settings,
    changelog: &str,
    p: i32,
    producer: &ThreadedProducer<ProducerCtx>,
    tpl: TopicPartitionList,
    gm: &ConsumerGroupMetadata,
) -> Result<()> {
    // The segment's `End` acknowledged, its offset is known: the input offsets' metadata,
    // committed with them, says where the committed changelog ends (no group offset on the
    // changelog itself: lag tools would list it as a topic the group consumes).
    flush(producer, KAFKA_TIMEOUT).context("cannot flush the transaction's records")?;
    let end = changelog_end(s, changelog, p, producer.context())?;
    if end >= 0 {
        for mut e in tpl.elements() {
            let segment = SegmentId::parse(e.metadata())
                .ok_or_else(|| anyhow::anyhow!("offset metadata without a segment id"))?;
            let meta = CommitMeta {
                segment,
                changelog_end: Some(end + 1),
            };
            e.set_metadata(meta.to_string());
        }
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
pub(super) fn per_partition<T: Send, R: Send>(
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

pub(super) fn not_assigned(partition: i32) -> anyhow::Error {
    anyhow!("partition {partition} is not assigned to this instance")
}

/// A task's transactional producer, initialised: a previous owner is fenced from here on.
pub(super) fn start_task(
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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

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
            match rx.recv() {
                Ok(()) | Err(_) => Ok(()),
            }
        });
        let r = join_by(h, Instant::now() + Duration::from_millis(50));
        assert!(matches!(r, Joined::Stuck));
        drop(tx);
    }
}
