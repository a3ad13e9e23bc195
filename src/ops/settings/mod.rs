//! Settings: a TOML file (`--config FILE`), each key overridable by an `ATTRIB_*` environment
//! variable ([`env`]: `topics.clicks` ← `ATTRIB_TOPICS_CLICKS`), validated into checked types
//! before anything starts: addresses as [`SocketAddr`], intervals as [`Duration`], each
//! section checking itself and naming the field it refuses.
//!
//! Sections: `[topics]`, `[output_formats]`, `[schema_registry]` ([`registry`]), `[identity]`,
//! `[journeys_api]`, `[limits]` and `[kafka]` with `[kafka.consumer]`, `[kafka.producer]`,
//! `[kafka.admin]` ([`kafka`]). `attrib check-config --list` lists every key, its variable
//! and its default.

mod env;
pub mod kafka;
pub mod registry;

pub use env::{is_other_tool_variable, list_settings, variable_of};
pub use kafka::{ClientKind, KafkaSettings, is_secret_kafka_option, reserved_kafka_option};
pub use registry::{SchemaRegistry, SubjectNameStrategy};

use crate::model::records::Limits;
use crate::model::time::days_to_ms;
use crate::rules::engine::EngineSettings;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde::{Deserializer, Serializer};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Output, state changes and input offsets commit together in one Kafka transaction.
    ExactlyOnce,
    /// Offsets are committed after the outputs are acknowledged; a crash may repeat output.
    AtLeastOnce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    Json,
    /// Avro datums of `schemas/action.avsc` and `invalid_action.avsc` (see [`crate::formats::avro`]).
    Avro,
}

/// The format of each output topic; a topic left out takes the global `output_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputFormats {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<OutputFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_actions: Option<OutputFormat>,
}

/// Topic names (docs/design.md §1).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub clicks: String,
    pub conversions: String,
    /// Identify records (device → customer), read with `identity.stitching` on.
    pub identities: String,
    pub promo_codes: String,
    pub config: String,
    pub actions: String,
    pub invalid_actions: String,
    pub dlq: String,
}

impl Topics {
    /// The name of an input topic.
    pub fn input(&self, t: crate::model::records::InputTopic) -> &str {
        use crate::model::records::InputTopic::*;
        match t {
            Clicks => &self.clicks,
            Conversions => &self.conversions,
            Identities => &self.identities,
            PromoCodes => &self.promo_codes,
            Config => &self.config,
        }
    }
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            clicks: "attrib.clicks".into(),
            conversions: "attrib.conversions".into(),
            identities: "attrib.identities".into(),
            promo_codes: "attrib.promo-codes".into(),
            config: "attrib.config".into(),
            actions: "attrib.actions".into(),
            invalid_actions: "attrib.invalid-actions".into(),
            dlq: "attrib.dlq".into(),
        }
    }
}

/// Cross-device identity (`[identity]`, docs/design.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Stitch devices to customers: a conversion sees the clicks of every device linked to
    /// its customer (links come from identify records and from records that carry both a
    /// `device_id` and a `customer_id`). Off by default.
    pub stitching: bool,
}

/// `GET /journeys/{key}`: off unless enabled, and then only with the bearer token.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JourneysApi {
    pub enabled: bool,
    pub token: Option<String>,
    /// The base URL other instances reach this one's HTTP server at (`http://10.0.0.5:9464`),
    /// published to the consumer group so that any instance can forward a lookup to the
    /// instance that owns the key. Unset: `http://<host name>:<port of http_addr>`, or
    /// `http_addr` itself when it names one address.
    pub advertised_url: Option<String>,
}

