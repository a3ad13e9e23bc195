//! Avro input and output (src/formats/avro/): a round trip of every schema, golden bytes of both
//! framings, schema evolution, a Schema Registry (a tiny HTTP server inside the test, also over
//! HTTPS with a CA made in the test), per-topic output formats end to end on the mock cluster,
//! interop with Python fastavro, property tests over arbitrary bytes, and a flood of bad records
//! interleaved with good ones through the processor and `replay`.

#[path = "../common/mod.rs"]
mod common;

mod evolution;
mod fastavro_interop;
mod flood;
mod framing;
mod https;
mod identify;
mod mock_cluster;
mod properties;
mod registry;
mod round_trip;
mod settings;

use attrib::formats::avro::{
    self, AvroInput, AvroOutput, Framing, JsonEncoder, confluent_header, datum_to_json, own_schema,
    single_object_header,
};
use attrib::formats::codec::{self, OutputTopic, TopicFormats};
use attrib::model::output::OutRecord;
use attrib::model::output::{
    Action, Change, Credit, InvalidAction, JourneyView, Reason, ReferralType, State, Touchpoint,
};
use attrib::model::records::{
    CustomerStatus, InputTopic, Limits, decode_click, decode_conversion_topic,
};
use attrib::model::tables::Tables;
use attrib::model::time::parse_rfc3339;
use attrib::ops::settings::{Guarantee, OutputFormat, Settings};
use attrib::rules::engine::EngineSettings;
use attrib::stage::attribution::{InRecord, Processor};
use attrib::state::store::MemoryStore;
use attrib::tools::testkit::{ReadBack, produce, read_topics, wait_consumed};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::mocking::MockCluster;
use rust_decimal::Decimal;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Sample records: every field of every input schema
// ---------------------------------------------------------------------------------------------

struct Sample {
    stem: &'static str,
    topic: InputTopic,
    key: &'static str,
    json: &'static str,
}

const SAMPLES: &[Sample] = &[
    Sample {
        stem: "click",
        topic: InputTopic::Clicks,
        key: "d-1",
        json: r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"d-1","customer_id":null,"media_id":"m-7","shared_id":"spring-post","sub_ids":["a","b"],"source":"tracking_link","landing_url":"https://shop.example/?irclickid=c-1"}"#,
    },
    Sample {
        stem: "promo_code",
        topic: InputTopic::PromoCodes,
        key: "p1/SAVE10",
        json: r#"{"type":"promo_code","program_id":"p1","code":"SAVE10","partner_id":"pa2","credit_policy":"always","valid_from":"2026-10-01T00:00:00Z","valid_to":null}"#,
    },
    Sample {
        stem: "conversion",
        topic: InputTopic::Conversions,
        key: "d-1",
        json: r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-02T10:00:00.123Z","device_id":"d-1","customer_id":"cu-9","click_id":null,"promo_code":"save10","customer_status":"new","currency":"USD","order_subtotal":null,"order_discount":"5.00","order_tax":"2.00","order_shipping":"4.00","items":[{"sku":"A1","category":"shoes","quantity":2,"unit_price":"30.00"},{"sku":"B2","category":null,"quantity":"1","unit_price":"19.99"}],"test":false}"#,
    },
    Sample {
        stem: "modification",
        topic: InputTopic::Conversions,
        key: "d-1",
        json: r#"{"type":"modification","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-03T10:00:00Z","device_id":"d-1","customer_id":null,"items":[{"sku":"A1","quantity":1}],"order_subtotal":null,"reason":"item_returned"}"#,
    },
    Sample {
        stem: "reversal",
        topic: InputTopic::Conversions,
        key: "d-1",
        json: r#"{"type":"reversal","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-04T10:00:00Z","device_id":"d-1","customer_id":null,"reason":"cons_fraud"}"#,
    },
    Sample {
        stem: "program",
        topic: InputTopic::Config,
        key: "program/p1",
        json: r#"{"type":"program","program_id":"p1","account_id":"acme","kind":"standard","currency":"USD","referral_window_days":30,"credit_policy":"time_decay","time_decay_half_life_days":"7.5","locking_days":45,"min_click_to_conversion_secs":0}"#,
    },
    Sample {
        stem: "contract",
        topic: InputTopic::Config,
        key: "contract/p1/pa1",
        json: r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","active_to":"2027-01-01T00:00:00Z","credit_group":"preferred","referral_window_days":null,"event_types":["sale"],"payout":{"default":{"percent":"10"},"groups":[{"when":{"customer_status":"new","categories":["shoes"]},"rate":{"fixed":"5.00"}},{"when":{"skus":["B2"]},"rate":{"percent":"2.5"}}]}}"#,
    },
    Sample {
        stem: "cross_program",
        topic: InputTopic::Config,
        key: "cross_program/acme",
        json: r#"{"type":"cross_program","account_id":"acme","enabled":true,"scope":"specific","programs":["p1","p2"]}"#,
    },
];

fn sample(stem: &str) -> &'static Sample {
    SAMPLES.iter().find(|s| s.stem == stem).unwrap()
}

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/avro")
}

