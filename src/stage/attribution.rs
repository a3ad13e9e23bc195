//! Decode → engine → outputs, for the records of one or more partitions, over a journey store.
//!
//! The processor is what `replay`, `run` and `demo` share. It holds the tables and a cache of
//! the journeys touched since the last [`Processor::flush`]; a flush writes them to the store in
//! one batch per partition and returns the same writes for the changelog.

use crate::formats::avro::AvroInput;
use crate::model::identity::JourneyRef;
use crate::model::identity::{self, Link};
use crate::model::journey::Journey;
use crate::model::output::{DlqRecord, OutRecord, Output};
use crate::model::records::{self, DlqReason, Event, InputTopic, Invalid, Limits};
use crate::model::tables::Tables;
use crate::model::time::Millis;
use crate::rules::engine::{self, Clock, EngineSettings};
use crate::rules::stitching::{self, Route, Target};
use crate::state::store::{JourneyStore, PartitionMeta, StateWrite};
use anyhow::{Context, Result};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

mod stitch;
pub use stitch::{Forward, ForwardPayload, Stitching};

/// One input record, wherever it came from.
#[derive(Debug, Clone, Copy)]
pub struct InRecord<'a> {
    pub topic: InputTopic,
    /// The real topic name, for the DLQ's headers.
    pub source_topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Counters of one batch, for metrics (updated per batch, not per record).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub consumed: [u64; 5],
    pub clicks_dropped_by_limit: u64,
    pub clicks_expired: u64,
    pub duplicate_clicks: u64,
    pub table_updates: u64,
    pub stitching: StitchStats,
}

/// What identity stitching did in one batch (docs/design.md §6).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StitchStats {
    /// Devices linked to a customer for the first time.
    pub links_created: u64,
    /// Records that named a linked device with another customer (the first link stands).
    pub link_conflicts: u64,
    /// Anonymous journeys moved into a customer's journey.
    pub journeys_moved: u64,
    pub clicks_moved: u64,
    /// Moved clicks whose id the customer's journey had already.
    pub clicks_dropped_in_moves: u64,
    /// Moved orders the customer's journey had already.
    pub orders_dropped_in_moves: u64,
    /// Records (and moved journeys) the device stage forwarded to the customer stage.
    pub records_forwarded: u64,
    /// Forwarded records (and moves) the customer stage applied.
    pub forwarded_applied: u64,
}

impl Stats {
    pub fn topic_index(t: InputTopic) -> usize {
        match t {
            InputTopic::Clicks => 0,
            InputTopic::Conversions => 1,
            InputTopic::PromoCodes => 2,
            InputTopic::Config => 3,
            InputTopic::Identities => 4,
        }
    }
}

/// A journey key as held in the cache: inline up to 16 bytes (typical device and customer
/// ids), so that a lookup compares keys without following a pointer.
type CacheKey = smallvec::SmallVec<[u8; 16]>;

#[derive(Default)]
struct PartitionState {
    meta: PartitionMeta,
    meta_dirty: bool,
    cache: HashMap<CacheKey, Journey>,
    /// Links read or changed since the last drain, by device (stitching on).
    links: HashMap<CacheKey, LinkSlot>,
}

/// A device's link as cached: `None` when the device has none.
struct LinkSlot {
    link: Option<Link>,
    dirty: bool,
}

/// The state changes of one partition, as drained from the processor.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionWrites {
    pub partition: i32,
    pub writes: Vec<StateWrite>,
    pub meta: PartitionMeta,
}

pub struct Processor {
    store: Box<dyn JourneyStore>,
    pub tables: Tables,
    pub settings: EngineSettings,
    pub limits: Limits,
    partitions: HashMap<i32, PartitionState>,
    pub stats: Stats,
    scratch: Vec<Output>,
    /// Decodes Avro-framed input; without it every record is read as JSON.
    pub avro: Option<Arc<AvroInput>>,
    /// Cross-device identity stitching (docs/design.md §6).
    mode: Stitching,
    /// What the device stage forwards, until taken ([`Processor::take_forwards`]).
    forwards: Vec<Forward>,
    /// Reusable buffers for store keys (journeys, links).
    key_buf: Vec<u8>,
    link_buf: Vec<u8>,
}

