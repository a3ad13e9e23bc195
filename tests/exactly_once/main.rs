//! Exactly once, recovery and scale-out on Apache Kafka (started by `scripts/test`; tests that
//! restart or proxy a broker start their own with `scripts/kafka`). attrib runs as child
//! processes (`attrib run`), killed with SIGKILL at random moments; what a `read_committed`
//! consumer reads from the output topics must equal, as a multiset, what `attrib replay`
//! produces for the same input in production order.
//!
//! The input is written as it happens: each device's clicks, then its conversion, then later
//! changes, with devices interleaved, at a steady pace while attrib runs (and is killed), and
//! also as a backlog while attrib is down. Clicks and conversions are on two topics; attrib
//! merges a task's partitions by record timestamp, and `produce` gives every record a distinct,
//! increasing timestamp, so production order is defined.

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod broker_failures;
mod crash;
mod expect;
mod inputs;
mod instance;
mod journeys;
mod metrics;
mod stitching;
