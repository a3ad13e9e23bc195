//! Input: Avro-framed records (Confluent or single-object) decoded into attrib's JSON form.

use super::decode::decode_with;
use super::registry::{CONFLUENT_MAGIC, Registry};
use super::resolve::{Plans, compile, plans_for};
use super::schemas::{own_schema, own_schemas, topic_index};
use super::single_object::{crc64_avro, fingerprint};
use crate::model::records::{DlqReason, InputTopic, Invalid, invalid};
use crate::ops::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use apache_avro::Schema;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A schema id whose fetch failed is not asked for again before this long.
const REGISTRY_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Default cap on the JSON one Avro record may decode into.
pub const DEFAULT_MAX_JSON_BYTES: usize = 16 << 20;

/// Longest wait for a writer schema the fetcher thread is fetching (its request times out
/// well before).
const PENDING_WAIT: Duration = Duration::from_secs(30);

enum IdEntry {
    Ready(Arc<Plans>),
    Failed(String, Instant),
    /// Asked of the fetcher thread; not answered yet.
    Pending,
}

/// Writer schemas by registry id, shared with the fetcher thread.
#[derive(Default)]
struct Ids {
    entries: Mutex<HashMap<u32, IdEntry>>,
    /// Signalled when a pending entry is answered.
    answered: Condvar,
}

impl Ids {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, IdEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Decodes Avro-framed input records into attrib's JSON form.
///
/// Writer schemas of Confluent-framed records are fetched from the registry on a thread of
/// its own (`attrib-schemas`), never on the caller's: [`AvroInput::prefetch`] asks for a
/// record's schema as soon as the record is read from Kafka, and decoding waits for a fetch in
/// flight rather than making one.
pub struct AvroInput {
    by_fingerprint: HashMap<u64, Arc<Plans>>,
    registry: Option<Arc<Registry>>,
    ids: Arc<Ids>,
    /// Ids to fetch, to the fetcher thread (started with the first one).
    fetcher: Mutex<Option<Sender<u32>>>,
    max_json_bytes: usize,
}

impl AvroInput {
    /// attrib's schemas, the given extra writer schemas (`.avsc` files, for single-object
    /// records written with another version of a schema) and, if given, a Schema Registry.
    pub fn new(registry_url: Option<&str>, extra_writer_schemas: &[PathBuf]) -> Result<AvroInput> {
        let registry = registry_url
            .filter(|u| !u.trim().is_empty())
            .map(Registry::new)
            .transpose()?;
        AvroInput::with_registry(registry, extra_writer_schemas)
    }

    /// Like [`AvroInput::new`], with a registry client already set up.
    pub fn with_registry(
        registry: Option<Registry>,
        extra_writer_schemas: &[PathBuf],
    ) -> Result<AvroInput> {
        let mut by_fingerprint = HashMap::new();
        for own in own_schemas() {
            let plans = Arc::new(plans_for(&own.schema));
            by_fingerprint.insert(own.fingerprint, plans.clone());
            // apache-avro's canonical form keeps a decimal's precision and scale; records
            // written by it carry that fingerprint instead.
            by_fingerprint
                .entry(crc64_avro(own.schema.canonical_form().as_bytes()))
                .or_insert(plans);
        }
        for path in extra_writer_schemas {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read writer schema {}", path.display()))?;
            let schema = Schema::parse_str(&text)
                .map_err(|e| anyhow!("writer schema {} does not parse: {e}", path.display()))?;
            let fp =
                fingerprint(&text).with_context(|| format!("writer schema {}", path.display()))?;
            let plans = plans_for(&schema);
            if plans.iter().all(Result::is_err) {
                let why: Vec<&str> = plans
                    .iter()
                    .filter_map(|p| p.as_ref().err().map(String::as_str))
                    .collect();
                bail!(
                    "writer schema {} is not readable on any input topic: {}",
                    path.display(),
                    why.join("; ")
                );
            }
            let plans = Arc::new(plans);
            by_fingerprint.insert(fp, plans.clone());
            by_fingerprint
                .entry(crc64_avro(schema.canonical_form().as_bytes()))
                .or_insert(plans);
        }
        Ok(AvroInput {
            by_fingerprint,
            registry: registry.map(Arc::new),
            ids: Arc::default(),
            fetcher: Mutex::new(None),
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
        })
    }

    /// From the settings: the `schema_registry_*` settings, `extra_writer_schemas`, and a JSON
    /// output cap of four times `limits.max_record_bytes`.
    pub fn from_settings(s: &Settings) -> Result<AvroInput> {
        Ok(
            AvroInput::with_registry(Registry::from_settings(s)?, &s.extra_writer_schemas)?
                .with_max_json_bytes(s.limits.max_record_bytes.saturating_mul(4).max(1 << 16)),
        )
    }

    /// Caps the JSON one record may decode into.
    pub fn with_max_json_bytes(mut self, n: usize) -> Self {
        self.max_json_bytes = n;
        self
    }

