//! End to end through librdkafka's in-process mock cluster (no transactions: at_least_once).

mod common;

use attrib::ops::settings::Guarantee;
use rdkafka::mocking::MockCluster;

#[test]
fn end_to_end_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let s = common::test_settings(&brokers, Guarantee::AtLeastOnce, dir.path());
    for (t, p) in common::topics_of(&s, 2) {
        cluster.create_topic(&t, p, 1).unwrap();
    }
    common::end_to_end(&brokers, &s);
}
