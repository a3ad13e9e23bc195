//! Per-topic output formats end to end, on librdkafka's mock cluster.

use super::*;
use crate::fastavro_interop::{fastavro, fastavro_available, norm_fastavro};
use crate::registry::TestRegistry;

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
    assert_eq!(
        subjects,
        vec![(format!("{}-io.attrib.Action", s.topics.actions), 1)]
    );
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
