//! Plain data, no IO: times, money, checked input records, tables, journeys, outputs.

pub mod identity;
pub mod journey;
pub mod money;
pub mod output;
pub mod records;
pub mod tables;
pub mod time;
