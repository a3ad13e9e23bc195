//! Round trips: every schema through single-object encoding, the decoded JSON form, and
//! the output codec in each topic's format.

use super::*;

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
