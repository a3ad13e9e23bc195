use super::*;
use proptest::prelude::*;

fn inputs() -> TaskInputs {
    let mut t = TaskInputs::new(OrderSettings {
        max_task_idle: Duration::from_secs(10),
        grace: Duration::from_millis(200),
        max_buffered_records: 4,
        max_buffered_bytes: 1 << 20,
    });
    t.assign(0);
    t
}

fn push(t: &mut TaskInputs, stream: usize, offset: i64, ts: i64, now: Instant) -> Flow {
    let v = format!("v{stream}-{offset}");
    t.push(
        stream,
        0,
        offset,
        Some(ts),
        Some(b"k"),
        Some(v.as_bytes()),
        now,
        1_000_000,
    )
}

/// With stitching: three merged streams (ties to the lower stream) and a free one that
/// goes at once, whatever the others hold or wait for.
#[test]
fn three_merged_streams_and_a_free_one() {
    let now = Instant::now();
    let mut t = TaskInputs::with_streams(
        OrderSettings {
            max_task_idle: Duration::from_secs(10),
            grace: Duration::from_millis(200),
            ..Default::default()
        },
        StreamSet {
            merged: 3,
            graced: 2,
            free: 1,
        },
    );
    t.assign(0);
    push(&mut t, 2, 0, 100, now);
    push(&mut t, 1, 0, 100, now);
    push(&mut t, 0, 0, 150, now);
    push(&mut t, 3, 0, 999, now);
    // The free stream first, though its timestamp is the highest.
    assert_eq!(t.next(0, now), Next::Take(3));
    t.pop(3, 0);
    // A tie between conversions (1) and identities (2): the lower stream.
    assert_eq!(t.next(0, now), Next::Take(1));
    t.pop(1, 0);
    // Conversions is empty and not known at its end: the others wait for it.
    assert!(matches!(t.next(0, now), Next::WaitUntil(_)));
    t.end_of_partition(1, 0);
    let later = now + Duration::from_millis(200);
    assert_eq!(t.next(0, now), Next::WaitUntil(later), "the grace");
    // Identities (100) before clicks (150).
    assert_eq!(t.next(0, later), Next::Take(2));
    t.pop(2, 0);
    assert!(
        matches!(t.next(0, later), Next::WaitUntil(_)),
        "identities not at its end"
    );
    t.end_of_partition(2, 0);
    assert_eq!(t.next(0, later), Next::Take(0));
    // Identities empty at its end holds nothing back; clicks empty at its end does.
    t.pop(0, 0);
    let then = later + Duration::from_secs(1);
    push(&mut t, 1, 1, 300, then);
    t.end_of_partition(0, 0);
    assert_eq!(
        t.next(0, then),
        Next::WaitUntil(then + Duration::from_millis(200)),
        "clicks are graced"
    );
    push(&mut t, 0, 1, 200, then);
    assert_eq!(
        t.next(0, then),
        Next::Take(0),
        "no wait for identities at its end"
    );
    t.pop(0, 0);
    t.end_of_partition(0, 0);
    assert_eq!(t.next(0, then + Duration::from_millis(200)), Next::Take(1));
    t.pop(1, 0);
    // A free record never waits for the merged streams.
    t.pop(0, 0);
    push(&mut t, 3, 1, 5, now);
    assert_eq!(t.next(0, now), Next::Take(3));
}

#[test]
fn both_buffered_lowest_timestamp_first_clicks_on_ties() {
    let now = Instant::now();
    let mut t = inputs();
    push(&mut t, 1, 0, 100, now);
    push(&mut t, 0, 0, 100, now);
    push(&mut t, 0, 1, 300, now);
    push(&mut t, 1, 1, 200, now);
    let mut order = Vec::new();
    while let Next::Take(s) = t.next(0, now) {
        let r = t.front(s, 0).unwrap();
        order.push((
            s,
            r.offset,
            String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
        ));
        t.pop(s, 0);
    }
    assert_eq!(
        order,
        vec![
            (0, 0, "v0-0".to_string()),
            (1, 0, "v1-0".to_string()),
            (1, 1, "v1-1".to_string()),
        ]
    );
    // The click at 300 waits: the conversions partition is empty and not known at its end.
    assert_eq!(
        t.next(0, now),
        Next::WaitUntil(now + Duration::from_secs(10))
    );
}

#[test]
fn an_empty_partition_not_at_its_end_is_waited_for_at_most_max_task_idle() {
    let now = Instant::now();
    let mut t = inputs();
    push(&mut t, 1, 0, 100, now);
    let later = now + Duration::from_secs(3);
    assert_eq!(
        t.next(0, later),
        Next::WaitUntil(later + Duration::from_secs(10))
    );
    // The click arrives in time: it goes first.
    push(&mut t, 0, 0, 50, later);
    assert_eq!(t.next(0, later), Next::Take(0));
    t.pop(0, 0);
    let start = later + Duration::from_secs(1);
    assert!(matches!(t.next(0, start), Next::WaitUntil(_)));
    assert_eq!(t.enforced, 0);
    assert_eq!(t.next(0, start + Duration::from_secs(10)), Next::Take(1));
    assert_eq!(t.enforced, 1);
}

