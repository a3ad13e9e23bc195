//! Avro input and output (src/avro.rs): a round trip of every schema, golden bytes of both
//! framings, schema evolution, a Schema Registry (a tiny HTTP server inside the test, also over
//! HTTPS with a CA made in the test), per-topic output formats end to end on the mock cluster,
//! interop with Python fastavro, property tests over arbitrary bytes, and a flood of bad records
//! interleaved with good ones through the processor and `replay`.

mod common;

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
use attrib::tools::demo::{ReadBack, produce, read_topics, wait_consumed};
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

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn every_input_schema_round_trips_through_single_object_encoding() {
    let avro = input();
    for s in SAMPLES {
        let bytes = single_object(s.stem, s.json);
        let decoded = avro
            .decode_to_json(s.topic, &bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", s.stem))
            .expect("framed");
        let original: Json = serde_json::from_str(s.json).unwrap();
        assert_eq!(
            norm(s.stem, &parse(&decoded)),
            norm(s.stem, &original),
            "{}: {}",
            s.stem,
            String::from_utf8_lossy(&decoded)
        );
        // The bare datum reads back the same way.
        let bare = datum_to_json(s.stem, &datum(s.stem, s.json)).unwrap();
        assert_eq!(norm(s.stem, &parse(&bare)), norm(s.stem, &original));
    }
}

#[test]
fn decoded_json_is_the_design_json_form_and_validates_the_same() {
    let avro = input();
    let l = Limits::default();
    let decode = |s: &Sample| {
        avro.decode_to_json(s.topic, &single_object(s.stem, s.json))
            .unwrap()
            .unwrap()
    };

    let c = sample("click");
    let j = decode(c);
    assert_eq!(
        decode_click(&j, &l).unwrap(),
        decode_click(c.json.as_bytes(), &l).unwrap()
    );
    let v = parse(&j);
    assert_eq!(v["occurred_at"], "2026-11-01T10:00:00.000Z");
    assert_eq!(v["customer_id"], Json::Null);
    assert_eq!(v["sub_ids"], json!(["a", "b"]));

    for stem in ["conversion", "modification", "reversal"] {
        let s = sample(stem);
        let j = decode(s);
        assert_eq!(
            decode_conversion_topic(&j, &l).unwrap(),
            decode_conversion_topic(s.json.as_bytes(), &l).unwrap(),
            "{stem}"
        );
    }
    let v = parse(&decode(sample("conversion")));
    assert_eq!(v["type"], "conversion");
    assert_eq!(v["occurred_at"], "2026-11-02T10:00:00.123Z");
    assert_eq!(v["order_discount"], "5.000000");
    assert_eq!(v["items"][1]["unit_price"], "19.990000");
    assert_eq!(v["items"][0]["quantity"], "2.000000");
    assert_eq!(v["order_subtotal"], Json::Null);

    // Table records: the same tables as from the JSON.
    let (mut from_json, mut from_avro) = (Tables::default(), Tables::default());
    for stem in ["program", "contract", "cross_program", "promo_code"] {
        let s = sample(stem);
        let j = decode(s);
        for (t, v) in [
            (&mut from_json, s.json.as_bytes()),
            (&mut from_avro, &j[..]),
        ] {
            match s.topic {
                InputTopic::Config => t.apply_config(Some(s.key.as_bytes()), Some(v), &l),
                _ => t.apply_promo(Some(s.key.as_bytes()), Some(v), &l),
            }
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        }
    }
    assert_eq!(from_avro.programs, from_json.programs);
    assert_eq!(from_avro.contracts, from_json.contracts);
    assert_eq!(from_avro.cross_programs, from_json.cross_programs);
    assert_eq!(from_avro.promo_codes, from_json.promo_codes);
    assert_eq!(from_avro.programs.len(), 1);
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

#[test]
fn output_schemas_round_trip() {
    let out = AvroOutput::new(None, "attrib.actions", "attrib.invalid-actions").unwrap();
    let a = sample_action();
    let bytes = out.encode_action(&a).unwrap();
    let fp = own_schema("action").unwrap().fingerprint;
    assert_eq!(out.action_framing(), Some(Framing::SingleObject(fp)));
    assert_eq!(bytes[..10], single_object_header(fp));
    let back = parse(&datum_to_json("action", &bytes[10..]).unwrap());
    let expected = serde_json::to_value(&a).unwrap();
    assert_eq!(norm("action", &back), norm("action", &expected));
    // Exactly the JSON attrib writes, byte for byte once parsed (6-decimal money, ms times).
    assert_eq!(back, expected);

    let i = sample_invalid();
    let bytes = out.encode_invalid(&i).unwrap();
    assert_eq!(bytes[..2], [0xC3, 0x01]);
    let back = parse(&datum_to_json("invalid_action", &bytes[10..]).unwrap());
    assert_eq!(back, serde_json::to_value(&i).unwrap());
}

#[test]
fn codec_encodes_in_the_configured_format() {
    let (json_fmt, avro_fmt) = (OutputFormat::Json, OutputFormat::Avro);
    let out = AvroOutput::new(None, "a", "i").unwrap();
    let a = OutRecord::Action(Box::new(sample_action()));
    let json = codec::encode(&a, TopicFormats::both(json_fmt), None).unwrap();
    assert_eq!(json, codec::encode_json(&a));
    let e = codec::encode(&a, TopicFormats::both(avro_fmt), Some(&out)).unwrap();
    assert_eq!(e.topic, OutputTopic::Actions);
    assert_eq!(e.key, json.key);
    assert_eq!(
        e.value.as_deref(),
        Some(&out.encode_action(&sample_action()).unwrap()[..])
    );
    assert!(codec::encode(&a, TopicFormats::both(avro_fmt), None).is_err());
    let i = OutRecord::Invalid(Box::new(sample_invalid()));
    let e = codec::encode(&i, TopicFormats::both(avro_fmt), Some(&out)).unwrap();
    assert_eq!(e.key.as_deref(), Some(&b"p9/sale/o-7"[..]));
    // The DLQ keeps the original bytes whatever the format.
    let mut p = processor();
    let mut outs = Vec::new();
    p.process(
        &rec(
            InputTopic::Clicks,
            Some(&b"k"[..]),
            Some(&[0xC3, 0x01, 7][..]),
            3,
        ),
        0,
        &mut outs,
    )
    .unwrap();
    let d = &outs[0];
    let e = codec::encode(d, TopicFormats::both(avro_fmt), Some(&out)).unwrap();
    assert_eq!(e, codec::encode_json(d));
    assert_eq!(e.value.as_deref(), Some(&[0xC3, 0x01, 7][..]));
}

#[test]
fn codec_encodes_each_topic_in_its_own_format() {
    let (a, i) = (
        OutRecord::Action(Box::new(sample_action())),
        OutRecord::Invalid(Box::new(sample_invalid())),
    );
    let is_avro = |e: &codec::Encoded| e.value.as_deref().unwrap()[..2] == [0xC3, 0x01];
    // Actions in Avro, invalid actions in JSON: only the actions encoder is set up.
    let formats = TopicFormats {
        actions: OutputFormat::Avro,
        invalid_actions: OutputFormat::Json,
    };
    let out = AvroOutput::for_topics(None, Some("a"), None).unwrap();
    assert!(out.action_framing().is_some() && out.invalid_framing().is_none());
    let ea = codec::encode(&a, formats, Some(&out)).unwrap();
    assert!(is_avro(&ea));
    let back = parse(&datum_to_json("action", &ea.value.unwrap()[10..]).unwrap());
    assert_eq!(back, serde_json::to_value(sample_action()).unwrap());
    assert_eq!(
        codec::encode(&i, formats, Some(&out)).unwrap(),
        codec::encode_json(&i)
    );
    // And the other way round.
    let formats = TopicFormats {
        actions: OutputFormat::Json,
        invalid_actions: OutputFormat::Avro,
    };
    let out = AvroOutput::for_topics(None, None, Some("i")).unwrap();
    assert!(out.action_framing().is_none() && out.invalid_framing().is_some());
    assert_eq!(
        codec::encode(&a, formats, Some(&out)).unwrap(),
        codec::encode_json(&a)
    );
    let ei = codec::encode(&i, formats, Some(&out)).unwrap();
    assert!(is_avro(&ei));
    let back = parse(&datum_to_json("invalid_action", &ei.value.unwrap()[10..]).unwrap());
    assert_eq!(back, serde_json::to_value(sample_invalid()).unwrap());
    // An Avro topic whose encoder was not set up is an error, not JSON in disguise.
    let e = codec::encode(&a, TopicFormats::both(OutputFormat::Avro), Some(&out))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not set up for actions"), "{e}");
}

#[test]
fn settings_for_avro() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let s = Settings::parse("", env(&[])).unwrap();
    assert_eq!(s.output_format, OutputFormat::Json);
    assert_eq!(s.schema_registry.url, None);
    assert!(s.extra_writer_schemas.is_empty());
    assert!(AvroOutput::from_settings(&s).unwrap().is_none());
    let s = Settings::parse(
        "output_format = \"avro\"\nextra_writer_schemas = [\"a.avsc\", \"b.avsc\"]\n",
        env(&[("ATTRIB_SCHEMA_REGISTRY_URL", "https://sr.example:8081")]),
    )
    .unwrap();
    assert_eq!(s.output_format, OutputFormat::Avro);
    assert_eq!(
        s.schema_registry.url.as_deref(),
        Some("https://sr.example:8081")
    );
    assert_eq!(
        s.extra_writer_schemas,
        vec![PathBuf::from("a.avsc"), PathBuf::from("b.avsc")]
    );
    let s = Settings::parse(
        "",
        env(&[
            ("ATTRIB_OUTPUT_FORMAT", "avro"),
            ("ATTRIB_SCHEMA_REGISTRY_URL", ""),
        ]),
    )
    .unwrap();
    assert_eq!(s.output_format, OutputFormat::Avro);
    assert_eq!(s.schema_registry.url, None);
    let e = Settings::parse("[schema_registry]\nurl = \"sr:8081\"", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("schema_registry.url"), "{e}");
    let e = Settings::parse("output_format = \"protobuf\"", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("protobuf"), "{e}");
    // The commented Avro lines of deploy/attrib.toml parse once uncommented.
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/attrib.toml"))
            .unwrap();
    let uncommented = example
        .replace("# url = ", "url = ")
        .replace("# extra_writer_schemas = ", "extra_writer_schemas = ")
        .replace("output_format = \"json\"", "output_format = \"avro\"")
        .replace("# actions = \"avro\"", "actions = \"avro\"")
        .replace("# invalid_actions = \"json\"", "invalid_actions = \"json\"");
    let s = Settings::parse(&uncommented, env(&[])).unwrap();
    assert_eq!(s.output_format, OutputFormat::Avro);
    let f = TopicFormats::from_settings(&s);
    assert_eq!(
        (f.actions, f.invalid_actions),
        (OutputFormat::Avro, OutputFormat::Json)
    );
    assert!(s.schema_registry.url.is_some() && s.extra_writer_schemas.len() == 1);
    // A missing extra writer schema fails at start.
    let e = AvroInput::new(None, &[PathBuf::from("/nonexistent.avsc")])
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("/nonexistent.avsc"), "{e}");
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn formats_of(s: &Settings) -> (OutputFormat, OutputFormat) {
    let f = TopicFormats::from_settings(s);
    (f.actions, f.invalid_actions)
}

#[test]
fn settings_for_per_topic_output_formats() {
    use OutputFormat::{Avro, Json};
    // Default: JSON on both topics.
    let s = Settings::parse("", env(&[])).unwrap();
    assert_eq!(formats_of(&s), (Json, Json));
    // The global setting alone still sets both (as before per-topic formats).
    let s = Settings::parse("output_format = \"avro\"", env(&[])).unwrap();
    assert_eq!(formats_of(&s), (Avro, Avro));
    // A topic's own format wins over the global one, in the file and from the environment.
    let s = Settings::parse(
        "output_format = \"avro\"\n[output_formats]\ninvalid_actions = \"json\"\n",
        env(&[]),
    )
    .unwrap();
    assert_eq!(formats_of(&s), (Avro, Json));
    let s = Settings::parse(
        "[output_formats]\nactions = \"json\"\n",
        env(&[
            ("ATTRIB_OUTPUT_FORMATS_ACTIONS", "avro"),
            ("ATTRIB_OUTPUT_FORMATS_INVALID_ACTIONS", "avro"),
            ("ATTRIB_OUTPUT_FORMAT", "json"),
        ]),
    )
    .unwrap();
    assert_eq!(formats_of(&s), (Avro, Avro));
    let s = Settings::parse(
        "",
        env(&[("ATTRIB_OUTPUT_FORMATS_INVALID_ACTIONS", "avro")]),
    )
    .unwrap();
    assert_eq!(formats_of(&s), (Json, Avro));
    // check-config prints what it parsed, and that text parses to the same settings.
    let again = Settings::parse(&toml::to_string(&s).unwrap(), env(&[])).unwrap();
    assert_eq!(again, s);

    // The Avro encoder is set up for the Avro topics only.
    let out = AvroOutput::from_settings(&s).unwrap().unwrap();
    assert_eq!(out.action_framing(), None);
    assert_eq!(
        out.invalid_framing(),
        Some(Framing::SingleObject(
            own_schema("invalid_action").unwrap().fingerprint
        ))
    );
    let s = Settings::parse("[output_formats]\nactions = \"avro\"", env(&[])).unwrap();
    let out = AvroOutput::from_settings(&s).unwrap().unwrap();
    assert!(out.action_framing().is_some() && out.invalid_framing().is_none());
    let s = Settings::parse(
        "output_format = \"avro\"\n[output_formats]\nactions = \"json\"\ninvalid_actions = \"json\"",
        env(&[]),
    )
    .unwrap();
    assert!(AvroOutput::from_settings(&s).unwrap().is_none());

    // Bad values and keys name the field.
    for (text, vars, field, value) in [
        (
            "[output_formats]\nactions = \"protobuf\"",
            vec![],
            "output_formats.actions",
            "protobuf",
        ),
        (
            "",
            vec![("ATTRIB_OUTPUT_FORMATS_INVALID_ACTIONS", "xml")],
            "output_formats.invalid_actions",
            "xml",
        ),
        (
            "[output_formats]\ndlq = \"avro\"",
            vec![],
            "output_formats",
            "dlq",
        ),
        (
            "output_format = \"protobuf\"",
            vec![],
            "output_format",
            "protobuf",
        ),
    ] {
        let e = Settings::parse(text, env(&vars)).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{field}`")) && e.contains(value),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn settings_for_the_schema_registry_connection() {
    let s = Settings::parse(
        "[schema_registry]\nurl = \"https://sr.example\"\nca_file = \"/etc/attrib/ca.pem\"\n",
        env(&[
            ("ATTRIB_SCHEMA_REGISTRY_USER", "KEY"),
            ("ATTRIB_SCHEMA_REGISTRY_PASSWORD", "se/cr+t"),
        ]),
    )
    .unwrap();
    assert_eq!(
        avro::RegistryConfig::from_settings(&s),
        Some(avro::RegistryConfig {
            url: "https://sr.example".into(),
            ca_file: Some(PathBuf::from("/etc/attrib/ca.pem")),
            basic_auth: Some(("KEY".into(), "se/cr+t".into())),
        })
    );
    // An empty variable unsets the file's value.
    let s = Settings::parse(
        "[schema_registry]\nurl = \"https://sr.example\"\nca_file = \"/ca.pem\"\n",
        env(&[("ATTRIB_SCHEMA_REGISTRY_CA_FILE", "")]),
    )
    .unwrap();
    assert_eq!(s.schema_registry.ca_file, None);
    for (text, vars, field) in [
        (
            "[schema_registry]\nurl = \"https://sr\"\nuser = \"k\"",
            vec![],
            "schema_registry.password",
        ),
        (
            "[schema_registry]\nurl = \"https://sr\"",
            vec![("ATTRIB_SCHEMA_REGISTRY_PASSWORD", "p")],
            "schema_registry.user",
        ),
        (
            "[schema_registry]\nurl = \"http://sr:8081\"\nca_file = \"/ca.pem\"",
            vec![],
            "schema_registry.ca_file",
        ),
        (
            "[schema_registry]\nca_file = \"/ca.pem\"",
            vec![],
            "schema_registry.ca_file",
        ),
        (
            "[schema_registry]\nuser = \"k\"\npassword = \"p\"",
            vec![],
            "schema_registry.user",
        ),
        (
            "[schema_registry]\nurl = \"https://a:b@sr\"",
            vec![
                ("ATTRIB_SCHEMA_REGISTRY_USER", "k"),
                ("ATTRIB_SCHEMA_REGISTRY_PASSWORD", "p"),
            ],
            "schema_registry.user",
        ),
    ] {
        let e = Settings::parse(text, env(&vars)).unwrap_err().to_string();
        assert!(e.contains(&format!("`{field}`")), "{text:?} {vars:?}: {e}");
    }
    // The CA file is read when the registry client is set up (at start), not per request.
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for (path, expect) in [
        (not_pem.clone(), "holds no PEM certificate"),
        (
            dir.path().join("missing.pem"),
            "cannot read schema_registry_ca_file",
        ),
    ] {
        let c = avro::RegistryConfig {
            ca_file: Some(path.clone()),
            ..avro::RegistryConfig::url("https://sr.example")
        };
        let e = avro::Registry::connect(&c).err().unwrap().to_string();
        assert!(
            e.contains(expect) && e.contains(&path.display().to_string()),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Framing, errors, fingerprints
// ---------------------------------------------------------------------------------------------

#[test]
fn framing_is_decided_per_record() {
    let avro = input();
    let json = sample("click").json.as_bytes();
    assert_eq!(avro.decode_to_json(InputTopic::Clicks, json).unwrap(), None);
    assert_eq!(avro.decode_to_json(InputTopic::Clicks, b"").unwrap(), None);
    assert_eq!(
        avro.decode_to_json(InputTopic::Clicks, &[0xC3, 0x02, 1])
            .unwrap(),
        None
    );

    let e = avro
        .decode_to_json(InputTopic::Clicks, &[0, 0, 0, 0, 1, 2, 3])
        .unwrap_err();
    assert_eq!(
        e.0,
        "confluent-framed record but no schema_registry_url configured"
    );
    let e = avro
        .decode_to_json(InputTopic::Clicks, &[0, 0, 1])
        .unwrap_err();
    assert!(e.0.contains("shorter than its 5-byte header"), "{}", e.0);
    let e = avro
        .decode_to_json(InputTopic::Clicks, &[0xC3, 0x01, 1, 2])
        .unwrap_err();
    assert!(e.0.contains("shorter than its 10-byte header"), "{}", e.0);
    let e = avro
        .decode_to_json(InputTopic::Clicks, &[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0])
        .unwrap_err();
    assert!(
        e.0.contains("unknown writer schema fingerprint 0102030405060708"),
        "{}",
        e.0
    );

    // A record of one topic's schema on another topic.
    let conv = single_object("conversion", sample("conversion").json);
    let e = avro.decode_to_json(InputTopic::Clicks, &conv).unwrap_err();
    assert!(
        e.0.contains("io.attrib.Conversion is not a record of the clicks topic"),
        "{}",
        e.0
    );
    let action = {
        let out = AvroOutput::new(None, "a", "i").unwrap();
        out.encode_action(&sample_action()).unwrap()
    };
    let e = avro
        .decode_to_json(InputTopic::Conversions, &action)
        .unwrap_err();
    assert!(
        e.0.contains("io.attrib.Action is not a record of the conversions topic"),
        "{}",
        e.0
    );

    // Truncated and padded records.
    let click = single_object("click", sample("click").json);
    for n in 10..click.len() {
        let e = avro
            .decode_to_json(InputTopic::Clicks, &click[..n])
            .unwrap_err();
        assert!(e.0.starts_with("avro record cannot be decoded"), "{}", e.0);
    }
    let mut padded = click.clone();
    padded.push(0);
    let e = avro
        .decode_to_json(InputTopic::Clicks, &padded)
        .unwrap_err();
    assert!(e.0.contains("1 bytes are left over"), "{}", e.0);
}

#[test]
fn fingerprints_and_canonical_forms_follow_the_specification() {
    // Test vectors of the Avro specification (share/test/data/schema-tests.txt).
    assert_eq!(avro::crc64_avro(b"\"null\"") as i64, 7195948357588979594);
    assert_eq!(avro::crc64_avro(b"\"int\"") as i64, 8247732601305521295);
    let pcf = avro::parsing_canonical_form(
        r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[
            {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":6},"default":"\u0000"},
            {"name":"n","type":{"type":"record","name":"N","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}}]}},
            {"name":"r","type":"N"},{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"f","type":{"type":"fixed","name":"x.F","size":2}},{"name":"m","type":{"type":"map","values":["null","int"]}}]}"#,
    )
    .unwrap();
    assert_eq!(
        pcf,
        r#"{"name":"a.b.R","type":"record","fields":[{"name":"d","type":"bytes"},{"name":"n","type":{"name":"a.b.N","type":"record","fields":[{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["A"]}}]}},{"name":"r","type":"a.b.N"},{"name":"t","type":"long"},{"name":"f","type":{"name":"x.F","type":"fixed","size":2}},{"name":"m","type":{"type":"map","values":["null","int"]}}]}"#
    );
}

#[test]
fn decimals_keep_their_value_at_every_size_and_sign() {
    let avro = input();
    for v in [
        "0",
        "0.000001",
        "-0.000001",
        "0.000127",
        "0.000128",
        "-0.000128",
        "-0.000129",
        "19.99",
        "-5.5",
        "255",
        "256",
        "999999999999.999999",
        "-999999999999.999999",
    ] {
        let m = format!(
            r#"{{"type":"modification","program_id":"p","event_type":"e","order_id":"o","occurred_at":"2026-01-01T00:00:00Z","order_subtotal":"{v}"}}"#
        );
        let out = parse(
            &avro
                .decode_to_json(InputTopic::Conversions, &single_object("modification", &m))
                .unwrap()
                .unwrap(),
        );
        let got: Decimal = out["order_subtotal"].as_str().unwrap().parse().unwrap();
        assert_eq!(got, v.parse::<Decimal>().unwrap(), "{v}");
        assert_eq!(
            out["order_subtotal"]
                .as_str()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap()
                .len(),
            6
        );
    }
    // Values that do not fit the schema are refused when encoding.
    let enc = JsonEncoder::own("modification").unwrap();
    for v in ["0.0000001", "1000000000000", "abc"] {
        let m = json!({"program_id":"p","event_type":"e","order_id":"o","occurred_at":"2026-01-01T00:00:00Z","order_subtotal":v});
        assert!(enc.to_vec(&m).is_err(), "{v}");
    }
}

// ---------------------------------------------------------------------------------------------
// Golden bytes
// ---------------------------------------------------------------------------------------------

/// Compares with `tests/data/avro/NAME.hex` (rewritten with ATTRIB_UPDATE_GOLDEN=1).
fn golden(name: &str, bytes: &[u8]) {
    let path = data_dir().join(format!("{name}.hex"));
    let text: String = hex(bytes)
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
        .collect();
    if std::env::var("ATTRIB_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing (run with ATTRIB_UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(
        hex(bytes),
        hex(&unhex(&want)),
        "{name} differs from {}",
        path.display()
    );
}

#[test]
fn golden_bytes_of_each_framing() {
    let avro = input();
    let click = sample("click");
    // Single-object input.
    let so = single_object("click", click.json);
    golden("click.single_object", &so);
    let fp = unhex(&std::fs::read_to_string(data_dir().join("click.single_object.hex")).unwrap())
        [2..10]
        .to_vec();
    assert_eq!(fp, own_schema("click").unwrap().fingerprint.to_le_bytes());
    let decoded = avro
        .decode_to_json(InputTopic::Clicks, &so)
        .unwrap()
        .unwrap();
    assert_eq!(
        norm("click", &parse(&decoded)),
        norm("click", &serde_json::from_str(click.json).unwrap())
    );
    // Confluent input (schema id 42).
    let mut cf = confluent_header(42).to_vec();
    cf.extend(datum("click", click.json));
    golden("click.confluent_id42", &cf);
    assert_eq!(cf[..5], [0, 0, 0, 0, 42]);
    assert_eq!(cf[5..], so[10..]);
    // Output: an action in single-object encoding.
    let out = AvroOutput::new(None, "a", "i").unwrap();
    golden(
        "action.single_object",
        &out.encode_action(&sample_action()).unwrap(),
    );
    golden(
        "invalid_action.single_object",
        &out.encode_invalid(&sample_invalid()).unwrap(),
    );
}

// ---------------------------------------------------------------------------------------------
// Schema evolution
// ---------------------------------------------------------------------------------------------

/// The action schema before credits and touchpoints carried `device_id`.
fn action_schema_v1() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/action.v1.avsc"))
        .unwrap()
}

/// A schema with its decimals read as their underlying `bytes`, as a reader that ignores the
/// logical type may (Avro specification, "Logical Types"). apache-avro's resolution refuses a
/// `bytes` decimal shorter than its precision could need ("Precision 18 too small to hold
/// decimal values with 4 bytes"), though the shortest two's complement is the encoding Java and
/// attrib write; without the logical type the resolution is the same field by field.
fn without_decimals(schema: &str) -> String {
    fn walk(v: &mut Json) {
        match v {
            Json::Object(m) => {
                if m.get("logicalType").and_then(Json::as_str) == Some("decimal") {
                    for k in ["logicalType", "precision", "scale"] {
                        m.remove(k);
                    }
                }
                m.values_mut().for_each(walk);
            }
            Json::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: Json = serde_json::from_str(schema).unwrap();
    walk(&mut v);
    v.to_string()
}

/// An Avro datum decoded with apache-avro's schema resolution (writer → reader), as JSON.
fn resolve(writer: &str, reader: &str, body: &[u8]) -> Json {
    let w = apache_avro::Schema::parse_str(&without_decimals(writer)).unwrap();
    let r = apache_avro::Schema::parse_str(&without_decimals(reader)).unwrap();
    let mut body = body;
    let v = apache_avro::reader::datum::GenericDatumReader::builder(&w)
        .reader_schema(&r)
        .build()
        .unwrap()
        .read_value(&mut body)
        .unwrap_or_else(|e| panic!("cannot resolve: {e}"));
    assert!(body.is_empty(), "{} bytes left over", body.len());
    avro_json(&v)
}

/// Enough of apache-avro's values as JSON for the action: decimals (bytes) as their unscaled
/// integer, times as epoch milliseconds.
fn avro_json(v: &apache_avro::types::Value) -> Json {
    use apache_avro::types::Value as V;
    match v {
        V::Null => Json::Null,
        V::Boolean(b) => json!(b),
        V::Int(i) => json!(i),
        V::Long(i) | V::TimestampMillis(i) => json!(i),
        V::String(s) => json!(s),
        V::Bytes(b) => {
            let mut x: i128 = if b.first().is_some_and(|b| b & 0x80 != 0) {
                -1
            } else {
                0
            };
            for byte in b {
                x = (x << 8) | i128::from(*byte);
            }
            json!(x.to_string())
        }
        V::Union(_, v) => avro_json(v),
        V::Array(a) => Json::Array(a.iter().map(avro_json).collect()),
        V::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), avro_json(v)))
                .collect(),
        ),
        other => panic!("unexpected Avro value {other:?}"),
    }
}

/// `device_id` on credits and touchpoints was added to `action.avsc` as an optional field with
/// a default: a consumer still on the previous schema (`tests/data/action.v1.avsc`, the file
/// before the change) reads attrib's new output, every field but the two new ones intact, and a
/// consumer on the new schema reads output written with the previous one (the fields null).
#[test]
fn actions_with_device_ids_are_read_with_the_previous_action_schema() {
    let old = action_schema_v1();
    let new = own_schema("action").unwrap().text;
    let fields = |schema: &Json, path: &[&str]| -> Vec<String> {
        let mut r = schema.clone();
        for p in path {
            let f = r["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == *p)
                .unwrap();
            let t = &f["type"];
            r = if t["type"] == "array" {
                t["items"].clone()
            } else {
                t.clone()
            };
        }
        r["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (old_json, new_json): (Json, Json) = (
        serde_json::from_str(&old).unwrap(),
        serde_json::from_str(new).unwrap(),
    );
    for path in [&["credits"][..], &["journey", "touchpoints"][..]] {
        let (was, is) = (fields(&old_json, path), fields(&new_json, path));
        assert!(!was.contains(&"device_id".to_string()), "{path:?}: {was:?}");
        // The new field comes right after `click_id`, as in the JSON.
        let at = is.iter().position(|f| f == "click_id").unwrap() + 1;
        assert_eq!(is[at], "device_id", "{path:?}: {is:?}");
        let mut without = is.clone();
        without.remove(at);
        assert_eq!(without, was, "{path:?}");
    }
    let a = sample_action();
    let out = AvroOutput::new(None, "a", "i").unwrap();
    let bytes = out.encode_action(&a).unwrap();
    let body = &bytes[10..];

    // Read with the new schema: the device ids are there.
    let now = resolve(new, new, body);
    assert_eq!(now["credits"][0]["device_id"], "d-0");
    assert_eq!(now["credits"][1]["device_id"], Json::Null);
    assert_eq!(now["journey"]["touchpoints"][0]["device_id"], "d-0");
    assert_eq!(now["device_id"], "d-1");

    // Read with the previous schema: the same record without the two new fields.
    let then = resolve(new, &old, body);
    let mut want = now.clone();
    for c in want["credits"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("device_id").unwrap();
    }
    for t in want["journey"]["touchpoints"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("device_id").unwrap();
    }
    assert_eq!(then, want);
    assert_eq!(then["credits"][0]["click_id"], "c-1");
    assert_eq!(then["credits"][1]["promo_code"], "save10");
    assert_eq!(then["journey"]["touchpoints"][0]["partner_id"], "pa1");
    assert_eq!(then["locking_at"], json!(a.locking_at));

    // The other way: output written with the previous schema, read with the new one.
    let mut v1_json = serde_json::to_value(&a).unwrap();
    for c in v1_json["credits"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("device_id");
    }
    for t in v1_json["journey"]["touchpoints"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("device_id");
    }
    let old_body = JsonEncoder::new(apache_avro::Schema::parse_str(&old).unwrap())
        .to_vec(&v1_json)
        .unwrap();
    let read = resolve(&old, new, &old_body);
    assert_eq!(read["credits"][0]["device_id"], Json::Null);
    assert_eq!(read["credits"][1]["device_id"], Json::Null);
    assert_eq!(read["journey"]["touchpoints"][0]["device_id"], Json::Null);
    assert_eq!(read["credits"][0]["click_id"], "c-1");

    // attrib's own reader of output (datum_to_json) gives the JSON attrib writes.
    assert_eq!(
        parse(&datum_to_json("action", body).unwrap()),
        serde_json::to_value(&a).unwrap()
    );
}

/// A click schema changed by `f`, as JSON text.
fn click_schema_with(f: impl FnOnce(&mut Vec<Json>)) -> String {
    let mut s: Json = serde_json::from_str(own_schema("click").unwrap().text).unwrap();
    f(s["fields"].as_array_mut().unwrap());
    s.to_string()
}

fn write_schema(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn encode_with(schema_text: &str, json: &Json) -> Vec<u8> {
    let enc = JsonEncoder::new(apache_avro::Schema::parse_str(schema_text).unwrap());
    let mut b = single_object_header(avro::fingerprint(schema_text).unwrap()).to_vec();
    enc.encode(json, &mut b).unwrap();
    b
}

#[test]
fn schema_evolution() {
    let dir = tempfile::tempdir().unwrap();
    // Newer writer: an extra field with a default (and an extra nested record).
    let newer = click_schema_with(|f| {
        f.insert(
            4,
            json!({"name":"campaign","type":"string","default":"none"}),
        );
        f.push(json!({"name":"geo","type":["null",{"type":"record","name":"Geo","fields":[{"name":"country","type":"string"},{"name":"lat","type":"double"}]}],"default":null}));
    });
    // Older writer: optional fields missing, `type` missing, `sub_ids` not nullable,
    // occurred_at in microseconds, `source` an Avro enum.
    let older = click_schema_with(|f| {
        f.retain(|x| !["media_id", "landing_url", "type"].contains(&x["name"].as_str().unwrap()));
        for x in f.iter_mut() {
            if x["name"] == "source" {
                x["type"] = json!(["null", {"type":"enum","name":"Source","symbols":["app","api","tracking_link"]}]);
            }
        }
        for x in f.iter_mut() {
            if x["name"] == "sub_ids" {
                x["type"] = json!({"type":"array","items":"string"});
                x.as_object_mut().unwrap().remove("default");
            }
            if x["name"] == "occurred_at" {
                x["type"] = json!({"type":"long","logicalType":"timestamp-micros"});
            }
        }
    });
    // A writer missing a required field.
    let broken = click_schema_with(|f| f.retain(|x| x["name"] != "partner_id"));
    let paths = [
        write_schema(dir.path(), "newer.avsc", &newer),
        write_schema(dir.path(), "older.avsc", &older),
    ];
    let avro = AvroInput::new(None, &paths).unwrap();
    // Without the extra schemas their fingerprints are unknown.
    let plain = input();

    let mut v: Json = serde_json::from_str(sample("click").json).unwrap();
    v["campaign"] = json!("spring");
    v["geo"] = json!({"country":"DE","lat":52.5});
    let bytes = encode_with(&newer, &v);
    assert!(
        plain
            .decode_to_json(InputTopic::Clicks, &bytes)
            .unwrap_err()
            .0
            .contains("unknown writer schema")
    );
    let j = parse(
        &avro
            .decode_to_json(InputTopic::Clicks, &bytes)
            .unwrap()
            .unwrap(),
    );
    assert!(j.get("campaign").is_none() && j.get("geo").is_none(), "{j}");
    assert_eq!(
        norm("click", &j),
        norm(
            "click",
            &serde_json::from_str(sample("click").json).unwrap()
        )
    );

    let v = json!({"click_id":"c-9","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00.123Z","source":"api",
                   "device_id":"d-1","customer_id":null,"shared_id":null,"sub_ids":["x"]});
    let j = parse(
        &avro
            .decode_to_json(InputTopic::Clicks, &encode_with(&older, &v))
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["type"], "click");
    assert_eq!(j["media_id"], Json::Null);
    assert_eq!(j["landing_url"], Json::Null);
    assert_eq!(j["sub_ids"], json!(["x"]));
    assert_eq!(j["occurred_at"], "2026-11-01T10:00:00.123Z");
    assert_eq!(j["source"], "api");
    let c = decode_click(&serde_json::to_vec(&j).unwrap(), &Limits::default()).unwrap();
    assert_eq!(c.click_id, "c-9");

    // A writer missing a required field: refused at start as an extra writer schema, and
    // record by record when it comes from a registry.
    let e = AvroInput::new(None, &[write_schema(dir.path(), "broken.avsc", &broken)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("has no field `partner_id` and attrib's schema gives it no default"),
        "{e}"
    );
    let reg = TestRegistry::start();
    let id = reg.add(&broken);
    let v = json!({"click_id":"c-9","program_id":"p1","occurred_at":"2026-11-01T10:00:00Z"});
    let mut b = confluent_header(id).to_vec();
    JsonEncoder::new(apache_avro::Schema::parse_str(&broken).unwrap())
        .encode(&v, &mut b)
        .unwrap();
    let e = AvroInput::new(Some(&reg.url()), &[])
        .unwrap()
        .decode_to_json(InputTopic::Clicks, &b)
        .unwrap_err();
    assert!(
        e.0.contains("has no field `partner_id` and attrib's schema gives it no default"),
        "{}",
        e.0
    );

    // A writer of another record name is refused (Avro resolution matches record names): at
    // start as an extra writer schema, record by record from a registry.
    let renamed = own_schema("click")
        .unwrap()
        .text
        .replace("\"Click\"", "\"Klick\"");
    let e = AvroInput::new(None, &[write_schema(dir.path(), "renamed.avsc", &renamed)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("io.attrib.Klick is not a record of the clicks topic"),
        "{e}"
    );
    let id = reg.add(&renamed);
    let mut b = confluent_header(id).to_vec();
    b.extend(datum("click", sample("click").json));
    let e = AvroInput::new(Some(&reg.url()), &[])
        .unwrap()
        .decode_to_json(InputTopic::Clicks, &b)
        .unwrap_err();
    assert!(
        e.0.contains("io.attrib.Klick is not a record of the clicks topic"),
        "{}",
        e.0
    );
}

// ---------------------------------------------------------------------------------------------
// A Schema Registry inside the test
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct RegistryState {
    schemas: Vec<String>,
    subjects: Vec<(String, u32)>,
    gets: usize,
    posts: usize,
    last_auth: Option<String>,
}

struct TestRegistry {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<RegistryState>>,
    stop: Arc<AtomicBool>,
    tls: bool,
}

impl TestRegistry {
    fn start() -> TestRegistry {
        TestRegistry::start_with(None)
    }

    /// Over HTTPS, with this server identity.
    fn start_tls(identity: native_tls::Identity) -> TestRegistry {
        TestRegistry::start_with(Some(native_tls::TlsAcceptor::new(identity).unwrap()))
    }

    fn start_with(tls: Option<native_tls::TlsAcceptor>) -> TestRegistry {
        TestRegistry::serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), tls)
    }

    fn serve_on(listener: TcpListener, tls: Option<native_tls::TlsAcceptor>) -> TestRegistry {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RegistryState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let tls_on = tls.is_some();
        std::thread::spawn(move || {
            // Bounded: at most 10,000 connections, and it stops when the test drops it.
            for conn in listener.incoming().take(10_000) {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                match &tls {
                    // A client that refuses the certificate ends the handshake: no request.
                    Some(acceptor) => {
                        if let Ok(t) = acceptor.accept(c) {
                            let _ = serve(t, &s);
                        }
                    }
                    None => {
                        let _ = serve(c, &s);
                    }
                }
            }
        });
        TestRegistry {
            addr,
            state,
            stop,
            tls: tls_on,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn add(&self, schema: &str) -> u32 {
        let mut s = self.state.lock().unwrap();
        s.schemas.push(schema.to_string());
        s.schemas.len() as u32
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve<S: Read + Write>(c: S, state: &Mutex<RegistryState>) -> std::io::Result<()> {
    let mut r = BufReader::new(c);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    let mut auth = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    let mut s = state.lock().unwrap();
    s.last_auth = auth;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (code, reply) = match (method.as_str(), segs.as_slice()) {
        ("GET", ["schemas", "ids", id]) => {
            s.gets += 1;
            match id
                .parse::<usize>()
                .ok()
                .and_then(|i| s.schemas.get(i.wrapping_sub(1)))
            {
                Some(text) => (200, json!({ "schema": text })),
                None => (
                    404,
                    json!({"error_code": 40403, "message": "Schema not found"}),
                ),
            }
        }
        ("POST", ["subjects", subject, "versions"]) => {
            s.posts += 1;
            let text = serde_json::from_slice::<Json>(&body)
                .ok()
                .and_then(|j| j["schema"].as_str().map(str::to_string));
            match text {
                Some(text) => {
                    let id = match s.schemas.iter().position(|x| *x == text) {
                        Some(i) => i as u32 + 1,
                        None => {
                            s.schemas.push(text);
                            s.schemas.len() as u32
                        }
                    };
                    s.subjects.push((subject.to_string(), id));
                    (200, json!({ "id": id }))
                }
                None => (
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                ),
            }
        }
        _ => (
            404,
            json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
        ),
    };
    drop(s);
    let reply = reply.to_string();
    let c = r.get_mut();
    write!(
        c,
        "HTTP/1.1 {code} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    c.flush()
}

#[test]
fn confluent_input_through_a_schema_registry() {
    let reg = TestRegistry::start();
    let click_id = reg.add(own_schema("click").unwrap().text);
    let newer = click_schema_with(|f| {
        f.push(json!({"name":"campaign","type":["null","string"],"default":null}))
    });
    let newer_id = reg.add(&newer);
    let reversal_id = reg.add(own_schema("reversal").unwrap().text);
    let avro = AvroInput::new(Some(&reg.url()), &[]).unwrap();

    let c = sample("click");
    for i in 0..10 {
        let mut b = confluent_header(click_id).to_vec();
        b.extend(datum("click", c.json));
        let j = avro
            .decode_to_json(InputTopic::Clicks, &b)
            .unwrap()
            .unwrap();
        assert_eq!(
            norm("click", &parse(&j)),
            norm("click", &serde_json::from_str(c.json).unwrap()),
            "{i}"
        );
    }
    assert_eq!(
        reg.state.lock().unwrap().gets,
        1,
        "the schema is fetched once per id"
    );

    let mut v: Json = serde_json::from_str(c.json).unwrap();
    v["campaign"] = json!("x");
    let mut b = confluent_header(newer_id).to_vec();
    JsonEncoder::new(apache_avro::Schema::parse_str(&newer).unwrap())
        .encode(&v, &mut b)
        .unwrap();
    let j = parse(
        &avro
            .decode_to_json(InputTopic::Clicks, &b)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["click_id"], "c-1");
    assert!(j.get("campaign").is_none());

    // One of several record types of a topic, matched by name.
    let mut b = confluent_header(reversal_id).to_vec();
    b.extend(datum("reversal", sample("reversal").json));
    let j = parse(
        &avro
            .decode_to_json(InputTopic::Conversions, &b)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["type"], "reversal");
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(
        e.0.contains("Reversal is not a record of the clicks topic"),
        "{}",
        e.0
    );

    // An unknown id goes to the DLQ, and is not asked for again at once.
    let gets = reg.state.lock().unwrap().gets;
    let mut b = confluent_header(999).to_vec();
    b.extend(datum("click", c.json));
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(
        e.0.contains("cannot fetch writer schema id 999")
            && e.0.contains("HTTP 404: Schema not found"),
        "{}",
        e.0
    );
    let e2 = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert_eq!(e, e2);
    assert_eq!(reg.state.lock().unwrap().gets, gets + 1);

    // Through the processor: the record is processed, a bad one goes to the DLQ with a reason.
    let mut p = processor().with_avro(Arc::new(avro));
    let mut out = Vec::new();
    let mut good = confluent_header(click_id).to_vec();
    good.extend(datum("click", c.json));
    p.process(
        &rec(InputTopic::Clicks, Some(&b"d-1"[..]), Some(&good), 0),
        0,
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty(), "{out:?}");
    p.process(
        &rec(InputTopic::Clicks, Some(&b"d-1"[..]), Some(&b), 1),
        0,
        &mut out,
    )
    .unwrap();
    match &out[..] {
        [OutRecord::Dlq(d)] => {
            assert_eq!(d.value.as_deref(), Some(&b[..]));
            assert!(d.error.contains("schema id 999"), "{}", d.error);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreachable_registry_sends_records_to_the_dlq() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let avro = AvroInput::new(Some(&format!("http://user:secret@127.0.0.1:{port}")), &[]).unwrap();
    let mut b = confluent_header(1).to_vec();
    b.extend(datum("click", sample("click").json));
    let started = std::time::Instant::now();
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(e.0.contains("cannot fetch writer schema id 1"), "{}", e.0);
    assert!(
        !e.0.contains("secret"),
        "credentials leak into the reason: {}",
        e.0
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Output: registration fails at start, naming the registry.
    let e = AvroOutput::new(Some(&format!("http://127.0.0.1:{port}")), "a", "i")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot register the schema of subject `a-value`"),
        "{e}"
    );
}

#[test]
fn confluent_output_registers_its_schemas() {
    let reg = TestRegistry::start();
    let url = format!("http://user:pass@{}", reg.addr);
    let out = AvroOutput::new(Some(&url), "attrib.actions", "attrib.invalid-actions").unwrap();
    {
        let s = reg.state.lock().unwrap();
        assert_eq!(s.posts, 2);
        assert_eq!(
            s.subjects,
            vec![
                ("attrib.actions-value".to_string(), 1),
                ("attrib.invalid-actions-value".to_string(), 2)
            ]
        );
        assert_eq!(s.schemas[0], own_schema("action").unwrap().text);
        assert_eq!(s.last_auth.as_deref(), Some("Basic dXNlcjpwYXNz"));
    }
    assert_eq!(out.action_framing(), Some(Framing::Confluent(1)));
    assert_eq!(out.invalid_framing(), Some(Framing::Confluent(2)));
    let b = out.encode_action(&sample_action()).unwrap();
    assert_eq!(b[..5], [0, 0, 0, 0, 1]);
    let back = parse(&datum_to_json("action", &b[5..]).unwrap());
    assert_eq!(back, serde_json::to_value(sample_action()).unwrap());
    // Registering again finds the same ids.
    let again =
        AvroOutput::new(Some(&reg.url()), "attrib.actions", "attrib.invalid-actions").unwrap();
    assert_eq!(again.action_framing(), Some(Framing::Confluent(1)));
    // And attrib's input reads what a Confluent producer wrote with the registered id.
    let avro = AvroInput::new(Some(&reg.url()), &[]).unwrap();
    let e = avro.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
    assert!(
        e.0.contains("io.attrib.Action is not a record of the clicks topic"),
        "{}",
        e.0
    );
}

// ---------------------------------------------------------------------------------------------
// The registry over HTTPS, with a private CA made in the test
// ---------------------------------------------------------------------------------------------

/// A certificate authority made for the test (EC P-256, valid for two days).
struct TestCa {
    cert: openssl::x509::X509,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
}

fn ec_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    use openssl::ec::{EcGroup, EcKey};
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    openssl::pkey::PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn x509_name(cn: &str) -> openssl::x509::X509Name {
    let mut b = openssl::x509::X509NameBuilder::new().unwrap();
    b.append_entry_by_text("CN", cn).unwrap();
    b.build()
}

fn x509_builder(
    cn: &str,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> openssl::x509::X509Builder {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&x509_name(cn)).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b
}

impl TestCa {
    fn new(cn: &str) -> TestCa {
        use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
        let key = ec_key();
        let mut b = x509_builder(cn, &key);
        b.set_issuer_name(&x509_name(cn)).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        TestCa {
            cert: b.build(),
            key,
        }
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap()
    }

    /// A server identity for 127.0.0.1 and localhost, signed by this CA.
    fn server_identity(&self) -> native_tls::Identity {
        use openssl::x509::extension::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage,
            SubjectAlternativeName,
        };
        let key = ec_key();
        let mut b = x509_builder("localhost", &key);
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(Some(&*self.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&*self.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
        b.sign(&self.key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        native_tls::Identity::from_pkcs8(
            &b.build().to_pem().unwrap(),
            &key.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap()
    }
}

#[test]
fn schema_registry_over_https_with_a_private_ca_and_basic_auth() {
    let ca = TestCa::new("attrib test CA");
    let reg = TestRegistry::start_tls(ca.server_identity());
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let click_id = reg.add(own_schema("click").unwrap().text);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("registry-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    // A Confluent Cloud style secret, with characters a URL could not carry as they are.
    let (user, password) = ("SRKEY7", "s3cr/t+x=:y@z");
    let url = reg.url();
    let s = Settings::parse(
        "[output_formats]\nactions = \"avro\"\n",
        env(&[
            ("ATTRIB_SCHEMA_REGISTRY_URL", url.as_str()),
            ("ATTRIB_SCHEMA_REGISTRY_CA_FILE", ca_file.to_str().unwrap()),
            ("ATTRIB_SCHEMA_REGISTRY_USER", user),
            ("ATTRIB_SCHEMA_REGISTRY_PASSWORD", password),
        ]),
    )
    .unwrap();
    let basic = format!(
        "Basic {}",
        openssl::base64::encode_block(format!("{user}:{password}").as_bytes())
    );

    // Output: the actions schema (only: invalid actions stay JSON) is registered at start.
    let out = AvroOutput::from_settings(&s).unwrap().unwrap();
    {
        let st = reg.state.lock().unwrap();
        assert_eq!(
            st.subjects,
            vec![(format!("{}-value", s.topics.actions), 2)]
        );
        assert_eq!(st.last_auth.as_deref(), Some(basic.as_str()));
    }
    assert_eq!(out.action_framing(), Some(Framing::Confluent(2)));
    assert_eq!(out.invalid_framing(), None);

    // Input: a Confluent-framed record's writer schema is fetched over HTTPS.
    let input = AvroInput::from_settings(&s).unwrap();
    let mut b = confluent_header(click_id).to_vec();
    b.extend(datum("click", sample("click").json));
    let j = parse(
        &input
            .decode_to_json(InputTopic::Clicks, &b)
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["click_id"], "c-1");
    {
        let st = reg.state.lock().unwrap();
        assert_eq!(st.gets, 1);
        assert_eq!(st.last_auth.as_deref(), Some(basic.as_str()));
    }

    // Trusting only the system's CAs, or another private CA, attrib refuses the server's
    // certificate: start-up fails naming the registry, and no request reaches it.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, TestCa::new("another CA").pem()).unwrap();
    for trusted in [None, Some(other)] {
        let s = Settings {
            schema_registry: attrib::ops::settings::SchemaRegistry {
                ca_file: trusted.clone(),
                ..s.schema_registry.clone()
            },
            ..s.clone()
        };
        let e = format!("{:#}", AvroOutput::from_settings(&s).err().unwrap());
        assert!(
            e.contains(&format!(
                "cannot register the schema of subject `{}-value` at {}",
                s.topics.actions,
                reg.url()
            )),
            "{trusted:?}: {e}"
        );
        assert!(e.contains("certificate verify failed"), "{trusted:?}: {e}");
        let input = AvroInput::from_settings(&s).unwrap();
        let mut b = confluent_header(click_id).to_vec();
        b.extend(datum("click", sample("click").json));
        let e = input.decode_to_json(InputTopic::Clicks, &b).unwrap_err();
        assert!(e.0.contains("cannot fetch writer schema id 1"), "{}", e.0);
    }
    let st = reg.state.lock().unwrap();
    assert_eq!((st.posts, st.gets), (1, 1), "a refused server got requests");
}

// ---------------------------------------------------------------------------------------------
// Per-topic output formats end to end, on librdkafka's mock cluster
// ---------------------------------------------------------------------------------------------

/// The pipeline on a fresh mock cluster with `settings` changed by `f`, fed one credited
/// conversion and two uncredited ones (unknown program, duplicate order); what the actions
/// and invalid-actions topics then hold.
fn run_mock_pipeline(f: impl FnOnce(&mut Settings)) -> (Settings, Vec<ReadBack>) {
    use InputTopic::*;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::AtLeastOnce, dir.path());
    f(&mut s);
    for (t, p) in common::topics_of(&s, 1) {
        cluster.create_topic(&t, p, 1).unwrap();
    }
    let tables = [
        common::rec(
            Config,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD","credit_policy":"last_click"}"#,
        ),
        common::rec(
            Config,
            "contract/p1/pa1",
            r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}"#,
        ),
    ];
    produce(&brokers, &s, &tables).unwrap();
    let run = common::Running::start(&s);
    run.wait_ready(Duration::from_secs(60));
    let click = common::rec(
        Clicks,
        "d-1",
        r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"d-1"}"#,
    );
    produce(&brokers, &s, &[click]).unwrap();
    wait_consumed(&run.handles, 1, Duration::from_secs(60)).unwrap();
    let conversion = r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-02T10:00:00Z","device_id":"d-1","order_subtotal":"80"}"#;
    let conversions = [
        common::rec(Conversions, "d-1", conversion),
        common::rec(Conversions, "d-1", conversion),
        common::rec(
            Conversions,
            "d-2",
            r#"{"type":"conversion","program_id":"nope","event_type":"sale","order_id":"o-2","occurred_at":"2026-11-02T10:00:00Z","device_id":"d-2"}"#,
        ),
    ];
    produce(&brokers, &s, &conversions).unwrap();
    wait_consumed(&run.handles, 4, Duration::from_secs(60)).unwrap();
    run.stop();
    let out = read_topics(&brokers, &[&s.topics.actions, &s.topics.invalid_actions]).unwrap();
    (s, out)
}

/// A Schema Registry that is down when attrib starts (attrib cannot register its output
/// schema) and comes up 3 s later: attrib retries by itself, releasing what the failed start
/// opened (its RocksDB store), and becomes ready and writes Avro actions.
#[test]
fn registry_down_at_start_is_picked_up_when_it_comes_back() {
    use InputTopic::*;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::AtLeastOnce, dir.path());
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    s.schema_registry.url = Some(format!("http://{addr}"));
    s.output_formats.actions = Some(OutputFormat::Avro);
    for (t, p) in common::topics_of(&s, 1) {
        cluster.create_topic(&t, p, 1).unwrap();
    }
    produce(&brokers, &s, &[
        common::rec(Config, "program/p1", r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD"}"#),
        common::rec(Config, "contract/p1/pa1", r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}"#),
    ])
    .unwrap();
    let run = common::Running::start(&s);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !run.handles.ready.load(Ordering::Acquire),
        "not ready while the registry is down"
    );
    let reg = TestRegistry::serve_on(TcpListener::bind(addr).unwrap(), None);
    run.wait_ready(Duration::from_secs(60));
    produce(&brokers, &s, &[
        common::rec(Clicks, "d-1", r#"{"type":"click","click_id":"c-1","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"d-1"}"#),
        common::rec(Conversions, "d-1", r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-1","occurred_at":"2026-11-02T10:00:00Z","device_id":"d-1","order_subtotal":"80"}"#),
    ])
    .unwrap();
    wait_consumed(&run.handles, 2, Duration::from_secs(60)).unwrap();
    run.stop();
    let out = read_topics(&brokers, &[&s.topics.actions]).unwrap();
    let actions = records_of(&out, &s.topics.actions);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (key, value) = &actions[0];
    assert_eq!(value[..5], confluent_header(1));
    check_action(key, &parse(&datum_to_json("action", &value[5..]).unwrap()));
    assert_eq!(reg.state.lock().unwrap().subjects.len(), 1);
}

/// The records of one topic: (key, value).
fn records_of(out: &[ReadBack], topic: &str) -> Vec<(String, Vec<u8>)> {
    out.iter()
        .filter(|r| r.topic == topic)
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.value.clone().unwrap(),
            )
        })
        .collect()
}

/// Checks one action record (its attrib-decoded JSON form) and its key.
fn check_action(key: &str, a: &Json) {
    assert_eq!(a["action_id"], key, "actions are keyed by action_id");
    assert_eq!(a["order_id"], "o-1");
    assert_eq!(a["credits"][0]["partner_id"], "pa1");
    assert_eq!(a["payout"], "8.000000");
}

fn reasons(invalid: &[Json]) -> Vec<String> {
    let mut r: Vec<String> = invalid
        .iter()
        .map(|i| i["reason"].as_str().unwrap().to_string())
        .collect();
    r.sort();
    r
}

#[test]
fn mixed_output_formats_end_to_end() {
    let fastavro_ok = fastavro_available();
    let expected_reasons = vec!["duplicate_order".to_string(), "unknown_program".to_string()];

    // 1. Actions in Avro through a registry (Confluent wire format), invalid actions in JSON.
    let reg = TestRegistry::start();
    let (s, out) = run_mock_pipeline(|s| {
        s.schema_registry.url = Some(reg.url());
        s.output_formats.actions = Some(OutputFormat::Avro);
    });
    let subjects = reg.state.lock().unwrap().subjects.clone();
    assert_eq!(subjects, vec![(format!("{}-value", s.topics.actions), 1)]);
    let actions = records_of(&out, &s.topics.actions);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (key, value) = &actions[0];
    assert_eq!(value[..5], confluent_header(1));
    let a = parse(&datum_to_json("action", &value[5..]).unwrap());
    check_action(key, &a);
    if fastavro_ok {
        let registered = reg.state.lock().unwrap().schemas[0].clone();
        let got = fastavro(
            "read",
            &json!([{"stem":"action","framing":"confluent","id":1,"registered":registered,"hex":hex(value)}]).to_string(),
        );
        assert_eq!(norm_fastavro("action", &got[0]), norm("action", &a));
    }
    let invalid: Vec<Json> = records_of(&out, &s.topics.invalid_actions)
        .iter()
        .map(|(_, v)| serde_json::from_slice(v).expect("invalid actions are JSON"))
        .collect();
    assert_eq!(reasons(&invalid), expected_reasons);

    // 2. The other way round, without a registry: invalid actions in single-object Avro.
    let (s, out) = run_mock_pipeline(|s| {
        s.output_format = OutputFormat::Avro;
        s.output_formats.actions = Some(OutputFormat::Json);
    });
    let actions = records_of(&out, &s.topics.actions);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let (key, value) = &actions[0];
    check_action(
        key,
        &serde_json::from_slice(value).expect("actions are JSON"),
    );
    let fp = own_schema("invalid_action").unwrap().fingerprint;
    let mut invalid = Vec::new();
    for (key, value) in records_of(&out, &s.topics.invalid_actions) {
        assert_eq!(value[..10], single_object_header(fp));
        let i = parse(&datum_to_json("invalid_action", &value[10..]).unwrap());
        assert_eq!(
            key,
            format!(
                "{}/sale/{}",
                i["program_id"].as_str().unwrap(),
                i["order_id"].as_str().unwrap()
            )
        );
        if fastavro_ok {
            let got = fastavro(
                "read",
                &json!([{"stem":"invalid_action","framing":"single_object","hex":hex(&value)}])
                    .to_string(),
            );
            assert_eq!(
                norm_fastavro("invalid_action", &got[0]),
                norm("invalid_action", &i)
            );
        }
        invalid.push(i);
    }
    assert_eq!(reasons(&invalid), expected_reasons);
}

// ---------------------------------------------------------------------------------------------
// Interop with Python fastavro
// ---------------------------------------------------------------------------------------------

fn fastavro_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import fastavro"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("ATTRIB_REQUIRE_BROKER").as_deref() == Ok("1") {
            panic!("python3 with fastavro is missing (scripts/setup installs it)");
        }
        eprintln!("skipped: python3 with fastavro is missing (scripts/setup installs it)");
    }
    ok
}

fn fastavro(mode: &str, stdin: &str) -> Json {
    let mut child = Command::new("python3")
        .arg(data_dir().join("fastavro_check.py"))
        .arg(mode)
        .arg(schemas_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "fastavro_check.py {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&out.stdout)
}

#[test]
fn fastavro_reads_attribs_output() {
    if !fastavro_available() {
        return;
    }
    let reg = TestRegistry::start();
    let so = AvroOutput::new(None, "a", "i").unwrap();
    let cf = AvroOutput::new(Some(&reg.url()), "attrib.actions", "attrib.invalid-actions").unwrap();
    let registered = |id: u32| reg.state.lock().unwrap().schemas[id as usize - 1].clone();
    let (a, i) = (sample_action(), sample_invalid());
    let Some(Framing::Confluent(aid)) = cf.action_framing() else {
        panic!()
    };
    let Some(Framing::Confluent(iid)) = cf.invalid_framing() else {
        panic!()
    };
    let golden_action =
        std::fs::read_to_string(data_dir().join("action.single_object.hex")).unwrap();
    let cases = json!([
        {"stem":"action","framing":"single_object","hex":hex(&so.encode_action(&a).unwrap())},
        {"stem":"invalid_action","framing":"single_object","hex":hex(&so.encode_invalid(&i).unwrap())},
        {"stem":"action","framing":"confluent","id":aid,"registered":registered(aid),"hex":hex(&cf.encode_action(&a).unwrap())},
        {"stem":"invalid_action","framing":"confluent","id":iid,"registered":registered(iid),"hex":hex(&cf.encode_invalid(&i).unwrap())},
        {"stem":"action","framing":"single_object","hex":golden_action.split_whitespace().collect::<String>()},
    ]);
    let got = fastavro("read", &cases.to_string());
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 5);
    let expect_action = norm("action", &serde_json::to_value(&a).unwrap());
    let expect_invalid = norm("invalid_action", &serde_json::to_value(&i).unwrap());
    for (k, g) in got.iter().enumerate() {
        let (stem, want) = if k % 2 == 0 || k == 4 {
            ("action", &expect_action)
        } else {
            ("invalid_action", &expect_invalid)
        };
        assert_eq!(&norm_fastavro(stem, g), want, "case {k}: {g}");
    }
    // Spot checks of the raw values fastavro read.
    assert_eq!(got[0]["amount"], "55.000000");
    assert_eq!(got[0]["delta_amount"], "-1.250000");
    assert_eq!(got[0]["credits"][1]["weight"], "0.666667");
    assert_eq!(
        got[0]["occurred_at"],
        json!(parse_rfc3339("2026-11-02T10:00:00.123Z").unwrap())
    );
    assert_eq!(got[0]["customer_id"], Json::Null);
    assert_eq!(got[1]["reason"], "unknown_program");
    assert_eq!(got[1]["test"], true);
}

/// fastavro's record (times as epoch ms, decimals as strings) in `norm`'s form.
fn norm_fastavro(stem: &str, v: &Json) -> Json {
    // Turn epoch-ms numbers back into RFC 3339 where the schema has a timestamp, then norm.
    let schema: Json = serde_json::from_str(own_schema(stem).unwrap().text).unwrap();
    fn back(schema: &Json, v: &Json, named: &mut HashMap<String, Json>) -> Json {
        match schema {
            Json::String(name) => match named
                .get(name)
                .or_else(|| named.get(&format!("io.attrib.{name}")))
                .cloned()
            {
                Some(s) => back(&s, v, named),
                None => v.clone(),
            },
            Json::Array(b) => {
                if v.is_null() {
                    Json::Null
                } else {
                    back(
                        b.iter().find(|x| x.as_str() != Some("null")).unwrap(),
                        v,
                        named,
                    )
                }
            }
            Json::Object(m) => match m.get("logicalType").and_then(Json::as_str) {
                Some("timestamp-millis") => {
                    json!(attrib::model::time::format_rfc3339(v.as_i64().unwrap()))
                }
                Some(_) => v.clone(),
                None => match &m["type"] {
                    Json::String(t) if t == "record" => {
                        named.insert(
                            format!("io.attrib.{}", m["name"].as_str().unwrap()),
                            schema.clone(),
                        );
                        let mut out = serde_json::Map::new();
                        for f in m["fields"].as_array().unwrap() {
                            let n = f["name"].as_str().unwrap();
                            out.insert(n.to_string(), back(&f["type"], &v[n], named));
                        }
                        Json::Object(out)
                    }
                    Json::String(t) if t == "array" => Json::Array(
                        v.as_array()
                            .unwrap()
                            .iter()
                            .map(|x| back(&m["items"], x, named))
                            .collect(),
                    ),
                    other => back(other, v, named),
                },
            },
            _ => v.clone(),
        }
    }
    let mut named = HashMap::new();
    norm(stem, &back(&schema, v, &mut named))
}

#[test]
fn attrib_reads_what_fastavro_writes() {
    if !fastavro_available() {
        return;
    }
    let avro = input();
    let got = fastavro("write", "");
    let conv = &got[0];
    assert_eq!(conv["stem"], "conversion");
    let j = parse(
        &avro
            .decode_to_json(
                InputTopic::Conversions,
                &unhex(conv["hex"].as_str().unwrap()),
            )
            .unwrap()
            .unwrap(),
    );
    assert_eq!(j["type"], "conversion");
    assert_eq!(j["order_id"], "o-py");
    assert_eq!(j["occurred_at"], "2026-11-02T10:00:00.123Z");
    assert_eq!(j["order_discount"], "5.000000");
    assert_eq!(j["order_tax"], "0.000000");
    assert_eq!(j["items"][0]["unit_price"], "19.990000");
    assert_eq!(j["items"][1]["unit_price"], "0.000000");
    assert_eq!(j["test"], true);
    let ev = decode_conversion_topic(&serde_json::to_vec(&j).unwrap(), &Limits::default()).unwrap();
    let attrib::model::records::Event::Conversion(c) = ev else {
        panic!()
    };
    assert_eq!(c.items[0].unit_price, "19.99".parse::<Decimal>().unwrap());
    assert_eq!(c.currency.as_deref(), Some("EUR"));

    let contract = &got[1];
    let mut t = Tables::default();
    let j = avro
        .decode_to_json(
            InputTopic::Config,
            &unhex(contract["hex"].as_str().unwrap()),
        )
        .unwrap()
        .unwrap();
    t.apply_config(Some(b"contract/p1/pa1"), Some(&j), &Limits::default())
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&j)));
    let c = t.contract("p1", "pa1").unwrap();
    assert_eq!(c.referral_window_days, Some(14));
    assert_eq!(
        c.payout.as_ref().unwrap().default,
        Some(attrib::model::tables::Rate::Percent(
            "12.5".parse().unwrap()
        ))
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: arbitrary bytes never panic a decoder
// ---------------------------------------------------------------------------------------------

fn prefixes() -> Vec<Vec<u8>> {
    let mut p = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0, 0, 0, 1],
        vec![0xC3, 0x01],
        vec![0xC3],
    ];
    for s in avro::own_schemas() {
        p.push(single_object_header(s.fingerprint).to_vec());
    }
    p
}

const TOPICS: [InputTopic; 4] = [
    InputTopic::Clicks,
    InputTopic::Conversions,
    InputTopic::PromoCodes,
    InputTopic::Config,
];

static REG: std::sync::OnceLock<(TestRegistry, Arc<AvroInput>)> = std::sync::OnceLock::new();

fn registry_input() -> &'static Arc<AvroInput> {
    &REG.get_or_init(|| {
        let reg = TestRegistry::start();
        reg.add(own_schema("conversion").unwrap().text);
        let a = Arc::new(AvroInput::new(Some(&reg.url()), &[]).unwrap());
        (reg, a)
    })
    .1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decode_to_json_never_panics(prefix in 0usize..15, body in proptest::collection::vec(any::<u8>(), 0..256), t in 0usize..4) {
        let prefixes = prefixes();
        let mut bytes = prefixes[prefix % prefixes.len()].clone();
        bytes.extend(&body);
        let avro = registry_input();
        match avro.decode_to_json(TOPICS[t], &bytes) {
            Ok(None) => prop_assert!(!bytes.starts_with(&[0xC3, 0x01]) && bytes.first() != Some(&0)),
            Ok(Some(j)) => { serde_json::from_slice::<Json>(&j).map_err(|e| TestCaseError::fail(e.to_string()))?; }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    #[test]
    fn datum_to_json_never_panics(stem in 0usize..10, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let s = avro::SCHEMA_FILES[stem].0;
        if let Ok(j) = datum_to_json(s, &body) {
            serde_json::from_slice::<Json>(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }

    #[test]
    fn processor_never_panics_on_arbitrary_values(prefix in 0usize..15, body in proptest::collection::vec(any::<u8>(), 0..200), t in 0usize..4, key in proptest::option::of("[a-z/0-9]{0,12}")) {
        let prefixes = prefixes();
        let mut bytes = prefixes[prefix % prefixes.len()].clone();
        bytes.extend(&body);
        let mut p = processor().with_avro(registry_input().clone());
        let mut out = Vec::new();
        p.process(&rec(TOPICS[t], key.as_deref().map(str::as_bytes), Some(&bytes), 0), 0, &mut out).unwrap();
        for o in &out {
            if let OutRecord::Dlq(d) = o {
                prop_assert!(!d.error.is_empty());
                prop_assert_eq!(d.value.as_deref(), Some(&bytes[..]));
            }
        }
    }
}

/// Mutations of valid records (bit flips, byte changes, cuts, splices): many decode deep into
/// the plan before failing, which random bytes rarely do.
#[test]
fn mutated_records_never_panic() {
    let avro = registry_input();
    let mut rng = StdRng::seed_from_u64(7);
    let valid: Vec<(InputTopic, Vec<u8>)> = SAMPLES
        .iter()
        .map(|s| (s.topic, single_object(s.stem, s.json)))
        .collect();
    let (mut ok, mut err) = (0u64, 0u64);
    // ATTRIB_FUZZ_ITERATIONS=N runs longer.
    let n_iter: usize = std::env::var("ATTRIB_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    for _ in 0..n_iter {
        let (topic, base) = &valid[rng.gen_range(0..valid.len())];
        let mut b = base.clone();
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..4) {
                0 => {
                    let i = rng.gen_range(10..b.len());
                    b[i] ^= 1 << rng.gen_range(0..8);
                }
                1 => {
                    let i = rng.gen_range(10..b.len());
                    b[i] = rng.r#gen();
                }
                2 => {
                    let n = rng.gen_range(10..=b.len());
                    b.truncate(n.max(10));
                }
                _ => {
                    let i = rng.gen_range(10..=b.len());
                    let junk: Vec<u8> = (0..rng.gen_range(1..8)).map(|_| rng.r#gen()).collect();
                    b.splice(i..i, junk);
                }
            }
            if b.len() <= 10 {
                break;
            }
        }
        match avro.decode_to_json(*topic, &b) {
            Ok(Some(j)) => {
                parse(&j);
                ok += 1;
            }
            Ok(None) => unreachable!(),
            Err(e) => {
                assert!(!e.0.is_empty());
                err += 1;
            }
        }
    }
    eprintln!("mutated records: {n_iter} ({ok} decoded, {err} refused)");
    assert!(ok > 0 && err > 0);
}

// ---------------------------------------------------------------------------------------------
// Flood: bad records interleaved with valid ones through the processor and replay
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Valid,
    Bad,
    /// A mutation: may or may not decode.
    Unknown,
}

fn valid_record(topic: InputTopic, i: usize, base: i64) -> (String, String) {
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
                0 | 1 | 2 => format!(
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
            0 | 1 | 2 => (Kind::Valid, "valid json", json.clone().into_bytes()),
            3 | 4 | 5 => (Kind::Valid, "valid avro", single_object(stem, &json)),
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

/// Identify records (docs/design.md §6) in Avro: `schemas/identify.avsc`, single-object
/// encoded, link a device with stitching on; a record of another schema on the identities
/// topic goes to the DLQ; with stitching off the topic is not read at all.
#[test]
fn identify_records_in_avro_link_devices() {
    let base = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let (key, json) = valid_record(InputTopic::Identities, 8, base);
    let bytes = single_object("identify", &json);
    for stitching in [true, false] {
        let mut p = processor()
            .with_avro(Arc::new(input()))
            .with_stitching(stitching);
        let mut out = Vec::new();
        p.process(
            &rec(
                InputTopic::Identities,
                Some(key.as_bytes()),
                Some(&bytes),
                0,
            ),
            base,
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            p.stats.stitching.links_created,
            u64::from(stitching),
            "stitching {stitching}"
        );
        let (_, click) = valid_record(InputTopic::Clicks, 8, base);
        let wrong = single_object("click", &click);
        p.process(
            &rec(
                InputTopic::Identities,
                Some(key.as_bytes()),
                Some(&wrong),
                1,
            ),
            base,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), usize::from(stitching), "{out:?}");
    }
}
