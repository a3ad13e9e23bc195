//! Settings: a TOML file (`--config FILE`), each key overridable by an `ATTRIB_*` environment
//! variable, validated into a checked [`Settings`] before anything starts.
//!
//! Nested keys map to environment variables by joining with `_` and upper-casing:
//! `topics.clicks` ← `ATTRIB_TOPIC_CLICKS`, `journeys_api.token` ← `ATTRIB_JOURNEYS_API_TOKEN`,
//! `limits.max_items` ← `ATTRIB_LIMITS_MAX_ITEMS`. librdkafka options go in `[kafka]` and come
//! from `ATTRIB_KAFKA_<OPTION>` with `_` read as `.` (`ATTRIB_KAFKA_SASL_MECHANISMS` →
//! `sasl.mechanisms`).
//!
//! An `ATTRIB_*` variable that names no setting is refused like an unknown TOML key, except the
//! few that attrib's scripts, tests and benchmarks read ([`is_other_tool_variable`]): they pass
//! their environment on to the `attrib` processes they start.

use crate::model::records::Limits;
use crate::model::time::days_to_ms;
use crate::rules::engine::EngineSettings;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

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
    /// Address of the HTTP server (metrics, health, journeys): `IP:PORT` or `HOST:PORT`. A host
    /// name is resolved when the settings are loaded, and the field then holds the address
    /// (`IP:PORT`) the server listens on, so it always parses as a [`SocketAddr`].
    pub http_addr: String,
    pub processing_guarantee: Guarantee,
    /// How often output, state and offsets are committed, in milliseconds.
    pub commit_interval_ms: u64,
    /// Most records processed between two commits.
    pub max_batch_records: usize,
    /// How long a task waits for an empty input partition that is not known to be read to
    /// its end (not fetched yet, or records still on the broker) before it processes the
    /// other partition's records ahead of it (Kafka Streams' `max.task.idle.ms`).
    pub max_task_idle_ms: u64,
    /// How long a record waits, from its arrival, before it is processed ahead of an empty
    /// co-partition that is read to its end: covers a click produced just before a conversion
    /// that reaches the broker, or attrib, just after it.
    pub input_grace_ms: u64,
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `attrib=debug,rdkafka=warn`, …), checked by
    /// [`check_log_filter`].
    pub log_level: String,
    /// Format of both output topics unless `output_formats` says otherwise.
    pub output_format: OutputFormat,
    /// Confluent Schema Registry base URL: Confluent-framed Avro input is read through it, and
    /// Avro output is registered in it and Confluent-framed. Credentials may be given as
    /// `https://KEY:SECRET@host` or, better, in `schema_registry_user` and `_password`.
    pub schema_registry_url: Option<String>,
    /// PEM file of the CA certificate(s) the registry's TLS certificate must chain to, instead
    /// of the system's CA store.
    pub schema_registry_ca_file: Option<PathBuf>,
    /// HTTP basic auth user (a Confluent Cloud API key) for the registry.
    pub schema_registry_user: Option<String>,
    /// HTTP basic auth password (the API secret) for the registry.
    pub schema_registry_password: Option<String>,
    /// Extra writer schemas (`.avsc` files) for single-object-encoded Avro input written with a
    /// schema other than attrib's own (an older or newer version).
    pub extra_writer_schemas: Vec<PathBuf>,
    /// Days kept beyond the longest window (clicks) and beyond locking (orders).
    pub retention_margin_days: i64,
    /// Per output topic formats (`[output_formats]`), overriding `output_format`.
    pub output_formats: OutputFormats,
    pub topics: Topics,
    pub identity: Identity,
    /// librdkafka options passed through verbatim (security, SASL, TLS, …).
    pub kafka: BTreeMap<String, String>,
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
            http_addr: "0.0.0.0:9464".into(),
            processing_guarantee: Guarantee::ExactlyOnce,
            commit_interval_ms: 100,
            max_batch_records: 10_000,
            max_task_idle_ms: 10_000,
            input_grace_ms: 500,
            log_format: LogFormat::Plain,
            log_level: "info".into(),
            output_format: OutputFormat::Json,
            schema_registry_url: None,
            schema_registry_ca_file: None,
            schema_registry_user: None,
            schema_registry_password: None,
            extra_writer_schemas: Vec::new(),
            retention_margin_days: 30,
            output_formats: OutputFormats::default(),
            topics: Topics::default(),
            identity: Identity::default(),
            kafka: BTreeMap::new(),
            journeys_api: JourneysApi::default(),
            limits: Limits::default(),
        }
    }
}