    /// `Ok(None)`: not Avro-framed (read it as JSON). `Ok(Some(json))`: the record in attrib's
    /// JSON form. `Err`: Avro-framed but not decodable (the DLQ reason).
    pub fn decode_to_json(
        &self,
        topic: InputTopic,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, Invalid> {
        let fail = |e: String| {
            Invalid::new(
                DlqReason::Malformed,
                format!("avro record cannot be decoded: {e}"),
            )
        };
        let (plans, body) = match bytes {
            [CONFLUENT_MAGIC, rest @ ..] => {
                if rest.len() < 4 {
                    return Err(fail(
                        "confluent-framed record is shorter than its 5-byte header".into(),
                    ));
                }
                let Some(registry) = &self.registry else {
                    return Err(invalid(
                        "confluent-framed record but no schema_registry.url configured",
                    ));
                };
                let id = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
                (self.plans_for_id(registry, id).map_err(fail)?, &rest[4..])
            }
            [0xC3, 0x01, rest @ ..] => {
                if rest.len() < 8 {
                    return Err(fail(
                        "single-object record is shorter than its 10-byte header".into(),
                    ));
                }
                let fp = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                let plans = self.by_fingerprint.get(&fp).cloned().ok_or_else(|| {
                    fail(format!(
                        "unknown writer schema fingerprint {} (neither one of attrib's schemas nor of extra_writer_schemas)",
                        hex(&rest[..8])
                    ))
                })?;
                (plans, &rest[8..])
            }
            _ => return Ok(None),
        };
        let plan = plans[topic_index(topic)]
            .as_ref()
            .map_err(|e| fail(e.clone()))?;
        decode_with(plan, body, self.max_json_bytes)
            .map(Some)
            .map_err(fail)
    }

    /// Starts fetching the writer schema of a Confluent-framed record, if it is not known or
    /// being fetched (on the fetcher thread: this returns at once). Other records: nothing.
    pub fn prefetch(&self, bytes: &[u8]) {
        let [CONFLUENT_MAGIC, a, b, c, d, ..] = *bytes else {
            return;
        };
        if self.registry.is_none() {
            return;
        }
        let id = u32::from_be_bytes([a, b, c, d]);
        let mut ids = self.ids.lock();
        if needs_fetch(ids.get(&id)) && self.ask_fetcher(id) {
            ids.insert(id, IdEntry::Pending);
        }
    }

    /// Hands `id` to the fetcher thread, starting it if need be; false if it cannot run.
    fn ask_fetcher(&self, id: u32) -> bool {
        let mut fetcher = self.fetcher.lock().unwrap_or_else(|p| p.into_inner());
        if fetcher.is_none() {
            let Some(registry) = self.registry.clone() else {
                return false;
            };
            let (tx, rx) = channel::<u32>();
            let ids = self.ids.clone();
            let started = std::thread::Builder::new()
                .name("attrib-schemas".into())
                .spawn(move || {
                    for id in rx {
                        let entry = fetch(&registry, id);
                        ids.lock().insert(id, entry);
                        ids.answered.notify_all();
                    }
                });
            if started.is_err() {
                return false;
            }
            *fetcher = Some(tx);
        }
        fetcher.as_ref().is_some_and(|tx| tx.send(id).is_ok())
    }

    fn plans_for_id(&self, registry: &Registry, id: u32) -> Result<Arc<Plans>, String> {
        let deadline = Instant::now() + PENDING_WAIT;
        let mut ids = self.ids.lock();
        loop {
            match ids.get(&id) {
                Some(IdEntry::Ready(p)) => return Ok(p.clone()),
                Some(IdEntry::Failed(e, at)) if at.elapsed() < REGISTRY_RETRY_AFTER => {
                    return Err(e.clone());
                }
                Some(IdEntry::Pending) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(format!(
                            "writer schema id {id}: no answer from the schema registry at {} within {PENDING_WAIT:?}",
                            registry.shown()
                        ));
                    }
                    ids = self
                        .ids
                        .answered
                        .wait_timeout(ids, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ if self.ask_fetcher(id) => {
                    ids.insert(id, IdEntry::Pending);
                }
                _ => {
                    // No fetcher thread (it could not start): fetch here.
                    drop(ids);
                    let entry = fetch(registry, id);
                    ids = self.ids.lock();
                    ids.insert(id, entry);
                }
            }
        }
    }
}

/// Whether a schema id's entry calls for a fetch: unknown, or failed long enough ago.
fn needs_fetch(entry: Option<&IdEntry>) -> bool {
    match entry {
        None => true,
        Some(IdEntry::Failed(_, at)) => at.elapsed() >= REGISTRY_RETRY_AFTER,
        Some(IdEntry::Ready(_) | IdEntry::Pending) => false,
    }
}

/// Fetches and compiles the writer schema `id` (on the fetcher thread).
fn fetch(registry: &Registry, id: u32) -> IdEntry {
    let fetched = registry
        .schema_by_id(id)
        .map_err(|e| {
            format!(
                "cannot fetch writer schema id {id} from the schema registry at {}: {e}",
                registry.shown()
            )
        })
        .and_then(|text| {
            Schema::parse_str(&text)
                .map_err(|e| format!("writer schema id {id} does not parse: {e}"))
        });
    match fetched {
        Ok(schema) => IdEntry::Ready(Arc::new(plans_for(&schema))),
        Err(e) => IdEntry::Failed(e, Instant::now()),
    }
}

/// Decodes a bare datum (no framing) written with one of attrib's schemas, by file stem
/// (`"action"`, `"click"`, …), into attrib's JSON form. For tools and tests.
pub fn datum_to_json(stem: &str, body: &[u8]) -> Result<Vec<u8>, Invalid> {
    let own = own_schema(stem).ok_or_else(|| invalid(format!("no schema `{stem}`")))?;
    compile(&own.schema, &own.names, &own.schema, &own.names, 0)
        .and_then(|plan| decode_with(&plan, body, DEFAULT_MAX_JSON_BYTES))
        .map_err(|e| {
            Invalid::new(
                DlqReason::Malformed,
                format!("avro record cannot be decoded: {e}"),
            )
        })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
