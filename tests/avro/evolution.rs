//! Schema evolution: writer schemas older and newer than attrib's, and consumers on the
//! previous action schema.

use super::*;
use crate::registry::TestRegistry;

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
pub(crate) fn click_schema_with(f: impl FnOnce(&mut Vec<Json>)) -> String {
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
