//! Prometheus metrics, named `attrib_<name>_<unit>` (counters end in `_total`), updated once
//! per batch from aggregated counts.

use crate::model::output::Change;
use crate::model::output::OutRecord;
use crate::stage::attribution::Stats;
use prometheus::{
    CounterVec, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, exponential_buckets,
};
use std::collections::HashMap;

pub struct Metrics {
    pub registry: Registry,
    pub consumed: IntCounterVec,
    pub dlq: IntCounterVec,
    pub actions: IntCounterVec,
    pub invalid: IntCounterVec,
    /// Payout of created actions (gross), by currency.
    pub payout: CounterVec,
    /// Payout changes of every emission (created, modified, reversed), by currency and
    /// direction (`added`, `removed`): the net payout is `added − removed`.
    pub payout_delta: CounterVec,
    /// The exact decimal totals behind `payout` and `payout_delta`: the exported values are
    /// these, converted once, so that no sum of floats shows a reader an artefact.
    payout_exact: std::sync::Mutex<HashMap<(String, &'static str), rust_decimal::Decimal>>,
    pub clicks_dropped: IntCounterVec,
    pub event_lag: Histogram,
    pub batch_duration: Histogram,
    pub transactions: IntCounterVec,
    pub commit_duration: Histogram,
    pub rebalances: IntCounter,
    pub assigned: IntGauge,
    pub restore_records: IntCounter,
    /// Changelog records a running restore still has to read, per partition (0 when none runs).
    pub restore_remaining: IntGaugeVec,
    pub restore_seconds: Gauge,
    pub journeys: IntGauge,
    pub rocksdb_live: IntGauge,
    pub block_cache_hit: Gauge,
    pub consumer_lag: IntGaugeVec,
    pub ready: IntGauge,
    /// Records processed ahead of a co-partition waited for `max_task_idle_ms` in vain.
    pub enforced_processing: IntCounter,
    /// Errors fetching input partitions (e.g. a batch that cannot be decompressed), by topic.
    pub input_errors: IntCounterVec,
    /// Background commits abandoned because a Kafka call did not return in time.
    pub stuck_commits: IntCounter,
    /// Identity stitching: devices linked (`created`) and records naming a linked device with
    /// another customer (`conflict`).
    pub links: IntCounterVec,
    /// Identity stitching: anonymous journeys moved into a customer's.
    pub journeys_moved: IntCounter,
    /// Identity stitching: moved clicks and orders the customer's journey had already.
    pub move_collisions: IntCounterVec,
    /// Identity stitching: records and moved journeys the device stage forwarded.
    pub forwarded: IntCounter,
    /// `process_*` and `attrib_build_info`.
    pub process: ProcessMetrics,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let payout = CounterVec::new(
            Opts::new(
                "attrib_payout_amount_total",
                "Payout of created actions, by currency, test actions excluded.",
            ),
            &["currency"],
        )
        .expect("valid metric");
        r.register(Box::new(payout.clone())).expect("unique metric");
        let payout_delta = CounterVec::new(
            Opts::new(
                "attrib_payout_delta_amount_total",
                "Payout changes of actions (created, modified, reversed), by currency and direction (added, removed), test actions excluded; the net payout is added minus removed.",
            ),
            &["currency", "direction"],
        )
        .expect("valid metric");
        r.register(Box::new(payout_delta.clone()))
            .expect("unique metric");
        let restore_seconds = Gauge::new(
            "attrib_restore_duration_seconds",
            "Duration of the latest state restore.",
        )
        .expect("valid metric");
        r.register(Box::new(restore_seconds.clone()))
            .expect("unique metric");
        let block_cache_hit = Gauge::new(
            "attrib_rocksdb_block_cache_hit_ratio",
            "RocksDB block-cache hit ratio since start.",
        )
        .expect("valid metric");
        r.register(Box::new(block_cache_hit.clone()))
            .expect("unique metric");
        let rebalances = counter(
            &r,
            "attrib_rebalances_total",
            "Consumer-group rebalances seen.",
        );
        let restore_records = counter(
            &r,
            "attrib_restore_records_total",
            "Changelog records read to restore state.",
        );
        let restore_remaining = IntGaugeVec::new(
            Opts::new(
                "attrib_restore_remaining_records",
                "Changelog records a running restore still has to read, per partition (0 when none runs).",
            ),
            &["partition"],
        )
        .expect("valid metric");
        r.register(Box::new(restore_remaining.clone()))
            .expect("unique metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "attrib_consumer_lag_records",
                "Consumer lag per input partition, from librdkafka statistics.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        r.register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let enforced_processing = counter(
            &r,
            "attrib_enforced_processing_total",
            "Records processed ahead of an input partition that was waited for max_task_idle_ms in vain (their order against it is not guaranteed).",
        );
        let stuck_commits = counter(
            &r,
            "attrib_stuck_commits_total",
            "Transaction commits abandoned because a Kafka call did not return within 90 s (the pipeline restarts from the committed state).",
        );
        let secs = exponential_buckets(0.001, 2.0, 16).expect("valid buckets");
        let process = ProcessMetrics::new(&r);
        let m = Metrics {
            process,
            enforced_processing,
            stuck_commits,
            input_errors: counter_vec(
                &r,
                "attrib_input_errors_total",
                "Errors fetching input partitions (such as a batch that cannot be decompressed), by topic.",
                &["topic"],
            ),
            links: counter_vec(
                &r,
                "attrib_links_total",
                "Identity stitching: devices linked to a customer (created), and records that named a linked device with another customer (conflict; the first link stands).",
                &["result"],
            ),
            journeys_moved: counter(
                &r,
                "attrib_journeys_moved_total",
                "Identity stitching: anonymous device journeys moved into a customer's journey at the device's first link.",
            ),
            move_collisions: counter_vec(
                &r,
                "attrib_move_collisions_total",
                "Identity stitching: moved clicks (click) and orders (order) dropped because the customer's journey had them already.",
                &["kind"],
            ),
            forwarded: counter(
                &r,
                "attrib_forwarded_records_total",
                "Identity stitching: records and moved journeys the device stage forwarded to the customer stage.",
            ),
            consumed: counter_vec(
                &r,
                "attrib_consumed_records_total",
                "Input records consumed, by topic.",
                &["topic"],
            ),
            dlq: counter_vec(
                &r,
                "attrib_dlq_records_total",
                "Records sent to the DLQ, by reason.",
                &["reason"],
            ),
            actions: counter_vec(
                &r,
                "attrib_actions_total",
                "Actions written, by program, referral type of the latest credit, and change.",
                &["program", "referral_type", "change"],
            ),
            invalid: counter_vec(
                &r,
                "attrib_invalid_actions_total",
                "Invalid actions written, by reason.",
                &["reason"],
            ),
            clicks_dropped: counter_vec(
                &r,
                "attrib_clicks_dropped_total",
                "Clicks not kept: over the per-journey limit, expired, or duplicate click ids.",
                &["reason"],
            ),
            payout,
            payout_delta,
            payout_exact: Default::default(),
            event_lag: histogram(
                &r,
                "attrib_event_time_lag_seconds",
                "Commit time minus the record's occurred_at.",
                exponential_buckets(0.01, 4.0, 14).expect("valid buckets"),
            ),
            batch_duration: histogram(
                &r,
                "attrib_batch_duration_seconds",
                "Time to process one batch.",
                secs.clone(),
            ),
            transactions: counter_vec(
                &r,
                "attrib_transactions_total",
                "Commits of output, state and offsets, by result.",
                &["result"],
            ),
            commit_duration: histogram(
                &r,
                "attrib_transaction_commit_duration_seconds",
                "Time to commit one batch.",
                secs,
            ),
            rebalances,
            assigned: gauge(
                &r,
                "attrib_assigned_partitions",
                "Input partitions assigned to this instance.",
            ),
            restore_records,
            restore_remaining,
            restore_seconds,
            journeys: gauge(
                &r,
                "attrib_journeys_stored",
                "Journeys in the local store (estimate).",
            ),
            rocksdb_live: gauge(
                &r,
                "attrib_rocksdb_live_size_bytes",
                "RocksDB live data size (estimate).",
            ),
            block_cache_hit,
            consumer_lag,
            ready: gauge(
                &r,
                "attrib_ready",
                "1 once tables are loaded and assigned partitions restored.",
            ),
            registry: r,
        };
        // Series that start at zero, so that rates see them before the first event.
        for result in ["created", "conflict"] {
            m.links.with_label_values(&[result]);
        }
        for kind in ["click", "order"] {
            m.move_collisions.with_label_values(&[kind]);
        }
        m
    }

