//! Input written while attrib is stopped, with identity stitching off and on.

use crate::expect::{assert_exact, replay_expectation, wait_all_committed, wait_output};
use crate::inputs::{natural, tables};
use crate::instance::{Instance, Logs, SERIAL, settings_env, setup};
use attrib::model::records::InputTopic;
use attrib::tools::testkit::produce;
use attrib::tools::workload::GenRecord;
use std::time::Duration;

/// Input written while attrib has never run: on start, a fetch may bring a partition's
/// conversions long before the clicks of the other topic's partition; the task's merge by
/// timestamp must give replay's answer. Clicks carry long landing URLs and the fetches are
/// small, so the clicks partitions need many more fetches than the conversions partitions.
#[test]
fn backlog_written_while_stopped_output_is_exactly_the_replay() {
    backlog_case(false);
}

/// The same backlog, in its natural interleaving, with identity stitching on: one device in
/// five buys logged in (its conversion links it and moves its journey), changes find their
/// order by device id (through the link when there is one), every other record stays
/// anonymous in the device stage. Each customer has one device, so the order in which
/// different devices reach a customer (design §6) plays no part: the output is replay's.
#[test]
fn backlog_with_stitching_on_output_is_exactly_the_replay() {
    backlog_case(true);
}

fn backlog_case(stitching: bool) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((mut s, dir)) = setup(2) else {
        return;
    };
    s.identity.stitching = stitching;
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    let padding = "x".repeat(3000);
    let stream: Vec<GenRecord> = natural(5, 12, 100)
        .into_iter()
        .map(|mut r| {
            let key = r.key.clone().unwrap_or_default();
            let Some(v) = &r.value else { return r };
            if r.topic == InputTopic::Clicks {
                r.value = Some(v.replacen(
                    r#""type":"click","#,
                    &format!(r#""type":"click","landing_url":"https://shop.example/{padding}","#),
                    1,
                ));
            } else if stitching && v.contains(r#""type":"conversion""#) {
                if key.ends_with('0') || key.ends_with('5') {
                    r.value = Some(v.replacen(
                        &format!(r#""device_id":"{key}""#),
                        &format!(r#""device_id":"{key}","customer_id":"cu-{key}""#),
                        1,
                    ));
                }
            } else if stitching && v.starts_with(r#"{"type":"#) {
                r.value = Some(v.replacen("{", &format!(r#"{{"device_id":"{key}","#), 1));
            }
            r
        })
        .collect();
    all.extend(stream.iter().cloned());
    produce(&s.brokers, &s, &all).unwrap();
    let mut env = settings_env(&s, "backlog-0", &dir.path().join("state"));
    env.push((
        "ATTRIB_KAFKA_MAX_PARTITION_FETCH_BYTES".into(),
        "32768".into(),
    ));
    let inst = Instance::start(env, dir.path().join("attrib.log"));
    wait_all_committed(&s, 2);
    let want = replay_expectation(&s, &all);
    // With stitching on, the customer stage may still be reading what was forwarded.
    wait_output(&s, &want, Duration::from_secs(180));
    inst.stop();
    let credited = want.keys().filter(|k| k.starts_with("actions|")).count();
    assert!(
        credited >= 600,
        "the stream credits most conversions ({credited})"
    );
    if stitching {
        let linked = want
            .keys()
            .filter(|k| k.starts_with("actions|") && k.contains(r#""customer_id":"cu-"#))
            .count();
        assert!(linked >= 50, "logged-in conversions credited ({linked})");
    }
    assert_exact(&s, dir.path(), &all);
}
