//! The journeys changelog: its segment markers and the restore that reads it back (no IO).
//!
//! Under `exactly_once` each transaction writes, to changelog partition *p*, a `Begin` marker,
//! the changed journeys, then an `End` marker carrying the partition's metadata. The markers
//! share the empty key (so compaction keeps only the newest), and each names its segment
//! (`token` of the producing task + sequence number) and the segment it builds on (`parent`).
//! The transaction also commits the input offsets with [`CommitMeta`] as offset metadata: the
//! segment id, and where the committed changelog ends (so the consumer group commits no offset
//! on the changelog itself, which lag tools would list as a consumed topic).
//!
//! Kafka hides aborted transactions from `read_committed` readers, so every segment a restore
//! sees is committed. Some Kafka-compatible brokers do not (nisshi 0.7.0 returns no aborted
//! transaction index), so the restore decides itself which segments were committed:
//! - a segment without its `End` was cut short: dropped;
//! - a segment is committed when a later `Begin` names it as parent; one that a later `Begin`
//!   skips (naming the segment before it) was aborted: dropped;
//! - the last segment is committed when the consumer group's committed offsets name it.
//!
//! Journey records outside any segment (at-least-once writes, or a log whose markers were
//! compacted away) are applied as they come: on such a log every visible record is committed.

use crate::state::store::{META_CHANGELOG_KEY, PartitionMeta, StateWrite};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One transaction's part of a changelog partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentId {
    /// Random per task start (one transactional producer's life).
    pub token: u64,
    /// Counts the task's transactions.
    pub seq: u64,
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attrib-segment:{:016x}:{}", self.token, self.seq)
    }
}

impl SegmentId {
    /// Parses the offset-commit metadata written by [`fmt::Display`].
    pub fn parse(s: &str) -> Option<SegmentId> {
        let rest = s.strip_prefix("attrib-segment:")?;
        let (token, seq) = rest.split_once(':')?;
        Some(SegmentId {
            token: u64::from_str_radix(token, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// The offset-commit metadata of a task's input offsets: the transaction's segment, and the
/// changelog offset after its `End` marker (absent when written before attrib kept it there,
/// or when the changelog partition was empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitMeta {
    pub segment: SegmentId,
    pub changelog_end: Option<i64>,
}

impl fmt::Display for CommitMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if let Some(end) = self.changelog_end {
            write!(f, ";changelog-end:{end}")?;
        }
        Ok(())
    }
}

impl CommitMeta {
    /// Parses what [`fmt::Display`] writes, and a bare segment id (written by earlier versions).
    pub fn parse(s: &str) -> Option<CommitMeta> {
        let (segment, rest) = s.split_once(';').unwrap_or((s, ""));
        let changelog_end = match rest.strip_prefix("changelog-end:") {
            Some(n) => Some(n.parse().ok()?),
            None if rest.is_empty() => None,
            None => return None,
        };
        Some(CommitMeta {
            segment: SegmentId::parse(segment)?,
            changelog_end,
        })
    }
}

/// The value of a changelog record with the empty key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Marker {
    Begin {
        id: SegmentId,
        parent: Option<SegmentId>,
    },
    End {
        id: SegmentId,
        meta: PartitionMeta,
    },
}

impl Marker {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("marker serializes")
    }

    pub fn decode(b: &[u8]) -> Result<Marker> {
        Ok(bincode::deserialize(b)?)
    }
}

struct Segment {
    id: SegmentId,
    writes: Vec<StateWrite>,
    meta: Option<PartitionMeta>,
}

/// Where restored state goes: journey writes, then the metadata they lead to.
pub trait RestoreSink {
    fn apply(&mut self, writes: &[StateWrite], meta: Option<&PartitionMeta>) -> Result<()>;
}

/// Reads one changelog partition in offset order and applies what was committed.
#[derive(Default)]
pub struct Restore {
    /// The last segment applied (its `End`'s metadata names it).
    applied: Option<SegmentId>,
    /// Complete, not yet known to be committed.
    pending: Option<Segment>,
    /// Begun, no `End` yet.
    open: Option<Segment>,
    /// Segments dropped as aborted or cut short.
    pub dropped: u64,
    /// Journey writes applied outside segments, buffered to batch them.
    loose: Vec<StateWrite>,
    meta: Option<PartitionMeta>,
}

