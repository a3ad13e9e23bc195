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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs() -> TaskInputs {
        let mut t = TaskInputs::new(OrderSettings {
            max_task_idle: Duration::from_secs(10),
            grace: Duration::from_millis(200),
            max_buffered_records: 4,
            max_buffered_bytes: 1 << 20,
        });
        t.assign(0);
        t
    }

    fn push(t: &mut TaskInputs, stream: usize, offset: i64, ts: i64, now: Instant) -> Flow {
        let v = format!("v{stream}-{offset}");
        t.push(
            stream,
            0,
            offset,
            Some(ts),
            Some(b"k"),
            Some(v.as_bytes()),
            now,
            1_000_000,
        )
    }

    /// With stitching: three merged streams (ties to the lower stream) and a free one that
    /// goes at once, whatever the others hold or wait for.
    #[test]
    fn three_merged_streams_and_a_free_one() {
        let now = Instant::now();
        let mut t = TaskInputs::with_streams(
            OrderSettings {
                max_task_idle: Duration::from_secs(10),
                grace: Duration::from_millis(200),
                ..Default::default()
            },
            StreamSet {
                merged: 3,
                graced: 2,
                free: 1,
            },
        );
        t.assign(0);
        push(&mut t, 2, 0, 100, now);
        push(&mut t, 1, 0, 100, now);
        push(&mut t, 0, 0, 150, now);
        push(&mut t, 3, 0, 999, now);
        // The free stream first, though its timestamp is the highest.
        assert_eq!(t.next(0, now), Next::Take(3));
        t.pop(3, 0);
        // A tie between conversions (1) and identities (2): the lower stream.
        assert_eq!(t.next(0, now), Next::Take(1));
        t.pop(1, 0);
        // Conversions is empty and not known at its end: the others wait for it.
        assert!(matches!(t.next(0, now), Next::WaitUntil(_)));
        t.end_of_partition(1, 0);
        let later = now + Duration::from_millis(200);
        assert_eq!(t.next(0, now), Next::WaitUntil(later), "the grace");
        // Identities (100) before clicks (150).
        assert_eq!(t.next(0, later), Next::Take(2));
        t.pop(2, 0);
        assert!(
            matches!(t.next(0, later), Next::WaitUntil(_)),
            "identities not at its end"
        );
        t.end_of_partition(2, 0);
        assert_eq!(t.next(0, later), Next::Take(0));
        // Identities empty at its end holds nothing back; clicks empty at its end does.
        t.pop(0, 0);
        let then = later + Duration::from_secs(1);
        push(&mut t, 1, 1, 300, then);
        t.end_of_partition(0, 0);
        assert_eq!(
            t.next(0, then),
            Next::WaitUntil(then + Duration::from_millis(200)),
            "clicks are graced"
        );
        push(&mut t, 0, 1, 200, then);
        assert_eq!(
            t.next(0, then),
            Next::Take(0),
            "no wait for identities at its end"
        );
        t.pop(0, 0);
        t.end_of_partition(0, 0);
        assert_eq!(t.next(0, then + Duration::from_millis(200)), Next::Take(1));
        t.pop(1, 0);
        // A free record never waits for the merged streams.
        t.pop(0, 0);
        push(&mut t, 3, 1, 5, now);
        assert_eq!(t.next(0, now), Next::Take(3));
    }

    #[test]
    fn both_buffered_lowest_timestamp_first_clicks_on_ties() {
        let now = Instant::now();
        let mut t = inputs();
        push(&mut t, 1, 0, 100, now);
        push(&mut t, 0, 0, 100, now);
        push(&mut t, 0, 1, 300, now);
        push(&mut t, 1, 1, 200, now);
        let mut order = Vec::new();
        while let Next::Take(s) = t.next(0, now) {
            let r = t.front(s, 0).unwrap();
            order.push((
                s,
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
            t.pop(s, 0);
        }
        assert_eq!(
            order,
            vec![
                (0, 0, "v0-0".to_string()),
                (1, 0, "v1-0".to_string()),
                (1, 1, "v1-1".to_string()),
            ]
        );
        // The click at 300 waits: the conversions partition is empty and not known at its end.
        assert_eq!(
            t.next(0, now),
            Next::WaitUntil(now + Duration::from_secs(10))
        );
    }

    #[test]
    fn an_empty_partition_not_at_its_end_is_waited_for_at_most_max_task_idle() {
        let now = Instant::now();
        let mut t = inputs();
        push(&mut t, 1, 0, 100, now);
        let later = now + Duration::from_secs(3);
        assert_eq!(
            t.next(0, later),
            Next::WaitUntil(later + Duration::from_secs(10))
        );
        // The click arrives in time: it goes first.
        push(&mut t, 0, 0, 50, later);
        assert_eq!(t.next(0, later), Next::Take(0));
        t.pop(0, 0);
        let start = later + Duration::from_secs(1);
        assert!(matches!(t.next(0, start), Next::WaitUntil(_)));
        assert_eq!(t.enforced, 0);
        assert_eq!(t.next(0, start + Duration::from_secs(10)), Next::Take(1));
        assert_eq!(t.enforced, 1);
    }

    #[test]
    fn at_its_end_the_other_partition_holds_a_record_back_for_the_grace() {
        let now = Instant::now();
        let mut t = inputs();
        t.end_of_partition(0, 0);
        // Whatever its timestamp (an old record of a slow producer, or one from the future),
        // a record waits the grace from when it arrived.
        for (offset, ts) in [(0, 1_000_000 - 5_000), (1, 9_999_999)] {
            let arrived = now + Duration::from_secs(offset as u64);
            push(&mut t, 1, offset, ts, arrived);
            assert_eq!(
                t.next(0, arrived),
                Next::WaitUntil(arrived + Duration::from_millis(200))
            );
            assert_eq!(
                t.next(0, arrived + Duration::from_millis(200)),
                Next::Take(1)
            );
            t.pop(1, 0);
        }
        // A record on the partition ends its `at end` state.
        push(&mut t, 0, 0, 1, now);
        assert!(!t.at_end(0, 0));
    }

    #[test]
    fn after_a_broker_failure_an_end_is_forgotten_until_reported_again() {
        let now = Instant::now();
        let mut t = inputs();
        t.end_of_partition(0, 0);
        t.end_of_partition(1, 0);
        push(&mut t, 1, 0, 1_000_000 - 5_000, now);
        // Clicks empty and at their end; the conversions partition has a record.
        assert_eq!(t.forget_ends(), vec![(0, 0)]);
        assert!(!t.at_end(0, 0) && !t.at_end(1, 0));
        // The old conversion now waits for the clicks partition.
        assert_eq!(
            t.next(0, now),
            Next::WaitUntil(now + Duration::from_secs(10))
        );
        t.end_of_partition(0, 0);
        let later = now + Duration::from_millis(200);
        assert_eq!(t.next(0, later), Next::Take(1));
    }

    #[test]
    fn a_full_partition_asks_to_pause_and_to_resume_below_half() {
        let now = Instant::now();
        let mut t = inputs();
        let flows: Vec<Flow> = (0..5).map(|i| push(&mut t, 0, i, i, now)).collect();
        assert_eq!(flows[4], Flow::Pause);
        assert!(flows[..4].iter().all(|f| *f == Flow::Keep));
        assert_eq!(t.pop(0, 0), Flow::Keep);
        assert_eq!(t.pop(0, 0), Flow::Keep);
        assert_eq!(t.pop(0, 0), Flow::Resume);
        assert_eq!(t.buffered(), 2);
        t.revoke(0);
        assert_eq!(t.buffered(), 0);
        assert_eq!(
            push(&mut t, 0, 9, 9, now),
            Flow::Keep,
            "not assigned: ignored"
        );
    }

    #[test]
    fn null_keys_and_values_and_large_arenas_round_trip() {
        let now = Instant::now();
        let mut t = TaskInputs::new(OrderSettings {
            max_buffered_records: 1_000_000,
            max_buffered_bytes: 1 << 30,
            ..OrderSettings::default()
        });
        t.assign(3);
        let big = vec![7u8; 10_000];
        for i in 0..100 {
            let value = (i % 3 != 0).then_some(&big[..(i as usize * 37) % 10_000]);
            t.push(0, 3, i, Some(i), None, value, now, 0);
        }
        for i in 0..100 {
            let r = t.front(0, 3).unwrap();
            assert_eq!(r.offset, i);
            assert_eq!(r.key, None);
            let want = (i % 3 != 0).then_some(&big[..(i as usize * 37) % 10_000]);
            assert_eq!(r.value, want);
            t.pop(0, 3);
            if i == 60 {
                // New records after a compaction of the arena's front.
                t.push(0, 3, 1000, Some(1000), Some(b"late"), Some(b"x"), now, 0);
            }
        }
        assert_eq!(t.front(0, 3).unwrap().key, Some(&b"late"[..]));
    }

    proptest! {
        /// With both partitions fully buffered, the merge is the timestamp order (stable, clicks
        /// first on ties), and each partition keeps its offset order.
        #[test]
        fn merge_is_a_stable_timestamp_order(
            a in proptest::collection::vec(0i64..50, 0..30),
            b in proptest::collection::vec(0i64..50, 0..30),
        ) {
            let mut a = a; a.sort();
            let mut b = b; b.sort();
            let now = Instant::now();
            let mut t = TaskInputs::new(OrderSettings::default());
            t.assign(0);
            for (i, ts) in a.iter().enumerate() { t.push(0, 0, i as i64, Some(*ts), None, None, now, 0); }
            for (i, ts) in b.iter().enumerate() { t.push(1, 0, i as i64, Some(*ts), None, None, now, 0); }
            t.end_of_partition(0, 0);
            t.end_of_partition(1, 0);
            let mut got = Vec::new();
            while let Next::Take(s) = t.next(0, now + Duration::from_secs(1)) {
                got.push((t.front(s, 0).unwrap().timestamp, s));
                t.pop(s, 0);
            }
            let mut want: Vec<(i64, usize)> =
                a.iter().map(|t| (*t, 0)).chain(b.iter().map(|t| (*t, 1))).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
