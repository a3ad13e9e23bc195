//! The topology's names, fixed before it grows a second stage: a task is a stage and a
//! partition, and every id and internal topic carries the stage or store it belongs to, as
//! Kafka Streams names its tasks (`<application_id>-<stage>_<partition>`) and changelogs
//! (`<application_id>-<store>-changelog`).

use std::fmt;

/// A stage of the topology: a processor over its own input partitions, with its own tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageId {
    /// Attributes conversions over clicks, conversions, promo codes and config.
    Attribution,
}

impl StageId {
    pub fn name(self) -> &'static str {
        match self {
            StageId::Attribution => "attribution",
        }
    }

    /// The store the stage keeps its state in.
    pub fn store(self) -> &'static str {
        match self {
            StageId::Attribution => "journeys",
        }
    }
}

/// A task: one partition of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    pub stage: StageId,
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.stage.name(), self.partition)
    }
}

impl TaskId {
    pub fn new(stage: StageId, partition: i32) -> Self {
        TaskId { stage, partition }
    }

    /// The task's transactional id: stable, so that the next owner fences the previous one.
    pub fn transactional_id(&self, application_id: &str) -> String {
        format!("{application_id}-{self}")
    }
}

/// A task's input streams, in the order of its input merge (see
/// [`crate::runtime::input_order`]): clicks, conversions and, with identity stitching on,
/// identities (the device stage's inputs, merged by timestamp), then the customers'
/// repartition topic (the customer stage's input, taken as it comes).
pub const CLICKS: usize = 0;
pub const CONVERSIONS: usize = 1;
pub const IDENTITIES: usize = 2;
pub const CUSTOMERS: usize = 3;

/// The internal topic through which the device stage forwards customers' records to the
/// customer stage (docs/design.md §6).
pub fn repartition_topic(application_id: &str) -> String {
    format!("{application_id}-customers-repartition")
}

/// The topics of a task's input streams under `s`, by stream index.
pub fn stream_topics(s: &crate::ops::settings::Settings) -> Vec<String> {
    let t = &s.topics;
    let mut topics = vec![t.clicks.clone(), t.conversions.clone()];
    if s.identity.stitching {
        topics.push(t.identities.clone());
        topics.push(repartition_topic(&s.application_id));
    }
    topics
}

/// How a task's streams are ordered under `s`.
pub fn stream_set(s: &crate::ops::settings::Settings) -> crate::runtime::input_order::StreamSet {
    use crate::runtime::input_order::StreamSet;
    if s.identity.stitching {
        StreamSet {
            merged: 3,
            graced: 2,
            free: 1,
        }
    } else {
        StreamSet::default()
    }
}

/// A stream's role, the `topic` label of attrib's metrics: the same names in every
/// deployment, whatever the topics are called (`attrib_consumed_records_total` uses the same
/// for the tables: `promo_codes`, `config`).
pub fn stream_role(stream: usize) -> &'static str {
    match stream {
        CLICKS => "clicks",
        CONVERSIONS => "conversions",
        IDENTITIES => "identities",
        _ => "repartition",
    }
}

/// The input topic kind of a stream (the customers' stream carries forwarded records of
/// clicks and conversions, told apart by their payload).
pub fn stream_input_topic(stream: usize) -> crate::model::records::InputTopic {
    use crate::model::records::InputTopic;
    match stream {
        CLICKS => InputTopic::Clicks,
        IDENTITIES => InputTopic::Identities,
        _ => InputTopic::Conversions,
    }
}

/// The changelog topic of a stage's store.
pub fn changelog_topic(application_id: &str, stage: StageId) -> String {
    format!("{application_id}-{}-changelog", stage.store())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_stage_and_the_store() {
        let t = TaskId::new(StageId::Attribution, 7);
        assert_eq!(t.to_string(), "attribution_7");
        assert_eq!(t.transactional_id("attrib"), "attrib-attribution_7");
        assert_eq!(
            changelog_topic("attrib", StageId::Attribution),
            "attrib-journeys-changelog"
        );
    }
}
