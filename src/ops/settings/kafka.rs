//! `[kafka]`: librdkafka options passed through to the clients, per client kind.
//!
//! Options directly under `[kafka]` go to every client, except the ones only one kind reads
//! (a consumer option would make librdkafka warn on every producer, and the other way
//! round); `[kafka.consumer]`, `[kafka.producer]` and `[kafka.admin]` go to that kind only and
//! win over `[kafka]`. Options attrib sets itself because its guarantees rest on them are
//! refused wherever they appear ([`reserved_kafka_option`]).

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// The kinds of Kafka client attrib makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// The group's consumer, and the readers of tables and changelogs.
    Consumer,
    /// The tasks' (transactional) producers and the DLQ producer.
    Producer,
    /// Topic creation, partition counts, repartition purges.
    Admin,
}

impl ClientKind {
    pub const ALL: [ClientKind; 3] = [
        ClientKind::Consumer,
        ClientKind::Producer,
        ClientKind::Admin,
    ];

    /// The sub-table's name (`[kafka.consumer]`, …) and the variable infix
    /// (`ATTRIB_KAFKA_CONSUMER_<OPTION>`, …).
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Consumer => "consumer",
            ClientKind::Producer => "producer",
            ClientKind::Admin => "admin",
        }
    }
}

/// librdkafka options (`[kafka]`, `[kafka.consumer]`, `[kafka.producer]`, `[kafka.admin]`).
/// Values may be written as TOML strings, numbers or booleans (`"linger.ms" = 20`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct KafkaSettings {
    /// Options for every client (security, SASL, TLS, …).
    #[serde(flatten)]
    pub common: BTreeMap<String, String>,
    /// Options for consumers only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer: BTreeMap<String, String>,
    /// Options for producers only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub producer: BTreeMap<String, String>,
    /// Options for the admin client only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub admin: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// The options one kind of client gets, in the order to set them (later ones win): the
    /// `[kafka]` options that kind reads, then its own section.
    pub fn for_client(&self, kind: ClientKind) -> impl Iterator<Item = (&String, &String)> {
        let common = self
            .common
            .iter()
            .filter(move |(k, _)| only_for(k).is_none_or(|only| only == kind));
        common.chain(self.section(kind))
    }

    pub fn section(&self, kind: ClientKind) -> &BTreeMap<String, String> {
        match kind {
            ClientKind::Consumer => &self.consumer,
            ClientKind::Producer => &self.producer,
            ClientKind::Admin => &self.admin,
        }
    }

    pub fn section_mut(&mut self, kind: ClientKind) -> &mut BTreeMap<String, String> {
        match kind {
            ClientKind::Consumer => &mut self.consumer,
            ClientKind::Producer => &mut self.producer,
            ClientKind::Admin => &mut self.admin,
        }
    }

    /// Every option of every section, by its librdkafka name.
    pub fn options_mut(&mut self) -> impl Iterator<Item = (&String, &mut String)> {
        self.common
            .iter_mut()
            .chain(self.consumer.iter_mut())
            .chain(self.producer.iter_mut())
            .chain(self.admin.iter_mut())
    }

    /// Refuses reserved options, and an option in the section of a kind that does not read it.
    pub fn validate(&self) -> Result<()> {
        let sections = std::iter::once((None, &self.common))
            .chain(ClientKind::ALL.map(|k| (Some(k), self.section(k))));
        for (kind, options) in sections {
            let prefix = kind.map_or("kafka".to_string(), |k| format!("kafka.{}", k.name()));
            for key in options.keys() {
                if let Some(why) = reserved_kafka_option(key) {
                    bail!("invalid config: `{prefix}.{key}` cannot be set: {why}");
                }
                if let (Some(kind), Some(only)) = (kind, only_for(key)) {
                    if kind != only {
                        bail!(
                            "invalid config: `{prefix}.{key}` is a {} option; put it in `[kafka.{}]`",
                            only.name(),
                            only.name()
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for KafkaSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let table = toml::Table::deserialize(d)?;
        let mut out = KafkaSettings::default();
        for (key, value) in table {
            let kind = ClientKind::ALL.into_iter().find(|k| k.name() == key);
            match (kind, value) {
                (Some(kind), toml::Value::Table(options)) => {
                    for (k, v) in options {
                        let v = option_value(&v).ok_or_else(|| {
                            D::Error::custom(format!(
                                "`kafka.{key}.{k}`: librdkafka options are strings, numbers or booleans"
                            ))
                        })?;
                        out.section_mut(kind).insert(k, v);
                    }
                }
                (_, v) => {
                    let v = option_value(&v).ok_or_else(|| {
                        D::Error::custom(format!(
                            "`kafka.{key}`: librdkafka options are strings, numbers or booleans (sub-tables: consumer, producer, admin)"
                        ))
                    })?;
                    out.common.insert(key, v);
                }
            }
        }
        Ok(out)
    }
}

/// A librdkafka option's value as the string librdkafka takes.
fn option_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The kind of client that alone reads an option, for the options librdkafka reads on one
/// kind only (and warns about on the others); `None` for the rest.
pub fn only_for(key: &str) -> Option<ClientKind> {
    const CONSUMER: &[&str] = &[
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "isolation.level",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "partition.assignment.strategy",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.wait.max.ms",
        "fetch.error.backoff.ms",
        "max.partition.fetch.bytes",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "check.crcs",
        "client.rack",
    ];
    const PRODUCER: &[&str] = &[
        "linger.ms",
        "queue.buffering.max.ms",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "batch.num.messages",
        "batch.size",
        "compression.type",
        "compression.codec",
        "compression.level",
        "acks",
        "request.required.acks",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "transaction.timeout.ms",
        "retries",
        "message.send.max.retries",
        "retry.backoff.ms",
        "partitioner",
        "sticky.partitioning.linger.ms",
    ];
    if CONSUMER.contains(&key) {
        Some(ClientKind::Consumer)
    } else if PRODUCER.contains(&key) {
        Some(ClientKind::Producer)
    } else {
        None
    }
}

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
        "bootstrap.servers" | "metadata.broker.list" => "the brokers are `brokers`",
        _ => return None,
    })
}
