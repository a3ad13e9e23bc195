//! `attrib run`: the Kafka processor.
//!
//! One processing thread owns the consumer, the producers and the journey store (so no RocksDB
//! call ever runs on an async worker); tokio runs only the HTTP server and signal handling.
//!
//! Under `exactly_once`, each assigned partition number is a task with its own transactional
//! producer (`<application_id>-attribution_<partition>`). Per commit interval, one transaction per
//! task carries the outputs, the changed journeys (a segment of the compacted changelog
//! `<application_id>-journeys-changelog`, see [`crate::state::changelog`]) and the input offsets; the
//! tasks commit in parallel, on threads of their own, while the processing thread goes on with
//! the next batch (outputs of a task whose commit is running wait for it). RocksDB gets a
//! batch's journeys when its commit starts; a failed commit restarts the pipeline, which never
//! trusts local state after a restart. Under `at_least_once` the outputs are flushed, then
//! offsets committed. Any error restarts the pipeline; local state that cannot be trusted is
//! rebuilt from the changelog before its partition is processed.
//!
//! Files by seam: [`supervisor`] (start-up, signals, restarts), [`clients`] (contexts and
//! configurations), [`admin`] and [`reader`] (metadata, internal topics, reading to the end),
//! [`poll`] (the loop and the input queues), [`worker`] (the processing thread's state and a
//! batch's processing), [`emit`] (producing into a task's transaction), [`commit`],
//! [`rebalance`], [`restore`], [`task`] (transactional tasks and their background commits),
//! [`input_order`] (a task's input partitions merged by timestamp, no IO), [`handles`] (what
//! the HTTP server and the tests share with the processing thread, the journey lookup and the
//! shutdown request), [`directory`] (which instance owns which partition, for a journey lookup
//! on any instance).

mod admin;
mod clients;
mod commit;
pub mod directory;
mod emit;
mod failpoint;
mod handles;
pub mod input_order;
mod poll;
mod reader;
mod rebalance;
mod restore;
mod supervisor;
mod task;
pub mod topology;
mod worker;

pub use clients::LogContext;
pub use handles::{Handles, Shutdown};
pub use poll::run_pipeline;
pub use supervisor::{run_until_signal, supervise};