    /// Adds a batch's processor counters.
    pub fn record_stats(&self, s: &Stats) {
        for (i, name) in [
            "clicks",
            "conversions",
            "promo_codes",
            "config",
            "identities",
        ]
        .iter()
        .enumerate()
        {
            if s.consumed[i] > 0 {
                self.consumed
                    .with_label_values(&[name])
                    .inc_by(s.consumed[i]);
            }
        }
        for (reason, n) in [
            ("limit", s.clicks_dropped_by_limit),
            ("expired", s.clicks_expired),
            ("duplicate", s.duplicate_clicks),
        ] {
            if n > 0 {
                self.clicks_dropped.with_label_values(&[reason]).inc_by(n);
            }
        }
        let st = &s.stitching;
        for (result, n) in [
            ("created", st.links_created),
            ("conflict", st.link_conflicts),
        ] {
            if n > 0 {
                self.links.with_label_values(&[result]).inc_by(n);
            }
        }
        for (kind, n) in [
            ("click", st.clicks_dropped_in_moves),
            ("order", st.orders_dropped_in_moves),
        ] {
            if n > 0 {
                self.move_collisions.with_label_values(&[kind]).inc_by(n);
            }
        }
        if st.forwarded_applied > 0 {
            self.consumed
                .with_label_values(&["repartition"])
                .inc_by(st.forwarded_applied);
        }
        self.journeys_moved.inc_by(st.journeys_moved);
        self.forwarded.inc_by(st.records_forwarded);
    }

