//! Task input in production order (no IO).
//!
//! A task owns the same partition number of the clicks and the conversions topic. Kafka orders
//! records within a partition only, and a fetch can bring one partition's records long before
//! the other's (after any downtime with a backlog, a restart or a rebalance), so processing
//! records as fetches return them would let a conversion overtake the click it should credit.
//! Like Kafka Streams' `PartitionGroup`, the records of a task's partitions are buffered here
//! and handed out by record timestamp (the producer's `CreateTime`, or the broker's
//! `LogAppendTime` on topics configured so), lowest first:
//!
//! - both partitions have records: the lower timestamp goes first; on a tie, the click (a
//!   click and a conversion of the same millisecond: the click is taken to be first);
//! - one partition is empty and has been read to its end (an end-of-partition event since its
//!   last record): the other's head goes once it has been buffered for `grace`, because a click
//!   produced just before a conversion can reach the broker, or this consumer, just after it
//!   (the two partitions' batches travel separately). The wait counts from when the record
//!   arrived here, not from its timestamp: a producer that is slow to send (batching, retries,
//!   an idempotent producer's first round trip) delivers old records whose partners are just
//!   as late;
//! - one partition is empty and not known to be at its end (not fetched yet, or records still
//!   on the broker): the task waits for it, at most `max_task_idle` (Kafka Streams'
//!   `max.task.idle.ms`), then goes on and counts an enforced step.
//!
//! Records are copied into one byte arena per partition (no allocation per record once the
//! arena has grown); a partition holding more than the buffer bounds asks to be paused.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The most input streams a task has: clicks, conversions and identities (merged by timestamp,
/// in this tie-break order) and the customers' repartition topic (with stitching on).
pub const STREAMS: usize = 4;

/// Which of a task's streams are merged by timestamp, and which are taken as they come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSet {
    /// Streams `0..merged` are merged in timestamp order (and waited for, see the module).
    pub merged: usize,
    /// Of those, streams `0..graced` hold the others back for the grace when they are empty
    /// at their end (clicks and conversions: a click produced just before a conversion may
    /// arrive just after it). A quiet merged stream past them (identities) at its end holds
    /// nothing back, as in Kafka Streams: it would otherwise delay every record by the grace.
    pub graced: usize,
    /// Streams `merged..merged + free` are independent of the others (another stage's input,
    /// with state of its own): their records go as soon as they are buffered.
    pub free: usize,
}

impl Default for StreamSet {
    /// Clicks and conversions.
    fn default() -> Self {
        StreamSet {
            merged: 2,
            graced: 2,
            free: 0,
        }
    }
}

/// How long a task waits, and how much it buffers.
#[derive(Clone, Copy, Debug)]
pub struct OrderSettings {
    /// Longest wait for an empty partition not known to be at its end.
    pub max_task_idle: Duration,
    /// How long a record must have been buffered to go ahead of an empty partition that is at
    /// its end.
    pub grace: Duration,
    /// A partition buffering more records than this asks to be paused (resumed below half).
    pub max_buffered_records: usize,
    /// Likewise for the bytes of keys and values.
    pub max_buffered_bytes: usize,
}

impl Default for OrderSettings {
    fn default() -> Self {
        OrderSettings {
            max_task_idle: Duration::from_secs(10),
            grace: Duration::from_millis(500),
            max_buffered_records: 10_000,
            max_buffered_bytes: 16 << 20,
        }
    }
}

/// What a task does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Process the head of this stream.
    Take(usize),
    /// Nothing may go before this instant (or before more input arrives).
    WaitUntil(Instant),
    /// Nothing buffered.
    Empty,
}

/// A buffered record, borrowed from its partition's arena.
#[derive(Clone, Copy, Debug)]
pub struct Buffered<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// What the caller should do with the partition's fetching after a push or a pop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Keep,
    Pause,
    Resume,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: i64,
    timestamp: i64,
    buffered_at: Instant,
    /// Where the record's bytes begin in the arena (absolute), whether or not it has any.
    start: usize,
    /// Absolute arena positions (see [`PartitionBuffer::base`]); `u32::MAX` length = null.
    key: (usize, u32),
    value: (usize, u32),
}