/// All settings, with their defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Consumer group, transactional-id prefix and prefix of internal topics.
    pub application_id: String,
    /// This instance's name (Kafka `client.id`, table reader group); defaults to the host name.
    pub instance_id: Option<String>,
    /// Where RocksDB keeps journeys.
    pub state_dir: PathBuf,
    /// Address of the HTTP server (metrics, health, journeys): `IP:PORT` or `HOST:PORT`, a
    /// host name resolved when the settings are loaded (to its first IPv4 address, if any).
    #[serde(deserialize_with = "de_http_addr")]
    pub http_addr: SocketAddr,
    pub processing_guarantee: Guarantee,
    /// How often output, state and offsets are committed (`commit_interval_ms`).
    #[serde(rename = "commit_interval_ms", with = "millis")]
    pub commit_interval: Duration,
    /// Most records processed between two commits.
    pub max_batch_records: usize,
    /// How long a task waits for an empty input partition that is not known to be read to
    /// its end (not fetched yet, or records still on the broker) before it processes the
    /// other partition's records ahead of it (Kafka Streams' `max.task.idle.ms`; `max_task_idle_ms`).
    #[serde(rename = "max_task_idle_ms", with = "millis")]
    pub max_task_idle: Duration,
    /// How long a record waits, from its arrival, before it is processed ahead of an empty
    /// co-partition that is read to its end: covers a click produced just before a conversion
    /// that reaches the broker, or attrib, just after it (`input_grace_ms`).
    #[serde(rename = "input_grace_ms", with = "millis")]
    pub input_grace: Duration,
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `attrib=debug,rdkafka=warn`, …), checked by
    /// [`check_log_filter`].
    pub log_level: String,
    /// Format of both output topics unless `output_formats` says otherwise.
    pub output_format: OutputFormat,
    /// The Confluent Schema Registry (`[schema_registry]`): Confluent-framed Avro input is
    /// read through it, and Avro output is registered in it and Confluent-framed.
    pub schema_registry: SchemaRegistry,
    /// Extra writer schemas (`.avsc` files) for single-object-encoded Avro input written with a
    /// schema other than attrib's own (an older or newer version).
    pub extra_writer_schemas: Vec<PathBuf>,
    /// Days kept beyond the longest window (clicks) and beyond locking (orders).
    pub retention_margin_days: i64,
    /// Per output topic formats (`[output_formats]`), overriding `output_format`.
    pub output_formats: OutputFormats,
    pub topics: Topics,
    pub identity: Identity,
    /// librdkafka options passed through (security, SASL, TLS, …), per client kind.
    pub kafka: KafkaSettings,
    pub journeys_api: JourneysApi,
    pub limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            brokers: "localhost:9092".into(),
            application_id: "attrib".into(),
            instance_id: None,
            state_dir: PathBuf::from("./attrib-state"),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9464)),
            processing_guarantee: Guarantee::ExactlyOnce,
            commit_interval: Duration::from_millis(100),
            max_batch_records: 10_000,
            max_task_idle: Duration::from_millis(10_000),
            input_grace: Duration::from_millis(500),
            log_format: LogFormat::Plain,
            log_level: "info".into(),
            output_format: OutputFormat::Json,
            schema_registry: SchemaRegistry::default(),
            extra_writer_schemas: Vec::new(),
            retention_margin_days: 30,
            output_formats: OutputFormats::default(),
            topics: Topics::default(),
            identity: Identity::default(),
            kafka: KafkaSettings::default(),
            journeys_api: JourneysApi::default(),
            limits: Limits::default(),
        }
    }
}

