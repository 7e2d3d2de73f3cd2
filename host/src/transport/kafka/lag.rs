//! How far the fleet is behind on each consumed topic, as the brokers see it (for
//! `/api/queues`, the dashboard and `wharf queues`): per partition, the high watermark
//! and the group's committed offset. Every host of the group counts, whichever host asks;
//! each host's metrics show the partitions it owns.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::client::{self, PartitionLag};
use super::{KafkaConfig, produce};

/// How long each question to the brokers may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One consumed topic's lag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicLag {
    /// The topic.
    pub topic: String,
    /// Its dead-letter topic.
    pub dead_letter_topic: String,
    /// Records produced and not committed by the group, over all partitions.
    pub lag: i64,
    /// By partition.
    pub partitions: BTreeMap<i32, PartitionLag>,
}

/// Why the brokers did not tell a topic's lag.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// The brokers did not answer, or refused.
    #[error("Kafka brokers {brokers} did not tell the lag: {source}")]
    Kafka {
        /// `kafka.brokers`.
        brokers: String,
        /// What librdkafka reported.
        source: KafkaError,
    },
    /// The topic does not exist.
    #[error("{0}")]
    MissingTopic(String),
}

/// The lag of every topic `config` consumes, in its order; each its own result (a
/// missing topic does not hide the others).
pub async fn lags(config: &KafkaConfig) -> Vec<(String, Result<TopicLag, LagError>)> {
    if config.consume.is_empty() {
        return Vec::new();
    }
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let asker = client::lag_reader(&config);
        (config.consume.iter())
            .map(|spec| {
                let lag = asker
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|asker| topic_lag(asker, &spec.topic))
                    .map_err(|source| LagError::Kafka {
                        brokers: config.brokers.clone(),
                        source,
                    })
                    .and_then(|partitions| {
                        let partitions = partitions.ok_or_else(|| {
                            LagError::MissingTopic(produce::missing_topic(
                                &spec.topic,
                                &config.brokers,
                            ))
                        })?;
                        Ok(TopicLag {
                            topic: spec.topic.clone(),
                            dead_letter_topic: spec.dead_letter_topic(),
                            lag: partitions.values().map(|p| p.lag).sum(),
                            partitions,
                        })
                    });
                (spec.topic.clone(), lag)
            })
            .collect()
    })
    .await
    .expect("asking for the lag does not panic")
}

/// The partitions of `topic` with their lag; `None` when the brokers do not have it.
fn topic_lag(
    asker: &BaseConsumer,
    topic: &str,
) -> Result<Option<BTreeMap<i32, PartitionLag>>, KafkaError> {
    let metadata = asker.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(known) = (metadata.topics().iter())
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    let mut wanted = TopicPartitionList::new();
    for p in known.partitions() {
        wanted.add_partition(topic, p.id());
    }
    let committed = asker.committed_offsets(wanted, TIMEOUT)?;
    let mut partitions = BTreeMap::new();
    for p in known.partitions() {
        let (low, high) = asker.fetch_watermarks(topic, p.id(), TIMEOUT)?;
        let committed = match committed.find_partition(topic, p.id()).map(|e| e.offset()) {
            Some(Offset::Offset(at)) => at,
            _ => -1,
        };
        let from = if committed >= 0 {
            committed
        } else {
            low.max(0)
        };
        partitions.insert(
            p.id(),
            PartitionLag {
                high,
                committed,
                lag: (high - from).max(0),
            },
        );
    }
    Ok(Some(partitions))
}
