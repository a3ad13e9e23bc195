//! Rebuilding local state from the changelog, keeping only committed segments.

use super::{clients::*, reader::*, rebalance::*, worker::*};
use crate::state::changelog::RestoreSink;
use crate::state::store::{JourneyStore, PartitionMeta, StateWrite};
use anyhow::Result;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use std::collections::HashMap;
use tracing::warn;

/// Applies restored changelog records to one partition of the store.
pub(super) struct Sink<'a> {
    pub(super) store: &'a mut dyn JourneyStore,
    pub(super) partition: i32,
    pub(super) meta: &'a mut PartitionMeta,
}

impl RestoreSink for Sink<'_> {
    fn apply(&mut self, writes: &[StateWrite], meta: Option<&PartitionMeta>) -> Result<()> {
        if let Some(m) = meta {
            *self.meta = m.clone();
        }
        self.store.write(self.partition, writes, self.meta)
    }
}

impl Worker {
    /// Rebuilds the local state of `partitions` from the changelog, keeping only committed
    /// segments (see [`crate::state::changelog`]); returns the records read. `log_ends` are
    /// the changelog partitions' ends as the caller saw them, for the progress metrics.
    pub(super) fn restore(
        &mut self,
        reader: &BaseConsumer<LogContext>,
        partitions: &[i32],
        committed: &HashMap<i32, Committed>,
        log_ends: &HashMap<i32, i64>,
    ) -> Result<u64> {
        let mut records = 0u64;
        for p in partitions {
            self.processor.store_mut().drop_partition(*p)?;
        }
        let mut restores: HashMap<i32, (crate::state::changelog::Restore, PartitionMeta)> =
            HashMap::new();
        let assignments: Vec<(String, i32)> = partitions
            .iter()
            .map(|p| (self.changelog.clone(), *p))
            .collect();
        let (shutdown, heartbeat) = (
            self.handles.shutdown.clone(),
            self.handles.heartbeat.clone(),
        );
        let ends: HashMap<i32, i64> = committed
            .iter()
            .filter_map(|(p, c)| Some((*p, c.changelog_end?)))
            .collect();
        // Progress while it runs: records read (per 1,024) and records left per partition,
        // up to the committed end or, when unknown, the log end.
        let metrics = self.handles.metrics.clone();
        let mut targets = HashMap::new();
        for p in partitions {
            let end = ends
                .get(p)
                .or_else(|| log_ends.get(p))
                .copied()
                .unwrap_or(0);
            targets.insert(*p, end);
            metrics
                .restore_remaining
                .with_label_values(&[&p.to_string()])
                .set(end);
        }
        let store = self.processor.store_mut();
        let mut unreported = 0u64;
        read_to_end(reader, &assignments, (&shutdown, &heartbeat), |m| {
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() >= *end)
            {
                return Ok(());
            }
            records += 1;
            unreported += 1;
            if unreported == 1024 {
                metrics.restore_records.inc_by(unreported);
                unreported = 0;
                if let Some(end) = targets.get(&m.partition()) {
                    metrics
                        .restore_remaining
                        .with_label_values(&[&m.partition().to_string()])
                        .set((end - m.offset() - 1).max(0));
                }
                super::failpoint::hold("hold-restore");
            }
            let (restore, meta) = restores.entry(m.partition()).or_default();
            let mut sink = Sink {
                store: &mut *store,
                partition: m.partition(),
                meta,
            };
            restore.record(m.key().unwrap_or_default(), m.payload(), &mut sink)
        })?;
        metrics.restore_records.inc_by(unreported);
        for p in partitions {
            metrics
                .restore_remaining
                .with_label_values(&[&p.to_string()])
                .set(0);
        }
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
