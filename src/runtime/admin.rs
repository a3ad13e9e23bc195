//! Cluster metadata and the internal topics attrib creates.

use super::clients::*;
use crate::ops::settings::Settings;
use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Waits until the cluster answers a metadata request: says so once within seconds when it
/// does not (then every 30 s), and gives up when shutdown is asked for.
pub(super) fn wait_for_cluster(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
    shutdown: &super::handles::Shutdown,
    heartbeat: &crate::ops::http::Heartbeat,
) -> Result<()> {
    let started = Instant::now();
    let mut last_log: Option<Instant> = None;
    loop {
        heartbeat.beat();
        match consumer.fetch_metadata(Some(&s.topics.clicks), Duration::from_secs(2)) {
            Ok(_) => {
                if last_log.is_some() {
                    info!(brokers = %s.brokers, "Kafka is reachable");
                }
                return Ok(());
            }
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    warn!(
                        brokers = %s.brokers,
                        waited_seconds = started.elapsed().as_secs(),
                        "cannot reach Kafka ({e}); retrying"
                    );
                    last_log = Some(Instant::now());
                }
            }
        }
        if shutdown.requested() {
            bail!("shutdown while waiting for Kafka");
        }
    }
}

pub(super) fn partition_count(
    consumer: &BaseConsumer<impl ConsumerContext>,
    topic: &str,
) -> Result<usize> {
    let md = consumer
        .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
        .with_context(|| format!("cannot read metadata of {topic}"))?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    if n == 0 {
        bail!("topic `{topic}` does not exist (create it, or check the `topics` settings)");
    }
    Ok(n)
}

/// Checks that a task's input topics are co-partitioned (the same partition count: clicks,
/// conversions and, with identity stitching on, identities); returns that count. The refusal
/// names every topic and its count.
pub(super) fn check_copartitioned(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
) -> Result<usize> {
    let t = &s.topics;
    let mut inputs = vec![&t.clicks, &t.conversions];
    if s.identity.stitching {
        inputs.push(&t.identities);
    }
    let mut counts = Vec::with_capacity(inputs.len());
    for topic in inputs {
        counts.push((topic, partition_count(consumer, topic)?));
    }
    let n = counts[0].1;
    if counts.iter().any(|(_, c)| *c != n) {
        let listed: Vec<String> = counts
            .iter()
            .map(|(topic, c)| format!("`{topic}` ({c} partitions)"))
            .collect();
        bail!(
            "input topics must have the same number of partitions (co-partitioned): {}",
            listed.join(", ")
        );
    }
    Ok(n)
}

/// An internal topic and how attrib creates it.
struct Internal {
    name: String,
    /// A changelog is compacted; a repartition topic keeps everything until attrib purges
    /// what it has committed (`delete` with unlimited retention, as Kafka Streams does).
    compacted: bool,
}

/// The internal topics of the topology under `s`: the journey store's changelog and, with
/// identity stitching on, the customers' repartition topic.
fn internal_topics(s: &Settings) -> Vec<Internal> {
    let mut topics = vec![Internal {
        name: s.changelog_topic(),
        compacted: true,
    }];
    if s.identity.stitching {
        topics.push(Internal {
            name: super::topology::repartition_topic(&s.application_id),
            compacted: false,
        });
    }
    topics
}

/// Creates the internal topics that are missing, each with as many partitions as the inputs
/// (`partitions`), and refuses to start when one exists with another count.
pub(super) fn ensure_internal_topics(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
    partitions: usize,
) -> Result<()> {
    let mut missing = Vec::new();
    for topic in internal_topics(s) {
        match partition_count(consumer, &topic.name) {
            Ok(n) if n != partitions => bail!(
                "internal topic `{}` has {n} partitions, but the input topics (`{}`, …) have {partitions}",
                topic.name,
                s.topics.clicks
            ),
            Ok(_) => {}
            Err(_) => missing.push(topic),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<LogContext> = admin_config(s).create_with_context(LogContext)?;
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let topic = NewTopic::new(&t.name, partitions as i32, TopicReplication::Fixed(-1));
            if t.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
                    .set("cleanup.policy", "delete")
                    .set("retention.ms", "-1")
            }
        })
        .collect();
    let results = futures::executor::block_on(admin.create_topics(
        new.iter(),
        &AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)),
    ))?;
    for r in results {
        match r {
            Ok(name) => info!("created internal topic {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create internal topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Deletes the repartition records the customer stage has committed (Kafka Streams purges its
/// repartition topics the same way): at most every [`PURGE_INTERVAL`], on a thread of its own,
/// so that the processing thread never waits for it.
#[derive(Default)]
pub(super) struct Purge {
    /// Per repartition partition, the committed position (records before it are done with).
    pending: std::collections::BTreeMap<i32, i64>,
    last: Option<Instant>,
    running: Option<std::thread::JoinHandle<()>>,
    /// Made at the first purge and kept (a client per purge would connect anew each time).
    admin: Option<std::sync::Arc<AdminClient<LogContext>>>,
}

/// How often committed repartition records are deleted.
pub(super) const PURGE_INTERVAL: Duration = Duration::from_secs(30);

impl Purge {
    /// The customer stage committed `partition` of the repartition topic up to `offset`.
    pub(super) fn committed(&mut self, partition: i32, offset: i64) {
        let e = self.pending.entry(partition).or_insert(offset);
        *e = (*e).max(offset);
    }

    /// Starts a purge of what is committed, if one is due and none is running.
    pub(super) fn maybe_run(&mut self, s: &Settings, topic: &str) {
        if self.pending.is_empty()
            || self.last.is_some_and(|t| t.elapsed() < PURGE_INTERVAL)
            || self.running.as_ref().is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.last = Some(Instant::now());
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (p, o) in std::mem::take(&mut self.pending) {
            if tpl
                .add_partition_offset(topic, p, rdkafka::Offset::Offset(o))
                .is_err()
            {
                return;
            }
        }
        if self.admin.is_none() {
            match admin_config(s).create_with_context(LogContext) {
                Ok(a) => self.admin = Some(std::sync::Arc::new(a)),
                Err(e) => return warn!("cannot purge {topic}: {e}"),
            }
        }
        let admin = self.admin.clone().expect("made above");
        let topic = topic.to_string();
        self.running = std::thread::Builder::new()
            .name("attrib-purge".into())
            .spawn(move || {
                let opts = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
                match futures::executor::block_on(admin.delete_records(&tpl, &opts)) {
                    Ok(r) => debug!(
                        topic,
                        partitions = r.count(),
                        "purged committed repartition records"
                    ),
                    Err(e) => warn!("cannot purge committed records of {topic}: {e}"),
                }
            })
            .ok();
    }
}
