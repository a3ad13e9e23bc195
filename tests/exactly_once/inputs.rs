//! The input: tables, and waves of clicks, conversions and changes written as they happen.

use crate::common::rec;
use attrib::model::records::InputTopic;
use attrib::ops::settings::Settings;
use attrib::tools::workload::GenRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) fn tables() -> Vec<GenRecord> {
    use InputTopic::*;
    let mut t = vec![
        rec(
            Config,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD","credit_policy":"linear","locking_days":30}"#,
        ),
        rec(
            Config,
            "program/p2",
            r#"{"type":"program","program_id":"p2","account_id":"acme","currency":"USD"}"#,
        ),
        rec(
            Config,
            "cross_program/acme",
            r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"all"}"#,
        ),
        rec(
            PromoCodes,
            "p1/SAVE",
            r#"{"type":"promo_code","program_id":"p1","code":"SAVE","partner_id":"pa0","credit_policy":"always"}"#,
        ),
        rec(
            Config,
            "program/bad",
            r#"{"type":"program","program_id":"bad"}"#,
        ),
    ];
    for p in ["p1", "p2"] {
        for i in 0..5 {
            let group = if i == 4 { "standard" } else { "preferred" };
            t.push(rec(
                Config,
                &format!("contract/{p}/pa{i}"),
                &format!(r#"{{"type":"contract","program_id":"{p}","partner_id":"pa{i}","active_from":"2026-01-01T00:00:00Z","credit_group":"{group}","payout":{{"default":{{"percent":"{}"}},"groups":[{{"when":{{"categories":["shoes"]}},"rate":{{"fixed":"2.50"}}}}]}}}}"#, 5 + i)
            ));
        }
    }
    t
}

/// One wave: clicks of `n` new devices, then (after a barrier) their conversions and changes of
/// the previous wave's conversions.
struct Wave {
    clicks: Vec<GenRecord>,
    conversions: Vec<GenRecord>,
}

fn waves(seed: u64, count: usize, devices: usize) -> Vec<Wave> {
    use InputTopic::*;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Wave> = Vec::new();
    let mut previous: Vec<(String, String, i64)> = Vec::new();
    let base = attrib::model::time::parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
    for w in 0..count {
        let mut wave = Wave {
            clicks: Vec::new(),
            conversions: Vec::new(),
        };
        let mut orders = Vec::new();
        for d in 0..devices {
            let key = format!("w{w}-d{d}");
            let t0 = base + (w as i64) * 3_600_000 + rng.gen_range(0..3_000_000);
            for c in 0..rng.gen_range(0..4) {
                let p = if rng.gen_bool(0.8) { "p1" } else { "p2" };
                wave.clicks.push(rec(Clicks, &key, &format!(
                    r#"{{"type":"click","click_id":"{key}-c{c}","program_id":"{p}","partner_id":"pa{}","occurred_at":"{}","device_id":"{key}"}}"#,
                    rng.gen_range(0..5), attrib::model::time::format_rfc3339(t0 + c * 60_000)
                )));
            }
            if rng.gen_bool(0.05) {
                wave.clicks
                    .push(rec(Clicks, &key, r#"{"type":"click","click_id":"broken"}"#));
            }
            let order = format!("o-{key}");
            let tc = t0 + 600_000;
            let code = if rng.gen_bool(0.1) {
                r#","promo_code":"save""#
            } else {
                ""
            };
            wave.conversions.push(rec(Conversions, &key, &format!(
                r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}","device_id":"{key}","order_discount":"1.00","items":[{{"sku":"A","category":"shoes","quantity":{},"unit_price":"19.99"}},{{"sku":"B","category":"hats","quantity":1,"unit_price":"5.05"}}]{code}}}"#,
                attrib::model::time::format_rfc3339(tc), rng.gen_range(1..4)
            )));
            orders.push((key, order, tc));
        }
        for (key, order, tc) in previous.drain(..) {
            match rng.gen_range(0..6) {
                0 => wave.conversions.push(rec(Conversions, &key, &format!(
                    r#"{{"type":"modification","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}","items":[{{"sku":"A","quantity":0}}]}}"#,
                    attrib::model::time::format_rfc3339(tc + 86_400_000)
                ))),
                1 => wave.conversions.push(rec(Conversions, &key, &format!(
                    r#"{{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}"}}"#,
                    attrib::model::time::format_rfc3339(tc + 86_400_000)
                ))),
                2 => wave.conversions.push(rec(Conversions, &key, r#"not json"#)),
                _ => {}
            }
        }
        previous = orders;
        out.push(wave);
    }
    out
}

/// The waves' records in the order they happen: within a wave, each device's clicks and then
/// its conversion, devices interleaved at random; the changes of the previous wave's orders
/// in between.
pub(crate) fn natural(seed: u64, count: usize, devices: usize) -> Vec<GenRecord> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut out = Vec::new();
    for w in waves(seed, count, devices) {
        // Per device (by key): its records in order.
        let mut lanes: Vec<std::collections::VecDeque<GenRecord>> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for r in w.clicks.iter().chain(w.conversions.iter()) {
            let key = r.key.clone().unwrap_or_default();
            let i = *index.entry(key).or_insert_with(|| {
                lanes.push(Default::default());
                lanes.len() - 1
            });
            lanes[i].push_back(r.clone());
        }
        while !lanes.is_empty() {
            let i = rng.gen_range(0..lanes.len());
            out.push(lanes[i].pop_front().unwrap());
            if lanes[i].is_empty() {
                lanes.swap_remove(i);
            }
        }
    }
    out
}

/// Produces `records` at a steady pace (8 records every 20 ms) on a thread of its own.
pub(crate) fn produce_paced(s: &Settings, records: Vec<GenRecord>) -> std::thread::JoinHandle<()> {
    let s = s.clone();
    std::thread::spawn(move || {
        let producer = attrib::tools::testkit::input_producer(&s.brokers).unwrap();
        for chunk in records.chunks(8) {
            attrib::tools::testkit::send_records(
                &producer,
                &s,
                chunk,
                attrib::tools::testkit::Stamp::Distinct,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}
