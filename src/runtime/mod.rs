//! The Kafka runtime behind `attrib run`: the only part of attrib that talks to librdkafka.

pub mod input_order;
pub mod pipeline;