#[test]
fn at_its_end_the_other_partition_holds_a_record_back_for_the_grace() {
    let now = Instant::now();
    let mut t = inputs();
    t.end_of_partition(0, 0);
    // Whatever its timestamp (an old record of a slow producer, or one from the future),
    // a record waits the grace from when it arrived.
    for (offset, ts) in [(0, 1_000_000 - 5_000), (1, 9_999_999)] {
        let arrived = now + Duration::from_secs(offset as u64);
        push(&mut t, 1, offset, ts, arrived);
        assert_eq!(
            t.next(0, arrived),
            Next::WaitUntil(arrived + Duration::from_millis(200))
        );
        assert_eq!(
            t.next(0, arrived + Duration::from_millis(200)),
            Next::Take(1)
        );
        t.pop(1, 0);
    }
    // A record on the partition ends its `at end` state.
    push(&mut t, 0, 0, 1, now);
    assert!(!t.at_end(0, 0));
}

#[test]
fn after_a_broker_failure_an_end_is_forgotten_until_reported_again() {
    let now = Instant::now();
    let mut t = inputs();
    t.end_of_partition(0, 0);
    t.end_of_partition(1, 0);
    push(&mut t, 1, 0, 1_000_000 - 5_000, now);
    // Clicks empty and at their end; the conversions partition has a record.
    assert_eq!(t.forget_ends(), vec![(0, 0)]);
    assert!(!t.at_end(0, 0) && !t.at_end(1, 0));
    // The old conversion now waits for the clicks partition.
    assert_eq!(
        t.next(0, now),
        Next::WaitUntil(now + Duration::from_secs(10))
    );
    t.end_of_partition(0, 0);
    let later = now + Duration::from_millis(200);
    assert_eq!(t.next(0, later), Next::Take(1));
}

#[test]
fn a_full_partition_asks_to_pause_and_to_resume_below_half() {
    let now = Instant::now();
    let mut t = inputs();
    let flows: Vec<Flow> = (0..5).map(|i| push(&mut t, 0, i, i, now)).collect();
    assert_eq!(flows[4], Flow::Pause);
    assert!(flows[..4].iter().all(|f| *f == Flow::Keep));
    assert_eq!(t.pop(0, 0), Flow::Keep);
    assert_eq!(t.pop(0, 0), Flow::Keep);
    assert_eq!(t.pop(0, 0), Flow::Resume);
    assert_eq!(t.buffered(), 2);
    t.revoke(0);
    assert_eq!(t.buffered(), 0);
    assert_eq!(
        push(&mut t, 0, 9, 9, now),
        Flow::Keep,
        "not assigned: ignored"
    );
}

#[test]
fn null_keys_and_values_and_large_arenas_round_trip() {
    let now = Instant::now();
    let mut t = TaskInputs::new(OrderSettings {
        max_buffered_records: 1_000_000,
        max_buffered_bytes: 1 << 30,
        ..OrderSettings::default()
    });
    t.assign(3);
    let big = vec![7u8; 10_000];
    for i in 0..100 {
        let value = (i % 3 != 0).then_some(&big[..(i as usize * 37) % 10_000]);
        t.push(0, 3, i, Some(i), None, value, now, 0);
    }
    for i in 0..100 {
        let r = t.front(0, 3).unwrap();
        assert_eq!(r.offset, i);
        assert_eq!(r.key, None);
        let want = (i % 3 != 0).then_some(&big[..(i as usize * 37) % 10_000]);
        assert_eq!(r.value, want);
        t.pop(0, 3);
        if i == 60 {
            // New records after a compaction of the arena's front.
            t.push(0, 3, 1000, Some(1000), Some(b"late"), Some(b"x"), now, 0);
        }
    }
    assert_eq!(t.front(0, 3).unwrap().key, Some(&b"late"[..]));
}

proptest! {
    /// With both partitions fully buffered, the merge is the timestamp order (stable, clicks
    /// first on ties), and each partition keeps its offset order.
    #[test]
    fn merge_is_a_stable_timestamp_order(
        a in proptest::collection::vec(0i64..50, 0..30),
        b in proptest::collection::vec(0i64..50, 0..30),
    ) {
        let mut a = a; a.sort();
        let mut b = b; b.sort();
        let now = Instant::now();
        let mut t = TaskInputs::new(OrderSettings::default());
        t.assign(0);
        for (i, ts) in a.iter().enumerate() { t.push(0, 0, i as i64, Some(*ts), None, None, now, 0); }
        for (i, ts) in b.iter().enumerate() { t.push(1, 0, i as i64, Some(*ts), None, None, now, 0); }
        t.end_of_partition(0, 0);
        t.end_of_partition(1, 0);
        let mut got = Vec::new();
        while let Next::Take(s) = t.next(0, now + Duration::from_secs(1)) {
            got.push((t.front(s, 0).unwrap().timestamp, s));
            t.pop(s, 0);
        }
        let mut want: Vec<(i64, usize)> =
            a.iter().map(|t| (*t, 0)).chain(b.iter().map(|t| (*t, 1))).collect();
        want.sort();
        prop_assert_eq!(got, want);
    }
}