impl Restore {
    pub fn record(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        sink: &mut dyn RestoreSink,
    ) -> Result<()> {
        if key != META_CHANGELOG_KEY {
            let write = (key.to_vec(), value.map(<[u8]>::to_vec));
            match &mut self.open {
                Some(seg) => seg.writes.push(write),
                None => {
                    self.loose.push(write);
                    if self.loose.len() >= 10_000 {
                        self.flush_loose(sink)?;
                    }
                }
            }
            return Ok(());
        }
        let Some(marker) = value.and_then(|v| Marker::decode(v).ok()) else {
            return Ok(());
        };
        self.flush_loose(sink)?;
        match marker {
            Marker::Begin { id, parent } => {
                if self.open.take().is_some() {
                    self.dropped += 1;
                }
                if let Some(p) = self.pending.take() {
                    if parent == Some(p.id) {
                        self.apply(p, sink)?;
                    } else if parent == self.applied {
                        // The writer of this segment built on what came before `p`.
                        self.dropped += 1;
                    } else {
                        // Unknown parent (markers compacted away): keep what is visible.
                        self.apply(p, sink)?;
                    }
                }
                self.open = Some(Segment {
                    id,
                    writes: Vec::new(),
                    meta: None,
                });
            }
            Marker::End { id, meta } => {
                let seg = match self.open.take() {
                    Some(seg) if seg.id == id => Segment {
                        meta: Some(meta),
                        ..seg
                    },
                    other => {
                        // An `End` without its `Begin` (compacted): a segment of its own.
                        if let Some(o) = other {
                            self.open = Some(o);
                        }
                        Segment {
                            id,
                            writes: Vec::new(),
                            meta: Some(meta),
                        }
                    }
                };
                if let Some(p) = self.pending.take() {
                    self.apply(p, sink)?;
                }
                self.pending = Some(seg);
            }
        }
        Ok(())
    }

    /// Ends the restore. `committed` is the segment named by the committed input offsets, if
    /// any; the last segment is applied when it is that one (or when nothing names one).
    /// Returns the metadata the partition ends with.
    pub fn finish(
        mut self,
        committed: Option<SegmentId>,
        sink: &mut dyn RestoreSink,
    ) -> Result<(Option<PartitionMeta>, u64)> {
        self.flush_loose(sink)?;
        if self.open.take().is_some() {
            self.dropped += 1;
        }
        if let Some(p) = self.pending.take() {
            if committed.is_none_or(|c| c == p.id) {
                self.apply(p, sink)?;
            } else {
                self.dropped += 1;
            }
        }
        Ok((self.meta, self.dropped))
    }

    fn apply(&mut self, seg: Segment, sink: &mut dyn RestoreSink) -> Result<()> {
        if seg.meta.is_some() {
            self.meta = seg.meta.clone();
        }
        sink.apply(&seg.writes, seg.meta.as_ref())?;
        self.applied = Some(seg.id);
        Ok(())
    }

