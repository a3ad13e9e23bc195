//! Framing, errors, fingerprints, and golden bytes of both framings.

use super::*;

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
        "confluent-framed record but no schema_registry.url configured"
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