/// Environment variables that name settings, and where they go.
const ENV_KEYS: &[(&str, &[&str])] = &[
    ("BROKERS", &["brokers"]),
    ("APPLICATION_ID", &["application_id"]),
    ("INSTANCE_ID", &["instance_id"]),
    ("STATE_DIR", &["state_dir"]),
    ("HTTP_ADDR", &["http_addr"]),
    ("PROCESSING_GUARANTEE", &["processing_guarantee"]),
    ("COMMIT_INTERVAL_MS", &["commit_interval_ms"]),
    ("MAX_BATCH_RECORDS", &["max_batch_records"]),
    ("MAX_TASK_IDLE_MS", &["max_task_idle_ms"]),
    ("INPUT_GRACE_MS", &["input_grace_ms"]),
    ("LOG_FORMAT", &["log_format"]),
    ("LOG_LEVEL", &["log_level"]),
    ("OUTPUT_FORMAT", &["output_format"]),
    ("OUTPUT_FORMAT_ACTIONS", &["output_formats", "actions"]),
    (
        "OUTPUT_FORMAT_INVALID_ACTIONS",
        &["output_formats", "invalid_actions"],
    ),
    ("SCHEMA_REGISTRY_URL", &["schema_registry_url"]),
    ("SCHEMA_REGISTRY_CA_FILE", &["schema_registry_ca_file"]),
    ("SCHEMA_REGISTRY_USER", &["schema_registry_user"]),
    ("SCHEMA_REGISTRY_PASSWORD", &["schema_registry_password"]),
    ("RETENTION_MARGIN_DAYS", &["retention_margin_days"]),
    ("TOPIC_CLICKS", &["topics", "clicks"]),
    ("TOPIC_CONVERSIONS", &["topics", "conversions"]),
    ("TOPIC_IDENTITIES", &["topics", "identities"]),
    ("TOPIC_PROMO_CODES", &["topics", "promo_codes"]),
    ("TOPIC_CONFIG", &["topics", "config"]),
    ("TOPIC_ACTIONS", &["topics", "actions"]),
    ("TOPIC_INVALID_ACTIONS", &["topics", "invalid_actions"]),
    ("TOPIC_DLQ", &["topics", "dlq"]),
    ("IDENTITY_STITCHING", &["identity", "stitching"]),
    ("JOURNEYS_API_ENABLED", &["journeys_api", "enabled"]),
    ("JOURNEYS_API_TOKEN", &["journeys_api", "token"]),
    ("LIMITS_MAX_RECORD_BYTES", &["limits", "max_record_bytes"]),
    ("LIMITS_MAX_ITEMS", &["limits", "max_items"]),
    ("LIMITS_MAX_ID_LEN", &["limits", "max_id_len"]),
    ("LIMITS_MAX_URL_LEN", &["limits", "max_url_len"]),
    ("LIMITS_MAX_SUB_IDS", &["limits", "max_sub_ids"]),
    (
        "LIMITS_MAX_CLICKS_PER_JOURNEY",
        &["limits", "max_clicks_per_journey"],
    ),
];

