//! A topic's dead-letter topic (`<topic>.dlq` unless configured): created when missing
//! (with the topic's partitions), and sent each record the settle recorded in the failed
//! messages, with its key, value and headers, where it came from and why, before the
//! record's offset is committed. A dead letter whose record comes again after a crash
//! finds it settled in the ledger and is not sent again: the failed messages keep it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::client::Context;
use super::{ConsumeError, KafkaConfig, TopicSpec};
use crate::names;

/// Headers a dead letter carries besides the record's own.
pub const ORIGINAL_TOPIC: &str = "x-original-topic";
/// See [`ORIGINAL_TOPIC`].
pub const ORIGINAL_PARTITION: &str = "x-original-partition";
/// See [`ORIGINAL_TOPIC`].
pub const ORIGINAL_OFFSET: &str = "x-original-offset";
/// Why the record is a dead letter (its first error, bounded and escaped).
pub const ERROR_HEADER: &str = "x-wharf-error";

/// The longest error a dead letter carries, in bytes.
const MAX_ERROR_BYTES: usize = 1024;

/// How long a dead letter may wait in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// The dead-letter topic of one consumed topic, and the producer that sends to it.
pub struct DeadLetters {
    /// The consumed topic.
    of: String,
    /// Its dead-letter topic.
    topic: String,
    producer: FutureProducer<Context>,
}

impl DeadLetters {
    /// Send the dead letters of `spec.topic` with `producer`.
    pub fn new(spec: &TopicSpec, producer: FutureProducer<Context>) -> Self {
        Self {
            of: spec.topic.clone(),
            topic: spec.dead_letter_topic(),
            producer,
        }
    }

    fn error(&self, source: KafkaError) -> ConsumeError {
        ConsumeError::DeadLetter {
            topic: self.of.clone(),
            dead_letters: self.topic.clone(),
            source,
        }
    }

    /// Create the topic with `partitions` when it does not exist.
    pub async fn create(&self, config: &KafkaConfig, partitions: i32) -> Result<(), ConsumeError> {
        self.create_topic(config, partitions)
            .await
            .map_err(|e| self.error(e))
    }

    async fn create_topic(&self, config: &KafkaConfig, partitions: i32) -> Result<(), KafkaError> {
        let mut client = ClientConfig::new();
        for (key, value) in &config.client {
            client.set(key, value);
        }
        let admin: AdminClient<DefaultClientContext> =
            client.set("bootstrap.servers", &config.brokers).create()?;
        // -1: the brokers' default replication factor.
        let topic = NewTopic::new(&self.topic, partitions.max(1), TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) => tracing::info!(
                    topic = self.topic,
                    partitions,
                    "created the dead-letter topic"
                ),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }

    /// Send each `(record, error)` and wait until the brokers took them all.
    pub async fn send(&self, dead: &[(&OwnedMessage, &str)]) -> Result<(), ConsumeError> {
        let sends = dead.iter().map(|(record, error)| async move {
            let mut headers = OwnedHeaders::new_with_capacity(4);
            if let Some(given) = record.headers() {
                for h in given.iter() {
                    headers = headers.insert(h);
                }
            }
            let (partition, offset) = (record.partition().to_string(), record.offset().to_string());
            let error = names::storable(&error.chars().take(MAX_ERROR_BYTES).collect::<String>());
            for (key, value) in [
                (ORIGINAL_TOPIC, record.topic()),
                (ORIGINAL_PARTITION, &partition),
                (ORIGINAL_OFFSET, &offset),
                (ERROR_HEADER, &error),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut out = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(key) = record.key() {
                out = out.key(key);
            }
            if let Some(value) = record.payload() {
                out = out.payload(value);
            }
            self.producer
                .send(out, QUEUE_TIMEOUT)
                .await
                .map_err(|(e, _)| e)
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}