impl Processor {
    pub fn new(
        store: Box<dyn JourneyStore>,
        settings: EngineSettings,
        limits: Limits,
    ) -> Processor {
        Processor {
            store,
            tables: Tables::default(),
            settings,
            limits,
            partitions: HashMap::default(),
            stats: Stats::default(),
            scratch: Vec::new(),
            avro: None,
            mode: Stitching::Off,
            forwards: Vec::new(),
            key_buf: Vec::new(),
            link_buf: Vec::new(),
        }
    }

    /// Reads Avro-framed input records through `a` (other records stay JSON).
    pub fn with_avro(mut self, a: Arc<AvroInput>) -> Self {
        self.avro = Some(a);
        self
    }

    pub fn store(&self) -> &dyn JourneyStore {
        &*self.store
    }

    pub fn store_mut(&mut self) -> &mut dyn JourneyStore {
        &mut *self.store
    }

    /// The stream time of a partition, as last flushed or processed.
    pub fn stream_time(&self, partition: i32) -> Option<Millis> {
        self.partitions.get(&partition).map(|p| p.meta.stream_time)
    }

    /// Applies a table record (config or promo codes). Returns the DLQ record if refused.
    pub fn apply_table(&mut self, rec: &InRecord) -> Option<DlqRecord> {
        self.stats.consumed[Stats::topic_index(rec.topic)] += 1;
        let decoded = match (&self.avro, rec.value) {
            (Some(a), Some(v)) => match a.decode_to_json(rec.topic, v) {
                Ok(d) => d,
                Err(e) => return Some(dlq(rec, e)),
            },
            _ => None,
        };
        let value = decoded.as_deref().or(rec.value);
        let result = match rec.topic {
            InputTopic::Config => self.tables.apply_config(rec.key, value, &self.limits),
            _ => self.tables.apply_promo(rec.key, value, &self.limits),
        };
        match result {
            Ok(_) => {
                self.stats.table_updates += 1;
                None
            }
            Err(e) => Some(dlq(rec, e)),
        }
    }

    /// Processes one record of any topic, pushing its outputs.
    pub fn process(
        &mut self,
        rec: &InRecord,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        if matches!(rec.topic, InputTopic::Config | InputTopic::PromoCodes) {
            if let Some(d) = self.apply_table(rec) {
                out.push(OutRecord::Dlq(Box::new(d)));
            }
            return Ok(());
        }
        if rec.topic == InputTopic::Identities && self.mode == Stitching::Off {
            // docs/design.md §6: with stitching off, identify records are not read.
            return Ok(());
        }
        self.count_journey_record(rec.topic, rec.partition)?;
        let event = match decode_event(rec, &self.limits, self.avro.as_deref()) {
            Ok(e) => e,
            Err(e) => {
                out.push(OutRecord::Dlq(Box::new(dlq(rec, e))));
                return Ok(());
            }
        };
        if self.mode != Stitching::Off {
            return match stitching::route(rec.key, &event) {
                Ok(route) => {
                    let partition = rec.partition;
                    self.apply_routed(partition, Some(rec), route, &event, processed_at, out)
                }
                Err(e) => {
                    out.push(OutRecord::Dlq(Box::new(dlq(rec, e))));
                    Ok(())
                }
            };
        }
        let key: &[u8] = match rec.key {
            Some(k) => k,
            None => match event.derived_key() {
                Some(k) => k.as_bytes(),
                None => {
                    let e = Invalid::new(
                        DlqReason::BadKey,
                        "record has a null key and no `device_id` or `customer_id` to derive it from",
                    );
                    out.push(OutRecord::Dlq(Box::new(dlq(rec, e))));
                    return Ok(());
                }
            },
        };
        self.apply_event(rec.partition, key, &event, processed_at, out)
    }

