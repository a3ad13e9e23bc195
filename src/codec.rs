//! Encoding of output records for Kafka: JSON values, string keys and the DLQ's headers
//! (DESIGN §4). Avro encodings plug in here.

use crate::processor::{DlqRecord, OutRecord};

/// The three output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputTopic {
    Actions,
    InvalidActions,
    Dlq,
}

impl OutputTopic {
    /// The name `replay` writes.
    pub fn replay_name(self) -> &'static str {
        match self {
            OutputTopic::Actions => "actions",
            OutputTopic::InvalidActions => "invalid_actions",
            OutputTopic::Dlq => "dlq",
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
