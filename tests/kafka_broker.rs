//! End to end on Apache Kafka (started by `scripts/test`), with
//! exactly-once transactions.

mod common;

use attrib::ops::settings::Guarantee;

#[test]
fn end_to_end_on_a_real_broker_exactly_once() {
    let Some(brokers) = common::real_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_topics(&brokers, &common::topics_of(&s, 2));
    common::end_to_end(&brokers, &s);
    group_commits_only_input_offsets(&brokers, &s);
}

/// The consumer group's committed offsets: the inputs', each with the segment and the
/// committed changelog end as metadata, and none on the changelog (which lag tools would
/// list as a topic the group consumes).
fn group_commits_only_input_offsets(brokers: &str, s: &attrib::ops::settings::Settings) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let group: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &s.application_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let changelog = s.changelog_topic();
    for p in 0..2 {
        for topic in [&s.topics.clicks, &s.topics.conversions, &changelog] {
            tpl.add_partition(topic, p);
        }
    }
    let got = group
        .committed_offsets(tpl, std::time::Duration::from_secs(30))
        .unwrap();
    let mut ends = 0;
    for e in got.elements() {
        if e.topic() == changelog {
            assert_eq!(e.offset(), Offset::Invalid, "a group offset on {changelog}");
            continue;
        }
        if let Offset::Offset(_) = e.offset() {
            assert!(
                e.metadata().starts_with("attrib-segment:"),
                "{}: {:?}",
                e.topic(),
                e.metadata()
            );
            ends += usize::from(e.metadata().contains(";changelog-end:"));
        }
    }
    assert!(
        ends > 0,
        "no committed input offset carries the changelog end"
    );
}

/// Input compressed with each codec Kafka producers use (zstd, lz4, snappy, gzip), and output
/// compressed with zstd: every conversion is credited, nothing stalls.
#[test]
fn compressed_input_and_output_every_codec() {
    use attrib::tools::testkit::{next_timestamp, read_topics};
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let Some(brokers) = common::real_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    s.kafka
        .producer
        .insert("compression.type".into(), "zstd".into());
    common::create_topics(&brokers, &common::topics_of(&s, 2));
    attrib::tools::testkit::produce(&brokers, &s, &[common::rec(
        attrib::model::records::InputTopic::Config,
        "program/p1",
        r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD"}"#,
    ), common::rec(
        attrib::model::records::InputTopic::Config,
        "contract/p1/pa1",
        r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"fixed":"2.00"}}}"#,
    )])
    .unwrap();
    let codecs = ["zstd", "lz4", "snappy", "gzip"];
    for codec in codecs {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("compression.type", codec)
            .create()
            .unwrap();
        let key = format!("d-{codec}");
        let click = format!(
            r#"{{"type":"click","click_id":"c-{codec}","program_id":"p1","partner_id":"pa1","occurred_at":"2026-11-01T10:00:00Z","device_id":"{key}"}}"#
        );
        let conversion = format!(
            r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-{codec}","occurred_at":"2026-11-01T11:00:00Z","device_id":"{key}","order_subtotal":"10"}}"#
        );
        for (topic, value) in [
            (&s.topics.clicks, click),
            (&s.topics.conversions, conversion),
        ] {
            p.send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .timestamp(next_timestamp()),
            )
            .unwrap();
        }
        p.flush(std::time::Duration::from_secs(30)).unwrap();
    }
    let run = common::Running::start(&s);
    run.wait_ready(std::time::Duration::from_secs(60));
    attrib::tools::testkit::wait_consumed(&run.handles, 8, std::time::Duration::from_secs(60))
        .unwrap();
    let actions = read_topics(&brokers, &[&s.topics.actions]).unwrap();
    let mut orders: Vec<String> = actions
        .iter()
        .map(|r| {
            let a = common::json(r);
            assert_eq!(a["credits"][0]["partner_id"], "pa1", "{a}");
            a["order_id"].as_str().unwrap().to_string()
        })
        .collect();
    orders.sort();
    let mut want: Vec<String> = codecs.iter().map(|c| format!("o-{c}")).collect();
    want.sort();
    assert_eq!(orders, want);
    assert_eq!(
        run.handles
            .metrics
            .input_errors
            .with_label_values(&["clicks"])
            .get(),
        0
    );
    run.stop();
}

/// A config topic of 100,000 records over three partitions (more than one fetch returns),
/// the promo-codes topic empty: readiness waits for all of it, and the first conversion sees
/// the contracts written last.
#[test]
fn large_config_topic_over_partitions_is_loaded_before_ready() {
    use attrib::model::records::InputTopic::*;
    use attrib::tools::testkit::{produce, read_topics};
    let Some(brokers) = common::real_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    let topics: Vec<(String, i32)> = common::topics_of(&s, 2)
        .into_iter()
        .map(|(t, p)| if t == s.topics.config { (t, 3) } else { (t, p) })
        .collect();
    common::create_topics(&brokers, &topics);
    const N: usize = 100_000;
    let mut config = vec![common::rec(
        Config,
        "program/p1",
        r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD"}"#,
    )];
    config.extend((0..N).map(|i| {
        common::rec(
            Config,
            &format!("contract/p1/pa{i}"),
            &format!(r#"{{"type":"contract","program_id":"p1","partner_id":"pa{i}","active_from":"2026-01-01T00:00:00Z","payout":{{"default":{{"fixed":"{}.00"}}}}}}"#, i % 90 + 1),
        )
    }));
    produce(&brokers, &s, &config).unwrap();
    let run = common::Running::start(&s);
    run.wait_ready(std::time::Duration::from_secs(120));
    let m = &run.handles.metrics;
    assert_eq!(
        m.consumed.with_label_values(&["config"]).get(),
        (N + 1) as u64,
        "ready only once every config record is read"
    );
    // Conversions credited to contracts from the end of the topic, in every partition.
    let last: Vec<usize> = (N - 5..N).collect();
    let mut events = Vec::new();
    for i in &last {
        let key = format!("d-{i}");
        events.push(common::rec(Clicks, &key, &format!(
            r#"{{"type":"click","click_id":"c-{i}","program_id":"p1","partner_id":"pa{i}","occurred_at":"2026-11-01T10:00:00Z","device_id":"{key}"}}"#
        )));
        events.push(common::rec(Conversions, &key, &format!(
            r#"{{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-{i}","occurred_at":"2026-11-01T11:00:00Z","device_id":"{key}","order_subtotal":"100"}}"#
        )));
    }
    produce(&brokers, &s, &events).unwrap();
    attrib::tools::testkit::wait_consumed(
        &run.handles,
        events.len() as u64,
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let actions = read_topics(&brokers, &[&s.topics.actions]).unwrap();
    assert_eq!(actions.len(), last.len());
    for r in &actions {
        let a = common::json(r);
        let i: usize = a["order_id"].as_str().unwrap()[2..].parse().unwrap();
        assert_eq!(a["credits"][0]["partner_id"], format!("pa{i}"));
        assert_eq!(a["payout"], format!("{}.000000", i % 90 + 1));
    }
    run.stop();
}
