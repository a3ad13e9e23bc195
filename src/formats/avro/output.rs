//! Output: actions and invalid actions as Avro, framed for the registry or single-object.

use super::encode::JsonEncoder;
use super::registry::{Registry, confluent_header};
use super::schemas::own_schema;
use super::single_object::single_object_header;
use crate::model::output::{Action, InvalidAction};
use crate::ops::settings::{OutputFormat, Settings};
use anyhow::{Context, Result, anyhow};

/// How an output record is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Confluent wire format with this schema id.
    Confluent(u32),
    /// Single-object encoding with this fingerprint.
    SingleObject(u64),
}

struct OutSchema {
    encoder: JsonEncoder,
    header: Vec<u8>,
    framing: Framing,
}

impl OutSchema {
    fn new(stem: &str, registry: Option<(&Registry, &str)>) -> Result<OutSchema> {
        let own = own_schema(stem).expect("embedded schema");
        let framing = match registry {
            Some((reg, topic)) => {
                Framing::Confluent(reg.output_schema_id(topic, &own.full_name, own.text)?)
            }
            None => Framing::SingleObject(own.fingerprint),
        };
        let header = match framing {
            Framing::Confluent(id) => confluent_header(id).to_vec(),
            Framing::SingleObject(fp) => single_object_header(fp).to_vec(),
        };
        Ok(OutSchema {
            encoder: JsonEncoder::new(own.schema.clone()),
            header,
            framing,
        })
    }

    fn encode<T: serde::Serialize>(&self, v: &T) -> Result<Vec<u8>> {
        let j = serde_json::to_value(v)?;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.header);
        self.encoder.encode(&j, &mut out)?;
        Ok(out)
    }
}

/// Encodes actions and invalid actions as Avro (each only if its topic is an Avro topic).
pub struct AvroOutput {
    action: Option<OutSchema>,
    invalid: Option<OutSchema>,
}

impl AvroOutput {
    /// Both topics in Avro. With a registry, registers `action.avsc` and `invalid_action.avsc`
    /// now, under the subjects its strategy names for their topics (or looks their ids up,
    /// with `auto_register` off; an unreachable registry fails here, not per record), and
    /// frames records in the Confluent wire format; without, frames them in single-object
    /// encoding.
    pub fn new(
        registry_url: Option<&str>,
        actions_topic: &str,
        invalid_actions_topic: &str,
    ) -> Result<AvroOutput> {
        let registry = registry_url
            .filter(|u| !u.trim().is_empty())
            .map(Registry::new)
            .transpose()?;
        AvroOutput::for_topics(
            registry.as_ref(),
            Some(actions_topic),
            Some(invalid_actions_topic),
        )
    }

    /// Only the topics given are set up (and registered, with a registry).
    pub fn for_topics(
        registry: Option<&Registry>,
        actions_topic: Option<&str>,
        invalid_actions_topic: Option<&str>,
    ) -> Result<AvroOutput> {
        let reg = |topic| registry.map(|r| (r, topic));
        Ok(AvroOutput {
            action: actions_topic
                .map(|t| OutSchema::new("action", reg(t)))
                .transpose()?,
            invalid: invalid_actions_topic
                .map(|t| OutSchema::new("invalid_action", reg(t)))
                .transpose()?,
        })
    }

    /// `None` unless some output topic is Avro (`output_formats.<topic>`, else
    /// `output_format`); set up for the Avro topics only.
    pub fn from_settings(s: &Settings) -> Result<Option<AvroOutput>> {
        let actions = s.actions_format() == OutputFormat::Avro;
        let invalid = s.invalid_actions_format() == OutputFormat::Avro;
        if !actions && !invalid {
            return Ok(None);
        }
        let registry = Registry::from_settings(s)?;
        AvroOutput::for_topics(
            registry.as_ref(),
            actions.then_some(s.topics.actions.as_str()),
            invalid.then_some(s.topics.invalid_actions.as_str()),
        )
        .map(Some)
    }

    /// `None` if actions are not set up.
    pub fn action_framing(&self) -> Option<Framing> {
        self.action.as_ref().map(|o| o.framing)
    }

    /// `None` if invalid actions are not set up.
    pub fn invalid_framing(&self) -> Option<Framing> {
        self.invalid.as_ref().map(|o| o.framing)
    }

    pub fn encode_action(&self, a: &Action) -> Result<Vec<u8>> {
        self.action
            .as_ref()
            .ok_or_else(|| anyhow!("the Avro encoder is not set up for actions"))?
            .encode(a)
            .context("cannot encode action as Avro")
    }

    pub fn encode_invalid(&self, i: &InvalidAction) -> Result<Vec<u8>> {
        self.invalid
            .as_ref()
            .ok_or_else(|| anyhow!("the Avro encoder is not set up for invalid actions"))?
            .encode(i)
            .context("cannot encode invalid action as Avro")
    }
}
