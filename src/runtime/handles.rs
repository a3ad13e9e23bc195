//! What the processing thread shares with the HTTP server, the demo and the tests.

use crate::model::identity::{self, JourneyRef, Link};
use crate::model::journey::Journey;
use crate::ops::http::JourneyLookup;
use crate::ops::metrics::Metrics;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A request to stop, shared by the signal handler, the processing thread and whoever waits.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Asks everything that watches this to stop (the pipeline commits and leaves the group).
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Waits `d`, or less if a stop is requested meanwhile, beating `heartbeat` (a wait is
    /// not a hang); returns whether a stop was requested.
    pub fn sleep_or_stop(
        &self,
        d: std::time::Duration,
        heartbeat: &crate::ops::http::Heartbeat,
    ) -> bool {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !self.requested() {
            heartbeat.beat();
            let left = until.saturating_duration_since(std::time::Instant::now());
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
        self.requested()
    }
}

/// What the processing thread shares with the HTTP server, the demo and the tests.
#[derive(Clone)]
pub struct Handles {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub shutdown: Shutdown,
    /// The open journey store, for `GET /journeys/{key}`.
    pub db: Arc<Mutex<Option<Arc<rocksdb::DB>>>>,
    /// Completed commits (for tests and the demo to wait on).
    pub commits: Arc<AtomicU64>,
    /// The processing thread's sign of life, for `/health/live`.
    pub heartbeat: Arc<crate::ops::http::Heartbeat>,
    /// The partitions this instance owns: the store may keep partitions it owned before,
    /// which a lookup must not answer from.
    pub owned: Arc<RwLock<BTreeSet<i32>>>,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            shutdown: Shutdown::default(),
            db: Arc::new(Mutex::new(None)),
            commits: Arc::new(AtomicU64::new(0)),
            heartbeat: Arc::new(crate::ops::http::Heartbeat::default()),
            owned: Arc::new(RwLock::new(BTreeSet::new())),
        }
    }
}

impl Handles {
    /// Looks a journey key up in this instance's store only (see [`Handles::local_lookup`]).
    pub fn journey_lookup(&self) -> JourneyLookup {
        let local = self.local_lookup();
        Arc::new(move |key: &[u8], _local_only: bool| local(key))
    }

    /// Looks a journey key up here, and when it is not here, in the other instances of the
    /// group (found through `directory`), unless the request was forwarded already.
    pub fn journey_lookup_anywhere(
        &self,
        directory: super::directory::Directory,
        self_url: String,
        token: String,
    ) -> JourneyLookup {
        let local = self.local_lookup();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        Arc::new(move |key: &[u8], local_only: bool| {
            if let Some(mut found) = local(key)? {
                found["instance"] = serde_json::Value::String(self_url.clone());
                return Ok(Some(found));
            }
            if local_only {
                return Ok(None);
            }
            let owners = directory.owners()?;
            let mut failed = Vec::new();
            for owner in owners.iter().filter(|o| o.url != self_url) {
                match ask(&agent, &owner.url, key, &token) {
                    Ok(Some(found)) => return Ok(Some(found)),
                    Ok(None) => {}
                    Err(e) => failed.push(format!("{}: {e}", owner.url)),
                }
            }
            if failed.is_empty() {
                Ok(None)
            } else {
                anyhow::bail!(
                    "not found on the instances that answered; {} did not: {}",
                    failed.len(),
                    failed.join("; ")
                )
            }
        })
    }

    /// Looks a journey key up in the owned partitions of the open store: the journey stored
    /// under the key (a device's anonymous journey, with stitching on), and with stitching on
    /// the device's link and its customer's journey, and the journey of a customer of that id.
    fn local_lookup(
        &self,
    ) -> impl Fn(&[u8]) -> anyhow::Result<Option<serde_json::Value>> + Send + Sync + 'static {
        let db = self.db.clone();
        let owned = self.owned.clone();
        move |key: &[u8]| {
            let Some(db) = db.lock().expect("db lock").clone() else {
                return Ok(None);
            };
            let owned = owned.read().expect("owned lock").clone();
            let mut partitions = stored_partitions(&db)?;
            partitions.retain(|p| owned.contains(p));
            let get = |p: i32, k: &[u8]| -> anyhow::Result<Option<Vec<u8>>> {
                let mut jk = vec![b'j'];
                jk.extend_from_slice(&p.to_be_bytes());
                jk.extend_from_slice(k);
                Ok(db.get(&jk)?)
            };
            let journeys_of = |k: &[u8]| -> anyhow::Result<Vec<serde_json::Value>> {
                let mut found = Vec::new();
                for &p in &partitions {
                    if let Some(v) = get(p, k)? {
                        let j = Journey::decode(&v)?;
                        found.push(
                            serde_json::json!({ "partition": p, "journey": journey_json(&j) }),
                        );
                    }
                }
                Ok(found)
            };
            let found = journeys_of(key)?;
            let mut lk = Vec::new();
            identity::link_key(key, &mut lk);
            let mut link = None;
            for &p in &partitions {
                if let Some(v) = get(p, &lk)? {
                    link = Some((p, Link::decode(&v)?));
                }
            }
            let customer_key = |c: &str| {
                let mut k = Vec::new();
                JourneyRef::Customer(c).store_key(&mut k);
                k
            };
            let as_customer = journeys_of(&customer_key(&String::from_utf8_lossy(key)))?;
            if found.is_empty() && link.is_none() && as_customer.is_empty() {
                return Ok(None);
            }
            let mut out = serde_json::json!({
                "key": String::from_utf8_lossy(key),
                "partitions": found,
            });
            if let Some((p, l)) = link {
                out["link"] = serde_json::json!({
                    "partition": p,
                    "customer_id": l.customer_id,
                    "seen_at": crate::model::time::format_rfc3339(l.seen_at),
                    "customer_journey": journeys_of(&customer_key(&l.customer_id))?,
                });
            }
            if !as_customer.is_empty() {
                out["customer_journey"] = serde_json::Value::Array(as_customer);
            }
            Ok(Some(out))
        }
    }
}

/// Asks another instance for a key, marked as forwarded so that it answers from its own
/// store only.
fn ask(
    agent: &ureq::Agent,
    url: &str,
    key: &[u8],
    token: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let key = percent_encode(key);
    let mut resp = agent
        .get(&format!("{url}/journeys/{key}"))
        .header("Authorization", &format!("Bearer {token}"))
        .header(crate::ops::http::FORWARDED_HEADER, "1")
        .call()?;
    match resp.status().as_u16() {
        200 => {
            let body = resp
                .body_mut()
                .with_config()
                .limit(16 << 20)
                .read_to_string()?;
            Ok(Some(serde_json::from_str(&body)?))
        }
        404 => Ok(None),
        status => anyhow::bail!(
            "HTTP {status}: {}",
            resp.body_mut().read_to_string().unwrap_or_default()
        ),
    }
}

/// A key as one URL path segment.
fn percent_encode(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The partitions the store holds metadata for.
fn stored_partitions(db: &rocksdb::DB) -> anyhow::Result<Vec<i32>> {
    let mut out = Vec::new();
    for item in db.prefix_iterator(b"m") {
        let (k, _) = item?;
        if k.first() != Some(&b'm') || k.len() != 5 {
            break;
        }
        out.push(i32::from_be_bytes([k[1], k[2], k[3], k[4]]));
    }
    Ok(out)
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
