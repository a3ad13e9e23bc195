//! Avro on the wire: input records in Avro, decoded into attrib's JSON form, and actions and
//! invalid actions written as Avro (docs/design.md §2, `schemas/`).
//!
//! **Input.** Framing is decided per record, from its first bytes:
//!
//! - `0x00` + a 4-byte big-endian schema id: the Confluent wire format. The writer schema is
//!   fetched from the Schema Registry (`GET {url}/schemas/ids/{id}`) once per id.
//! - `0xC3 0x01` + the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
//!   Parsing Canonical Form: Avro single-object encoding. The fingerprint must be one of
//!   attrib's own schemas or of the configured `extra_writer_schemas`.
//! - anything else is not Avro: the caller reads it as JSON.
//!
//! The writer schema is resolved against attrib's schema for the record type (Avro schema
//! resolution: writer fields unknown to attrib are skipped, attrib's fields missing from the
//! writer take their defaults, ints promote to longs, …; beyond the specification, an Avro
//! `enum` is read as its symbol where attrib has a string), chosen by record name among the types
//! the topic carries (`io.attrib.Conversion`, `io.attrib.Modification`, … on the conversions
//! topic). The datum is written out directly in the JSON form of docs/design.md §2 (decimals as decimal
//! strings, `timestamp-millis` as RFC 3339), so that the JSON validation applies unchanged.
//!
//! The decoder is attrib's own: a resolution plan is compiled once per (writer schema, topic)
//! and then run over the bytes, writing JSON as it goes. It reads only what the bytes hold
//! (lengths are checked against the bytes left, collection counts against a work budget), so
//! no input can make it allocate more than its output limit or panic. `apache-avro` parses the
//! schemas.
//!
//! **Output.** [`AvroOutput`] writes `action.avsc` and `invalid_action.avsc` datums for the
//! output topics whose format is Avro, framed in the Confluent wire format when a registry is
//! configured (the schema of each such topic is registered at start under the subject
//! `schema_registry.subject_name_strategy` names — `<topic>-io.attrib.Action` by default —, or
//! only looked up there with `auto_register` off) and in single-object encoding otherwise.
//!
//! **Registry.** [`Registry`] speaks HTTP or HTTPS (native TLS: the system's CA store, or the
//! CAs of `schema_registry.ca_file` only), with HTTP basic auth from
//! `schema_registry.user`/`password` or from credentials in the URL.

mod decode;
mod encode;
mod input;
mod output;
mod registry;
mod resolve;
mod schemas;
mod single_object;

pub use encode::JsonEncoder;
pub use input::{AvroInput, DEFAULT_MAX_JSON_BYTES, datum_to_json};
pub use output::{AvroOutput, Framing};
pub use registry::{CONFLUENT_MAGIC, Registry, RegistryConfig, confluent_header};
pub use schemas::{OwnSchema, SCHEMA_FILES, own_schema, own_schemas};
pub use single_object::{
    SINGLE_OBJECT_MAGIC, crc64_avro, fingerprint, parsing_canonical_form, single_object_header,
};

use apache_avro::Schema;
use std::collections::HashMap;

/// Deepest schema nesting followed (a recursive writer schema stops here).
const MAX_DEPTH: usize = 48;

/// Named types of a schema, by full name.
type Names = HashMap<String, Schema>;
