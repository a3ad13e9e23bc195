//! Journey state without Kafka: the store trait and its backends, the changelog's segments.

pub mod changelog;
pub mod store;