const NULL: u32 = u32::MAX;

#[derive(Debug, Default)]
struct PartitionBuffer {
    arena: Vec<u8>,
    /// The absolute position of `arena[0]`: consumed bytes at the front are dropped in bulk.
    base: usize,
    records: VecDeque<Entry>,
    /// Read to the end (an end-of-partition event since the last record buffered).
    at_end: bool,
    paused: bool,
}

impl PartitionBuffer {
    fn bytes(&self) -> usize {
        self.arena.len()
    }

    fn put(&mut self, bytes: Option<&[u8]>) -> (usize, u32) {
        match bytes {
            None => (0, NULL),
            Some(b) => {
                let at = self.base + self.arena.len();
                self.arena.extend_from_slice(b);
                (at, b.len() as u32)
            }
        }
    }

    fn get(&self, (at, len): (usize, u32)) -> Option<&[u8]> {
        (len != NULL).then(|| &self.arena[at - self.base..at - self.base + len as usize])
    }

    fn pop(&mut self) {
        self.records.pop_front();
        match self.records.front() {
            None => {
                self.base += self.arena.len();
                self.arena.clear();
            }
            Some(front) => {
                // Drop the consumed front once it is most of the arena.
                let start = front.start;
                let consumed = start - self.base;
                if consumed > 64 * 1024 && consumed * 2 > self.arena.len() {
                    self.arena.drain(..consumed);
                    self.base = start;
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Task {
    streams: [PartitionBuffer; STREAMS],
    /// Since when the task waits for an empty partition not known to be at its end.
    waiting_since: Option<Instant>,
}

/// The buffered input of every task of this instance.
#[derive(Debug, Default)]
pub struct TaskInputs {
    settings: OrderSettings,
    streams: StreamSet,
    tasks: BTreeMap<i32, Task>,
    /// Records processed ahead of a partition that was waited for `max_task_idle` in vain.
    pub enforced: u64,
}

impl TaskInputs {
    pub fn new(settings: OrderSettings) -> Self {
        Self::with_streams(settings, StreamSet::default())
    }

    pub fn with_streams(settings: OrderSettings, streams: StreamSet) -> Self {
        assert!(streams.merged + streams.free <= STREAMS && streams.merged > 0);
        assert!(streams.graced <= streams.merged);
        TaskInputs {
            settings,
            streams,
            tasks: BTreeMap::new(),
            enforced: 0,
        }
    }

    /// A task starts empty, its partitions not known to be at their ends.
    pub fn assign(&mut self, partition: i32) {
        self.tasks.insert(partition, Task::default());
    }

    /// Drops a task's buffered records (they are not committed: the next owner reads them
    /// again from the committed offsets).
    pub fn revoke(&mut self, partition: i32) {
        self.tasks.remove(&partition);
    }

    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.tasks.keys().copied()
    }

    /// Records buffered in all tasks.
    pub fn buffered(&self) -> usize {
        self.tasks
            .values()
            .flat_map(|t| t.streams.iter())
            .map(|s| s.records.len())
            .sum()
    }

    /// Buffers a consumed record (ignored if the task is not assigned). A missing timestamp
    /// (`None`) counts as `now_ms`.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        stream: usize,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        now: Instant,
        now_ms: i64,
    ) -> Flow {
        let limits = self.settings;
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Flow::Keep;
        };
        let buf = &mut task.streams[stream];
        let start = buf.base + buf.arena.len();
        let key = buf.put(key);
        let value = buf.put(value);
        buf.records.push_back(Entry {
            offset,
            timestamp: timestamp.filter(|t| *t >= 0).unwrap_or(now_ms),
            buffered_at: now,
            start,
            key,
            value,
        });
        buf.at_end = false;
        if !buf.paused
            && (buf.records.len() > limits.max_buffered_records
                || buf.bytes() > limits.max_buffered_bytes)
        {
            buf.paused = true;
            return Flow::Pause;
        }
        Flow::Keep
    }

    /// The partition has been read to its end.
    pub fn end_of_partition(&mut self, stream: usize, partition: i32) {
        if let Some(t) = self.tasks.get_mut(&partition) {
            t.streams[stream].at_end = true;
        }
    }

    /// Forgets that the partitions were read to their ends (a fetch may have stalled: a
    /// broker went away); returns the empty ones that were. Their tasks wait for them until
    /// their ends are reported again, at most `max_task_idle`.
    pub fn forget_ends(&mut self) -> Vec<(usize, i32)> {
        let mut refetch = Vec::new();
        for (p, t) in &mut self.tasks {
            for (s, buf) in t.streams.iter_mut().enumerate() {
                if buf.at_end {
                    buf.at_end = false;
                    if buf.records.is_empty() {
                        refetch.push((s, *p));
                    }
                }
            }
        }
        refetch
    }

    /// Whether the partition is known to be read to its end.
    pub fn at_end(&self, stream: usize, partition: i32) -> bool {
        self.tasks
            .get(&partition)
            .is_some_and(|t| t.streams[stream].at_end)
    }

    /// The head record of a stream of a task.
    pub fn front(&self, stream: usize, partition: i32) -> Option<Buffered<'_>> {
        let buf = &self.tasks.get(&partition)?.streams[stream];
        let e = buf.records.front()?;
        Some(Buffered {
            offset: e.offset,
            timestamp: e.timestamp,
            key: buf.get(e.key),
            value: buf.get(e.value),
        })
    }

    /// Drops the head record of a stream (after processing it).
    pub fn pop(&mut self, stream: usize, partition: i32) -> Flow {
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Flow::Keep;
        };
        let buf = &mut task.streams[stream];
        buf.pop();
        if buf.paused
            && buf.records.len() <= self.settings.max_buffered_records / 2
            && buf.bytes() <= self.settings.max_buffered_bytes / 2
        {
            buf.paused = false;
            return Flow::Resume;
        }
        Flow::Keep
    }