    fn flush_loose(&mut self, sink: &mut dyn RestoreSink) -> Result<()> {
        if !self.loose.is_empty() {
            sink.apply(&self.loose, None)?;
            self.loose.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The state a restore builds: journeys by key, and the last metadata.
    #[derive(Default)]
    struct State {
        journeys: BTreeMap<Vec<u8>, Vec<u8>>,
        meta: Option<PartitionMeta>,
    }

    impl RestoreSink for State {
        fn apply(&mut self, writes: &[StateWrite], meta: Option<&PartitionMeta>) -> Result<()> {
            for (k, v) in writes {
                match v {
                    Some(v) => self.journeys.insert(k.clone(), v.clone()),
                    None => self.journeys.remove(k),
                };
            }
            if let Some(m) = meta {
                self.meta = Some(m.clone());
            }
            Ok(())
        }
    }

    fn id(token: u64, seq: u64) -> SegmentId {
        SegmentId { token, seq }
    }

    fn meta(stream_time: i64) -> PartitionMeta {
        PartitionMeta {
            stream_time,
            ..Default::default()
        }
    }

    /// A log entry: a journey write or a marker.
    enum E {
        W(&'static str, Option<&'static str>),
        B(SegmentId, Option<SegmentId>),
        End(SegmentId, i64),
    }

    fn restore(log: &[E], committed: Option<SegmentId>) -> (State, u64) {
        let mut state = State::default();
        let mut r = Restore::default();
        for e in log {
            match e {
                E::W(k, v) => r.record(k.as_bytes(), v.map(str::as_bytes), &mut state),
                E::B(i, p) => r.record(
                    META_CHANGELOG_KEY,
                    Some(&Marker::Begin { id: *i, parent: *p }.encode()),
                    &mut state,
                ),
                E::End(i, t) => r.record(
                    META_CHANGELOG_KEY,
                    Some(
                        &Marker::End {
                            id: *i,
                            meta: meta(*t),
                        }
                        .encode(),
                    ),
                    &mut state,
                ),
            }
            .unwrap();
        }
        let (m, dropped) = r.finish(committed, &mut state).unwrap();
        assert_eq!(m, state.meta);
        (state, dropped)
    }

    fn journeys(s: &State) -> Vec<(String, String)> {
        s.journeys
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn committed_chain_is_applied_in_order() {
        use E::*;
        let (a1, a2) = (id(1, 1), id(1, 2));
        let log = [
            B(a1, None),
            W("k", Some("v1")),
            End(a1, 10),
            B(a2, Some(a1)),
            W("k", Some("v2")),
            W("j", Some("x")),
            End(a2, 20),
        ];
        let (s, dropped) = restore(&log, Some(a2));
        assert_eq!(journeys(&s), kv(&[("j", "x"), ("k", "v2")]));
        assert_eq!(s.meta.unwrap().stream_time, 20);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn a_segment_the_next_owner_skipped_is_dropped() {
        use E::*;
        // Task token 1 commits a1, writes a2 completely but dies before the commit; token 2
        // fences it, restores a1 and builds on it.
        let (a1, a2, b1) = (id(1, 1), id(1, 2), id(2, 1));
        let log = [
            B(a1, None),
            W("k", Some("v1")),
            End(a1, 10),
            B(a2, Some(a1)),
            W("k", Some("aborted")),
            W("z", Some("aborted")),
            End(a2, 20),
            B(b1, Some(a1)),
            W("k", Some("v2")),
            End(b1, 15),
        ];
        let (s, dropped) = restore(&log, Some(b1));
        assert_eq!(journeys(&s), kv(&[("k", "v2")]));
        assert_eq!(s.meta.unwrap().stream_time, 15);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn a_segment_cut_short_is_dropped_wherever_it_is() {
        use E::*;
        let (a1, a2, b1) = (id(1, 1), id(1, 2), id(2, 1));
        let log = [
            B(a1, None),
            W("k", Some("v1")),
            End(a1, 10),
            B(a2, Some(a1)),
            W("k", Some("half")),
            B(b1, Some(a1)),
            W("j", Some("y")),
            End(b1, 12),
        ];
        let (s, dropped) = restore(&log, Some(b1));
        assert_eq!(journeys(&s), kv(&[("j", "y"), ("k", "v1")]));
        assert_eq!(dropped, 1);
        // Cut short at the end of the log.
        let (s, dropped) = restore(&log[..5], Some(a1));
        assert_eq!(journeys(&s), kv(&[("k", "v1")]));
        assert_eq!(s.meta.unwrap().stream_time, 10);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn the_last_segment_counts_only_when_the_committed_offsets_name_it() {
        use E::*;
        let (a1, a2) = (id(1, 1), id(1, 2));
        let log = [
            B(a1, None),
            W("k", Some("v1")),
            End(a1, 10),
            B(a2, Some(a1)),
            W("k", None),
            End(a2, 20),
        ];
        // Aborted (the offsets still name a1): dropped.
        let (s, dropped) = restore(&log, Some(a1));
        assert_eq!(journeys(&s), kv(&[("k", "v1")]));
        assert_eq!(s.meta.unwrap().stream_time, 10);
        assert_eq!(dropped, 1);
        // Committed: the deletion is applied.
        let (s, _) = restore(&log, Some(a2));
        assert!(s.journeys.is_empty());
        // Nothing names a segment (no offsets committed with metadata): what is visible counts.
        let (s, _) = restore(&log, None);
        assert!(s.journeys.is_empty());
    }

    #[test]
    fn an_aborted_first_segment_is_dropped() {
        use E::*;
        let (a1, b1) = (id(1, 1), id(2, 1));
        let log = [
            B(a1, None),
            W("k", Some("aborted")),
            End(a1, 10),
            B(b1, None),
            W("j", Some("v")),
            End(b1, 11),
        ];
        let (s, dropped) = restore(&log, Some(b1));
        assert_eq!(journeys(&s), kv(&[("j", "v")]));
        assert_eq!(dropped, 1);
    }

    #[test]
    fn records_outside_segments_and_compacted_markers_are_kept() {
        use E::*;
        // At-least-once writes have no markers; a compacted log keeps only the last marker.
        let a9 = id(1, 9);
        let log = [
            W("k", Some("v1")),
            W("j", Some("x")),
            W("k", Some("v2")),
            End(a9, 99),
        ];
        let (s, dropped) = restore(&log, Some(a9));
        assert_eq!(journeys(&s), kv(&[("j", "x"), ("k", "v2")]));
        assert_eq!(s.meta.unwrap().stream_time, 99);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn segment_ids_round_trip_through_offset_metadata() {
        let i = id(0xdead_beef, 42);
        assert_eq!(SegmentId::parse(&i.to_string()), Some(i));
        for end in [None, Some(0), Some(1_234_567)] {
            let m = CommitMeta {
                segment: i,
                changelog_end: end,
            };
            assert_eq!(CommitMeta::parse(&m.to_string()), Some(m));
        }
        // Metadata of earlier versions: the segment alone.
        assert_eq!(
            CommitMeta::parse(&i.to_string()).map(|m| (m.segment, m.changelog_end)),
            Some((i, None))
        );
        assert_eq!(CommitMeta::parse(&format!("{i};changelog-end:x")), None);
        assert_eq!(CommitMeta::parse(&format!("{i};other")), None);
        assert_eq!(SegmentId::parse(""), None);
        assert_eq!(SegmentId::parse("attrib-segment:zz:1"), None);
    }
}
