//! A consumed topic's dead-letter topic (`<topic>.dlq` unless configured), created when
//! missing, with the topic's partitions, before its consumer starts. Its records come
//! from the outbox: the settle that gives up on a record writes it there for the relay
//! (`crate::dead_letter_topic`), whether it died in its consumer's batch or in the inbox
//! queue it moved to.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{ConsumeError, KafkaConfig, TopicSpec};

/// Create the dead-letter topic of `spec` with `partitions` when it does not exist.
pub async fn create(
    config: &KafkaConfig,
    spec: &TopicSpec,
    partitions: i32,
) -> Result<(), ConsumeError> {
    let topic = spec.dead_letter_topic();
    create_topic(config, &topic, partitions)
        .await
        .map_err(|source| ConsumeError::DeadLetter {
            topic: spec.topic.clone(),
            dead_letters: topic,
            source,
        })
}

async fn create_topic(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), KafkaError> {
    let mut client = ClientConfig::new();
    for (key, value) in &config.client {
        client.set(key, value);
    }
    let admin: AdminClient<DefaultClientContext> =
        client.set("bootstrap.servers", &config.brokers).create()?;
    // -1: the brokers' default replication factor.
    let new = NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created the dead-letter topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}
