use super::env::SETTING_KEYS;
use super::registry::redact_url_password;
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_file_and_env() {
    let s = Settings::parse("", env(&[])).unwrap();
    assert_eq!(s, Settings::default());
    let s = Settings::parse(
        "brokers = \"k:9092\"\ncommit_interval_ms = 250\n[topics]\nclicks = \"c\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n",
        env(&[("ATTRIB_BROKERS", "e:1"), ("ATTRIB_TOPICS_DLQ", "d"), ("ATTRIB_KAFKA_SASL_MECHANISMS", "PLAIN"), ("ATTRIB_COMMIT_INTERVAL_MS", "50")]),
    )
    .unwrap();
    assert_eq!(s.brokers, "e:1");
    assert_eq!(s.commit_interval, Duration::from_millis(50));
    assert_eq!(s.topics.clicks, "c");
    assert_eq!(s.topics.dlq, "d");
    assert_eq!(s.kafka.common["security.protocol"], "SSL");
    assert_eq!(s.kafka.common["sasl.mechanisms"], "PLAIN");
}

#[test]
fn bad_settings_name_the_field() {
    let e = Settings::parse("comit_interval_ms = 5", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("comit_interval_ms"), "{e}");
    let e = Settings::parse("processing_guarantee = \"twice\"", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("twice"), "{e}");
    let e = Settings::parse("", env(&[("ATTRIB_HTTP_ADDR", "nowhere")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("http_addr"), "{e}");
    let e = Settings::parse("[topics]\nactions = \"attrib.dlq\"", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("topics.dlq"), "{e}");
    for key in [
        "isolation.level",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "transactional.id",
        "enable.idempotence",
        "group.id",
        "partition.assignment.strategy",
    ] {
        let e = Settings::parse(&format!("[kafka]\n\"{key}\" = \"x\""), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("`kafka.{key}`")), "{e}");
    }
    let e = Settings::parse(
        "",
        env(&[("ATTRIB_KAFKA_ISOLATION_LEVEL", "read_uncommitted")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("kafka.isolation.level"), "{e}");
    let s = Settings::parse(
        "max_task_idle_ms = 5",
        env(&[("ATTRIB_INPUT_GRACE_MS", "7")]),
    )
    .unwrap();
    assert_eq!(
        (s.max_task_idle, s.input_grace),
        (Duration::from_millis(5), Duration::from_millis(7))
    );
    let e = Settings::parse("[journeys_api]\nenabled = true", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("journeys_api.token"), "{e}");
}

#[test]
fn unknown_env_variables_are_refused_naming_the_likely_one() {
    for (var, meant) in [
        ("ATTRIB_TOPIC_CLICKS", "ATTRIB_TOPICS_CLICKS"),
        (
            "ATTRIB_OUTPUT_FORMAT_ACTIONS",
            "ATTRIB_OUTPUT_FORMATS_ACTIONS",
        ),
        ("ATTRIB_SCHEMA_REGISTRY_URI", "ATTRIB_SCHEMA_REGISTRY_URL"),
        ("ATTRIB_BROKER", "ATTRIB_BROKERS"),
        ("ATTRIB_JOURNEY_API_TOKEN", "ATTRIB_JOURNEYS_API_TOKEN"),
        ("ATTRIB_COMMIT_INTERVAL", "ATTRIB_COMMIT_INTERVAL_MS"),
        ("ATTRIB_LOGLEVEL", "ATTRIB_LOG_LEVEL"),
    ] {
        let e = Settings::parse("", env(&[(var, "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config:")
                && e.contains(&format!("`{var}` names no setting"))
                && e.contains(&format!("did you mean `{meant}`?")),
            "{e}"
        );
    }
    let e = Settings::parse("", env(&[("ATTRIB_SOMETHING_ELSE", "1")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`ATTRIB_SOMETHING_ELSE` names no setting") && !e.contains("did you mean"),
        "{e}"
    );
    let e = Settings::parse("", env(&[("ATTRIB_METRICS_PORT", "9464")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ATTRIB_HTTP_ADDR"), "{e}");
    let e = Settings::parse("", env(&[("ATTRIB_KAFKA_", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`ATTRIB_KAFKA_`"), "{e}");
    // Not ours: other prefixes, and lower case.
    Settings::parse("", env(&[("ATTRIBUTE_X", "1"), ("attrib_brokers", "1")])).unwrap();
}

#[test]
fn variables_of_scripts_tests_and_benchmarks_are_ignored() {
    let s = Settings::parse(
        "",
        env(&[
            ("ATTRIB_TEST_BROKERS", "k:9092"),
            ("ATTRIB_TEST_KAFKA_PORT", "1"),
            ("ATTRIB_TEST_LOG", "debug"),
            ("ATTRIB_BENCH_KAFKA", "k:9092"),
            ("ATTRIB_CACHE_DIR", "/tmp"),
            ("ATTRIB_REQUIRE_BROKER", "1"),
            ("ATTRIB_CRASH_KILLS", "30"),
            ("ATTRIB_AGREEMENT_SEEDS", "1,2"),
            ("ATTRIB_FUZZ_ITERATIONS", "9"),
            ("ATTRIB_UPDATE_GOLDEN", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(s, Settings::default());
}

/// Settings with every optional key set and no value at its default.
fn every_key_set() -> Settings {
    Settings {
        brokers: "b:1".into(),
        application_id: "app".into(),
        instance_id: Some("i".into()),
        state_dir: "/s".into(),
        http_addr: "127.0.0.1:1".parse().unwrap(),
        processing_guarantee: Guarantee::AtLeastOnce,
        commit_interval: Duration::from_millis(7),
        max_batch_records: 8,
        max_task_idle: Duration::from_millis(9),
        input_grace: Duration::from_millis(10),
        log_format: LogFormat::Json,
        log_level: "debug".into(),
        output_format: OutputFormat::Avro,
        output_formats: OutputFormats {
            actions: Some(OutputFormat::Json),
            invalid_actions: Some(OutputFormat::Json),
        },
        schema_registry: SchemaRegistry {
            url: Some("https://sr".into()),
            ca_file: Some("/ca.pem".into()),
            user: Some("u".into()),
            password: Some("p".into()),
            subject_name_strategy: SubjectNameStrategy::Record,
            auto_register: false,
        },
        extra_writer_schemas: Vec::new(),
        retention_margin_days: 11,
        topics: Topics {
            clicks: "t1".into(),
            conversions: "t2".into(),
            identities: "t3".into(),
            promo_codes: "t4".into(),
            config: "t5".into(),
            actions: "t6".into(),
            invalid_actions: "t7".into(),
            dlq: "t8".into(),
        },
        identity: Identity { stitching: true },
        kafka: KafkaSettings::default(),
        journeys_api: JourneysApi {
            enabled: true,
            token: Some("tok".into()),
            advertised_url: Some("http://h:1".into()),
        },
        limits: crate::model::records::Limits {
            max_record_bytes: 12,
            max_items: 13,
            max_id_len: 14,
            max_url_len: 15,
            max_sub_ids: 16,
            max_clicks_per_journey: 17,
        },
    }
}

fn leaf_keys(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => leaf_keys(&path, inner, out),
            _ => out.push((path, v.clone())),
        }
    }
}

/// Every key of the settings type has its variable, named regularly, listed by `--list`; and
/// every variable, set to a value, gives the settings that value (numbers, booleans, enums,
/// durations and addresses included).
#[test]
fn every_setting_has_its_regular_environment_variable() {
    let full = every_key_set();
    let toml::Value::Table(t) = toml::Value::try_from(&full).unwrap() else {
        panic!()
    };
    let mut leaves = Vec::new();
    leaf_keys("", &t, &mut leaves);
    leaves.retain(|(k, _)| k != "extra_writer_schemas");
    let mut keys: Vec<&str> = leaves.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    let mut listed_keys = SETTING_KEYS.to_vec();
    listed_keys.sort();
    assert_eq!(keys, listed_keys, "SETTING_KEYS against the settings type");
    let listed = list_settings();
    let mut env_vars = Vec::new();
    for (key, value) in &leaves {
        let var = variable_of(key);
        assert_eq!(
            var,
            format!("ATTRIB_{}", key.replace('.', "_").to_uppercase())
        );
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{key} ")) && l.contains(&var)),
            "{key} in --list"
        );
        let text = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        env_vars.push((var, text));
    }
    let from_env = Settings::parse("", env_vars).unwrap();
    assert_eq!(from_env, full);
    let line = listed
        .lines()
        .find(|l| l.starts_with("identity.stitching "))
        .expect("identity.stitching listed");
    assert!(
        line.contains(" ATTRIB_IDENTITY_STITCHING ") && line.ends_with(" false"),
        "{line}"
    );
}

#[test]
fn kafka_options_per_client_kind() {
    let s = Settings::parse(
        "[kafka]\n\"security.protocol\" = \"SSL\"\n\"linger.ms\" = 20\n\"session.timeout.ms\" = \"9000\"\n[kafka.consumer]\n\"fetch.max.bytes\" = 1000\n[kafka.producer]\n\"compression.type\" = \"zstd\"\n",
        env(&[
            ("ATTRIB_KAFKA_ADMIN_REQUEST_TIMEOUT_MS", "500"),
            ("ATTRIB_KAFKA_CONSUMER_CLIENT_RACK", "a"),
        ]),
    )
    .unwrap();
    let of = |kind| -> Vec<(String, String)> {
        s.kafka
            .for_client(kind)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        of(ClientKind::Consumer),
        pairs(&[
            ("security.protocol", "SSL"),
            ("session.timeout.ms", "9000"),
            ("client.rack", "a"),
            ("fetch.max.bytes", "1000"),
        ])
    );
    assert_eq!(
        of(ClientKind::Producer),
        pairs(&[
            ("linger.ms", "20"),
            ("security.protocol", "SSL"),
            ("compression.type", "zstd"),
        ])
    );
    assert_eq!(
        of(ClientKind::Admin),
        pairs(&[("security.protocol", "SSL"), ("request.timeout.ms", "500")])
    );
    // Shown as it was given, sections as sub-tables.
    let shown = toml::to_string(&s.redacted()).unwrap();
    let again = Settings::parse(&shown, env(&[])).unwrap();
    assert_eq!(again.kafka, s.kafka);
    for (file, named) in [
        (
            "[kafka.producer]\n\"fetch.max.bytes\" = 1",
            "`kafka.producer.fetch.max.bytes` is a consumer option; put it in `[kafka.consumer]`",
        ),
        (
            "[kafka.consumer]\n\"linger.ms\" = 1",
            "`kafka.consumer.linger.ms` is a producer option",
        ),
        (
            "[kafka.consumer]\n\"isolation.level\" = \"read_uncommitted\"",
            "`kafka.consumer.isolation.level` cannot be set",
        ),
        (
            "[kafka.producer]\n\"transactional.id\" = \"x\"",
            "`kafka.producer.transactional.id` cannot be set",
        ),
        (
            "[kafka]\n\"bootstrap.servers\" = \"x:1\"",
            "`kafka.bootstrap.servers` cannot be set: the brokers are `brokers`",
        ),
        (
            "[kafka]\n\"a.b\" = [1]",
            "`kafka.a.b`: librdkafka options are strings",
        ),
    ] {
        let e = Settings::parse(file, env(&[])).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid config:") && e.contains(named),
            "{file}: {e}"
        );
    }
    let e = Settings::parse("", env(&[("ATTRIB_KAFKA_PRODUCER_ISOLATION_LEVEL", "x")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("kafka.producer.isolation.level"), "{e}");
}

#[test]
fn schema_registry_keys_moved_into_their_section() {
    let e = Settings::parse("schema_registry_url = \"http://sr\"", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`schema_registry_url` is now `url` in the `[schema_registry]` section")
            && e.contains("ATTRIB_SCHEMA_REGISTRY_URL"),
        "{e}"
    );
    let s = Settings::parse(
        "[schema_registry]\nurl = \"http://sr\"\nsubject_name_strategy = \"topic\"\nauto_register = false",
        env(&[]),
    )
    .unwrap();
    assert_eq!(s.schema_registry.url.as_deref(), Some("http://sr"));
    assert_eq!(
        s.schema_registry.subject_name_strategy,
        SubjectNameStrategy::Topic
    );
    assert!(!s.schema_registry.auto_register);
    let d = SchemaRegistry::default();
    assert!(d.auto_register && d.subject_name_strategy == SubjectNameStrategy::TopicRecord);
    assert_eq!(
        SubjectNameStrategy::Topic.subject("attrib.actions", "attrib.Action"),
        "attrib.actions-value"
    );
    assert_eq!(
        SubjectNameStrategy::Record.subject("attrib.actions", "attrib.Action"),
        "attrib.Action"
    );
    assert_eq!(
        SubjectNameStrategy::TopicRecord.subject("attrib.actions", "attrib.Action"),
        "attrib.actions-attrib.Action"
    );
    let e = Settings::parse(
        "[schema_registry]\nsubject_name_strategy = \"topic_name\"",
        env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("schema_registry.subject_name_strategy") && e.contains("topic_record"),
        "{e}"
    );
}

#[test]
fn identity_stitching_from_file_and_environment() {
    for off in ["false", "0", "", "FALSE"] {
        let s = Settings::parse("", env(&[("ATTRIB_IDENTITY_STITCHING", off)])).unwrap();
        assert_eq!(s, Settings::default());
    }
    for on in ["true", "1", "TRUE"] {
        let s = Settings::parse("", env(&[("ATTRIB_IDENTITY_STITCHING", on)])).unwrap();
        assert!(s.identity.stitching, "{on}");
    }
    let e = Settings::parse("", env(&[("ATTRIB_IDENTITY_STITCHING", "yes")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("identity.stitching"), "{e}");
    let s = Settings::parse("[identity]\nstitching = true", env(&[])).unwrap();
    assert!(s.identity.stitching);
    let s = Settings::parse(
        "[identity]\nstitching = true",
        env(&[("ATTRIB_IDENTITY_STITCHING", "false")]),
    )
    .unwrap();
    assert!(!s.identity.stitching, "the environment overrides the file");
    let e = Settings::parse("[identity]\nstiching = true", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("stiching"), "{e}");
}

#[test]
fn http_addr_takes_host_names() {
    let s = Settings::parse("http_addr = \"localhost:9464\"", env(&[])).unwrap();
    let addr = s.http_addr;
    assert!(addr.ip().is_loopback() && addr.port() == 9464, "{addr}");
    let s = Settings::parse("", env(&[("ATTRIB_HTTP_ADDR", "[::1]:80")])).unwrap();
    assert_eq!(s.http_addr.to_string(), "[::1]:80");
    for bad in ["localhost", "localhost:99999", "nowhere", ":9464", ""] {
        let e = Settings::parse("", env(&[("ATTRIB_HTTP_ADDR", bad)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config: `http_addr`") && e.contains(bad),
            "{bad}: {e}"
        );
    }
}

#[test]
fn log_level_is_a_filter_or_refused() {
    for ok in [
        "info",
        "DEBUG",
        "off",
        "warn,attrib=info",
        "info, attrib::runtime=debug ,rdkafka=warn",
        "attrib=trace",
        "info,[commit]=debug",
    ] {
        let s = Settings::parse(&format!("log_level = \"{ok}\""), env(&[]))
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(!s.log_level.contains(' '), "{}", s.log_level);
        tracing_subscriber::EnvFilter::try_new(&s.log_level).unwrap();
    }
    for bad in [
        "verbose",
        "infoo",
        "attrib=verbose",
        "",
        "info,debugg",
        "a b",
    ] {
        let e = Settings::parse("", env(&[("ATTRIB_LOG_LEVEL", bad)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config: `log_level`")
                && e.contains("trace, debug, info, warn, error, off"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn redacted_hides_secrets_but_not_that_they_are_set() {
    let s = Settings::parse(
        "[schema_registry]\nurl = \"https://key:url-secret@sr.example:8081/x\"\n[kafka.consumer]\n\"sasl.password\" = \"csp\"\n[kafka]\n\"sasl.username\" = \"me\"\n\"ssl.key.password\" = \"kp\"\n\"ssl.keystore.password\" = \"ksp\"\n\"sasl.oauthbearer.client.secret\" = \"cs\"\n\"ssl.key.pem\" = \"pem\"\n",
        env(&[
            ("ATTRIB_JOURNEYS_API_TOKEN", "tok"),
            ("ATTRIB_KAFKA_SASL_PASSWORD", "sp"),
            ("ATTRIB_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ]),
    )
    .unwrap();
    let r = s.redacted();
    assert_eq!(r.journeys_api.token.as_deref(), Some(REDACTED));
    assert_eq!(
        r.schema_registry.url.as_deref(),
        Some("https://key:***@sr.example:8081/x")
    );
    for key in [
        "sasl.password",
        "ssl.key.password",
        "ssl.keystore.password",
        "sasl.oauthbearer.client.secret",
        "ssl.key.pem",
    ] {
        assert_eq!(r.kafka.common[key], REDACTED, "{key}");
    }
    assert_eq!(r.kafka.common["sasl.username"], "me");
    assert_eq!(r.kafka.common["security.protocol"], "SASL_SSL");
    // The secrets themselves are untouched.
    assert_eq!(r.kafka.consumer["sasl.password"], REDACTED);
    assert_eq!(s.kafka.common["sasl.password"], "sp");
    let shown = toml::to_string(&r).unwrap();
    for secret in ["url-secret", "tok", "sp", "csp", "kp", "ksp", "cs", "pem"] {
        let value = format!("= \"{secret}\"");
        assert!(!shown.contains(&value), "{secret} in {shown}");
    }
    let s = Settings::parse(
        "[schema_registry]\nurl = \"https://sr.example\"\nuser = \"u\"\npassword = \"p\"",
        env(&[]),
    )
    .unwrap()
    .redacted();
    assert_eq!(
        (
            s.schema_registry.url.as_deref(),
            s.schema_registry.user.as_deref(),
            s.schema_registry.password.as_deref()
        ),
        (Some("https://sr.example"), Some("u"), Some(REDACTED))
    );
    assert_eq!(
        redact_url_password("http://token@h/p?q=a@b"),
        "http://***@h/p?q=a@b"
    );
    assert!(is_secret_kafka_option("sasl.oauthbearer.client.secret"));
    assert!(is_secret_kafka_option("some.future.password"));
    assert!(!is_secret_kafka_option("sasl.username"));
    assert!(!is_secret_kafka_option("ssl.keystore.location"));
}
