//! Benchmarks of the attribution engine and of `replay` (issue: records/s).
//!
//! `cargo bench --bench engine` prints, per case, the time per iteration and the throughput in
//! records/s (criterion's "thrpt").

use attrib::model::journey::Journey;
use attrib::model::output::Output;
use attrib::model::records::{Event, Limits, decode_click, decode_conversion_topic};
use attrib::model::tables::Tables;
use attrib::rules::engine::{self, Clock, EngineSettings};
use attrib::tools::workload;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn tables() -> Tables {
    let mut t = Tables::default();
    let l = Limits::default();
    t.apply_config(
        Some(b"program/p1"),
        Some(
            br#"{"type":"program","program_id":"p1","account_id":"acme","credit_policy":"linear"}"#,
        ),
        &l,
    )
    .unwrap();
    for i in 0..10 {
        let v = format!(
            r#"{{"type":"contract","program_id":"p1","partner_id":"pa{i}","active_from":"2026-01-01T00:00:00Z","payout":{{"default":{{"percent":"10"}},"groups":[{{"when":{{"categories":["shoes"]}},"rate":{{"fixed":"5"}}}}]}}}}"#
        );
        t.apply_config(
            Some(format!("contract/p1/pa{i}").as_bytes()),
            Some(v.as_bytes()),
            &l,
        )
        .unwrap();
    }
    t
}

fn journey_with(n: usize, t: &Tables) -> Journey {
    let mut j = Journey::default();
    let s = EngineSettings::default();
    let mut out = Vec::new();
    for i in 0..n {
        let v = format!(
            r#"{{"click_id":"c{i}","program_id":"p1","partner_id":"pa{}","occurred_at":"2026-10-01T{:02}:{:02}:00Z"}}"#,
            i % 10,
            i / 60,
            i % 60
        );
        let e = Event::Click(decode_click(v.as_bytes(), &Limits::default()).unwrap());
        engine::apply(
            &mut j,
            t,
            &s,
            &e,
            Clock {
                processed_at: 0,
                stream_time: e.occurred_at(),
            },
            &mut out,
        );
    }
    j
}

fn bench_engine(c: &mut Criterion) {
    let t = tables();
    let s = EngineSettings::default();
    let conv = decode_conversion_topic(
        br#"{"program_id":"p1","event_type":"sale","order_id":"o1","occurred_at":"2026-10-02T00:00:00Z","order_discount":"3","items":[{"sku":"A","category":"shoes","quantity":2,"unit_price":"30"},{"sku":"B","category":"hats","quantity":1,"unit_price":"20"}]}"#,
        &Limits::default(),
    )
    .unwrap();
    let mut g = c.benchmark_group("engine_conversion");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10, 100] {
        let j = journey_with(n, &t);
        g.bench_function(format!("journey_of_{n}_clicks"), |b| {
            b.iter_batched(
                || (j.clone(), Vec::<Output>::with_capacity(1)),
                |(mut j, mut out)| {
                    engine::apply(
                        &mut j,
                        &t,
                        &s,
                        &conv,
                        Clock {
                            processed_at: 0,
                            stream_time: conv.occurred_at(),
                        },
                        &mut out,
                    );
                    black_box(out)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("engine_click");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 10, 100] {
        let j = journey_with(n, &t);
        let click = Event::Click(decode_click(br#"{"click_id":"new","program_id":"p1","partner_id":"pa1","occurred_at":"2026-10-01T23:00:00Z"}"#, &Limits::default()).unwrap());
        g.bench_function(format!("journey_of_{n}_clicks"), |b| {
            b.iter_batched(
                || (j.clone(), Vec::<Output>::new()),
                |(mut j, mut out)| {
                    engine::apply(
                        &mut j,
                        &t,
                        &s,
                        &click,
                        Clock {
                            processed_at: 0,
                            stream_time: click.occurred_at(),
                        },
                        &mut out,
                    );
                    black_box(j)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_replay(c: &mut Criterion) {
    // ~1,000,000 records: 900,000 clicks, 100,000 conversions and their changes.
    let w = workload::generate(7, 900_000, 500_000);
    let mut input = String::new();
    let mut n = 0u64;
    for r in w.all() {
        input.push_str(&r.replay_line());
        input.push('\n');
        n += 1;
    }
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("mixed_{n}_records"), |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(64 << 20);
            let s = attrib::tools::replay::replay(input.as_bytes(), &mut out).unwrap();
            black_box((s, out.len()))
        })
    });
    g.finish();
}

/// Replay of the same stream with identity stitching off and on: one device in ten is
/// identified (its conversions carry the customer id, so they link it and move its journey);
/// the other nine stay anonymous, as most traffic does. Stitching on should cost anonymous
/// traffic next to nothing (issue: ≥ 90 % of the throughput with it off).
fn bench_replay_stitching(c: &mut Criterion) {
    let w = workload::generate(7, 900_000, 500_000);
    let mut records: Vec<workload::GenRecord> = w.all().cloned().collect();
    workload::identify_one_in(10, &mut records);
    let mut input = String::new();
    let mut n = 0u64;
    for r in &records {
        input.push_str(&r.replay_line());
        input.push('\n');
        n += 1;
    }
    let mut g = c.benchmark_group("replay_stitching");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    for stitching in [false, true] {
        let options = attrib::tools::replay::ReplayOptions {
            stitching,
            ..Default::default()
        };
        let name = if stitching { "on" } else { "off" };
        g.bench_function(format!("{name}_{n}_records_10pct_identified"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(64 << 20);
                // The processor (every journey) is dropped inside the measurement, as in
                // `bench_replay`.
                let (s, _p) = attrib::tools::replay::replay_keeping_state(
                    input.as_bytes(),
                    &mut out,
                    &options,
                )
                .unwrap();
                black_box((s, out.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_engine, bench_replay, bench_replay_stitching);
criterion_main!(benches);
