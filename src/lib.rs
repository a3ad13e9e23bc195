//! attrib: an event-stream attribution processor for partnership marketing.
//!
//! A tour of the modules, from the pure core outwards:
//!
//! - [`time`], [`money`]: event times as milliseconds, money as exact decimals.
//! - [`records`]: input records, decoded and validated into checked types (or a DLQ reason).
//! - [`tables`]: programs, contracts, cross-program settings and promo codes, read whole.
//! - [`journey`]: the state of one journey key (clicks and orders), as stored.
//! - [`engine`] and [`payout`]: the attribution rules of DESIGN §3, pure (time passed in).
//! - [`output`]: actions and invalid actions.
//! - [`processor`]: decode → engine → outputs for a batch of one partition, over a
//!   [`store::JourneyStore`]; shared by `replay`, `run` and `demo`.
//! - [`changelog`]: the journeys changelog's transaction segments and the restore that keeps
//!   only committed ones (no IO).
//! - [`store`]: journey stores: RocksDB (on its own thread-safe handle) and in-memory.
//! - [`codec`]: output encodings (JSON, Avro) and DLQ headers.
//! - [`avro`]: Avro input (Confluent and single-object framing, schema resolution into the
//!   JSON form) and Avro output, with a Schema Registry client.
//! - [`replay`]: the engine over a JSONL file, no Kafka.
//! - [`settings`]: the TOML/env configuration, validated.
//! - [`input_order`]: a task's input partitions merged by record timestamp (no IO).
//! - [`pipeline`]: the Kafka processor behind `attrib run`.
//! - [`metrics`], [`http`]: Prometheus metrics and the HTTP endpoints.
//! - [`demo`]: an embedded mock cluster, synthetic traffic and a summary.

pub mod avro;
pub mod changelog;
pub mod codec;
pub mod demo;
pub mod engine;
pub mod http;
pub mod input_order;
pub mod journey;
pub mod metrics;
pub mod money;
pub mod output;
pub mod payout;
pub mod pipeline;
pub mod processor;
pub mod records;
pub mod replay;
pub mod settings;
pub mod store;
pub mod tables;
pub mod time;
pub mod workload;
