//! End to end on a real Kafka-compatible broker (nisshi, started by `scripts/test`), with
//! exactly-once transactions.

mod common;

use attrib::settings::Guarantee;

#[test]
fn end_to_end_on_a_real_broker_exactly_once() {
    let Some(brokers) = common::real_broker() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::ExactlyOnce, dir.path());
    common::create_topics(&brokers, &common::topics_of(&s, 2));
    common::end_to_end(&brokers, &s);
}
