//! Input written while attrib is stopped (identity stitching off and on), and while it
//! restores.

use crate::common::{self, rec};
use crate::expect::{assert_exact, replay_expectation, wait_all_committed, wait_output};
use crate::inputs::{natural, tables};
use crate::instance::{Instance, Logs, SERIAL, settings_env, setup, wait_for_file};
use attrib::model::records::InputTopic;
use attrib::tools::testkit::{input_producer, next_timestamp, produce, read_topics, topic_name};
use attrib::tools::workload::GenRecord;
use rdkafka::producer::{BaseRecord, Producer};
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

/// A click produced just before a conversion can reach the broker just after it; the task
/// holds the conversion back for `input_grace_ms` from its arrival. Here the conversion is
/// fetched while attrib's assignment handler restores (held by a failpoint for seconds), the
/// clicks partition is empty and read to its end, and the click comes right after the
/// handler returns: the conversion must still wait for it, as the grace counts from when the
/// conversion reached attrib, not from when the turn that read it began.
#[test]
fn a_click_right_after_a_slow_restore_still_goes_before_its_conversion() {
    use InputTopic::*;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(1) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let hold = dir.path().join("hold");
    std::fs::create_dir(&hold).unwrap();
    let mut env = settings_env(&s, "grace-0", &dir.path().join("state"));
    env.push((
        "ATTRIB_TEST_FAILPOINT".into(),
        format!("hold-assign:{}", hold.display()),
    ));
    env.push(("ATTRIB_INPUT_GRACE_MS".into(), "3000".into()));
    let inst = Instance::start(env, dir.path().join("attrib.log"));
    wait_for_file(&hold.join("held"));
    let click = rec(
        Clicks,
        "dev-g",
        r#"{"type":"click","click_id":"late","program_id":"p1","partner_id":"pa3","occurred_at":"2026-10-01T00:00:00Z","device_id":"dev-g"}"#,
    );
    let conversion = rec(
        Conversions,
        "dev-g",
        r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"o-g","occurred_at":"2026-10-01T00:10:00Z","device_id":"dev-g","order_subtotal":"100"}"#,
    );
    // Production order: the click, then the conversion; the broker gets them the other way.
    let (click_ts, conversion_ts) = (next_timestamp(), next_timestamp());
    let producer = input_producer(&s.brokers).unwrap();
    let send = |r: &GenRecord, ts: i64| {
        let record = BaseRecord::to(topic_name(&s, r.topic))
            .key(r.key.as_deref().unwrap())
            .payload(r.value.as_deref().unwrap())
            .timestamp(ts);
        producer
            .send::<str, str>(record)
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    send(&conversion, conversion_ts);
    // librdkafka fetches while the handler is held, longer than the grace: the conversion,
    // and the clicks partition's end.
    std::thread::sleep(Duration::from_secs(4));
    std::fs::write(hold.join("release"), b"").unwrap();
    wait_for_file(&hold.join("resumed"));
    // attrib has read the conversion by now (within moments of the handler's return); the
    // click arrives well within the grace counted from then.
    std::thread::sleep(Duration::from_secs(1));
    send(&click, click_ts);
    all.extend([click, conversion]);
    wait_all_committed(&s, 1);
    inst.stop();
    let out = read_topics(&s.brokers, &[&s.topics.actions]).unwrap();
    assert_eq!(
        out.len(),
        1,
        "one action: the conversion, credited to the click produced before it"
    );
    let action = common::json(&out[0]);
    assert_eq!(
        action["credits"][0]["click_id"], "late",
        "the conversion credits the click produced before it: {action}"
    );
    assert_exact(&s, dir.path(), &all);
}
