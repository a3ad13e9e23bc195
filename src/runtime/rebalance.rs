//! Partitions assigned and revoked: tasks started, positions read, work dropped.

use super::{clients::*, task::*, worker::*};
use crate::state::changelog::{CommitMeta, SegmentId};
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::info;

/// Input positions of one partition as committed by the consumer group.
#[derive(Default)]
pub(super) struct Committed {
    pub(super) positions: Vec<(String, i64)>,
    pub(super) segment: Option<SegmentId>,
    /// Where the committed changelog of the partition ends (exclusive), when known: records
    /// from there on belong to transactions that did not commit.
    pub(super) changelog_end: Option<i64>,
}

impl Worker {
    /// Partitions are taken away: their work commits first (or, if the assignment was lost,
    /// is aborted), then the tasks close. The commit's error, if any, is the result; the
    /// partitions are given up either way.
    pub(super) fn on_revoke(
        &mut self,
        consumer: &BaseConsumer<ConsumerCtx>,
        partitions: &BTreeSet<i32>,
        lost: bool,
    ) -> Result<()> {
        let result = if lost {
            self.abort_all()
        } else {
            self.commit_and_wait(consumer)
        };
        self.revoke(partitions, lost, result.is_ok());
        result
    }

    /// Closes the partitions' tasks. After a commit of everything they did (`committed`),
    /// local state equals the changelog's end: it is trusted if this instance gets them back.
    fn revoke(&mut self, partitions: &BTreeSet<i32>, lost: bool, committed: bool) {
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
        if !lost && committed {
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
        *self.handles.owned.write().expect("owned lock") = self.owned.clone();
    }

    /// Takes newly assigned partitions over: initialises their tasks' transactional ids (which
    /// aborts what a previous owner left open), then restores the state that local RocksDB
    /// cannot vouch for.
    pub(super) fn assign(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
        self.handles.ready.store(false, Ordering::Release);
        if self.eos() {
            self.start_tasks(partitions)?;
        }
        let reader: BaseConsumer<LogContext> =
            reader_config(&self.settings, "restore").create_with_context(LogContext)?;
        let committed = if self.eos() {
            self.committed(&reader, partitions)?
        } else {
            HashMap::new()
        };
        let mut restore = Vec::new();
        let mut log_ends = HashMap::new();
        for p in partitions {
            let (_, hi) = reader.fetch_watermarks(&self.changelog, *p, KAFKA_TIMEOUT)?;
            if self.trusted_at.get(p) != Some(&hi) {
                restore.push(*p);
                log_ends.insert(*p, hi);
            }
        }
        if !restore.is_empty() {
            let started = Instant::now();
            info!(partitions = ?restore, "restoring state from {}", self.changelog);
            let records = self.restore(&reader, &restore, &committed, &log_ends)?;
            let m = &self.handles.metrics;
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
        *self.handles.owned.write().expect("owned lock") = self.owned.clone();
        super::failpoint::hold("hold-assign");
        self.handles.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The consumer group's committed input offsets of the partitions (the log start where
    /// nothing is committed yet) and the changelog segment they were committed with.
    pub(super) fn committed(
        &self,
        reader: &BaseConsumer<LogContext>,
        partitions: &BTreeSet<i32>,
    ) -> Result<HashMap<i32, Committed>> {
        let group: BaseConsumer<LogContext> =
            group_reader_config(&self.settings).create_with_context(LogContext)?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            for topic in &self.stream_names {
                tpl.add_partition(topic, *p);
            }
            // Versions before this one committed an offset on the changelog under
            // exactly_once; read for an upgrade (see below). Only under exactly_once: an end
            // left over from a run under exactly_once must not cut an at_least_once restore
            // short.
            if self.eos() {
                tpl.add_partition(&self.changelog, *p);
            }
        }
        let got = group
            .committed_offsets(tpl, KAFKA_TIMEOUT)
            .context("cannot read the committed offsets")?;
        let mut out: HashMap<i32, Committed> = HashMap::new();
        let mut from_metadata: HashMap<i32, i64> = HashMap::new();
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
            if let Some(meta) = CommitMeta::parse(e.metadata()) {
                entry.segment = Some(meta.segment);
                if let (true, Some(end)) = (self.eos(), meta.changelog_end) {
                    from_metadata.insert(p, end);
                }
            }
        }
        // The end in the offsets' metadata wins over a group offset on the changelog, which
        // earlier versions committed (and which stays behind after an upgrade).
        for (p, end) in from_metadata {
            out.entry(p).or_default().changelog_end = Some(end);
        }
        Ok(out)
    }

    /// Creates and initialises the transactional producers of the partitions' tasks, in
    /// parallel (each initialisation is a round trip to the transaction coordinator).
    pub(super) fn start_tasks(&mut self, partitions: &BTreeSet<i32>) -> Result<()> {
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
            self.tasks
                .insert(p, Task::new(Arc::new(producer), rand::random()));
        }
        Ok(())
    }
}
