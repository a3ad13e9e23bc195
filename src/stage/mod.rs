//! Stages of the topology: each turns one partition's records into outputs and state writes.

pub mod attribution;
