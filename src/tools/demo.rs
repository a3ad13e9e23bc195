//! `attrib demo`: librdkafka's in-process mock cluster, a synthetic workload, the same
//! processor as `run`, and a printed summary of what came out.
//!
//! The mock keeps only about 5 MB per partition and has no transaction semantics, so the demo
//! runs `at_least_once` with a moderate workload over 8 partitions.

use crate::formats::codec::HEADER_ERROR;
use crate::ops::settings::{Guarantee, Settings};
use crate::runtime::{self, Handles};
use crate::tools::testkit::{ReadBack, produce, read_topics, wait_consumed};
use crate::tools::workload;
use anyhow::{Result, anyhow};
use rdkafka::mocking::MockCluster;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 8;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(keep_running: bool, clicks: usize) -> Result<()> {
    let started = Instant::now();
    let cluster = MockCluster::new(1)?;
    let brokers = cluster.bootstrap_servers();
    let state = tempfile::tempdir()?;
    let port = free_port()?;
    let mut settings = Settings {
        brokers: brokers.clone(),
        processing_guarantee: Guarantee::AtLeastOnce,
        ..Settings::default()
    };
    settings.state_dir = state.path().to_path_buf();
    settings.http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    settings.application_id = "attrib-demo".into();
    // Cross-device identity stitching (docs/design.md §6): the two-stage topology.
    settings.identity.stitching = true;
    let t = settings.topics.clone();
    let repartition = crate::runtime::topology::repartition_topic(&settings.application_id);
    for (name, parts) in [
        (&t.clicks, PARTITIONS),
        (&t.conversions, PARTITIONS),
        (&t.identities, PARTITIONS),
        (&settings.changelog_topic(), PARTITIONS),
        (&repartition, PARTITIONS),
        (&t.actions, PARTITIONS),
        (&t.promo_codes, 1),
        (&t.config, 1),
        (&t.invalid_actions, 1),
        (&t.dlq, 1),
    ] {
        cluster.create_topic(name, parts, 1)?;
    }
    let devices = (clicks / 8).max(10);
    let mut w = workload::generate(42, clicks, devices);
    let customers = (devices / 10).max(5);
    let x = workload::cross_device(43, customers);
    w.clicks.extend(x.clicks);
    w.identities.extend(x.identities);
    w.conversions.extend(x.conversions);
    println!("attrib demo: mock Kafka cluster at {brokers}");
    println!(
        "  workload: {} table records, {} clicks on {} devices, {} conversions, {} modifications/reversals",
        w.tables.len(),
        w.clicks.len(),
        devices,
        w.conversions.len(),
        w.changes.len()
    );
    println!(
        "  cross-device: {customers} customers click on a laptop, log in ({} identify records) and buy on a phone (identity stitching on)",
        w.identities.len()
    );
    produce(&brokers, &settings, &w.tables)?;

    let handles = Handles::default();
    let h = handles.clone();
    let s = settings.clone();
    let worker = std::thread::spawn(move || runtime::supervise(&s, &h));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let http_state = crate::ops::http::HttpState {
        metrics: handles.metrics.clone(),
        ready: handles.ready.clone(),
        heartbeat: handles.heartbeat.clone(),
        journeys: Some(("demo".into(), handles.journey_lookup())),
    };
    let addr = settings.http_addr;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        let stop = async move {
            // An error means the sender is gone: the demo is ending anyway.
            if stop_rx.wait_for(|s| *s).await.is_err() {
                tracing::debug!("demo http server stops with the demo");
            }
        };
        if let Err(e) = crate::ops::http::serve(addr, http_state, stop).await {
            eprintln!("demo http server failed: {e:#}");
        }
    });

    // Clicks first, then conversions, then their changes: the order a real journey has.
    let mut expected = 0u64;
    for (label, batch) in [
        ("clicks", &w.clicks),
        ("identities", &w.identities),
        ("conversions", &w.conversions),
        ("changes", &w.changes),
    ] {
        let t0 = Instant::now();
        produce(&brokers, &settings, batch)?;
        expected += batch.len() as u64;
        wait_consumed(&handles, expected, Duration::from_secs(120))?;
        println!(
            "  processed {:>6} {label:<11} in {:>5} ms",
            batch.len(),
            t0.elapsed().as_millis()
        );
    }
    // `wait_consumed` counts records once their batch has committed: the outputs are in.
    let out = read_topics(&brokers, &[&t.actions, &t.invalid_actions, &t.dlq])?;
    print_summary(&settings, &out, &handles);
    println!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if keep_running {
        println!("\nstill running (Ctrl-C to stop):");
        println!(
            "  bootstrap servers: {brokers}   e.g. kcat -b {brokers} -C -t {} -o beginning",
            t.actions
        );
        println!("  metrics:           http://{}/metrics", settings.http_addr);
        println!(
            "  journey lookup:    curl -H 'Authorization: Bearer demo' http://{}/journeys/d-1",
            settings.http_addr
        );
        rt.block_on(async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                eprintln!("cannot wait for Ctrl-C ({e}); stopping");
            }
        });
    }
    handles.shutdown.request();
    if stop_tx.send(true).is_err() {
        tracing::debug!("demo http server stopped already");
    }
    worker
        .join()
        .map_err(|_| anyhow!("processor thread panicked"))??;
    drop(cluster);
    Ok(())
}

