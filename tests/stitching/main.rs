//! Table tests for cross-device identity stitching (docs/design.md §6), one or more per rule,
//! through `replay` (records in file order, as one partition), with hand-worked expectations;
//! and the property that stitching changes nothing for a stream in which no record links.

mod changes_and_keys;
mod links;
mod moves;
mod two_stages;
mod unlinked;
mod which_journey;

use attrib::stage::attribution::{Processor, StitchStats};
use attrib::tools::replay::{ReplayOptions, replay_into};
use serde_json::{Value, json};

/// A replay with stitching on (or off), fed record by record.
struct World {
    p: Processor,
}

/// One output line.
#[derive(Debug, Clone)]
struct Out {
    topic: String,
    value: Value,
    headers: Value,
}

impl Out {
    fn reason(&self) -> &str {
        self.value["reason"].as_str().unwrap_or("")
    }

    fn error(&self) -> &str {
        self.headers["attrib.error"].as_str().unwrap_or("")
    }

    /// (partner, click id, click's device) of each credit.
    fn credits(&self) -> Vec<(String, String, String)> {
        self.value["credits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["partner_id"].as_str().unwrap().to_string(),
                    c["click_id"].as_str().unwrap_or("-").to_string(),
                    c["device_id"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    fn touchpoints(&self) -> Vec<String> {
        self.value["journey"]["touchpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["click_id"].as_str().unwrap().to_string())
            .collect()
    }
}

const T0: &str = "2026-11-01T10:00:00Z";

/// `2026-11-01T10:00:00Z` plus `minutes`.
fn at(minutes: i64) -> String {
    let base = attrib::model::time::parse_rfc3339(T0).unwrap();
    attrib::model::time::format_rfc3339(base + minutes * 60_000)
}

impl World {
    fn new(stitching: bool) -> World {
        World::with(ReplayOptions {
            stitching,
            ..Default::default()
        })
    }

    fn with(options: ReplayOptions) -> World {
        let mut w = World {
            p: options.processor(),
        };
        w.send(
            "config",
            Some("program/p1"),
            json!({"type":"program","program_id":"p1","account_id":"acme","currency":"USD"}),
        );
        for partner in ["pa1", "pa2", "pa3"] {
            w.send(
                "config",
                Some(&format!("contract/p1/{partner}")),
                json!({"type":"contract","program_id":"p1","partner_id":partner,"active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}),
            );
        }
        w
    }

    /// Replays one record; returns its outputs.
    fn send(&mut self, topic: &str, key: Option<&str>, value: Value) -> Vec<Out> {
        let line = json!({"topic": topic, "key": key, "value": value}).to_string() + "\n";
        let mut out = Vec::new();
        replay_into(&mut self.p, line.as_bytes(), &mut out, || 0).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Out {
                    topic: v["topic"].as_str().unwrap().to_string(),
                    value: v["value"].clone(),
                    headers: v["headers"].clone(),
                }
            })
            .collect()
    }

    /// Sends a record that must have no output.
    fn quiet(&mut self, topic: &str, key: Option<&str>, value: Value) {
        let out = self.send(topic, key, value);
        assert!(out.is_empty(), "expected no output, got {out:?}");
    }

    /// Sends a record that must have exactly one output.
    fn one(&mut self, topic: &str, key: Option<&str>, value: Value) -> Out {
        let mut out = self.send(topic, key, value);
        assert_eq!(out.len(), 1, "expected one output, got {out:?}");
        out.remove(0)
    }

    fn click(
        &mut self,
        id: &str,
        partner: &str,
        minutes: i64,
        device: Option<&str>,
        customer: Option<&str>,
    ) {
        self.quiet(
            "clicks",
            device,
            json!({"type":"click","click_id":id,"program_id":"p1","partner_id":partner,"occurred_at":at(minutes),"device_id":device,"customer_id":customer}),
        );
    }

    fn identify(&mut self, device: &str, customer: &str, minutes: i64) {
        self.quiet(
            "identities",
            Some(device),
            json!({"type":"identify","device_id":device,"customer_id":customer,"occurred_at":at(minutes)}),
        );
    }

    fn conversion(
        &mut self,
        order: &str,
        minutes: i64,
        device: Option<&str>,
        customer: Option<&str>,
    ) -> Out {
        self.conversion_keyed(device.or(customer), order, minutes, device, customer)
    }

    fn conversion_keyed(
        &mut self,
        key: Option<&str>,
        order: &str,
        minutes: i64,
        device: Option<&str>,
        customer: Option<&str>,
    ) -> Out {
        self.one(
            "conversions",
            key,
            json!({"type":"conversion","program_id":"p1","event_type":"sale","order_id":order,"occurred_at":at(minutes),"device_id":device,"customer_id":customer,"order_subtotal":"100.00"}),
        )
    }

    fn stats(&self) -> StitchStats {
        self.p.stats.stitching
    }
}
