//! Flood: bad records interleaved with valid ones through the processor and replay.

use super::*;
use crate::properties::TOPICS;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Valid,
    Bad,
    /// A mutation: may or may not decode.
    Unknown,
}

pub(crate) fn valid_record(topic: InputTopic, i: usize, base: i64) -> (String, String) {
    let t = |s: i64| attrib::model::time::format_rfc3339(base + s * 1000);
    match topic {
        InputTopic::Clicks => (
            format!("d-{}", i / 4 % 125),
            format!(
                r#"{{"type":"click","click_id":"c-{i}","program_id":"p1","partner_id":"pa{}","occurred_at":"{}","device_id":"d-{}","sub_ids":["s{i}"]}}"#,
                i % 3,
                t(i as i64),
                i / 4 % 125
            ),
        ),
        InputTopic::Conversions => {
            let key = format!("d-{}", i / 4 % 125);
            let v = match i % 5 {
                0..=2 => format!(
                    r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-{i}","occurred_at":"{}","device_id":"d-{}","promo_code":"code{}","customer_status":"new","items":[{{"sku":"A","category":"shoes","quantity":2,"unit_price":"10.50"}}]}}"#,
                    t(i as i64 + 5),
                    i / 4 % 125,
                    i % 7
                ),
                3 => format!(
                    r#"{{"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-{}","occurred_at":"{}","items":[{{"sku":"A","quantity":1}}]}}"#,
                    i.saturating_sub(3),
                    t(i as i64 + 6)
                ),
                _ => format!(
                    r#"{{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-{}","occurred_at":"{}","reason":"fraud"}}"#,
                    i.saturating_sub(4),
                    t(i as i64 + 6)
                ),
            };
            (key, v)
        }
        InputTopic::Identities => (
            format!("d-{}", i / 4 % 125),
            format!(
                r#"{{"type":"identify","device_id":"d-{}","customer_id":"cu-{}","occurred_at":"{}"}}"#,
                i / 4 % 125,
                i % 40,
                t(i as i64)
            ),
        ),
        InputTopic::PromoCodes => (
            format!("p1/CODE{}", i % 7),
            format!(
                r#"{{"type":"promo_code","program_id":"p1","code":"code{}","partner_id":"pa{}","credit_policy":"if_involved","valid_from":null}}"#,
                i % 7,
                i % 3
            ),
        ),
        InputTopic::Config => match i % 3 {
            0 => (
                format!("contract/p1/pa{}", i % 3),
                format!(
                    r#"{{"type":"contract","program_id":"p1","partner_id":"pa{}","active_from":"2020-01-01T00:00:00Z","payout":{{"default":{{"percent":"{}"}}}}}}"#,
                    i % 3,
                    i % 50
                ),
            ),
            1 => (
                "program/p1".into(),
                format!(
                    r#"{{"type":"program","program_id":"p1","account_id":"acme","referral_window_days":{}}}"#,
                    20 + i % 20
                ),
            ),
            _ => (
                "cross_program/acme".into(),
                r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"all"}"#
                    .into(),
            ),
        },
    }
}

fn stem_of(topic: InputTopic, json: &str) -> &'static str {
    let v: Json = serde_json::from_str(json).unwrap();
    match (topic, v["type"].as_str().unwrap()) {
        (_, "click") => "click",
        (_, "conversion") => "conversion",
        (_, "modification") => "modification",
        (_, "reversal") => "reversal",
        (_, "promo_code") => "promo_code",
        (_, "identify") => "identify",
        (_, "program") => "program",
        (_, "contract") => "contract",
        (_, "cross_program") => "cross_program",
        _ => unreachable!(),
    }
}

