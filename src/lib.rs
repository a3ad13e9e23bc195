//! attrib: an event-stream attribution processor for partnership marketing.
//!
//! A tour of the modules, folder by folder, from the pure core outwards. Dependencies point
//! one way: [`model`] ← [`rules`] ← [`stage`] ← [`runtime`]; [`formats`] and [`state`] depend
//! only on the model; [`ops`] and [`tools`] sit on top. Only [`runtime`] talks to Kafka
//! (`tests/layout.rs` keeps it so).
//!
//! - [`model`]: plain data, no IO. Event times and money ([`model::time`],
//!   [`model::money`]), input records decoded and validated into checked types or a DLQ reason
//!   ([`model::records`]), programs, contracts and promo codes ([`model::tables`]), one
//!   journey's state ([`model::journey`]), devices' links and journey keys
//!   ([`model::identity`]), actions and invalid actions ([`model::output`]).
//! - [`rules`]: the attribution rules of the design (docs/design.md §3), pure, time passed
//!   in: [`rules::engine`] decides credit, [`rules::payout`] computes payouts,
//!   [`rules::stitching`] applies cross-device identity stitching (§6: key rules, links,
//!   moves).
//! - [`formats`]: bytes ↔ model without Kafka: Avro input and output with a Schema Registry
//!   client ([`formats::avro`]), output encodings and DLQ headers ([`formats::codec`]).
//! - [`state`]: journey stores, RocksDB and in-memory ([`state::store`]), and the changelog's
//!   transaction segments with the restore that keeps only committed ones
//!   ([`state::changelog`]); no Kafka.
//! - [`stage`]: one stage of the topology: decode → rules → outputs and state writes for a batch
//!   of one partition. [`stage::attribution`] is the attribution stage `replay`, `run` and
//!   `demo` share; with stitching on it is also the device stage that forwards customers'
//!   records, and the customer stage that applies them.
//! - [`runtime`]: the Kafka runtime behind `attrib run`: clients, tasks, transactions,
//!   restore, the poll loop ([`runtime::run_pipeline`]), the topology's names and streams
//!   ([`runtime::topology`]), a task's input partitions merged by record timestamp
//!   ([`runtime::input_order`], no IO) and the owners of partitions for journey lookups
//!   ([`runtime::directory`]).
//! - [`ops`]: settings ([`ops::settings`]: the file and one regular variable per key,
//!   validated into checked types section by section; librdkafka options per client kind in
//!   [`ops::settings::kafka`], the registry in [`ops::settings::registry`]), Prometheus
//!   metrics ([`ops::metrics`]) and the HTTP endpoints ([`ops::http`]).
//! - [`tools`]: `replay` over a JSONL file ([`tools::replay`]), the embedded demo
//!   ([`tools::demo`]), the synthetic workload ([`tools::workload`]) and the test kit of the
//!   integration tests and benchmarks: producing input, reading outputs back
//!   ([`tools::testkit`]).

pub mod formats;
pub mod model;
pub mod ops;
pub mod rules;
pub mod runtime;
pub mod stage;
pub mod state;
pub mod tools;
