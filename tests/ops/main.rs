//! Operations checks: what an operator relies on when running attrib.
//!
//! - the metrics of a real run through librdkafka's mock cluster move by exactly what went in
//!   and came out, and `promtool check metrics` accepts the exposition;
//! - the alert rules, their unit tests and the scrape configs pass `promtool`;
//! - the deployment files (compose, Kubernetes, Prometheus, Grafana) parse and agree with the
//!   program: metric names, ports, probe paths, config files and environment variables;
//! - the Kubernetes and Prometheus Operator manifests decode strictly into their API types
//!   (`deploy/validate`, Go);
//! - `/health/ready` answers 503 until the pipeline is ready, then 200;
//! - `GET /journeys/{key}` needs the bearer token, and is 404 when disabled.
//!
//! Needs `promtool` (Debian's `prometheus` package) and Go 1.26 (`scripts/setup` checks both).

#[path = "../common/mod.rs"]
mod common;

mod deploy;
mod deploy_config;
mod health;
mod image;
mod journeys;
mod metrics;
mod operator;
mod promql;
mod promtool;
mod schemas;

use serde_yaml::Value as Yaml;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// Polls `f` until it returns `Some`, failing with `what` after `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
