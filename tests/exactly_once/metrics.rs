//! Metrics of `attrib run` as Prometheus scrapes them: lag that follows the assignment, restore
//! progress while a restore runs.

use crate::common::{self, Sample, metric_value as value, rec};
use crate::expect::wait_all_committed;
use crate::inputs::{natural, produce_paced, tables};
use crate::instance::{Instance, Logs, SERIAL, settings_env, setup, wait_for_file};
use attrib::model::records::InputTopic;
use attrib::tools::testkit::produce;
use attrib::tools::workload::GenRecord;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn http_addr(i: &Instance) -> SocketAddr {
    i.env
        .iter()
        .find(|(k, _)| k == "ATTRIB_HTTP_ADDR")
        .unwrap()
        .1
        .parse()
        .unwrap()
}

fn scrape(i: &Instance) -> Vec<Sample> {
    let r = common::http_get(http_addr(i), "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    common::parse_metrics(&r.body)
}

/// The partitions with an `attrib_consumer_lag_records` series of `topic`, and their values.
fn lag(samples: &[Sample], topic: &str) -> Vec<(i32, f64)> {
    samples
        .iter()
        .filter(|s| s.name == "attrib_consumer_lag_records" && s.labels["topic"] == topic)
        .map(|s| (s.labels["partition"].parse().unwrap(), s.value))
        .collect()
}

/// Polls `f` until it returns `Some` (at most 60 s).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Under `exactly_once` the lag comes from the committed transactions: once everything is
/// committed it is 0 on every partition an instance owns. When a second instance joins, the
/// first one's series of the partitions it gave up disappear (no stale last value), and the
/// two instances' series cover every partition once.
#[test]
fn lag_is_zero_once_committed_and_follows_the_assignment() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(4) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    produce(&s.brokers, &s, &tables()).unwrap();
    let a = Instance::start(
        settings_env(&s, "lag-a", &dir.path().join("a")),
        dir.path().join("a.log"),
    );
    produce_paced(&s, natural(7, 2, 30)).join().unwrap();
    wait_all_committed(&s, 4);
    let all: BTreeSet<i32> = (0..4).collect();
    for topic in ["clicks", "conversions"] {
        eventually(
            &format!("instance a: {topic} lag 0 on partitions 0-3"),
            || {
                let l = lag(&scrape(&a), topic);
                let parts: BTreeSet<i32> = l.iter().map(|(p, _)| *p).collect();
                (parts == all && l.iter().all(|(_, v)| *v == 0.0)).then_some(())
            },
        );
    }
    let b = Instance::start(
        settings_env(&s, "lag-b", &dir.path().join("b")),
        dir.path().join("b.log"),
    );
    produce_paced(&s, natural(8, 2, 30)).join().unwrap();
    wait_all_committed(&s, 4);
    for topic in ["clicks", "conversions"] {
        let (owned_a, owned_b) = eventually(
            &format!("{topic}: each partition's lag series on one instance, all 0"),
            || {
                let (la, lb) = (lag(&scrape(&a), topic), lag(&scrape(&b), topic));
                let pa: BTreeSet<i32> = la.iter().map(|(p, _)| *p).collect();
                let pb: BTreeSet<i32> = lb.iter().map(|(p, _)| *p).collect();
                let zero = la.iter().chain(&lb).all(|(_, v)| *v == 0.0);
                let split = !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb);
                let covered = pa.union(&pb).copied().collect::<BTreeSet<_>>() == all;
                (zero && split && covered).then_some((pa, pb))
            },
        );
        // Each instance exports lag only for what it owns.
        let assigned = |i: &Instance| value(&scrape(i), "attrib_assigned_partitions", &[]);
        assert_eq!(
            assigned(&a),
            Some(owned_a.len() as f64),
            "{topic}: a owns {owned_a:?}"
        );
        assert_eq!(
            assigned(&b),
            Some(owned_b.len() as f64),
            "{topic}: b owns {owned_b:?}"
        );
    }
    a.stop();
    b.stop();
}

/// A restore reports its progress while it runs: records restored so far and, per partition,
/// records left; when it has ended, nothing left.
#[test]
fn restore_progress_is_visible_while_the_restore_runs() {
    use InputTopic::*;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(1) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    produce(&s.brokers, &s, &tables()).unwrap();
    let state = dir.path().join("state");
    let first = Instance::start(
        settings_env(&s, "progress-0", &state),
        dir.path().join("attrib.log"),
    );
    // 3,000 devices with a click each: 3,000 journeys in the changelog.
    let clicks: Vec<GenRecord> = (0..3000)
        .map(|i| {
            rec(
                Clicks,
                &format!("dev-{i}"),
                &format!(r#"{{"type":"click","click_id":"c-{i}","program_id":"p1","partner_id":"pa1","occurred_at":"2026-10-01T00:00:00Z","device_id":"dev-{i}"}}"#),
            )
        })
        .collect();
    produce(&s.brokers, &s, &clicks).unwrap();
    wait_all_committed(&s, 1);
    first.stop();
    std::fs::remove_dir_all(&state).unwrap();
    let hold = dir.path().join("hold");
    std::fs::create_dir(&hold).unwrap();
    let mut env = settings_env(&s, "progress-0", &state);
    env.push((
        "ATTRIB_TEST_FAILPOINT".into(),
        format!("hold-restore:{}", hold.display()),
    ));
    let second = Instance::start(env, dir.path().join("attrib.log"));
    wait_for_file(&hold.join("held"));
    let during = scrape(&second);
    let restored = value(&during, "attrib_restore_records_total", &[]).unwrap();
    let left = value(
        &during,
        "attrib_restore_remaining_records",
        &[("partition", "0")],
    )
    .unwrap();
    assert!(restored >= 1024.0, "records restored so far: {restored}");
    assert!(left > 0.0, "records left while the restore runs: {left}");
    assert_eq!(
        value(&during, "attrib_ready", &[]),
        Some(0.0),
        "not ready while restoring"
    );
    std::fs::write(hold.join("release"), b"").unwrap();
    let after = eventually("ready after the restore", || {
        let m = scrape(&second);
        (value(&m, "attrib_ready", &[]) == Some(1.0)).then_some(m)
    });
    let total = value(&after, "attrib_restore_records_total", &[]).unwrap();
    assert!(
        total >= 3000.0 && total > restored,
        "the whole changelog restored: {total}"
    );
    assert_eq!(
        value(
            &after,
            "attrib_restore_remaining_records",
            &[("partition", "0")]
        ),
        Some(0.0),
        "nothing left once the restore has ended"
    );
    second.stop();
}
