//! Reading partitions to their end outside the consumer group (tables, restores).

use super::clients::*;
use anyhow::{Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tracing::warn;

/// Assigns every given partition from its beginning and reads up to the end it had when the
/// call started, calling `f` for each record. The consumer stays assigned afterwards.
pub(super) fn read_to_end(
    consumer: &BaseConsumer<LogContext>,
    assignments: &[(String, i32)],
    (shutdown, heartbeat): (&super::handles::Shutdown, &crate::ops::http::Heartbeat),
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for (t, p) in assignments {
        let (lo, hi) = consumer.fetch_watermarks(t, *p, KAFKA_TIMEOUT)?;
        tpl.add_partition_offset(t, *p, Offset::Beginning)?;
        if hi > lo {
            remaining.insert((t.clone(), *p), hi);
        }
    }
    consumer.assign(&tpl)?;
    while !remaining.is_empty() {
        heartbeat.beat();
        if shutdown.requested() {
            bail!("shutdown while reading {:?}", remaining.keys().next());
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                f(&m)?;
                let key = (m.topic().to_string(), m.partition());
                if remaining.get(&key).is_some_and(|hi| m.offset() + 1 >= *hi) {
                    remaining.remove(&key);
                }
                continue;
            }
            // The event names the partition, not the topic: the positions below decide.
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => warn!("while reading tables or changelog: {e}"),
        }
        // A partition is done once its position has reached the end it had at the start
        // (per topic and partition; librdkafka moves the position past transaction markers).
        let positions = consumer.position()?;
        remaining.retain(
            |(t, p), hi| match positions.find_partition(t, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o < *hi,
                _ => true,
            },
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The worker: processor + producers + transaction state
// ---------------------------------------------------------------------------------------------
