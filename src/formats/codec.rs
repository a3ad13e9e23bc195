//! Encoding of output records for Kafka: JSON or Avro values, string keys and the DLQ's
//! headers (docs/design.md §4).

use crate::formats::avro::AvroOutput;
use crate::model::output::{DlqRecord, OutRecord};
use crate::ops::settings::{OutputFormat, Settings};
use anyhow::{Result, anyhow};

/// The three output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputTopic {
    Actions,
    InvalidActions,
    Dlq,
    /// Internal: the customers' repartition topic (docs/design.md §6), keyed by customer.
    Customers,
}

impl OutputTopic {
    /// The name `replay` writes.
    pub fn replay_name(self) -> &'static str {
        match self {
            OutputTopic::Actions => "actions",
            OutputTopic::InvalidActions => "invalid_actions",
            OutputTopic::Dlq => "dlq",
            OutputTopic::Customers => "customers-repartition",
        }
    }
}

pub const HEADER_ERROR: &str = "attrib.error";
pub const HEADER_SOURCE_TOPIC: &str = "attrib.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "attrib.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "attrib.source.offset";

/// A record ready for a producer.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub topic: OutputTopic,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, String)>,
}

pub fn dlq_headers(d: &DlqRecord) -> Vec<(&'static str, String)> {
    vec![
        (HEADER_ERROR, d.error.clone()),
        (HEADER_SOURCE_TOPIC, d.source_topic.clone()),
        (HEADER_SOURCE_PARTITION, d.partition.to_string()),
        (HEADER_SOURCE_OFFSET, d.offset.to_string()),
    ]
}

/// The format of each of the two encoded output topics (the DLQ has none: it keeps the
/// original bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicFormats {
    pub actions: OutputFormat,
    pub invalid_actions: OutputFormat,
}

impl TopicFormats {
    /// One format for both topics.
    pub fn both(f: OutputFormat) -> TopicFormats {
        TopicFormats {
            actions: f,
            invalid_actions: f,
        }
    }

    /// `output_formats.<topic>`, else `output_format`.
    pub fn from_settings(s: &Settings) -> TopicFormats {
        TopicFormats {
            actions: s.actions_format(),
            invalid_actions: s.invalid_actions_format(),
        }
    }

    pub fn any_avro(self) -> bool {
        self.actions == OutputFormat::Avro || self.invalid_actions == OutputFormat::Avro
    }
}

/// Encodes an output record in its topic's format (DLQ records always keep their original
/// bytes). An Avro topic needs the [`AvroOutput`], set up for that topic.
pub fn encode(o: &OutRecord, formats: TopicFormats, avro: Option<&AvroOutput>) -> Result<Encoded> {
    let value = match o {
        OutRecord::Dlq(_) => return Ok(encode_json(o)),
        OutRecord::Action(_) if formats.actions == OutputFormat::Json => return Ok(encode_json(o)),
        OutRecord::Invalid(_) if formats.invalid_actions == OutputFormat::Json => {
            return Ok(encode_json(o));
        }
        OutRecord::Action(a) => avro_output(avro, "actions")?.encode_action(a)?,
        OutRecord::Invalid(i) => avro_output(avro, "invalid_actions")?.encode_invalid(i)?,
    };
    let (topic, key) = match o {
        OutRecord::Action(a) => (OutputTopic::Actions, a.action_id.clone().into_bytes()),
        OutRecord::Invalid(i) => (OutputTopic::InvalidActions, i.key().into_bytes()),
        OutRecord::Dlq(_) => unreachable!("DLQ records are encoded above"),
    };
    Ok(Encoded {
        topic,
        key: Some(key),
        value: Some(value),
        headers: Vec::new(),
    })
}

fn avro_output<'a>(avro: Option<&'a AvroOutput>, topic: &str) -> Result<&'a AvroOutput> {
    avro.ok_or_else(|| anyhow!("the {topic} output format is avro but no Avro encoder was set up"))
}

/// Encodes an output record as JSON (DLQ records keep their original bytes).
pub fn encode_json(o: &OutRecord) -> Encoded {
    match o {
        OutRecord::Action(a) => Encoded {
            topic: OutputTopic::Actions,
            key: Some(a.action_id.clone().into_bytes()),
            value: Some(serde_json::to_vec(a).expect("actions serialize")),
            headers: Vec::new(),
        },
        OutRecord::Invalid(i) => Encoded {
            topic: OutputTopic::InvalidActions,
            key: Some(i.key().into_bytes()),
            value: Some(serde_json::to_vec(i).expect("invalid actions serialize")),
            headers: Vec::new(),
        },
        OutRecord::Dlq(d) => Encoded {
            topic: OutputTopic::Dlq,
            key: d.key.clone(),
            value: d.value.clone(),
            headers: dlq_headers(d),
        },
    }
}