fn parse(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Avro datum of a JSON record with one of attrib's schemas.
fn datum(stem: &str, json: &str) -> Vec<u8> {
    JsonEncoder::own(stem)
        .unwrap()
        .to_vec(&serde_json::from_str(json).unwrap())
        .unwrap()
}

fn single_object(stem: &str, json: &str) -> Vec<u8> {
    let mut b = single_object_header(own_schema(stem).unwrap().fingerprint).to_vec();
    b.extend(datum(stem, json));
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A JSON record in a canonical form, guided by its `.avsc`: decimals normalised, times as
/// epoch milliseconds, absent optional fields as null, unknown fields dropped.
fn norm(stem: &str, v: &Json) -> Json {
    let schema: Json = serde_json::from_str(own_schema(stem).unwrap().text).unwrap();
    let mut named = HashMap::new();
    norm_with(&schema, v, &mut named)
}

fn norm_with(schema: &Json, v: &Json, named: &mut HashMap<String, Json>) -> Json {
    match schema {
        Json::String(s) => match s.as_str() {
            "null" | "boolean" | "int" | "long" | "string" => v.clone(),
            name => {
                let s = named
                    .get(name)
                    .or_else(|| named.get(&format!("io.attrib.{name}")))
                    .unwrap_or_else(|| panic!("unknown type {name}"))
                    .clone();
                norm_with(&s, v, named)
            }
        },
        Json::Array(branches) => {
            if v.is_null() {
                Json::Null
            } else {
                let b = branches
                    .iter()
                    .find(|b| b.as_str() != Some("null"))
                    .unwrap();
                norm_with(b, v, named)
            }
        }
        Json::Object(m) => match m.get("logicalType").and_then(Json::as_str) {
            Some("decimal") => {
                let text = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Json::String(text.parse::<Decimal>().unwrap().normalize().to_string())
            }
            Some("timestamp-millis") => json!(parse_rfc3339(v.as_str().unwrap()).unwrap()),
            _ => match &m["type"] {
                Json::String(t) if t == "record" => {
                    let name = format!(
                        "{}.{}",
                        m.get("namespace")
                            .and_then(Json::as_str)
                            .unwrap_or("io.attrib"),
                        m["name"].as_str().unwrap()
                    );
                    named.insert(name, schema.clone());
                    let mut out = serde_json::Map::new();
                    for f in m["fields"].as_array().unwrap() {
                        let fname = f["name"].as_str().unwrap();
                        let fv = v
                            .get(fname)
                            .cloned()
                            .unwrap_or_else(|| f.get("default").cloned().unwrap_or(Json::Null));
                        out.insert(fname.to_string(), norm_with(&f["type"], &fv, named));
                    }
                    Json::Object(out)
                }
                Json::String(t) if t == "array" => Json::Array(
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| norm_with(&m["items"], x, named))
                        .collect(),
                ),
                other => norm_with(other, v, named),
            },
        },
        _ => panic!("bad schema"),
    }
}

fn input() -> AvroInput {
    AvroInput::new(None, &[]).unwrap()
}

fn processor() -> Processor {
    Processor::new(
        Box::new(MemoryStore::default()),
        EngineSettings::default(),
        Limits::default(),
    )
}

fn rec<'a>(
    topic: InputTopic,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    offset: i64,
) -> InRecord<'a> {
    InRecord {
        topic,
        source_topic: topic.replay_name(),
        partition: 0,
        offset,
        key,
        value,
    }
}

fn sample_action() -> Action {
    let t = |s: &str| parse_rfc3339(s).unwrap();
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    Action {
        kind: "action",
        action_id: "6f0c0c5e-1b7a-5c2e-9d55-3f6a5e0e7a11".into(),
        change: Change::Created,
        state: State::Pending,
        program_id: "p1".into(),
        event_type: "sale".into(),
        order_id: "o-1".into(),
        occurred_at: t("2026-11-02T10:00:00.123Z"),
        processed_at: t("2026-11-02T10:00:01Z"),
        device_id: Some("d-1".into()),
        customer_id: None,
        customer_status: CustomerStatus::New,
        currency: Some("USD".into()),
        amount: d("55.000000"),
        delta_amount: d("-1.250000"),
        payout: d("5.500000"),
        delta_payout: d("0.000001"),
        credits: vec![
            Credit {
                partner_id: "pa1".into(),
                weight: d("0.333333"),
                payout: d("1.833333"),
                referral_type: ReferralType::Click,
                click_id: Some("c-1".into()),
                device_id: Some("d-0".into()),
                promo_code: None,
                referring_at: t("2026-11-01T10:00:00Z"),
                shared_id: Some("spring-post".into()),
                sub_ids: vec!["a".into(), "b".into()],
            },
            Credit {
                partner_id: "pa2".into(),
                weight: d("0.666667"),
                payout: d("3.666667"),
                referral_type: ReferralType::PromoCode,
                click_id: None,
                device_id: None,
                promo_code: Some("save10".into()),
                referring_at: t("2026-11-02T10:00:00.123Z"),
                shared_id: None,
                sub_ids: vec![],
            },
        ],
        journey: JourneyView {
            touchpoints: vec![Touchpoint {
                click_id: "c-1".into(),
                device_id: Some("d-0".into()),
                program_id: "p1".into(),
                partner_id: "pa1".into(),
                occurred_at: t("2026-11-01T10:00:00Z"),
            }],
            total: 1,
        },
        promo_code: Some("save10".into()),
        click_id: None,
        locking_at: t("2026-12-17T10:00:00.123Z"),
        test: false,
    }
}

fn sample_invalid() -> InvalidAction {
    InvalidAction {
        kind: "invalid_action",
        program_id: "p9".into(),
        event_type: "sale".into(),
        order_id: "o-7".into(),
        occurred_at: parse_rfc3339("2026-11-02T10:00:00Z").unwrap(),
        device_id: None,
        customer_id: Some("cu-1".into()),
        promo_code: None,
        reason: Reason::UnknownProgram,
        detail: Some("no program config for `p9`".into()),
        test: true,
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
