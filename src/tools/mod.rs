//! Tools on top of the core: replay, the demo, the synthetic workload.

pub mod demo;
pub mod replay;
pub mod workload;
