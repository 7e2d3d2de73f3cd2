//! The Kafka transport (librdkafka through `rdkafka`): a consumer per topic in the
//! fleet's consumer group that settles each batch of records in the database before
//! committing their offsets, keeps each key's order (records that need another attempt,
//! and their keys' later records, wait in the inbox queue of the topic's name); dead
//! letters reach the topic's dead-letter topic through the outbox, whose relay produces
//! them and what handlers published to topics with an idempotent producer; a supervisor
//! keeps them running.

pub mod client;
pub mod config;
mod consumer;
mod dead_letters;
pub mod lag;
pub mod produce;
pub mod record;
pub mod relay;
pub mod supervisor;

pub use client::{KafkaLink, KafkaView, Lags, PartitionLag};
pub use config::{KafkaConfig, Start, TopicSpec};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::store::StoreError;

/// Why a consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The client or the brokers failed.
    #[error("Kafka error on topic {topic}: {source}")]
    Kafka {
        /// The consumed topic.
        topic: String,
        /// What librdkafka reported.
        source: KafkaError,
    },
    /// The consumed topic does not exist.
    #[error(
        "topic {topic} does not exist on the Kafka brokers {brokers}; create it (kafka-topics.sh --create --topic {topic}), or fix [[kafka.consume]]"
    )]
    MissingTopic {
        /// The topic.
        topic: String,
        /// `kafka.brokers`.
        brokers: String,
    },
    /// The database failed; the batch's offsets were not committed and its records come
    /// again.
    #[error("database error while settling topic {topic}: {source}")]
    Store {
        /// The consumed topic.
        topic: String,
        /// The store's error.
        source: StoreError,
    },
    /// The dead-letter topic cannot be created.
    #[error("cannot create {dead_letters}, the dead-letter topic of {topic}: {source}")]
    DeadLetter {
        /// The consumed topic.
        topic: String,
        /// Its dead-letter topic.
        dead_letters: String,
        /// What librdkafka reported.
        source: KafkaError,
    },
}

impl ConsumeError {
    /// Will consuming work again after a pause (brokers, network or database back)? A
    /// missing topic, refused credentials or permissions, and a bad client property need
    /// the operator.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsumeError::Kafka { source, .. } | ConsumeError::DeadLetter { source, .. } => {
                is_transient(source)
            }
            ConsumeError::MissingTopic { .. } => false,
            ConsumeError::Store { source, .. } => source.is_transient(),
        }
    }
}

/// Will the same operation work again once the brokers or the network are back? A bad
/// client property, refused credentials and missing permissions will not.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    match error {
        KafkaError::ClientConfig(..)
        | KafkaError::ClientCreation(_)
        | KafkaError::Subscription(_) => false,
        _ => !matches!(
            error.rdkafka_error_code(),
            Some(
                Code::TopicAuthorizationFailed
                    | Code::GroupAuthorizationFailed
                    | Code::ClusterAuthorizationFailed
                    | Code::SaslAuthenticationFailed
                    | Code::Authentication
                    | Code::InvalidConfig
                    | Code::InvalidReplicationFactor
                    | Code::InvalidTopic
                    | Code::Fatal
            )
        ),
    }
}
