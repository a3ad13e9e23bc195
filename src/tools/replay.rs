//! `attrib replay`: the engine over a JSONL file, without Kafka (docs/design.md §5).
//!
//! Input lines are `{"topic":"clicks|conversions|identities|promo_codes|config","key":…,"value":…}`,
//! applied in file order as one partition; output lines are
//! `{"topic":"actions|invalid_actions|dlq","key":…,"value":…}`. DLQ lines also carry the
//! headers a Kafka DLQ record would have. With identity stitching on ([`ReplayOptions`]),
//! each record's link and move are applied before the record (docs/design.md §6); with it
//! off, `identities` lines are skipped without output.

use crate::formats::codec::{OutputTopic, dlq_headers};
use crate::model::output::OutRecord;
use crate::model::records::{DlqReason, InputTopic, JourneyTopic, Limits, RawEvent, RawEventSeed};
use crate::model::time::now_ms;
use crate::rules::engine::EngineSettings;
use crate::stage::attribution::{InRecord, Processor};
use crate::state::store::{JourneyStore, MemoryStore};
use anyhow::{Context, Result};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::io::{BufRead, Write};

/// Lines per batch: `processed_at` is read once per batch.
const BATCH_LINES: usize = 16_384;
/// Journeys held decoded in the processor's cache before they are flushed to the store.
const MAX_CACHED_JOURNEYS: usize = 1_000_000;

#[derive(Deserialize)]
struct Line<'a> {
    topic: &'a str,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

/// The settings a replay honours: those that change output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayOptions {
    pub engine: EngineSettings,
    pub limits: Limits,
    /// Cross-device identity stitching (docs/design.md §6).
    pub stitching: bool,
}

impl ReplayOptions {
    /// The options `attrib run` would process with under `settings`.
    pub fn from_settings(settings: &crate::ops::settings::Settings) -> ReplayOptions {
        ReplayOptions {
            engine: settings.engine_settings(),
            limits: settings.limits.clone(),
            stitching: settings.identity.stitching,
        }
    }

    /// A processor over an in-memory store with these options.
    pub fn processor(&self) -> Processor {
        Processor::new(
            Box::new(MemoryStore::default()),
            self.engine.clone(),
            self.limits.clone(),
        )
        .with_stitching(self.stitching)
    }
}

/// What a replay did, for the command's summary on stderr.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub actions: u64,
    pub invalid_actions: u64,
    pub dlq: u64,
}

/// Replays `input` into `output` with the default settings, over an in-memory store that is
/// dropped at the end (so the last journeys are not flushed to it).
pub fn replay(input: impl BufRead, output: impl Write) -> Result<ReplaySummary> {
    replay_keeping_state(input, output, &ReplayOptions::default()).map(|(summary, _)| summary)
}

/// As [`replay`], but hands the processor (and so every journey) back instead of dropping it:
/// for a caller about to exit, which may leave the memory to the OS rather than free half a
/// million journeys one allocation at a time.
pub fn replay_keeping_state(
    input: impl BufRead,
    output: impl Write,
    options: &ReplayOptions,
) -> Result<(ReplaySummary, Processor)> {
    let mut p = options.processor();
    let summary = replay_into(&mut p, input, output, now_ms)?;
    Ok((summary, p))
}

/// Replays with a given store, settings and processing clock, and flushes the journeys to the
/// store at the end (so that a later replay can resume from it).
pub fn replay_with(
    input: impl BufRead,
    output: impl Write,
    store: Box<dyn JourneyStore>,
    settings: EngineSettings,
    limits: Limits,
    clock: impl Fn() -> i64,
) -> Result<(ReplaySummary, Processor)> {
    let mut p = Processor::new(store, settings, limits);
    let s = replay_into(&mut p, input, output, clock)?;
    p.flush()?;
    Ok((s, p))
}