/// Every setting as `key  ATTRIB_VARIABLE  default`, one per line (`attrib check-config
/// --list`): the variables are [`ENV_KEYS`], the one mapping `parse` reads, and the defaults
/// those of [`Settings::default`] (`-` where unset).
pub fn list_settings() -> String {
    let defaults = toml::Value::try_from(Settings::default()).expect("settings serialize");
    let mut rows: Vec<(String, String, String)> = ENV_KEYS
        .iter()
        .map(|(name, path)| {
            let mut v = Some(&defaults);
            for part in *path {
                v = v.and_then(|t| t.get(part));
            }
            let default = match v {
                None => "-".to_string(),
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (path.join("."), format!("ATTRIB_{name}"), default)
        })
        .collect();
    rows.push((
        "kafka.<option>".into(),
        "ATTRIB_KAFKA_<OPTION>".into(),
        "- (librdkafka options; `_` for `.`)".into(),
    ));
    rows.push((
        "extra_writer_schemas".into(),
        "-".into(),
        "[] (in the file only)".into(),
    ));
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, e, d)| format!("{k:<w0$}  {e:<w1$}  {d}\n"))
        .collect()
}

/// Settings whose values are numbers or booleans (the rest are strings).
fn typed_value(path: &[&str], raw: &str) -> toml::Value {
    let numeric = matches!(
        path.last().copied(),
        Some(
            "commit_interval_ms"
                | "max_batch_records"
                | "max_task_idle_ms"
                | "input_grace_ms"
                | "retention_margin_days"
        )
    ) || path.first() == Some(&"limits");
    if numeric {
        if let Ok(i) = raw.trim().parse::<i64>() {
            return toml::Value::Integer(i);
        }
    }
    if matches!(path.last().copied(), Some("enabled" | "stitching")) {
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => return toml::Value::Boolean(true),
            "false" | "0" | "" => return toml::Value::Boolean(false),
            _ => {}
        }
    }
    toml::Value::String(raw.to_string())
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
        for (k, v) in env {
            let Some(name) = k.strip_prefix("ATTRIB_") else {
                continue;
            };
            if let Some(opt) = name.strip_prefix("KAFKA_") {
                if opt.is_empty() {
                    bail!(
                        "invalid config: environment variable `{k}` names no librdkafka option (ATTRIB_KAFKA_<OPTION>)"
                    );
                }
                let opt = opt.to_ascii_lowercase().replace('_', ".");
                let kafka = table
                    .entry("kafka")
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                if let toml::Value::Table(t) = kafka {
                    t.insert(opt, toml::Value::String(v));
                }
                continue;
            }
            let Some((_, path)) = ENV_KEYS.iter().find(|(n, _)| *n == name) else {
                check_other_variable(&k)?;
                continue;
            };
            let mut t = &mut table;
            for part in &path[..path.len() - 1] {
                let entry = t
                    .entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                let toml::Value::Table(inner) = entry else {
                    bail!("config key `{part}` must be a table")
                };
                t = inner;
            }
            t.insert(path[path.len() - 1].to_string(), typed_value(path, &v));
        }
        let mut s: Settings =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let msg = e.inner().to_string();
                match path.as_str() {
                    "." | "" => anyhow::anyhow!("invalid config: {}", msg.trim()),
                    _ => anyhow::anyhow!("invalid config: `{path}`: {}", msg.trim()),
                }
            })?;
        // An empty variable unsets an optional setting.
        for v in [
            &mut s.schema_registry_url,
            &mut s.schema_registry_user,
            &mut s.schema_registry_password,
        ] {
            if v.as_deref().is_some_and(|u| u.trim().is_empty()) {
                *v = None;
            }
        }
        if s.schema_registry_ca_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            s.schema_registry_ca_file = None;
        }
        // Directives as `tracing` parses them: it does not trim around commas.
        s.log_level = s
            .log_level
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(",");
        // The address the HTTP server listens on, in place of a host name.
        s.http_addr = resolve_http_addr(&s.http_addr)?.to_string();
        s.validate()?;
        Ok(s)
    }

    /// A copy for showing (`attrib check-config`): secrets — the journeys API token, the
    /// registry password (also in `schema_registry_url`) and secret `[kafka]` options
    /// ([`is_secret_kafka_option`]) — read `***`, so that whether one is set stays visible.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        for v in [&mut s.journeys_api.token, &mut s.schema_registry_password] {
            if let Some(secret) = v.as_mut().filter(|t| !t.is_empty()) {
                *secret = REDACTED.into();
            }
        }
        if let Some(url) = &mut s.schema_registry_url {
            *url = redact_url_password(url);
        }
        for (key, value) in &mut s.kafka {
            if is_secret_kafka_option(key) && !value.is_empty() {
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
        // `http_addr` is resolved (and so checked) by `parse`.
        check_log_filter(&self.log_level)?;
        if self.commit_interval_ms == 0 {
            bail!("invalid config: `commit_interval_ms` must be positive");
        }
        if self.max_batch_records == 0 {
            bail!("invalid config: `max_batch_records` must be positive");
        }
        for key in self.kafka.keys() {
            if let Some(why) = reserved_kafka_option(key) {
                bail!("invalid config: `kafka.{key}` cannot be set: {why}");
            }
        }
        if self.retention_margin_days < 0 {
            bail!("invalid config: `retention_margin_days` is negative");
        }
        match &self.schema_registry_url {
            Some(u) => {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    bail!(
                        "invalid config: `schema_registry_url` must start with http:// or https://"
                    );
                }
                if self.schema_registry_ca_file.is_some() && !u.starts_with("https://") {
                    bail!(
                        "invalid config: `schema_registry_ca_file` is set but `schema_registry_url` is not https://"
                    );
                }
                let has_userinfo = u
                    .split_once("://")
                    .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
                    .is_some_and(|authority| authority.contains('@'));
                if has_userinfo && self.schema_registry_user.is_some() {
                    bail!(
                        "invalid config: `schema_registry_user` is set and `schema_registry_url` has credentials too; keep one"
                    );
                }
            }
            None => {
                for (field, set) in [
                    (
                        "schema_registry_ca_file",
                        self.schema_registry_ca_file.is_some(),
                    ),
                    ("schema_registry_user", self.schema_registry_user.is_some()),
                    (
                        "schema_registry_password",
                        self.schema_registry_password.is_some(),
                    ),
                ] {
                    if set {
                        bail!("invalid config: `{field}` is set but `schema_registry_url` is not");
                    }
                }
            }
        }
        if self.schema_registry_user.is_some() != self.schema_registry_password.is_some() {
            bail!(
                "invalid config: `schema_registry_user` and `schema_registry_password` go together"
            );
        }
        let t = &self.topics;
        let names = [
            ("clicks", &t.clicks),
            ("conversions", &t.conversions),
            ("identities", &t.identities),
            ("promo_codes", &t.promo_codes),
            ("config", &t.config),
            ("actions", &t.actions),
            ("invalid_actions", &t.invalid_actions),
            ("dlq", &t.dlq),
        ];
        for (i, (field, name)) in names.iter().enumerate() {
            if name.is_empty() {
                bail!("invalid config: `topics.{field}` is empty");
            }
            if let Some((other, _)) = names[..i].iter().find(|(_, n)| n == name) {
                bail!("invalid config: `topics.{field}` and `topics.{other}` are both `{name}`");
            }
        }
        if self.journeys_api.enabled && self.journeys_api.token.as_deref().is_none_or(str::is_empty)
        {
            bail!(
                "invalid config: `journeys_api.token` is required when `journeys_api.enabled` is true"
            );
        }
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
            max_task_idle: std::time::Duration::from_millis(self.max_task_idle_ms),
            grace: std::time::Duration::from_millis(self.input_grace_ms),
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
        self.instance_id.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .unwrap_or_else(|| "attrib-0".into())
        })
    }
}