impl Settings {
    /// Loads settings from an optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        Self::load_from(file, std::env::vars())
    }

    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings> {
        let text = match file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read config file {}", f.display()))?,
            None => String::new(),
        };
        Self::parse(&text, env)
    }

    pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid config file: {e}"))?;
        refuse_moved_keys(&table)?;
        env::apply(&mut table, env)?;
        let mut s: Settings =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let msg = e.inner().to_string();
                match path.as_str() {
                    "." | "" => anyhow::anyhow!("invalid config: {}", msg.trim()),
                    _ => anyhow::anyhow!("invalid config: `{path}`: {}", msg.trim()),
                }
            })?;
        s.schema_registry.normalize();
        if s.journeys_api
            .advertised_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            s.journeys_api.advertised_url = None;
        }
        // Directives as `tracing` parses them: it does not trim around commas.
        s.log_level = s
            .log_level
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",");
        s.validate()?;
        Ok(s)
    }

    /// A copy for showing (`attrib check-config`): secrets — the journeys API token, the
    /// registry password (also in its URL) and secret `[kafka]` options
    /// ([`is_secret_kafka_option`]) — read `***`, so that whether one is set stays visible.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        if let Some(secret) = s.journeys_api.token.as_mut().filter(|t| !t.is_empty()) {
            *secret = REDACTED.into();
        }
        s.schema_registry.redact();
        for (option, value) in s.kafka.options_mut() {
            if is_secret_kafka_option(option) && !value.is_empty() {
                *value = REDACTED.into();
            }
        }
        s
    }

    fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            bail!("invalid config: `brokers` is empty");
        }
        if self.application_id.is_empty()
            || !self
                .application_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!(
                "invalid config: `application_id` must be non-empty ASCII letters, digits, `.`, `_` or `-`"
            );
        }
        check_log_filter(&self.log_level)?;
        if self.commit_interval.is_zero() {
            bail!("invalid config: `commit_interval_ms` must be positive");
        }
        if self.max_batch_records == 0 {
            bail!("invalid config: `max_batch_records` must be positive");
        }
        if self.retention_margin_days < 0 {
            bail!("invalid config: `retention_margin_days` is negative");
        }
        self.kafka.validate()?;
        self.schema_registry.validate()?;
        self.topics.validate()?;
        self.journeys_api.validate()?;
        let l = &self.limits;
        if l.max_clicks_per_journey == 0
            || l.max_items == 0
            || l.max_record_bytes == 0
            || l.max_id_len == 0
        {
            bail!("invalid config: `limits` values must be positive");
        }
        Ok(())
    }

    /// How a task orders its input partitions (see [`crate::runtime::input_order`]).
    pub fn order_settings(&self) -> crate::runtime::input_order::OrderSettings {
        crate::runtime::input_order::OrderSettings {
            max_task_idle: self.max_task_idle,
            grace: self.input_grace,
            ..Default::default()
        }
    }

    /// The format of the actions topic: `output_formats.actions`, else `output_format`.
    pub fn actions_format(&self) -> OutputFormat {
        self.output_formats.actions.unwrap_or(self.output_format)
    }

    /// The format of the invalid-actions topic: `output_formats.invalid_actions`, else
    /// `output_format`.
    pub fn invalid_actions_format(&self) -> OutputFormat {
        self.output_formats
            .invalid_actions
            .unwrap_or(self.output_format)
    }

    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            max_clicks_per_journey: self.limits.max_clicks_per_journey,
            retention_margin_ms: days_to_ms(self.retention_margin_days),
        }
    }

    /// The changelog topic of the journey store.
    pub fn changelog_topic(&self) -> String {
        crate::runtime::topology::changelog_topic(
            &self.application_id,
            crate::runtime::topology::StageId::Attribution,
        )
    }

    pub fn instance_id(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| host_name().unwrap_or_else(|| "attrib-0".into()))
    }
}

/// This machine's host name: `HOSTNAME`, else `/etc/hostname`.
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
}

/// What [`Settings::redacted`] shows in place of a secret.
pub const REDACTED: &str = "***";

/// The address `http_addr` (`IP:PORT` or `HOST:PORT`) listens on: a host name is resolved, and
/// its first IPv4 address taken, else its first address (`localhost` is often `::1` first,
/// which a container without IPv6 cannot listen on).
fn resolve_http_addr(addr: &str) -> Result<SocketAddr> {
    let what = || format!("`{addr}` is not an address like 0.0.0.0:9464 or localhost:9464");
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let all: Vec<SocketAddr> = addr.to_socket_addrs().with_context(what)?.collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .with_context(|| format!("{}: the host name has no address", what()))
}

