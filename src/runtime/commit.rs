//! Committing a batch: transactions per task under `exactly_once`, offsets under `at_least_once`.

use super::{clients::*, emit::*, task::*, worker::*};
use crate::ops::metrics::Metrics;
use crate::state::changelog::Marker;
use crate::state::store::StateWrite;
use anyhow::{Context, Result, anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::{error, info_span, warn};

impl Worker {
    /// Commits outputs, state and offsets together: one transaction per task with work. Under
    /// `exactly_once` the tasks' commits run in the background while processing goes on (see
    /// [`InFlight`]); the previous batch's commit is finished first.
    pub(super) fn commit(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<()> {
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
        if self.eos() {
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
    pub(super) fn commit_and_wait(&mut self, consumer: &BaseConsumer<ConsumerCtx>) -> Result<()> {
        self.commit(consumer)?;
        self.finish_in_flight()
    }

    /// Per task with work: a changelog segment (`Begin`, journeys, `End` with the metadata),
    /// the input offsets named after the segment, and the commit, which runs on a thread of
    /// its own (flush, offsets, `EndTxn`: round trips) while this thread goes on. Local RocksDB
    /// gets the batch's journeys now, as the next batch reads them; should a commit fail, the
    /// pipeline restarts and every partition is restored from the changelog (a restart never
    /// trusts local state: the clean-shutdown marker is read once per process).
    pub(super) fn commit_tasks(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        sweep: Option<(i32, Vec<StateWrite>)>,
    ) -> Result<()> {
        let open: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.is_open())
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
            if !task.is_open() {
                continue;
            }
            let id = task.next_segment();
            let mut tpl = TopicPartitionList::new();
            let mut positions = Vec::new();
            for (topic, position) in &task.positions {
                let stream = self.stream_of(topic)?;
                let next = self.offsets.get(&(stream, p)).copied().unwrap_or(*position);
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
            task.txn = Txn::Committing { waiting: None };
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
    pub(super) fn in_flight_ended(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.jobs.iter().all(|j| j.handle.is_finished()))
    }

    /// Waits for the background commit; on success the tasks go on with the work that waited
    /// for it. A failed commit aborts its transaction and fails the pipeline (which restarts
    /// from the committed state; other tasks may have committed).
    pub(super) fn finish_in_flight(&mut self) -> Result<()> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let m = self.handles.metrics.clone();
        let mut first_error = None;
        let mut waited = Vec::new();
        let deadline = f.started + COMMIT_DEADLINE;
        for job in f.jobs {
            let outcome = join_by(job.handle, deadline);
            let Some(task) = self.tasks.get_mut(&job.partition) else {
                continue;
            };
            let waiting = task.commit_ended();
            match outcome {
                Joined::Done(Ok(())) => {
                    if let Some(w) = waiting {
                        waited.push((job.partition, w));
                    }
                    m.transactions.with_label_values(&["commit"]).inc();
                    task.head = Some(task.next_segment());
                    task.seq += 1;
                    if let Some((_, o)) = job.positions.iter().find(|(t, _)| *t == self.repartition)
                    {
                        self.purge.committed(job.partition, *o);
                    }
                    task.positions = job.positions;
                }
                Joined::Stuck => {
                    // The producer is left to its thread (it cannot be used or destroyed
                    // while a call of its is running); the restart's new producer with the
                    // task's transactional id fences it and aborts its transaction.
                    m.transactions.with_label_values(&["abort"]).inc();
                    report_stuck(&m, job.partition);
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
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.commit_done(f.started);
        // Work that came in meanwhile: its transaction begins now.
        for (p, mut waiting) in waited {
            self.begin(p)?;
            for e in &waiting {
                self.send_encoded(p, e.topic, e.key.as_deref(), e.value.as_deref(), &e.headers)?;
            }
            // The buffer keeps its capacity for the next commit.
            waiting.clear();
            if let Some(task) = self.tasks.get_mut(&p) {
                task.spare = waiting;
            }
        }
        Ok(())
    }

    pub(super) fn commit_at_least_once(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
    ) -> Result<()> {
        let Delivery::AtLeastOnce(producer) = &self.delivery else {
            bail!("an at_least_once commit without the at_least_once producer");
        };
        flush(producer, KAFKA_TIMEOUT).context("cannot flush outputs")?;
        let errors = self.delivery_errors.swap(0, Ordering::AcqRel);
        if errors > 0 {
            bail!("{errors} output records were not delivered");
        }
        let mut tpl = TopicPartitionList::new();
        for ((stream, p), o) in &self.offsets {
            tpl.add_partition_offset(self.stream_topic(*stream), *p, Offset::Offset(*o))?;
        }
        if tpl.count() > 0 {
            consumer
                .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
                .context("cannot commit offsets")?;
        }
        for ((stream, p), o) in &self.offsets {
            if *stream == super::topology::CUSTOMERS {
                self.purge.committed(*p, *o);
            }
        }
        self.handles
            .metrics
            .transactions
            .with_label_values(&["commit"])
            .inc();
        Ok(())
    }

    /// A commit has ended (successfully).
    pub(super) fn commit_done(&mut self, started: Instant) {
        self.handles
            .metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        self.handles.commits.fetch_add(1, Ordering::AcqRel);
        self.purge.maybe_run(&self.settings, &self.repartition);
    }

    /// Aborts every open transaction.
    pub(super) fn abort_open(&mut self) {
        // A background commit ends first (its outcome does not matter any more: the
        // pipeline restarts from whatever committed).
        if let Some(f) = self.in_flight.take() {
            for job in f.jobs {
                if let Joined::Stuck = join_by(job.handle, f.started + COMMIT_DEADLINE) {
                    report_stuck(&self.handles.metrics, job.partition);
                    // Its transaction is aborted by the next owner's initialisation.
                    if let Some(task) = self.tasks.get_mut(&job.partition) {
                        task.txn = Txn::Idle;
                    }
                }
            }
        }
        for (p, task) in self.tasks.iter_mut() {
            if let Txn::Open = std::mem::replace(&mut task.txn, Txn::Idle) {
                self.handles
                    .metrics
                    .transactions
                    .with_label_values(&["abort"])
                    .inc();
                if let Err(e) = task.producer.abort_transaction(KAFKA_TIMEOUT) {
                    // The next owner's initialisation of the task aborts it anyway.
                    warn!(partition = *p, error = %e, "cannot abort an open transaction");
                }
            }
        }
    }

    /// Drops uncommitted work (the assignment was lost).
    pub(super) fn abort_all(&mut self) -> Result<()> {
        self.abort_open();
        bail!("consumer-group assignment lost; restarting from committed state")
    }
}

/// A background commit that did not end by [`COMMIT_DEADLINE`]: its producer is abandoned to
/// the stuck thread, and the pipeline restarts from the committed state.
fn report_stuck(m: &Metrics, partition: i32) {
    m.stuck_commits.inc();
    error!(
        partition,
        "a transaction commit did not return within {COMMIT_DEADLINE:?}; \
         abandoning the task's producer and restarting from the committed state"
    );
}