/// Replays through an existing processor (its tables and journeys carry over).
pub fn replay_into(
    p: &mut Processor,
    input: impl BufRead,
    mut output: impl Write,
    clock: impl Fn() -> i64,
) -> Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut out = Vec::new();
    let mut line = String::new();
    let mut input = input;
    let mut offset: i64 = 0;
    let mut processed_at = clock();
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        line.clear();
        if input.read_line(&mut line).context("cannot read input")? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            offset += 1;
            continue;
        }
        process_line(p, text, offset, processed_at, &mut out)?;
        for o in out.drain(..) {
            summary.count(&o);
            write_output(&mut buf, &o)?;
        }
        if buf.len() > 1 << 16 {
            output.write_all(&buf)?;
            buf.clear();
        }
        offset += 1;
        if offset as usize % BATCH_LINES == 0 {
            if p.pending() > MAX_CACHED_JOURNEYS {
                p.flush()?;
            }
            processed_at = clock();
        }
    }
    output.write_all(&buf)?;
    output.flush()?;
    summary.lines = offset as u64;
    Ok(summary)
}

impl ReplaySummary {
    fn count(&mut self, o: &OutRecord) {
        match o {
            OutRecord::Action(_) => self.actions += 1,
            OutRecord::Invalid(_) => self.invalid_actions += 1,
            OutRecord::Dlq(_) => self.dlq += 1,
        }
    }
}

fn process_line(
    p: &mut Processor,
    text: &str,
    offset: i64,
    processed_at: i64,
    out: &mut Vec<OutRecord>,
) -> Result<()> {
    // Most lines are clicks and conversions in the shape `generate` writes: parsed in one
    // pass. Anything else, and any record that fails its checks, takes the general path,
    // which parses the line, then its value, and names what is wrong.
    if p.avro.is_none() && text.len() <= p.limits.max_record_bytes {
        if let Some(fast) = parse_fast(text) {
            if let Ok(event) = fast.raw.validate(&p.limits) {
                let key = fast.key.as_bytes();
                if p.process_decoded(fast.topic, 0, key, &event, processed_at, out)? {
                    return Ok(());
                }
            }
        }
    }
    // A line that is not a record is kept whole, as a JSON string.
    let bad = |reason: DlqReason, error: String, topic: &str| {
        OutRecord::Dlq(Box::new(crate::model::output::DlqRecord {
            key: None,
            value: Some(serde_json::to_vec(text).expect("strings serialize")),
            reason,
            error,
            source_topic: topic.to_string(),
            partition: 0,
            offset,
        }))
    };
    let line: Line = match serde_json::from_str(text) {
        Ok(l) => l,
        Err(e) => {
            out.push(bad(
                DlqReason::Malformed,
                format!("replay line is not a JSON object with `topic`, `key` and `value`: {e}"),
                "replay",
            ));
            return Ok(());
        }
    };
    let Some(topic) = InputTopic::from_replay_name(line.topic) else {
        out.push(bad(
            DlqReason::Malformed,
            format!("replay line has unknown topic `{}`", line.topic),
            line.topic,
        ));
        return Ok(());
    };
    let key: Option<Cow<str>> = match line.key.map(|k| parse_key(k.get())) {
        None => None,
        Some(Ok(k)) => k,
        Some(Err(_)) => {
            out.push(bad(
                DlqReason::BadKey,
                "replay line's `key` is not a string or null".to_string(),
                line.topic,
            ));
            return Ok(());
        }
    };
    let value = line.value.map(|v| v.get()).filter(|v| *v != "null");
    let rec = InRecord {
        topic,
        source_topic: topic.replay_name(),
        partition: 0,
        offset,
        key: key.as_deref().map(str::as_bytes),
        value: value.map(str::as_bytes),
    };
    p.process(&rec, processed_at, out)
}

/// A journey record line parsed in one pass.
struct FastLine<'a> {
    topic: InputTopic,
    key: &'a str,
    raw: RawEvent<'a>,
}

