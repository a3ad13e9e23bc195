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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A schema id whose fetch failed is not asked for again before this long.
const REGISTRY_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Default cap on the JSON one Avro record may decode into.
pub const DEFAULT_MAX_JSON_BYTES: usize = 16 << 20;

enum IdEntry {
    Ready(Arc<Plans>),
    Failed(String, Instant),
}

/// Decodes Avro-framed input records into attrib's JSON form.
pub struct AvroInput {
    by_fingerprint: HashMap<u64, Arc<Plans>>,
    registry: Option<Registry>,
    by_id: Mutex<HashMap<u32, IdEntry>>,
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
            registry,
            by_id: Mutex::new(HashMap::new()),
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

    fn plans_for_id(&self, registry: &Registry, id: u32) -> Result<Arc<Plans>, String> {
        {
            let cache = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&id) {
                Some(IdEntry::Ready(p)) => return Ok(p.clone()),
                Some(IdEntry::Failed(e, at)) if at.elapsed() < REGISTRY_RETRY_AFTER => {
                    return Err(e.clone());
                }
                _ => {}
            }
        }
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
        let mut cache = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        match fetched {
            Ok(schema) => {
                let plans = Arc::new(plans_for(&schema));
                cache.insert(id, IdEntry::Ready(plans.clone()));
                Ok(plans)
            }
            Err(e) => {
                cache.insert(id, IdEntry::Failed(e.clone(), Instant::now()));
                Err(e)
            }
        }
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
