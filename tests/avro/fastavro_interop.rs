//! Interop with Python fastavro.

use super::*;
use crate::registry::TestRegistry;

pub(crate) fn fastavro_available() -> bool {
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

pub(crate) fn fastavro(mode: &str, stdin: &str) -> Json {
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
pub(crate) fn norm_fastavro(stem: &str, v: &Json) -> Json {
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