fn print_summary(s: &Settings, out: &[ReadBack], h: &Handles) {
    let mut by_partner: BTreeMap<(String, String), (u64, rust_decimal::Decimal)> = BTreeMap::new();
    let mut payout: BTreeMap<String, rust_decimal::Decimal> = BTreeMap::new();
    let mut changes: BTreeMap<String, u64> = BTreeMap::new();
    let mut invalid: BTreeMap<String, u64> = BTreeMap::new();
    let mut dlq: Vec<String> = Vec::new();
    let mut samples: Vec<serde_json::Value> = Vec::new();
    let mut cross_device: Vec<serde_json::Value> = Vec::new();
    let mut tests = 0;
    for r in out {
        let v: Option<serde_json::Value> = r
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok());
        if r.topic == s.topics.dlq {
            dlq.push(r.headers.get(HEADER_ERROR).cloned().unwrap_or_default());
            continue;
        }
        let Some(v) = v else { continue };
        if r.topic == s.topics.invalid_actions {
            *invalid
                .entry(v["reason"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
            continue;
        }
        let dec = |x: &serde_json::Value| {
            x.as_str()
                .and_then(|s| s.parse::<rust_decimal::Decimal>().ok())
                .unwrap_or_default()
        };
        *changes
            .entry(v["change"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if v["test"].as_bool() == Some(true) {
            tests += 1;
            continue;
        }
        *payout
            .entry(v["currency"].as_str().unwrap_or("-").to_string())
            .or_default() += dec(&v["delta_payout"]);
        for c in v["credits"].as_array().into_iter().flatten() {
            if v["change"] == "created" {
                let e = by_partner
                    .entry((
                        c["partner_id"].as_str().unwrap_or("?").into(),
                        c["referral_type"].as_str().unwrap_or("?").into(),
                    ))
                    .or_default();
                e.0 += 1;
            }
        }
        if v["change"] == "created"
            && v["credits"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["device_id"].is_string() && c["device_id"] != v["device_id"])
        {
            cross_device.push(v.clone());
        }
        if v["change"] == "created"
            && v["journey"]["total"].as_u64().unwrap_or(0) >= 3
            && v["credits"].as_array().is_some_and(|c| c.len() >= 2)
            && samples.len() < 2
        {
            samples.push(v.clone());
        }
    }
    // Net credit payouts: the latest emission of each action.
    let mut latest: HashMap<String, serde_json::Value> = HashMap::new();
    for r in out.iter().filter(|r| r.topic == s.topics.actions) {
        if let Some(v) = r
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        {
            if v["test"].as_bool() != Some(true) {
                latest.insert(v["action_id"].as_str().unwrap_or("").to_string(), v);
            }
        }
    }
    for v in latest.values() {
        for c in v["credits"].as_array().into_iter().flatten() {
            let p = c["payout"]
                .as_str()
                .and_then(|s| s.parse::<rust_decimal::Decimal>().ok())
                .unwrap_or_default();
            by_partner
                .entry((
                    c["partner_id"].as_str().unwrap_or("?").into(),
                    c["referral_type"].as_str().unwrap_or("?").into(),
                ))
                .or_default()
                .1 += p;
        }
    }

    println!("\nActions by partner and referral type (created, test excluded; net payout):");
    println!(
        "  {:<16} {:<20} {:>8} {:>14}",
        "partner", "referral type", "actions", "payout"
    );
    for ((p, rt), (n, pay)) in &by_partner {
        println!(
            "  {p:<16} {rt:<20} {n:>8} {:>14}",
            crate::model::money::round6(*pay)
        );
    }
    println!(
        "\nEmissions by change: {}",
        changes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("Test actions (kept out of payouts): {tests}");
    for (c, p) in &payout {
        println!("Net payout total: {} {c}", crate::model::money::round6(*p));
    }
    println!("\nInvalid actions by reason:");
    for (r, n) in &invalid {
        println!("  {r:<28} {n:>6}");
    }
    println!("\nDLQ records: {}", dlq.len());
    for e in dlq.iter().take(8) {
        println!("  - {e}");
    }
    println!("\nSample journeys:");
    for v in &samples {
        println!(
            "  journey {} (order {} in {}, {} {}):",
            v["device_id"].as_str().unwrap_or("?"),
            v["order_id"].as_str().unwrap_or("?"),
            v["program_id"].as_str().unwrap_or("?"),
            v["amount"].as_str().unwrap_or("?"),
            v["currency"].as_str().unwrap_or("")
        );
        for t in v["journey"]["touchpoints"].as_array().into_iter().flatten() {
            println!(
                "    {}  {:<8} {:<16} {}",
                t["occurred_at"].as_str().unwrap_or(""),
                t["program_id"].as_str().unwrap_or(""),
                t["partner_id"].as_str().unwrap_or(""),
                t["click_id"].as_str().unwrap_or("")
            );
        }
        for c in v["credits"].as_array().into_iter().flatten() {
            println!(
                "    -> credited {:<16} weight {} payout {} ({})",
                c["partner_id"].as_str().unwrap_or(""),
                c["weight"].as_str().unwrap_or(""),
                c["payout"].as_str().unwrap_or(""),
                c["referral_type"].as_str().unwrap_or("")
            );
        }
    }
    println!(
        "\nCross-device (identity stitching): {} conversions credited to a click on another device",
        cross_device.len()
    );
    if let Some(v) = cross_device.first() {
        println!(
            "  order {} bought on {} by {}:",
            v["order_id"].as_str().unwrap_or("?"),
            v["device_id"].as_str().unwrap_or("?"),
            v["customer_id"].as_str().unwrap_or("?")
        );
        for t in v["journey"]["touchpoints"].as_array().into_iter().flatten() {
            println!(
                "    {}  {:<16} {:<10} on {}",
                t["occurred_at"].as_str().unwrap_or(""),
                t["partner_id"].as_str().unwrap_or(""),
                t["click_id"].as_str().unwrap_or(""),
                t["device_id"].as_str().unwrap_or("?")
            );
        }
        for c in v["credits"].as_array().into_iter().flatten() {
            println!(
                "    -> credited {} for click {} on {}",
                c["partner_id"].as_str().unwrap_or(""),
                c["click_id"].as_str().unwrap_or(""),
                c["device_id"].as_str().unwrap_or("?")
            );
        }
    }
    let m = &h.metrics;
    println!(
        "\nmetrics: {} commits, {} rebalances, {} devices linked, {} journeys moved, {} records forwarded",
        m.transactions.with_label_values(&["commit"]).get(),
        m.rebalances.get(),
        m.links.with_label_values(&["created"]).get(),
        m.journeys_moved.get(),
        m.forwarded.get()
    );
}
