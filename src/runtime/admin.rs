//! Cluster metadata and the internal topics attrib creates.

use super::clients::*;
use crate::ops::settings::Settings;
use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Waits until the cluster answers a metadata request: says so once within seconds when it
/// does not (then every 30 s), and gives up when shutdown is asked for.
pub(super) fn wait_for_cluster(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
    shutdown: &AtomicBool,
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
        if shutdown.load(Ordering::Acquire) {
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

/// Creates the changelog topic if missing, with as many partitions as the clicks topic.
pub(super) fn ensure_changelog(
    s: &Settings,
    consumer: &BaseConsumer<impl ConsumerContext>,
    partitions: usize,
) -> Result<()> {
    let name = s.changelog_topic();
    if let Ok(n) = partition_count(consumer, &name) {
        if n != partitions {
            bail!(
                "changelog topic `{name}` has {n} partitions, but `{}` has {partitions}",
                s.topics.clicks
            );
        }
        return Ok(());
    }
    let admin: AdminClient<LogContext> = base_config(s).create_with_context(LogContext)?;
    let topic = NewTopic::new(&name, partitions as i32, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let results = futures::executor::block_on(admin.create_topics(
        [&topic],
        &AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT)),
    ))?;
    for r in results {
        match r {
            Ok(_) => info!("created changelog topic {name}"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create changelog topic {t}: {e}"),
        }
    }
    Ok(())
}