/// The levels a `log_level` directive takes.
const LOG_LEVELS: &str = "trace, debug, info, warn, error, off";

/// Checks a `log_level` as `tracing`'s `EnvFilter` reads it (directives separated by commas,
/// each `LEVEL` or `TARGET=LEVEL`), but refuses a bare word that is not a level: `EnvFilter`
/// would read `verbose` as a target to trace and log nothing else.
pub fn check_log_filter(filter: &str) -> Result<()> {
    let refuse = |why: String| {
        anyhow::anyhow!(
            "invalid config: `log_level` `{filter}` {why}; use a level ({LOG_LEVELS}) or `TARGET=LEVEL` directives separated by commas, e.g. `info,attrib=debug,rdkafka=warn`"
        )
    };
    if filter.trim().is_empty() {
        return Err(refuse("is empty".into()));
    }
    for directive in filter.split(',').map(str::trim) {
        if !directive.is_empty()
            && !directive.contains(['=', '['])
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            return Err(refuse(if directive == filter.trim() {
                "is not a level".into()
            } else {
                format!("has `{directive}`, which is not a level")
            }));
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
        return Err(refuse(format!("is not a log filter ({e})")));
    }
    Ok(())
}

/// Keys that moved into a section, refused with where they are now.
fn refuse_moved_keys(table: &toml::Table) -> Result<()> {
    for old in ["url", "ca_file", "user", "password"] {
        let key = format!("schema_registry_{old}");
        if table.contains_key(&key) {
            bail!(
                "invalid config: `{key}` is now `{old}` in the `[schema_registry]` section (variable {})",
                variable_of(&format!("schema_registry.{old}"))
            );
        }
    }
    Ok(())
}

impl Topics {
    /// Every topic with its field name (`topics.<field>`).
    pub fn named(&self) -> [(&'static str, &String); 8] {
        [
            ("clicks", &self.clicks),
            ("conversions", &self.conversions),
            ("identities", &self.identities),
            ("promo_codes", &self.promo_codes),
            ("config", &self.config),
            ("actions", &self.actions),
            ("invalid_actions", &self.invalid_actions),
            ("dlq", &self.dlq),
        ]
    }

    /// The variables that name these topics (`ATTRIB_TOPICS_*`), for a child process.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.named()
            .iter()
            .map(|(field, name)| {
                (
                    env::variable_of(&format!("topics.{field}")),
                    (*name).clone(),
                )
            })
            .collect()
    }

    /// Every topic name, to change them all (e.g. a test's own suffix).
    pub fn names_mut(&mut self) -> [&mut String; 8] {
        [
            &mut self.clicks,
            &mut self.conversions,
            &mut self.identities,
            &mut self.promo_codes,
            &mut self.config,
            &mut self.actions,
            &mut self.invalid_actions,
            &mut self.dlq,
        ]
    }

    fn validate(&self) -> Result<()> {
        let names = self.named();
        for (i, (field, name)) in names.iter().enumerate() {
            if name.is_empty() {
                bail!("invalid config: `topics.{field}` is empty");
            }
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                bail!("invalid config: `topics.{field}` and `topics.{other}` are both `{name}`");
            }
        }
        Ok(())
    }
}

impl JourneysApi {
    fn validate(&self) -> Result<()> {
        if self.enabled && self.token.as_deref().is_none_or(str::is_empty) {
            bail!(
                "invalid config: `journeys_api.token` is required when `journeys_api.enabled` is true"
            );
        }
        if let Some(u) = &self.advertised_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                bail!(
                    "invalid config: `journeys_api.advertised_url` `{u}` must start with http:// or https://"
                );
            }
        }
        Ok(())
    }
}

/// Durations written as whole milliseconds (`commit_interval_ms = 100`).
mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

fn de_http_addr<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_http_addr(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests;
