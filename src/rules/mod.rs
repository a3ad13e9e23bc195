//! The attribution rules, pure: (journey, tables, record, clock) → outputs.

pub mod engine;
pub mod payout;
pub mod stitching;
