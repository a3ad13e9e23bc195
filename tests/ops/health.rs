//! Readiness.

use crate::common;
use crate::common::{HttpServer, Running, http_state, rec};
use crate::poll;
use attrib::model::records::InputTopic;
use attrib::ops::settings::{Guarantee, Settings};
use attrib::runtime::Handles;
use attrib::tools::testkit::produce;
use rdkafka::mocking::MockCluster;
use std::time::Duration;

/// Settings, topics on a fresh mock cluster, and the program/contract tables produced.
type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

pub(crate) fn mock_with_tables(
    s_mod: impl FnOnce(&mut Settings),
) -> (Mock, Settings, tempfile::TempDir) {
    use InputTopic::*;
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mut s = common::test_settings(&brokers, Guarantee::AtLeastOnce, dir.path());
    s_mod(&mut s);
    for (t, p) in common::topics_of(&s, 2) {
        cluster.create_topic(&t, p, 1).unwrap();
    }
    let tables = vec![
        rec(
            Config,
            "program/p1",
            r#"{"type":"program","program_id":"p1","account_id":"acme","currency":"USD","credit_policy":"last_click"}"#,
        ),
        rec(
            Config,
            "contract/p1/pa1",
            r#"{"type":"contract","program_id":"p1","partner_id":"pa1","active_from":"2026-01-01T00:00:00Z","payout":{"default":{"percent":"10"}}}"#,
        ),
    ];
    produce(&brokers, &s, &tables).unwrap();
    (cluster, s, dir)
}

#[test]
fn health_ready_is_503_until_the_pipeline_is_ready() {
    let (_cluster, s, _dir) = mock_with_tables(|_| {});
    let handles = Handles::default();
    let server = HttpServer::start(http_state(&s, &handles));

    // Before the pipeline runs: not ready, but alive and scrapeable.
    let r = server.get("/health/ready", &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        server.get("/health/live", &[]).status,
        200,
        "liveness must not wait for readiness"
    );
    assert_eq!(server.get("/metrics", &[]).status, 200);

    let run = Running::start_with(&s, handles);
    poll(Duration::from_secs(60), "/health/ready = 200", || {
        let r = server.get("/health/ready", &[]);
        assert!(matches!(r.status, 200 | 503), "{r:?}");
        (r.status == 200).then_some(())
    });
    assert_eq!(server.get("/health/live", &[]).status, 200);
    run.stop();
}