/// What [`Settings::redacted`] shows in place of a secret.
pub const REDACTED: &str = "***";

/// Whether a librdkafka option holds a secret (a password, a client secret, a private key).
pub fn is_secret_kafka_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.ends_with(".password")
        || key.ends_with("secret")
        || matches!(
            key.as_str(),
            "sasl.password"
                | "ssl.key.password"
                | "ssl.keystore.password"
                | "sasl.oauthbearer.client.secret"
                | "ssl.key.pem"
        )
}

/// `scheme://user:***@host/…` for a URL with a password in it (`scheme://***@host/…` for one
/// with only a user part, often a token); other URLs unchanged.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_string(),
    };
    format!("{scheme}://{userinfo}@{host}{path}")
}

/// The address `http_addr` (`IP:PORT` or `HOST:PORT`) listens on: a host name is resolved, and
/// its first IPv4 address taken, else its first address (`localhost` is often `::1` first,
/// which a container without IPv6 cannot listen on).
fn resolve_http_addr(addr: &str) -> Result<SocketAddr> {
    let what = || {
        format!(
            "invalid config: `http_addr` `{addr}` is not an address like 0.0.0.0:9464 or localhost:9464"
        )
    };
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

/// `ATTRIB_*` variables that are not settings but are read by attrib's scripts, tests and
/// benchmarks (`scripts/test`, `scripts/kafka`, `.ci/run`, `tests/`, `benches/`), which pass
/// their environment on to the `attrib` processes they start: the `ATTRIB_TEST_` and
/// `ATTRIB_BENCH_` prefixes and these names.
const OTHER_TOOL_VARIABLES: &[&str] = &[
    "ATTRIB_CACHE_DIR",
    "ATTRIB_REQUIRE_BROKER",
    "ATTRIB_CRASH_KILLS",
    "ATTRIB_AGREEMENT_SEEDS",
    "ATTRIB_FUZZ_ITERATIONS",
    "ATTRIB_UPDATE_GOLDEN",
];

/// Whether `attrib run` and `check-config` leave an `ATTRIB_*` variable that names no setting
/// alone because another tool of the repository reads it (see [`OTHER_TOOL_VARIABLES`]).
pub fn is_other_tool_variable(name: &str) -> bool {
    name.starts_with("ATTRIB_TEST_")
        || name.starts_with("ATTRIB_BENCH_")
        || OTHER_TOOL_VARIABLES.contains(&name)
}

/// An `ATTRIB_*` variable `name` that is neither a setting nor `ATTRIB_KAFKA_*`: allowed if
/// another tool reads it, else refused with the likely intended name.
fn check_other_variable(name: &str) -> Result<()> {
    if is_other_tool_variable(name) {
        return Ok(());
    }
    let refused = format!("invalid config: environment variable `{name}` names no setting");
    match name {
        "ATTRIB_CONFIG" | "ATTRIB_CONFIG_FILE" => {
            bail!("{refused}: the settings file is given with `--config FILE`")
        }
        "ATTRIB_PORT" | "ATTRIB_METRICS_PORT" | "ATTRIB_METRICS_ADDR" => {
            bail!(
                "{refused}: metrics are served on `http_addr` (ATTRIB_HTTP_ADDR, e.g. 0.0.0.0:9464)"
            )
        }
        _ => {}
    }
    let closest = ENV_KEYS
        .iter()
        .map(|(n, _)| format!("ATTRIB_{n}"))
        .map(|n| (edit_distance(name, &n), n))
        .min();
    match closest {
        Some((d, n)) if d <= 1 + n.len() / 6 => bail!("{refused} (did you mean `{n}`?)"),
        _ => bail!(
            "{refused}; the ATTRIB_* variables are listed in the README (Configuration), and librdkafka options go in ATTRIB_KAFKA_<OPTION>"
        ),
    }
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// librdkafka options that attrib sets itself because its guarantees rest on them; a
/// pass-through value would silently switch them off. Returns why, for the error message.
pub fn reserved_kafka_option(key: &str) -> Option<&'static str> {
    Some(match key {
        "isolation.level" => "attrib reads read_committed (uncommitted input would be processed)",
        "enable.auto.commit" | "enable.auto.offset.store" => {
            "attrib commits offsets itself, with its outputs (auto commits would skip records)"
        }
        "transactional.id" => "attrib names one transactional id per task",
        "enable.idempotence" => "exactly once and ordered retries need idempotent producers",
        "group.id" => "the consumer group is `application_id`",
        "partition.assignment.strategy" => {
            "clicks and conversions of one partition number must go to one instance (range)"
        }
        "enable.partition.eof" => {
            "attrib orders a task's input by knowing when a partition is read to its end"
        }
        "group.instance.id" => "attrib derives static membership from `instance_id`",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_file_and_env() {
        let s = Settings::parse("", env(&[])).unwrap();
        assert_eq!(s, Settings::default());
        let s = Settings::parse(
            "brokers = \"k:9092\"\ncommit_interval_ms = 250\n[topics]\nclicks = \"c\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n",
            env(&[("ATTRIB_BROKERS", "e:1"), ("ATTRIB_TOPIC_DLQ", "d"), ("ATTRIB_KAFKA_SASL_MECHANISMS", "PLAIN"), ("ATTRIB_COMMIT_INTERVAL_MS", "50")]),
        )
        .unwrap();
        assert_eq!(s.brokers, "e:1");
        assert_eq!(s.commit_interval_ms, 50);
        assert_eq!(s.topics.clicks, "c");
        assert_eq!(s.topics.dlq, "d");
        assert_eq!(s.kafka["security.protocol"], "SSL");
        assert_eq!(s.kafka["sasl.mechanisms"], "PLAIN");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = Settings::parse("comit_interval_ms = 5", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("comit_interval_ms"), "{e}");
        let e = Settings::parse("processing_guarantee = \"twice\"", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Settings::parse("", env(&[("ATTRIB_HTTP_ADDR", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_addr"), "{e}");
        let e = Settings::parse("[topics]\nactions = \"attrib.dlq\"", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("topics.dlq"), "{e}");
        for key in [
            "isolation.level",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "transactional.id",
            "enable.idempotence",
            "group.id",
            "partition.assignment.strategy",
        ] {
            let e = Settings::parse(&format!("[kafka]\n\"{key}\" = \"x\""), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`kafka.{key}`")), "{e}");
        }
        let e = Settings::parse(
            "",
            env(&[("ATTRIB_KAFKA_ISOLATION_LEVEL", "read_uncommitted")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kafka.isolation.level"), "{e}");
        let s = Settings::parse(
            "max_task_idle_ms = 5",
            env(&[("ATTRIB_INPUT_GRACE_MS", "7")]),
        )
        .unwrap();
        assert_eq!((s.max_task_idle_ms, s.input_grace_ms), (5, 7));
        let e = Settings::parse("[journeys_api]\nenabled = true", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("journeys_api.token"), "{e}");
    }

    #[test]
    fn unknown_env_variables_are_refused_naming_the_likely_one() {
        for (var, meant) in [
            ("ATTRIB_TOPICS_CLICKS", "ATTRIB_TOPIC_CLICKS"),
            ("ATTRIB_BROKER", "ATTRIB_BROKERS"),
            ("ATTRIB_JOURNEY_API_TOKEN", "ATTRIB_JOURNEYS_API_TOKEN"),
            ("ATTRIB_COMMIT_INTERVAL", "ATTRIB_COMMIT_INTERVAL_MS"),
            ("ATTRIB_LOGLEVEL", "ATTRIB_LOG_LEVEL"),
        ] {
            let e = Settings::parse("", env(&[(var, "x")]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("invalid config:")
                    && e.contains(&format!("`{var}` names no setting"))
                    && e.contains(&format!("did you mean `{meant}`?")),
                "{e}"
            );
        }
        let e = Settings::parse("", env(&[("ATTRIB_SOMETHING_ELSE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ATTRIB_SOMETHING_ELSE` names no setting") && !e.contains("did you mean"),
            "{e}"
        );
        let e = Settings::parse("", env(&[("ATTRIB_METRICS_PORT", "9464")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ATTRIB_HTTP_ADDR"), "{e}");
        let e = Settings::parse("", env(&[("ATTRIB_KAFKA_", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ATTRIB_KAFKA_`"), "{e}");
        // Not ours: other prefixes, and lower case.
        Settings::parse("", env(&[("ATTRIBUTE_X", "1"), ("attrib_brokers", "1")])).unwrap();
    }

    #[test]
    fn variables_of_scripts_tests_and_benchmarks_are_ignored() {
        let s = Settings::parse(
            "",
            env(&[
                ("ATTRIB_TEST_BROKERS", "k:9092"),
                ("ATTRIB_TEST_KAFKA_PORT", "1"),
                ("ATTRIB_TEST_LOG", "debug"),
                ("ATTRIB_BENCH_KAFKA", "k:9092"),
                ("ATTRIB_CACHE_DIR", "/tmp"),
                ("ATTRIB_REQUIRE_BROKER", "1"),
                ("ATTRIB_CRASH_KILLS", "30"),
                ("ATTRIB_AGREEMENT_SEEDS", "1,2"),
                ("ATTRIB_FUZZ_ITERATIONS", "9"),
                ("ATTRIB_UPDATE_GOLDEN", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(s, Settings::default());
    }

    /// Every setting that can be set in the file has its variable (and `--list` shows it):
    /// the keys of the default settings, and the optional ones that are unset by default.
    #[test]
    fn every_setting_has_an_environment_variable() {
        fn keys(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(inner) if path != "kafka" => keys(&path, inner, out),
                    _ => out.push(path),
                }
            }
        }
        let mut all = Vec::new();
        let toml::Value::Table(t) = toml::Value::try_from(Settings::default()).unwrap() else {
            panic!()
        };
        keys("", &t, &mut all);
        all.extend(
            [
                "instance_id",
                "schema_registry_url",
                "schema_registry_ca_file",
                "schema_registry_user",
                "schema_registry_password",
                "output_formats.actions",
                "output_formats.invalid_actions",
                "journeys_api.token",
            ]
            .map(String::from),
        );
        let listed = list_settings();
        for key in all {
            if key == "kafka" || key == "extra_writer_schemas" {
                continue;
            }
            let path: Vec<&str> = key.split('.').collect();
            assert!(
                ENV_KEYS.iter().any(|(_, p)| *p == path.as_slice()),
                "`{key}` has no ATTRIB_* variable"
            );
            assert!(
                listed.lines().any(|l| l.starts_with(&format!("{key} "))),
                "{key}"
            );
        }
        let line = listed
            .lines()
            .find(|l| l.starts_with("identity.stitching "))
            .expect("identity.stitching listed");
        assert!(
            line.contains(" ATTRIB_IDENTITY_STITCHING ") && line.ends_with(" false"),
            "{line}"
        );
    }

    #[test]
    fn identity_stitching_from_file_and_environment() {
        for off in ["false", "0", "", "FALSE"] {
            let s = Settings::parse("", env(&[("ATTRIB_IDENTITY_STITCHING", off)])).unwrap();
            assert_eq!(s, Settings::default());
        }
        for on in ["true", "1", "TRUE"] {
            let s = Settings::parse("", env(&[("ATTRIB_IDENTITY_STITCHING", on)])).unwrap();
            assert!(s.identity.stitching, "{on}");
        }
        let e = Settings::parse("", env(&[("ATTRIB_IDENTITY_STITCHING", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity.stitching"), "{e}");
        let s = Settings::parse("[identity]\nstitching = true", env(&[])).unwrap();
        assert!(s.identity.stitching);
        let s = Settings::parse(
            "[identity]\nstitching = true",
            env(&[("ATTRIB_IDENTITY_STITCHING", "false")]),
        )
        .unwrap();
        assert!(!s.identity.stitching, "the environment overrides the file");
        let e = Settings::parse("[identity]\nstiching = true", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("stiching"), "{e}");
    }

    #[test]
    fn http_addr_takes_host_names() {
        let s = Settings::parse("http_addr = \"localhost:9464\"", env(&[])).unwrap();
        let addr: SocketAddr = s.http_addr.parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 9464, "{addr}");
        let s = Settings::parse("", env(&[("ATTRIB_HTTP_ADDR", "[::1]:80")])).unwrap();
        assert_eq!(s.http_addr, "[::1]:80");
        for bad in ["localhost", "localhost:99999", "nowhere", ":9464", ""] {
            let e = Settings::parse("", env(&[("ATTRIB_HTTP_ADDR", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("invalid config: `http_addr`") && e.contains(bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn log_level_is_a_filter_or_refused() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,attrib=info",
            "info, attrib::runtime=debug ,rdkafka=warn",
            "attrib=trace",
            "info,[commit]=debug",
        ] {
            let s = Settings::parse(&format!("log_level = \"{ok}\""), env(&[]))
                .unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!s.log_level.contains(' '), "{}", s.log_level);
            tracing_subscriber::EnvFilter::try_new(&s.log_level).unwrap();
        }
        for bad in [
            "verbose",
            "infoo",
            "attrib=verbose",
            "",
            "info,debugg",
            "a b",
        ] {
            let e = Settings::parse("", env(&[("ATTRIB_LOG_LEVEL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("invalid config: `log_level`")
                    && e.contains("trace, debug, info, warn, error, off"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn redacted_hides_secrets_but_not_that_they_are_set() {
        let s = Settings::parse(
            "schema_registry_url = \"https://key:url-secret@sr.example:8081/x\"\n[kafka]\n\"sasl.username\" = \"me\"\n\"ssl.key.password\" = \"kp\"\n\"ssl.keystore.password\" = \"ksp\"\n\"sasl.oauthbearer.client.secret\" = \"cs\"\n\"ssl.key.pem\" = \"pem\"\n",
            env(&[
                ("ATTRIB_JOURNEYS_API_TOKEN", "tok"),
                ("ATTRIB_KAFKA_SASL_PASSWORD", "sp"),
                ("ATTRIB_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ]),
        )
        .unwrap();
        let r = s.redacted();
        assert_eq!(r.journeys_api.token.as_deref(), Some(REDACTED));
        assert_eq!(
            r.schema_registry_url.as_deref(),
            Some("https://key:***@sr.example:8081/x")
        );
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert_eq!(r.kafka[key], REDACTED, "{key}");
        }
        assert_eq!(r.kafka["sasl.username"], "me");
        assert_eq!(r.kafka["security.protocol"], "SASL_SSL");
        // The secrets themselves are untouched.
        assert_eq!(s.kafka["sasl.password"], "sp");
        let s = Settings::parse(
            "schema_registry_url = \"https://sr.example\"\nschema_registry_user = \"u\"\nschema_registry_password = \"p\"",
            env(&[]),
        )
        .unwrap()
        .redacted();
        assert_eq!(
            (
                s.schema_registry_url.as_deref(),
                s.schema_registry_user.as_deref(),
                s.schema_registry_password.as_deref()
            ),
            (Some("https://sr.example"), Some("u"), Some(REDACTED))
        );
        assert_eq!(
            redact_url_password("http://token@h/p?q=a@b"),
            "http://***@h/p?q=a@b"
        );
        assert!(is_secret_kafka_option("sasl.oauthbearer.client.secret"));
        assert!(is_secret_kafka_option("some.future.password"));
        assert!(!is_secret_kafka_option("sasl.username"));
        assert!(!is_secret_kafka_option("ssl.keystore.location"));
    }
}
