//! The environment: one regular mapping from every setting to its `ATTRIB_*` variable.
//!
//! A key's variable is `ATTRIB_` and its path joined with `_`, upper-cased: `brokers` ←
//! `ATTRIB_BROKERS`, `topics.clicks` ← `ATTRIB_TOPICS_CLICKS`, `schema_registry.url` ←
//! `ATTRIB_SCHEMA_REGISTRY_URL`. librdkafka options come from `ATTRIB_KAFKA_<OPTION>` (every
//! client), `ATTRIB_KAFKA_CONSUMER_<OPTION>`, `_PRODUCER_` and `_ADMIN_`, with `_` read as `.`
//! (`ATTRIB_KAFKA_SASL_MECHANISMS` → `kafka."sasl.mechanisms"`).
//!
//! An `ATTRIB_*` variable that names no setting is refused like an unknown TOML key, with the
//! likely intended name, except the few that attrib's scripts, tests and benchmarks read
//! ([`is_other_tool_variable`]): they pass their environment on to the `attrib` processes
//! they start.

use super::Settings;
use super::kafka::ClientKind;
use anyhow::{Result, bail};

/// Every setting's key in the file, except `[kafka]` options and `extra_writer_schemas` (a
/// list, in the file only). `tests` checks it against the settings type.
pub(super) const SETTING_KEYS: &[&str] = &[
    "brokers",
    "application_id",
    "instance_id",
    "state_dir",
    "http_addr",
    "processing_guarantee",
    "commit_interval_ms",
    "max_batch_records",
    "max_task_idle_ms",
    "input_grace_ms",
    "log_format",
    "log_level",
    "output_format",
    "output_formats.actions",
    "output_formats.invalid_actions",
    "schema_registry.url",
    "schema_registry.ca_file",
    "schema_registry.user",
    "schema_registry.password",
    "schema_registry.subject_name_strategy",
    "schema_registry.auto_register",
    "retention_margin_days",
    "topics.clicks",
    "topics.conversions",
    "topics.identities",
    "topics.promo_codes",
    "topics.config",
    "topics.actions",
    "topics.invalid_actions",
    "topics.dlq",
    "identity.stitching",
    "journeys_api.enabled",
    "journeys_api.token",
    "journeys_api.advertised_url",
    "limits.max_record_bytes",
    "limits.max_items",
    "limits.max_id_len",
    "limits.max_url_len",
    "limits.max_sub_ids",
    "limits.max_clicks_per_journey",
];

/// The variable of a setting's key: `topics.clicks` → `ATTRIB_TOPICS_CLICKS`.
pub fn variable_of(key: &str) -> String {
    format!("ATTRIB_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Every setting as `key  ATTRIB_VARIABLE  default`, one per line (`attrib check-config
/// --list`), from the one mapping `parse` reads; defaults from [`Settings::default`] (`-`
/// where unset).
pub fn list_settings() -> String {
    let defaults = toml::Value::try_from(Settings::default()).expect("settings serialize");
    let mut rows: Vec<(String, String, String)> = SETTING_KEYS
        .iter()
        .map(|key| {
            let default = match default_at(&defaults, key) {
                None => "-".to_string(),
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (key.to_string(), variable_of(key), default)
        })
        .collect();
    rows.push((
        "kafka.<option>".into(),
        "ATTRIB_KAFKA_<OPTION>".into(),
        "- (librdkafka options for every client; `_` for `.`)".into(),
    ));
    for kind in ClientKind::ALL {
        rows.push((
            format!("kafka.{}.<option>", kind.name()),
            format!("ATTRIB_KAFKA_{}_<OPTION>", kind.name().to_ascii_uppercase()),
            format!("- (librdkafka options for {} clients only)", kind.name()),
        ));
    }
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

fn default_at<'a>(defaults: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(defaults, |v, part| v.get(part))
}

/// Writes the `ATTRIB_*` variables of `env` into the file's `table`, refusing those that name
/// no setting.
pub(super) fn apply(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    let defaults = toml::Value::try_from(Settings::default()).expect("settings serialize");
    for (var, value) in env {
        let Some(name) = var.strip_prefix("ATTRIB_") else {
            continue;
        };
        if let Some(option) = name.strip_prefix("KAFKA_") {
            let (section, option) = kafka_section(option);
            if option.is_empty() {
                bail!(
                    "invalid config: environment variable `{var}` names no librdkafka option (ATTRIB_KAFKA_<OPTION>, ATTRIB_KAFKA_CONSUMER_<OPTION>, …)"
                );
            }
            let mut path = vec!["kafka"];
            path.extend(section);
            let key = option.to_ascii_lowercase().replace('_', ".");
            insert(table, &path, &key, toml::Value::String(value))?;
            continue;
        }
        let Some(key) = SETTING_KEYS.iter().find(|k| variable_of(k) == var) else {
            check_other_variable(&var)?;
            continue;
        };
        let path: Vec<&str> = key.split('.').collect();
        let (last, parents) = path.split_last().expect("a key has a name");
        let typed = typed_value(default_at(&defaults, key), &value);
        insert(table, parents, last, typed)?;
    }
    Ok(())
}

/// `CONSUMER_FETCH_MAX_BYTES` → (`consumer`, `FETCH_MAX_BYTES`); an option without a kind's
/// prefix is for every client.
fn kafka_section(option: &str) -> (Option<&'static str>, &str) {
    for kind in ClientKind::ALL {
        let prefix = format!("{}_", kind.name().to_ascii_uppercase());
        if let Some(rest) = option.strip_prefix(&prefix) {
            return (Some(kind.name()), rest);
        }
    }
    (None, option)
}

fn insert(table: &mut toml::Table, parents: &[&str], key: &str, value: toml::Value) -> Result<()> {
    let mut t = table;
    for part in parents {
        let entry = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let toml::Value::Table(inner) = entry else {
            bail!("invalid config: `{part}` must be a table")
        };
        t = inner;
    }
    t.insert(key.to_string(), value);
    Ok(())
}

/// A variable's text as the type of the setting's default: a number or a boolean where the
/// default is one (a text that is not stays a string, and is refused naming the key).
fn typed_value(default: Option<&toml::Value>, raw: &str) -> toml::Value {
    match default {
        Some(toml::Value::Integer(_)) => {
            if let Ok(i) = raw.trim().parse::<i64>() {
                return toml::Value::Integer(i);
            }
        }
        Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => return toml::Value::Boolean(true),
            "false" | "0" | "" => return toml::Value::Boolean(false),
            _ => {}
        },
        _ => {}
    }
    toml::Value::String(raw.to_string())
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
    let closest = SETTING_KEYS
        .iter()
        .map(|k| variable_of(k))
        .map(|n| (edit_distance(name, &n), n))
        .min();
    match closest {
        Some((d, n)) if d <= 1 + n.len() / 6 => bail!("{refused} (did you mean `{n}`?)"),
        _ => bail!(
            "{refused}; `attrib check-config --list` lists every setting's variable, and librdkafka options go in ATTRIB_KAFKA_<OPTION>"
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