    /// Processes a journey record (clicks or conversions topic) that the caller decoded and
    /// validated itself (`replay` parses a line and its value in one pass): the same as
    /// [`Processor::process`] on the record it came from, which had key `key`. Returns false,
    /// having done nothing, for a record that stitching's key rules refuse: the caller passes
    /// the record to [`Processor::process`], which sends it to the DLQ with its reason.
    pub fn process_decoded(
        &mut self,
        topic: InputTopic,
        partition: i32,
        key: &[u8],
        event: &Event,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<bool> {
        match self.mode {
            Stitching::Off => {}
            // The device stage forwards the record as read: only `process` has it.
            Stitching::Forward => return Ok(false),
            Stitching::InPlace => {
                let Ok(route) = stitching::route(Some(key), event) else {
                    return Ok(false);
                };
                self.count_journey_record(topic, partition)?;
                self.apply_routed(partition, None, route, event, processed_at, out)?;
                return Ok(true);
            }
        }
        self.count_journey_record(topic, partition)?;
        self.apply_event(partition, key, event, processed_at, out)?;
        Ok(true)
    }

    /// Counts a consumed journey record and marks its partition's metadata to be written.
    fn count_journey_record(&mut self, topic: InputTopic, partition: i32) -> Result<()> {
        self.stats.consumed[Stats::topic_index(topic)] += 1;
        // Every batch that consumes from a partition writes its metadata (and so its changelog).
        load_partition(&mut self.partitions, &*self.store, partition)?.meta_dirty = true;
        Ok(())
    }

    /// Applies a decoded event to the journey `key` of `partition`.
    fn apply_event(
        &mut self,
        partition: i32,
        key: &[u8],
        event: &Event,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        self.advance(partition, event)?;
        self.apply_to_journey(partition, key, event, processed_at, out)
    }

    /// Marks the partition's state to be written and advances its stream time to the event's.
    fn advance(&mut self, partition: i32, event: &Event) -> Result<()> {
        let state = load_partition(&mut self.partitions, &*self.store, partition)?;
        state.meta_dirty = true;
        state.meta.stream_time = state.meta.stream_time.max(event.occurred_at());
        Ok(())
    }

    /// Applies an event to the journey stored under `key`, the partition's stream time already
    /// advanced.
    fn apply_to_journey(
        &mut self,
        partition: i32,
        key: &[u8],
        event: &Event,
        processed_at: Millis,
        out: &mut Vec<OutRecord>,
    ) -> Result<()> {
        let state = load_partition(&mut self.partitions, &*self.store, partition)?;
        let clock = Clock {
            processed_at,
            stream_time: state.meta.stream_time,
        };
        let journey = journey_mut(state, &*self.store, partition, key)?;
        let fx = engine::apply(
            journey,
            &self.tables,
            &self.settings,
            event,
            clock,
            &mut self.scratch,
        );
        self.stats.clicks_dropped_by_limit += fx.clicks_dropped_by_limit as u64;
        self.stats.clicks_expired += fx.clicks_expired as u64;
        self.stats.duplicate_clicks += fx.duplicate_clicks as u64;
        for o in self.scratch.drain(..) {
            out.push(match o {
                Output::Action(a) => OutRecord::Action(a),
                Output::Invalid(i) => OutRecord::Invalid(i),
            });
        }
        Ok(())
    }

    /// Number of journeys waiting in the cache.
    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.cache.len() + p.links.len())
            .sum()
    }

    /// Takes the state changes since the last call: per partition, the journey writes (empty
    /// journeys deleted) and the metadata. Apply them with [`Processor::apply_writes`] once
    /// they are committed; until then the processor must not read those journeys again.
    pub fn drain_writes(&mut self) -> Vec<PartitionWrites> {
        let mut all = Vec::new();
        for (&p, state) in self.partitions.iter_mut() {
            if state.cache.is_empty() && state.links.is_empty() && !state.meta_dirty {
                continue;
            }
            let mut writes: Vec<StateWrite> = state
                .cache
                .drain()
                .map(|(k, j)| {
                    if j.is_empty() {
                        (k.to_vec(), None)
                    } else {
                        (k.to_vec(), Some(j.encode()))
                    }
                })
                .collect();
            let mut key = Vec::new();
            for (device, slot) in state.links.drain().filter(|(_, s)| s.dirty) {
                identity::link_key(&device, &mut key);
                writes.push((key.clone(), slot.link.as_ref().map(Link::encode)));
            }
            state.meta_dirty = false;
            all.push(PartitionWrites {
                partition: p,
                writes,
                meta: state.meta.clone(),
            });
        }
        all.sort_by_key(|w| w.partition);
        all
    }

    /// Writes drained changes to the store, one atomic batch per partition.
    pub fn apply_writes(&mut self, all: &[PartitionWrites]) -> Result<()> {
        for w in all {
            self.store.write(w.partition, &w.writes, &w.meta)?;
        }
        Ok(())
    }

    /// Drains and applies at once (no changelog).
    pub fn flush(&mut self) -> Result<Vec<PartitionWrites>> {
        let all = self.drain_writes();
        self.apply_writes(&all)?;
        Ok(all)
    }

    /// A partition's metadata, for changes made outside journeys (marked to be written).
    pub fn meta_mut(&mut self, partition: i32) -> Result<&mut PartitionMeta> {
        let state = self.load_partition(partition)?;
        state.meta_dirty = true;
        Ok(&mut state.meta)
    }

    fn load_partition(&mut self, partition: i32) -> Result<&mut PartitionState> {
        load_partition(&mut self.partitions, &*self.store, partition)
    }

    /// Forgets the in-memory state of a partition (after revocation); the store keeps its data.
    pub fn close_partition(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Deletes expired journeys of a partition that no record has touched (rule 11). Returns
    /// the writes made, for the changelog.
    pub fn sweep(&mut self, partition: i32) -> Result<Vec<StateWrite>> {
        let Some(meta) = self.store.meta(partition)? else {
            return Ok(Vec::new());
        };
        let keep = engine::click_keep_ms(&self.tables, &self.settings);
        let link_keep = stitching::link_keep_ms(&self.tables, &self.settings);
        let mut writes = Vec::new();
        self.store.scan(partition, &mut |k, v| {
            if identity::is_link_key(k) {
                if Link::decode(v).is_ok_and(|l| l.expired(meta.stream_time, link_keep)) {
                    writes.push((k.to_vec(), None));
                }
            } else if let Ok(mut j) = Journey::decode(v) {
                let before = (j.clicks.len(), j.orders.len());
                j.expire(meta.stream_time, keep);
                if j.is_empty() {
                    writes.push((k.to_vec(), None));
                } else if (j.clicks.len(), j.orders.len()) != before {
                    writes.push((k.to_vec(), Some(j.encode())));
                }
            }
        })?;
        if !writes.is_empty() {
            self.store.write(partition, &writes, &meta)?;
        }
        Ok(writes)
    }
}