#[test]
fn flood_of_bad_records_through_the_processor() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut p = processor().with_avro(Arc::new(input()));
    let base = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let mut out = Vec::new();
    // Tables first.
    for (k, v) in [
        ("program/p1", r#"{"type":"program","program_id":"p1","account_id":"acme"}"#.to_string()),
        ("contract/p1/pa0", r#"{"type":"contract","program_id":"p1","partner_id":"pa0","active_from":"2020-01-01T00:00:00Z"}"#.into()),
    ] {
        p.process(&rec(InputTopic::Config, Some(k.as_bytes()), Some(v.as_bytes()), -1), base, &mut out).unwrap();
    }
    assert!(out.is_empty());
    const N: usize = 100_000;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let (mut valid, mut bad, mut unknown_dlq, mut unknown_ok, mut actions) = (0, 0, 0, 0, 0);
    let other_fp: Vec<u64> = avro::own_schemas().iter().map(|s| s.fingerprint).collect();
    for i in 0..N {
        let topic = TOPICS[i % 4];
        let (key, json) = valid_record(topic, i, base);
        let stem = stem_of(topic, &json);
        let (kind, what, value): (Kind, &str, Vec<u8>) = match rng.gen_range(0..14) {
            0..=2 => (Kind::Valid, "valid json", json.clone().into_bytes()),
            3..=5 => (Kind::Valid, "valid avro", single_object(stem, &json)),
            6 => {
                let n = rng.gen_range(0..300);
                (
                    Kind::Bad,
                    "random bytes",
                    (0..n).map(|_| rng.r#gen()).collect(),
                )
            }
            7 => {
                let mut b = vec![0u8];
                b.extend((0..rng.gen_range(0..40)).map(|_| rng.r#gen::<u8>()));
                (Kind::Bad, "confluent without registry", b)
            }
            8 => {
                let mut b = vec![0xC3, 0x01];
                b.extend((0..rng.gen_range(0..60)).map(|_| rng.r#gen::<u8>()));
                (Kind::Bad, "unknown fingerprint", b)
            }
            9 => {
                let full = single_object(stem, &json);
                let n = rng.gen_range(0..full.len());
                (Kind::Bad, "truncated avro", full[..n].to_vec())
            }
            10 => {
                let n = rng.gen_range(0..json.len());
                (Kind::Bad, "truncated json", json.as_bytes()[..n].to_vec())
            }
            11 => {
                // A valid record of the wrong schema for this topic.
                let fp = other_fp[rng.gen_range(0..other_fp.len())];
                let own = avro::own_schemas()
                    .iter()
                    .find(|s| s.fingerprint == fp)
                    .unwrap();
                let belongs = match topic {
                    InputTopic::Clicks => ["click"].as_slice(),
                    InputTopic::Conversions => &["conversion", "modification", "reversal"],
                    InputTopic::Identities => &["identify"],
                    InputTopic::PromoCodes => &["promo_code"],
                    InputTopic::Config => &["program", "contract", "cross_program"],
                };
                if belongs.contains(&own.stem) {
                    (Kind::Valid, "valid json", json.clone().into_bytes())
                } else {
                    let mut b = single_object_header(fp).to_vec();
                    b.extend((0..rng.gen_range(0..40)).map(|_| rng.r#gen::<u8>()));
                    (Kind::Bad, "wrong schema", b)
                }
            }
            12 => {
                let mut v: Json = serde_json::from_str(&json).unwrap();
                let obj = v.as_object_mut().unwrap();
                let victim = [
                    "program_id",
                    "occurred_at",
                    "click_id",
                    "code",
                    "account_id",
                    "partner_id",
                ]
                .into_iter()
                .find(|f| obj.contains_key(*f))
                .unwrap();
                obj.remove(victim);
                (Kind::Bad, "missing field", serde_json::to_vec(&v).unwrap())
            }
            _ => {
                let mut b = single_object(stem, &json);
                let j = rng.gen_range(10..b.len());
                b[j] ^= 1 << rng.gen_range(0..8);
                (Kind::Unknown, "bit flip", b)
            }
        };
        *counts.entry(what).or_default() += 1;
        out.clear();
        let r = rec(topic, Some(key.as_bytes()), Some(&value), i as i64);
        p.process(&r, base + i as i64, &mut out).unwrap();
        let dlq: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                OutRecord::Dlq(d) => Some(d),
                _ => None,
            })
            .collect();
        let emitted = out.len() - dlq.len();
        match kind {
            Kind::Valid => {
                valid += 1;
                assert!(
                    dlq.is_empty(),
                    "record {i} ({what}, {topic:?}) went to the DLQ: {}",
                    dlq[0].error
                );
                if topic == InputTopic::Conversions {
                    assert_eq!(emitted, 1, "record {i}: {out:?}");
                    actions += 1;
                } else {
                    assert_eq!(emitted, 0);
                }
            }
            Kind::Bad => {
                bad += 1;
                assert_eq!(
                    dlq.len(),
                    1,
                    "record {i} ({what}, {topic:?}) was not refused: {out:?}"
                );
                assert_eq!(emitted, 0);
                let d = dlq[0];
                assert!(!d.error.is_empty());
                assert_eq!(d.value.as_deref(), Some(&value[..]));
                assert_eq!(d.key.as_deref(), Some(key.as_bytes()));
                assert_eq!(d.offset, i as i64);
            }
            Kind::Unknown => {
                if dlq.len() == 1 {
                    unknown_dlq += 1;
                    assert!(!dlq[0].error.is_empty());
                } else {
                    assert!(dlq.is_empty());
                    unknown_ok += 1;
                }
            }
        }
        if i % 10_000 == 9_999 {
            p.flush().unwrap();
        }
    }
    eprintln!(
        "flood: {N} records: {valid} valid ({actions} conversions-topic outputs), {bad} bad (all in the DLQ), bit flips: {unknown_dlq} refused, {unknown_ok} accepted; {counts:?}"
    );
    assert_eq!(valid + bad + unknown_dlq + unknown_ok, N);
    assert!(bad > N / 3);
}

#[test]
fn flood_of_bad_lines_through_replay() {
    let mut rng = StdRng::seed_from_u64(9);
    let base = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let mut lines = String::new();
    lines.push_str(r#"{"topic":"config","key":"program/p1","value":{"type":"program","program_id":"p1","account_id":"acme"}}"#);
    lines.push('\n');
    lines.push_str(r#"{"topic":"config","key":"contract/p1/pa0","value":{"type":"contract","program_id":"p1","partner_id":"pa0","active_from":"2020-01-01T00:00:00Z"}}"#);
    lines.push('\n');
    const N: usize = 40_000;
    let (mut bad, mut conv) = (0u64, 0u64);
    for i in 0..N {
        let topic = TOPICS[i % 4];
        let (key, json) = valid_record(topic, i, base);
        let line = match rng.gen_range(0..6) {
            0 | 1 => {
                if topic == InputTopic::Conversions {
                    conv += 1;
                }
                format!(
                    r#"{{"topic":"{}","key":{},"value":{json}}}"#,
                    topic.replay_name(),
                    serde_json::to_string(&key).unwrap()
                )
            }
            2 => {
                bad += 1;
                // Random printable garbage (no newlines; not blank, which replay skips).
                std::iter::once(rng.gen_range(0x21u8..0x7f) as char)
                    .chain((0..rng.gen_range(0..120)).map(|_| rng.gen_range(0x20u8..0x7f) as char))
                    .collect()
            }
            3 => {
                bad += 1;
                // A value that is a JSON string of random characters, Avro magic included.
                let s: String = std::iter::once('\u{c3}')
                    .chain(std::iter::once('\u{1}'))
                    .chain(
                        (0..rng.gen_range(0..40)).map(|_| char::from(rng.gen_range(0x20u8..0x7f))),
                    )
                    .collect();
                format!(
                    r#"{{"topic":"{}","key":"k","value":{}}}"#,
                    topic.replay_name(),
                    serde_json::to_string(&s).unwrap()
                )
            }
            4 => {
                bad += 1;
                let n = rng.gen_range(1..json.len());
                format!(
                    r#"{{"topic":"{}","key":"{key}","value":{}"#,
                    topic.replay_name(),
                    &json[..n]
                )
            }
            _ => {
                bad += 1;
                format!(r#"{{"topic":"nowhere","key":"{key}","value":{json}}}"#)
            }
        };
        lines.push_str(&line);
        lines.push('\n');
    }
    let mut p = processor().with_avro(Arc::new(input()));
    let mut output = Vec::new();
    let s =
        attrib::tools::replay::replay_into(&mut p, lines.as_bytes(), &mut output, || base).unwrap();
    assert_eq!(s.lines, N as u64 + 2);
    assert_eq!(s.dlq, bad, "every bad line is in the DLQ");
    assert_eq!(
        s.actions + s.invalid_actions,
        conv,
        "every conversion-topic record is processed"
    );
    for line in output.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v = parse(line);
        if v["topic"] == "dlq" {
            assert!(!v["headers"]["attrib.error"].as_str().unwrap().is_empty());
        }
    }
    eprintln!(
        "replay flood: {} lines, {} in the DLQ, {} actions, {} invalid actions",
        s.lines, s.dlq, s.actions, s.invalid_actions
    );
}