/// Parses `{"topic":"clicks"|"conversions","key":"…","value":{…}}`, with exactly these fields
/// in this order, a string key and no escapes in the names, topic or key; `None` for any
/// other line (including every line the general path would refuse). The line is no longer
/// than the record size limit, so neither is its value.
fn parse_fast(text: &str) -> Option<FastLine<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let line = FastLineSeed.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(line)
}

struct FastLineSeed;

impl<'de> DeserializeSeed<'de> for FastLineSeed {
    type Value = FastLine<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<FastLine<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FastLineSeed {
    type Value = FastLine<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a replay line of the clicks or conversions topic")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FastLine<'de>, A::Error> {
        expect_key(&mut map, "topic")?;
        let (topic, journey_topic) = match map.next_value::<&str>()? {
            "clicks" => (InputTopic::Clicks, JourneyTopic::Clicks),
            "conversions" => (InputTopic::Conversions, JourneyTopic::Conversions),
            _ => return Err(de::Error::custom("not a journey topic")),
        };
        expect_key(&mut map, "key")?;
        let key = map.next_value::<&str>()?;
        expect_key(&mut map, "value")?;
        let raw = map.next_value_seed(RawEventSeed(journey_topic))?;
        if map.next_key::<&str>()?.is_some() {
            return Err(de::Error::custom("more fields than the fast path reads"));
        }
        Ok(FastLine { topic, key, raw })
    }
}

/// Reads the next field name, which must be `name`.
fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, name: &str) -> Result<(), A::Error> {
    match map.next_key::<&str>()? {
        Some(k) if k == name => Ok(()),
        _ => Err(de::Error::custom("fields not in the fast path's order")),
    }
}

/// A line's `key`: a JSON string or null, borrowed from the line unless it has escapes.
fn parse_key(json: &str) -> serde_json::Result<Option<Cow<'_, str>>> {
    match serde_json::from_str::<Option<&str>>(json) {
        Ok(k) => Ok(k.map(Cow::Borrowed)),
        Err(_) => serde_json::from_str::<Option<String>>(json).map(|k| k.map(Cow::Owned)),
    }
}

/// Writes one output line.
pub fn write_output(w: &mut Vec<u8>, o: &OutRecord) -> Result<()> {
    match o {
        OutRecord::Action(a) => {
            w.extend_from_slice(b"{\"topic\":\"actions\",\"key\":");
            serde_json::to_writer(&mut *w, &a.action_id)?;
            w.extend_from_slice(b",\"value\":");
            serde_json::to_writer(&mut *w, a)?;
        }
        OutRecord::Invalid(i) => {
            w.extend_from_slice(b"{\"topic\":\"invalid_actions\",\"key\":");
            serde_json::to_writer(&mut *w, &i.key())?;
            w.extend_from_slice(b",\"value\":");
            serde_json::to_writer(&mut *w, i)?;
        }
        OutRecord::Dlq(d) => {
            w.extend_from_slice(b"{\"topic\":\"");
            w.extend_from_slice(OutputTopic::Dlq.replay_name().as_bytes());
            w.extend_from_slice(b"\",\"key\":");
            match &d.key {
                Some(k) => serde_json::to_writer(&mut *w, &String::from_utf8_lossy(k))?,
                None => w.extend_from_slice(b"null"),
            }
            w.extend_from_slice(b",\"value\":");
            match &d.value {
                None => w.extend_from_slice(b"null"),
                Some(v) => match serde_json::from_slice::<&RawValue>(v) {
                    Ok(raw) => w.extend_from_slice(raw.get().as_bytes()),
                    Err(_) => serde_json::to_writer(&mut *w, &String::from_utf8_lossy(v))?,
                },
            }
            w.extend_from_slice(b",\"headers\":{");
            for (i, (k, v)) in dlq_headers(d).iter().enumerate() {
                if i > 0 {
                    w.push(b',');
                }
                serde_json::to_writer(&mut *w, k)?;
                w.push(b':');
                serde_json::to_writer(&mut *w, v)?;
            }
            w.push(b'}');
        }
    }
    w.extend_from_slice(b"}\n");
    Ok(())
}
