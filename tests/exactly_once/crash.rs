//! SIGKILLs of attrib: at random moments, one of two instances, the state dir deleted.

use crate::common;
use crate::common::rec;
use crate::expect::{assert_exact, replay_expectation, wait_all_committed, wait_committed};
use crate::inputs::{natural, produce_paced, tables};
use crate::instance::{Instance, Logs, SERIAL, kills, settings_env, setup};
use attrib::model::records::InputTopic;
use attrib::tools::testkit::{produce, read_topics};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// `ATTRIB_CRASH_KILLS` kills (10; 30 in `scripts/test --long`) while input is written as it
/// happens, and a phase in the middle that writes a backlog while attrib is down. Kills land
/// inside commits too: the restarted instance must restore only what committed and produce that
/// transaction's outputs again.
#[test]
fn crash_test_sigkill_at_random_moments_output_is_exactly_the_replay() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(2) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    let n = kills();
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let env = settings_env(&s, "crash-0", &dir.path().join("state"));
    let mut inst = Instance::start(env, dir.path().join("attrib.log"));
    let stream = natural(1, n * 2, 40);
    let (first, rest) = stream.split_at(stream.len() * 2 / 5);
    let (backlog, last) = rest.split_at(rest.len() / 3);
    let mut rng = StdRng::seed_from_u64(99);
    let mut killed = 0;
    let mut kill_while =
        |inst: &mut Instance, writer: std::thread::JoinHandle<()>, quota: usize| {
            while killed < quota {
                // Let it work for a random moment, then SIGKILL and restart.
                std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
                inst.kill9();
                killed += 1;
                inst.restart();
            }
            writer.join().unwrap();
        };
    kill_while(&mut inst, produce_paced(&s, first.to_vec()), n / 2);
    // Down: a backlog accumulates, then the restart meets it.
    inst.kill9();
    produce(&s.brokers, &s, backlog).unwrap();
    inst.restart();
    kill_while(&mut inst, produce_paced(&s, last.to_vec()), n);
    all.extend(stream.iter().cloned());
    wait_all_committed(&s, 2);
    inst.stop();
    assert_eq!(killed, n);
    let log = std::fs::read_to_string(dir.path().join("attrib.log")).unwrap();
    assert!(
        replay_expectation(&s, &all).values().sum::<usize>() >= n * 2 * 40,
        "every conversion has an output"
    );
    assert_exact(&s, dir.path(), &all);
    eprintln!(
        "{} task waits gave up on a partition (enforced processing)",
        log.matches("processing ahead of it").count()
    );
    // Fast rejoin (static membership): from each start to its partitions restored.
    let mut rejoins = Vec::new();
    let mut started: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    for line in log.lines() {
        let plain: String = strip_ansi(line);
        let ts = plain
            .split_whitespace()
            .next()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if plain.contains("starting attrib pipeline") {
            started = ts;
        } else if plain.contains("state restored") {
            if let (Some(a), Some(b)) = (started.take(), ts) {
                rejoins.push((b - a).num_milliseconds());
            }
        }
    }
    rejoins.sort();
    eprintln!(
        "start to partitions restored, ms (each start): median {:?}, max {:?}, all {rejoins:?}",
        rejoins.get(rejoins.len() / 2),
        rejoins.last()
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The survivor fences the dead instance's tasks, restores their committed state and goes on
/// from their committed offsets.
#[test]
fn scale_out_two_instances_one_killed_the_other_takes_over() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(4) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    let mut all = tables();
    produce(&s.brokers, &s, &all).unwrap();
    let a = Instance::start(
        settings_env(&s, "scale-a", &dir.path().join("a")),
        dir.path().join("a.log"),
    );
    let mut b = Instance::start(
        settings_env(&s, "scale-b", &dir.path().join("b")),
        dir.path().join("b.log"),
    );
    let stream = natural(2, 8, 40);
    let writer = produce_paced(&s, stream.clone());
    std::thread::sleep(Duration::from_secs(3));
    b.kill9();
    writer.join().unwrap();
    all.extend(stream);
    wait_all_committed(&s, 4);
    a.stop();
    assert_exact(&s, dir.path(), &all);
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(
        log.contains("state restored"),
        "the survivor restored the partitions it took over:\n{log}"
    );
}

#[test]
fn restore_from_the_changelog_after_the_state_dir_is_deleted() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((s, dir)) = setup(2) else {
        return;
    };
    let _logs = Logs(dir.path().to_path_buf());
    use InputTopic::*;
    produce(&s.brokers, &s, &tables()).unwrap();
    let state = dir.path().join("state");
    let inst = Instance::start(
        settings_env(&s, "restore-0", &state),
        dir.path().join("attrib.log"),
    );
    produce(&s.brokers, &s, &[rec(Clicks, "dev-r", r#"{"type":"click","click_id":"before","program_id":"p1","partner_id":"pa3","occurred_at":"2026-10-01T00:00:00Z","device_id":"dev-r"}"#)]).unwrap();
    wait_committed(&s, &s.topics.clicks, 2, Duration::from_secs(60));
    inst.stop();
    std::fs::remove_dir_all(&state).unwrap();
    let inst = Instance::start(
        settings_env(&s, "restore-0", &state),
        dir.path().join("attrib.log"),
    );
    produce(&s.brokers, &s, &[rec(Conversions, "dev-r", r#"{"type":"conversion","program_id":"p1","event_type":"sale","order_id":"after","occurred_at":"2026-10-02T00:00:00Z","device_id":"dev-r","order_subtotal":"100"}"#)]).unwrap();
    wait_committed(&s, &s.topics.conversions, 2, Duration::from_secs(60));
    inst.stop();
    let out = read_topics(&s.brokers, &[&s.topics.actions]).unwrap();
    assert_eq!(out.len(), 1, "one action");
    let a = common::json(&out[0]);
    assert_eq!(a["credits"][0]["partner_id"], "pa3");
    assert_eq!(a["credits"][0]["click_id"], "before");
    assert_eq!(a["payout"], "8.000000");
    let log = std::fs::read_to_string(dir.path().join("attrib.log")).unwrap();
    assert!(log.contains("state restored"), "{log}");
}
