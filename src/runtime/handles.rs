//! What the processing thread shares with the HTTP server, the demo and the tests.

use crate::model::journey::Journey;
use crate::ops::http::JourneyLookup;
use crate::ops::metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

/// What the processing thread shares with the HTTP server, the demo and the tests.
#[derive(Clone)]
pub struct Handles {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub shutdown: Arc<AtomicBool>,
    /// The open journey store, for `GET /journeys/{key}`.
    pub db: Arc<Mutex<Option<Arc<rocksdb::DB>>>>,
    /// Completed commits (for tests and the demo to wait on).
    pub commits: Arc<AtomicU64>,
    /// The processing thread's sign of life, for `/health/live`.
    pub heartbeat: Arc<crate::ops::http::Heartbeat>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            shutdown: Arc::new(AtomicBool::new(false)),
            db: Arc::new(Mutex::new(None)),
            commits: Arc::new(AtomicU64::new(0)),
            heartbeat: Arc::new(crate::ops::http::Heartbeat::default()),
        }
    }
}

impl Handles {
    /// Looks a journey key up in every partition of the open store.
    pub fn journey_lookup(&self) -> JourneyLookup {
        let db = self.db.clone();
        Arc::new(move |key: &[u8]| {
            let Some(db) = db.lock().expect("db lock").clone() else {
                return Ok(None);
            };
            let mut found = Vec::new();
            for item in db.prefix_iterator(b"m") {
                let (k, _) = item?;
                if k.first() != Some(&b'm') || k.len() != 5 {
                    break;
                }
                let p = i32::from_be_bytes([k[1], k[2], k[3], k[4]]);
                let mut jk = vec![b'j'];
                jk.extend_from_slice(&p.to_be_bytes());
                jk.extend_from_slice(key);
                if let Some(v) = db.get(&jk)? {
                    let j = Journey::decode(&v)?;
                    found.push(serde_json::json!({ "partition": p, "journey": journey_json(&j) }));
                }
            }
            Ok(if found.is_empty() {
                None
            } else {
                Some(
                    serde_json::json!({ "key": String::from_utf8_lossy(key), "partitions": found }),
                )
            })
        })
    }
}

pub(super) fn journey_json(j: &Journey) -> serde_json::Value {
    serde_json::json!({
        "clicks": j.clicks.iter().map(|c| serde_json::json!({
            "click_id": c.click_id, "device_id": c.device_id, "program_id": c.program_id, "partner_id": c.partner_id,
            "occurred_at": crate::model::time::format_rfc3339(c.occurred_at), "shared_id": c.shared_id, "sub_ids": c.sub_ids.as_slice(),
        })).collect::<Vec<_>>(),
        "orders": j.orders.iter().map(|o| serde_json::json!({
            "program_id": o.program_id, "event_type": o.event_type, "order_id": o.order_id,
            "occurred_at": crate::model::time::format_rfc3339(o.occurred_at),
            "action_id": o.credited.as_ref().map(|_| crate::model::output::action_id(&o.program_id, &o.event_type, &o.order_id)),
            "credited": o.credited.is_some(),
            "reversed": o.credited.as_ref().is_some_and(|c| c.reversed),
            "amount": o.credited.as_ref().map(|c| crate::model::money::round6(c.amount).to_string()),
            "payout": o.credited.as_ref().map(|c| crate::model::money::round6(c.payout).to_string()),
            "partners": o.credited.as_ref().map(|c| c.credits.iter().map(|k| k.partner_id.clone()).collect::<Vec<_>>()),
        })).collect::<Vec<_>>(),
    })
}
