//! Bytes ↔ model, without Kafka: Avro (with a Schema Registry client) and output encodings.

pub mod avro;
pub mod codec;