    /// Adds a batch's outputs, aggregated first so that each label set is touched once.
    pub fn record_outputs(&self, outs: &[OutRecord]) {
        let mut actions: HashMap<(&str, &str, Change), u64> = HashMap::new();
        let mut invalid: HashMap<&str, u64> = HashMap::new();
        let mut dlq: HashMap<&str, u64> = HashMap::new();
        // (currency, created | added | removed) → amount, exact.
        let mut payout: HashMap<(&str, &'static str), rust_decimal::Decimal> = HashMap::new();
        for o in outs {
            match o {
                OutRecord::Action(a) => {
                    let rt = a
                        .credits
                        .last()
                        .map_or("none", |c| c.referral_type.as_str());
                    *actions
                        .entry((a.program_id.as_str(), rt, a.change))
                        .or_default() += 1;
                    if !a.test {
                        let cur = a.currency.as_deref().unwrap_or("");
                        if a.change == Change::Created {
                            *payout.entry((cur, "created")).or_default() += a.payout;
                        }
                        let d = a.delta_payout;
                        if d.is_sign_positive() && !d.is_zero() {
                            *payout.entry((cur, "added")).or_default() += d;
                        } else if !d.is_zero() {
                            *payout.entry((cur, "removed")).or_default() -= d;
                        }
                    }
                }
                OutRecord::Invalid(i) => *invalid.entry(i.reason.as_str()).or_default() += 1,
                OutRecord::Dlq(d) => *dlq.entry(d.reason_label()).or_default() += 1,
            }
        }
        for ((p, rt, ch), n) in actions {
            self.actions
                .with_label_values(&[p, rt, ch.as_str()])
                .inc_by(n);
        }
        for (r, n) in invalid {
            self.invalid.with_label_values(&[r]).inc_by(n);
        }
        for (r, n) in dlq {
            self.dlq.with_label_values(&[r]).inc_by(n);
        }
        if payout.is_empty() {
            return;
        }
        let mut exact = self.payout_exact.lock().unwrap_or_else(|e| e.into_inner());
        for ((c, kind), v) in payout {
            let total = exact.entry((c.to_string(), kind)).or_default();
            *total += v;
            let counter = match kind {
                "created" => self.payout.with_label_values(&[c]),
                direction => self.payout_delta.with_label_values(&[c, direction]),
            };
            // The exported value is the exact total's nearest double.
            let target: f64 = (*total).try_into().unwrap_or(0.0);
            counter.inc_by((target - counter.get()).max(0.0));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.process.update();
        let enc = prometheus::TextEncoder::new();
        enc.encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The standard `process_*` metrics (as Prometheus client libraries export them), read from
/// `/proc/self` at each scrape (Linux; elsewhere they stay 0), and `attrib_build_info`.
pub struct ProcessMetrics {
    cpu: prometheus::Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
    /// One update at a time (the CPU counter grows by a difference).
    updating: std::sync::Mutex<()>,
}

impl ProcessMetrics {
    fn new(r: &Registry) -> ProcessMetrics {
        let g = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let p = ProcessMetrics {
            cpu: {
                let c = prometheus::Counter::new(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            resident: gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_memory: gauge(
                r,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            open_fds: gauge(r, "process_open_fds", "Number of open file descriptors."),
            threads: gauge(r, "process_threads", "Number of OS threads in the process."),
            start_time: g(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            ),
            updating: std::sync::Mutex::new(()),
        };
        p.start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        let build = IntGaugeVec::new(
            Opts::new(
                "attrib_build_info",
                "1, labelled with the version of attrib.",
            ),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build.clone())).expect("unique metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        p
    }

    /// Reads `/proc/self/stat` (CPU ticks, virtual and resident size, threads) and counts
    /// `/proc/self/fd`.
    fn update(&self) {
        let _one = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return;
        };
        // Fields after the command (which is in parentheses and may hold spaces).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // `rest` starts at field 3 (state): utime is field 14, stime 15, threads 20,
        // vsize 23, rss (pages) 24. Clock ticks and pages as on Linux x86-64 and arm64.
        const TICKS_PER_SECOND: f64 = 100.0;
        const PAGE: f64 = 4096.0;
        let cpu = (num(11) + num(12)) / TICKS_PER_SECOND;
        // A counter: it only grows, by what the kernel counted since the last scrape.
        self.cpu.inc_by((cpu - self.cpu.get()).max(0.0));
        self.threads.set(num(17) as i64);
        self.virtual_memory.set(num(20) as i64);
        self.resident.set((num(21) * PAGE) as i64);
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
    }
}
