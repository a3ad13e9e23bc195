//! Cross-device identity stitching: the device stage, the repartition topic, the customer stage.

use crate::common;
use crate::common::rec;
use crate::expect::{assert_exact, kafka_output, replay_expectation, wait_output};
use crate::inputs::tables;
use crate::instance::{Instance, Logs, SERIAL, settings_env, setup};
use attrib::model::records::InputTopic;
use attrib::ops::settings::Guarantee;
use attrib::tools::testkit::produce;
use attrib::tools::workload::GenRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One wave of a cross-device stream: first the clicks and links (identify records, clicks
/// that carry both ids), then the conversions and the changes of the previous wave's orders.
/// Every link and move is in an earlier phase than the conversions that depend on it; the
/// clicks of one customer have distinct times, so the order in which different devices'
/// records reach the customer's journey changes nothing (docs/design.md §6, Order of
/// processing).
fn cross_device_waves(
    seed: u64,
    count: usize,
    customers: usize,
) -> Vec<(Vec<GenRecord>, Vec<GenRecord>)> {
    use InputTopic::*;
    let mut rng = StdRng::seed_from_u64(seed);
    let base = attrib::model::time::parse_rfc3339("2026-10-01T00:00:00Z").unwrap();
    let ts = |ms: i64| attrib::model::time::format_rfc3339(ms);
    let mut out = Vec::new();
    // (customer, its devices, whether each is linked yet)
    let mut known: Vec<(String, Vec<(String, bool)>)> = Vec::new();
    let mut orders: Vec<(String, String, String, i64)> = Vec::new(); // (key, device, customer, t)
    let mut click_no = 0;
    for w in 0..count {
        let t0 = base + w as i64 * 3_600_000;
        // Lanes: each device's records in order; lanes interleaved at random.
        let mut links: BTreeMap<String, Vec<GenRecord>> = BTreeMap::new();
        let mut convs: BTreeMap<String, Vec<GenRecord>> = BTreeMap::new();
        let mut at = 0i64;
        let mut next_t = |rng: &mut StdRng| {
            at += 1_000 + rng.gen_range(0..1_000);
            t0 + at
        };
        for c in 0..customers {
            let cust = format!("cu-{w}-{c}");
            let devices: Vec<(String, bool)> = (0..rng.gen_range(2..4))
                .map(|d| (format!("d-{w}-{c}-{d}"), false))
                .collect();
            known.push((cust, devices));
        }
        let first_new = known.len() - customers;
        for (i, (cust, devices)) in known.iter_mut().enumerate() {
            let new = i >= first_new;
            if !new && !rng.gen_bool(0.3) {
                continue;
            }
            for (d, (device, linked)) in devices.iter_mut().enumerate() {
                let lane = links.entry(device.clone()).or_default();
                for _ in 0..rng.gen_range(0..3) {
                    click_no += 1;
                    let t = next_t(&mut rng);
                    lane.push(rec(Clicks, device, &format!(
                        r#"{{"type":"click","click_id":"x-{click_no}","program_id":"p1","partner_id":"pa{}","occurred_at":"{}","device_id":"{device}"}}"#,
                        rng.gen_range(0..5), ts(t)
                    )));
                }
                if *linked {
                    continue;
                }
                // Link this device now: by identify (device 0), by a click with both ids
                // (device 1); the others stay anonymous until a later wave or a conversion.
                let t = next_t(&mut rng);
                if d == 0 || (!new && rng.gen_bool(0.5)) {
                    lane.push(rec(Identities, device, &format!(
                        r#"{{"type":"identify","device_id":"{device}","customer_id":"{cust}","occurred_at":"{}"}}"#,
                        ts(t)
                    )));
                    *linked = true;
                } else if d == 1 {
                    click_no += 1;
                    lane.push(rec(Clicks, device, &format!(
                        r#"{{"type":"click","click_id":"x-{click_no}","program_id":"p1","partner_id":"pa{}","occurred_at":"{}","device_id":"{device}","customer_id":"{cust}"}}"#,
                        rng.gen_range(0..5), ts(t)
                    )));
                    *linked = true;
                }
            }
        }
        // Conversions: one per new customer, from one of its devices, linked or not, with
        // the customer's id or without; a server-side one (customer only) now and then.
        for (cust, devices) in &known[first_new..] {
            let (device, _) = &devices[rng.gen_range(0..devices.len())];
            let t = next_t(&mut rng) + 600_000;
            let order = format!("o-{cust}");
            let (key, ids) = match rng.gen_range(0..4) {
                0 => (device.clone(), format!(r#""device_id":"{device}""#)),
                1 => (
                    device.clone(),
                    format!(r#""device_id":"{device}","customer_id":"{cust}""#),
                ),
                2 => (cust.clone(), format!(r#""customer_id":"{cust}""#)),
                _ => (device.clone(), format!(r#""device_id":"{device}""#)),
            };
            convs.entry(key.clone()).or_default().push(rec(Conversions, &key, &format!(
                r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}",{ids},"items":[{{"sku":"A","category":"shoes","quantity":{},"unit_price":"19.99"}}]}}"#,
                ts(t), rng.gen_range(1..4)
            )));
            orders.push((key, device.clone(), cust.clone(), t));
        }
        // Changes of earlier orders: through the device's link, or by customer id.
        for (_, device, cust, t) in orders.iter().filter(|o| o.3 < t0) {
            if !rng.gen_bool(0.3) {
                continue;
            }
            let order = format!("o-{cust}");
            let (key, ids) = if rng.gen_bool(0.5) {
                (device.clone(), format!(r#""device_id":"{device}""#))
            } else {
                (cust.clone(), format!(r#""customer_id":"{cust}""#))
            };
            convs.entry(key.clone()).or_default().push(rec(Conversions, &key, &format!(
                r#"{{"type":"modification","program_id":"p1","event_type":"sale","order_id":"{order}","occurred_at":"{}",{ids},"items":[{{"sku":"A","quantity":1}}]}}"#,
                ts(t + 3_600_000 * (count as i64 + 1))
            )));
        }
        orders.retain(|o| o.3 >= t0);
        // A change without ids: the DLQ, with stitching on.
        if rng.gen_bool(0.5) {
            convs.entry("nobody".into()).or_default().push(rec(Conversions, "nobody",
                r#"{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-none","occurred_at":"2026-10-02T00:00:00Z"}"#));
        }
        let interleave = |rng: &mut StdRng, lanes: BTreeMap<String, Vec<GenRecord>>| {
            let mut lanes: Vec<std::collections::VecDeque<GenRecord>> = lanes
                .into_values()
                .map(Into::into)
                .filter(|l: &std::collections::VecDeque<GenRecord>| !l.is_empty())
                .collect();
            let mut out = Vec::new();
            while !lanes.is_empty() {
                let i = rng.gen_range(0..lanes.len());
                out.push(lanes[i].pop_front().unwrap());
                if lanes[i].is_empty() {
                    lanes.swap_remove(i);
                }
            }
            out
        };
        let a = interleave(&mut rng, links);
        let b = interleave(&mut rng, convs);
        out.push((a, b));
    }
    out
}

/// Identity stitching through Kafka, exactly once: two instances run the device and customer
/// stages; a generated cross-device stream is written in waves (links and moves before the
/// conversions that depend on them; each wave processed before the next), and an instance is
/// SIGKILLed during most waves (between a forward and the customer stage's commit, at times).
/// After every wave, the read_committed output equals `replay`'s with stitching on.
#[test]
fn cross_device_stitching_two_instances_killed_output_is_exactly_the_replay() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut s, dir)) = setup(3) else {
        return;
    };
    s.identity.stitching = true;
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let mut a = Instance::start(
        settings_env(&s, "xd-a", &dir.path().join("a")),
        dir.path().join("a.log"),
    );
    let mut b = Instance::start(
        settings_env(&s, "xd-b", &dir.path().join("b")),
        dir.path().join("b.log"),
    );
    let mut rng = StdRng::seed_from_u64(77);
    let producer = attrib::tools::testkit::input_producer(&s.brokers).unwrap();
    let waves = cross_device_waves(11, 6, 20);
    let mut cross_device_credits = 0;
    for (w, (links, conversions)) in waves.into_iter().enumerate() {
        for phase in [links, conversions] {
            let kill_at = rng.gen_range(0..phase.len().max(1));
            for (i, r) in phase.iter().enumerate() {
                attrib::tools::testkit::send_records(
                    &producer,
                    &s,
                    std::slice::from_ref(r),
                    attrib::tools::testkit::Stamp::Distinct,
                )
                .unwrap();
                if i == kill_at && w % 3 != 2 {
                    let victim = if rng.gen_bool(0.5) { &mut a } else { &mut b };
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
                    victim.kill9();
                    victim.restart();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            all.extend(phase);
            wait_output(&s, &replay_expectation(&s, &all), Duration::from_secs(180));
        }
        eprintln!("wave {w}: output exact");
    }
    for (k, n) in kafka_output(&s) {
        if k.starts_with("actions|") {
            let v: serde_json::Value =
                serde_json::from_str(k.splitn(3, '|').nth(2).unwrap()).unwrap();
            if v["credits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["device_id"] != v["device_id"])
            {
                cross_device_credits += n;
            }
        }
    }
    assert!(
        cross_device_credits > 5,
        "{cross_device_credits} cross-device credits"
    );
    a.stop();
    b.stop();
    assert_exact(&s, dir.path(), &all);
    // Every kill was followed by a restore; committed repartition records were purged.
    let logs: String = ["a.log", "b.log"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
        .collect();
    assert!(
        logs.matches("state restored").count() >= 2,
        "restores after the kills"
    );
    let repartition = attrib::runtime::topology::repartition_topic(&s.application_id);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .unwrap();
    let purged: i64 = (0..3)
        .map(|p| {
            c.fetch_watermarks(&repartition, p, Duration::from_secs(10))
                .unwrap()
                .0
        })
        .sum();
    assert!(purged > 0, "committed repartition records are deleted");
}

/// With stitching on, identities must be co-partitioned with clicks and conversions: attrib
/// does not start its tasks, and says which topics have which counts.
#[test]
fn stitching_refuses_identities_with_another_partition_count() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(brokers) = common::real_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    s.identity.stitching = true;
    let topics: Vec<(String, i32)> = common::topics_of(&s, 3)
        .into_iter()
        .map(|(t, n)| {
            if t == s.topics.identities {
                (t, 2)
            } else {
                (t, n)
            }
        })
        .collect();
    common::create_topics(&s.brokers, &topics);
    let log = dir.path().join("a.log");
    let mut a = Instance::start(
        settings_env(&s, "copart", &dir.path().join("a")),
        log.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("co-partitioned") {
            assert!(
                text.contains(&format!("`{}` (3 partitions)", s.topics.clicks))
                    && text.contains(&format!("`{}` (2 partitions)", s.topics.identities)),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no co-partitioning error in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.kill9();
}

/// A move in flight (docs/design.md §6): the process dies right after the device stage has
/// forwarded a device's journey (on the broker, its transaction open), and then right after
/// the customer stage has applied it (before its commit). Each crash is a failpoint
/// (`ATTRIB_TEST_FAILPOINT`), as a SIGKILL at that exact point would be. The first wave links
/// the laptop and buys on it (that conversion follows the move through the laptop's task, so
/// its credit shows the move was applied); the second, once the first is processed, buys on the
/// phone. The output is the replay's.
#[test]
fn a_move_in_flight_survives_a_crash_in_either_stage() {
    use InputTopic::*;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut s, dir)) = setup(2) else {
        return;
    };
    s.identity.stitching = true;
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    all.extend([
        rec(Clicks, "laptop", r#"{"type":"click","click_id":"k-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-10-01T10:00:00Z","device_id":"laptop"}"#),
        rec(Clicks, "laptop", r#"{"type":"click","click_id":"k-2","program_id":"p1","partner_id":"pa2","occurred_at":"2026-10-01T11:00:00Z","device_id":"laptop"}"#),
        rec(Identities, "laptop", r#"{"type":"identify","device_id":"laptop","customer_id":"cu-7","occurred_at":"2026-10-01T12:00:00Z"}"#),
        rec(Conversions, "laptop", r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-6","occurred_at":"2026-10-01T13:00:00Z","device_id":"laptop","items":[{"sku":"A","quantity":1,"unit_price":"10.00"}]}"#),
    ]);
    produce(&s.brokers, &s, &all).unwrap();
    let log = dir.path().join("a.log");
    let env = settings_env(&s, "move", &dir.path().join("a"));
    for point in ["forward-move", "apply-move"] {
        let mut env = env.clone();
        env.push(("ATTRIB_TEST_FAILPOINT".into(), point.into()));
        let mut a = Instance::start(env, log.clone());
        let status = a.wait_exit(Duration::from_secs(90));
        assert!(!status.success(), "{point}: {status}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!("failpoint {point}: aborting")),
            "{text}"
        );
    }
    let a = Instance::start(env, log.clone());
    wait_output(&s, &replay_expectation(&s, &all), Duration::from_secs(120));
    let phone = vec![rec(
        Conversions,
        "phone",
        r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-7","occurred_at":"2026-10-02T09:00:00Z","device_id":"phone","customer_id":"cu-7","items":[{"sku":"A","quantity":1,"unit_price":"40.00"}]}"#,
    )];
    produce(&s.brokers, &s, &phone).unwrap();
    all.extend(phone);
    wait_output(&s, &replay_expectation(&s, &all), Duration::from_secs(120));
    a.stop();
    assert_exact(&s, dir.path(), &all);
    let out = kafka_output(&s);
    let o7: Vec<&String> = out
        .keys()
        .filter(|k| k.contains(r#""order_id":"o-7""#))
        .collect();
    assert_eq!(o7.len(), 1, "{o7:?}");
    assert!(
        o7[0].contains(r#""credits":[{"click_id":"k-1","device_id":"laptop""#),
        "o-7, bought on the phone, is credited to the laptop's clicks: {}",
        o7[0]
    );
}
