//! Settings for Avro: output formats (for all topics and per topic) and the Schema Registry
//! connection.

use super::*;

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
            ..avro::RegistryConfig::default()
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
            "cannot read schema_registry.ca_file",
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
