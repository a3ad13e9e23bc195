//! The attribution rules of docs/design.md §3, as one pure function of (journey, tables, record, time).
//!
//! No IO and no clock: the caller passes the processing time (`processed_at`, which appears only
//! on the output) and the partition's stream time. `replay`, the Kafka pipeline and the tests
//! all call [`apply`]; nothing else decides credit.

mod action;
mod change;
mod conversion;

use crate::model::journey::{Journey, StoredClick};
use crate::model::output::Output;
use crate::model::records::{Click, Event};
use crate::model::tables::Tables;
use crate::model::time::{Millis, days_to_ms};
use change::change_order;
use conversion::attribute;

pub use crate::model::tables::{DEFAULT_LOCKING_DAYS, DEFAULT_WINDOW_DAYS};
/// At most this many touchpoints are listed on an action: the first and the 49 latest.
pub const MAX_TOUCHPOINTS: usize = 50;

/// Engine settings that are not part of the tables.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSettings {
    /// Most clicks kept per journey; the oldest are dropped first.
    pub max_clicks_per_journey: usize,
    /// Kept beyond the longest window (clicks) and beyond locking (orders), for late records.
    pub retention_margin_ms: Millis,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_clicks_per_journey: 1000,
            retention_margin_ms: days_to_ms(30),
        }
    }
}

/// The time inputs of one step.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock processing time, written as `processed_at` only.
    pub processed_at: Millis,
    /// The partition's stream time, including the record being applied.
    pub stream_time: Millis,
}

/// What a step did besides its outputs, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    pub clicks_dropped_by_limit: usize,
    pub clicks_expired: usize,
    pub duplicate_clicks: usize,
}

/// Applies one journey event; pushes its outputs to `out`.
pub fn apply(
    journey: &mut Journey,
    tables: &Tables,
    settings: &EngineSettings,
    event: &Event,
    clock: Clock,
    out: &mut Vec<Output>,
) -> Effects {
    let mut fx = Effects {
        clicks_expired: journey.expire(clock.stream_time, click_keep_ms(tables, settings)),
        ..Effects::default()
    };
    match event {
        Event::Click(c) => add_click(journey, c, settings, &mut fx),
        Event::Conversion(c) => attribute(journey, tables, settings, c, clock, out),
        Event::Modification(m) => change_order(journey, m.into(), Some(m), clock, out),
        Event::Reversal(r) => change_order(journey, r.into(), None, clock, out),
        // A link changes no journey by itself (rules::stitching applies it).
        Event::Identify(_) => {}
    }
    fx
}

/// How long clicks are kept behind stream time: the longest window plus the margin; `None`
/// (keep all) while no program is configured.
pub fn click_keep_ms(tables: &Tables, settings: &EngineSettings) -> Option<Millis> {
    if tables.programs.is_empty() {
        return None;
    }
    Some(days_to_ms(tables.max_window_days()).saturating_add(settings.retention_margin_ms))
}

fn add_click(j: &mut Journey, c: &Click, settings: &EngineSettings, fx: &mut Effects) {
    if j.clicks.iter().any(|k| k.click_id == c.click_id) {
        fx.duplicate_clicks += 1;
        return;
    }
    let seq = j.next_seq;
    j.next_seq += 1;
    // Later records sort after earlier ones at the same time.
    let at = j.clicks.partition_point(|k| k.occurred_at <= c.occurred_at);
    j.insert_click(
        at,
        StoredClick {
            click_id: c.click_id.clone(),
            device_id: c.device_id.clone(),
            program_id: c.program_id.clone(),
            partner_id: c.partner_id.clone(),
            occurred_at: c.occurred_at,
            seq,
            shared_id: c.shared_id.clone(),
            sub_ids: c.sub_ids.iter().cloned().collect(),
        },
    );
    if j.clicks.len() > settings.max_clicks_per_journey {
        let n = j.clicks.len() - settings.max_clicks_per_journey;
        j.clicks.drain(..n);
        fx.clicks_dropped_by_limit += n;
    }
}
