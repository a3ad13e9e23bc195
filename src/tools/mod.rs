//! Tools on top of the core: replay, the demo, the synthetic workload, and the test kit.

pub mod demo;
pub mod replay;
pub mod testkit;
pub mod workload;