    /// What the task of `partition` may do next, at `now`.
    pub fn next(&mut self, partition: i32, now: Instant) -> Next {
        let s = self.settings;
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Next::Empty;
        };
        let StreamSet {
            merged,
            graced,
            free,
        } = self.streams;
        if let Some(f) = (merged..merged + free).find(|&f| !task.streams[f].records.is_empty()) {
            return Next::Take(f);
        }
        // The lowest timestamp among the merged streams' heads; ties to the lower stream.
        let mut head: Option<(usize, &Entry)> = None;
        let mut all_at_end = true;
        let mut any_empty = false;
        for (i, buf) in task.streams[..merged].iter().enumerate() {
            match buf.records.front() {
                Some(e) => {
                    if head.is_none_or(|(_, h)| e.timestamp < h.timestamp) {
                        head = Some((i, e));
                    }
                }
                // A quiet stream past the graced ones, at its end, holds nothing back.
                None if buf.at_end && i >= graced => {}
                None => {
                    any_empty = true;
                    all_at_end &= buf.at_end;
                }
            }
        }
        let Some((stream, head)) = head else {
            task.waiting_since = None;
            return Next::Empty;
        };
        if !any_empty {
            task.waiting_since = None;
            return Next::Take(stream);
        }
        if all_at_end {
            task.waiting_since = None;
            let due = head.buffered_at + s.grace;
            return if now >= due {
                Next::Take(stream)
            } else {
                Next::WaitUntil(due)
            };
        }
        let since = *task.waiting_since.get_or_insert(now);
        if now >= since + s.max_task_idle {
            self.enforced += 1;
            return Next::Take(stream);
        }
        Next::WaitUntil(since + s.max_task_idle)
    }
}

#[cfg(test)]
mod tests;