fn load_partition<'a>(
    partitions: &'a mut HashMap<i32, PartitionState>,
    store: &dyn JourneyStore,
    partition: i32,
) -> Result<&'a mut PartitionState> {
    match partitions.entry(partition) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            let meta = store.meta(partition)?.unwrap_or_default();
            Ok(e.insert(PartitionState {
                meta,
                ..Default::default()
            }))
        }
    }
}

/// The journey stored under `key`, from the cache or else the store (an empty one if none).
fn journey_mut<'a>(
    state: &'a mut PartitionState,
    store: &dyn JourneyStore,
    partition: i32,
    key: &[u8],
) -> Result<&'a mut Journey> {
    if !state.cache.contains_key(key) {
        let j = match store.get(partition, key)? {
            Some(bytes) => Journey::decode(&bytes).context("stored journey cannot be decoded")?,
            None => Journey::default(),
        };
        state.cache.insert(CacheKey::from_slice(key), j);
    }
    Ok(state.cache.get_mut(key).expect("just inserted"))
}

fn decode_event(
    rec: &InRecord,
    limits: &Limits,
    avro: Option<&AvroInput>,
) -> Result<Event, Invalid> {
    let Some(value) = rec.value else {
        return Err(Invalid::new(
            DlqReason::Tombstone,
            format!(
                "tombstone (null value) on the {} topic",
                rec.topic.replay_name()
            ),
        ));
    };
    if value.len() > limits.max_record_bytes {
        return Err(Invalid::new(
            DlqReason::TooLarge,
            format!(
                "record is {} bytes, more than the limit of {}",
                value.len(),
                limits.max_record_bytes
            ),
        ));
    }
    let decoded = match avro {
        Some(a) => a.decode_to_json(rec.topic, value)?,
        None => None,
    };
    let value = decoded.as_deref().unwrap_or(value);
    match rec.topic {
        InputTopic::Clicks => records::decode_click(value, limits).map(Event::Click),
        InputTopic::Identities => records::decode_identify(value, limits).map(Event::Identify),
        _ => records::decode_conversion_topic(value, limits),
    }
}

fn dlq(rec: &InRecord, e: Invalid) -> DlqRecord {
    DlqRecord {
        key: rec.key.map(<[u8]>::to_vec),
        value: rec.value.map(<[u8]>::to_vec),
        reason: e.1,
        error: e.0,
        source_topic: rec.source_topic.to_string(),
        partition: rec.partition,
        offset: rec.offset,
    }
}
