//! Producing records as wharf does, for the outbox relay and `wharf publish --topic`:
//! a message becomes a record of its topic with its key, its payload as the value, its
//! headers, and its id and kind in the `message-id` and `kind` headers (what a wharf
//! consumer of the topic reads: a record produced twice is handled once); and whether
//! the brokers have a topic, asked before producing to it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use uuid::Uuid;

use super::client::Context;
use super::config::{ID_HEADER, KIND_HEADER};

/// How long reading a topic's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A message to produce.
pub struct Outgoing<'a> {
    /// Its id (the `message-id` header).
    pub id: Uuid,
    /// Its topic.
    pub topic: &'a str,
    /// The record's key.
    pub key: Option<&'a str>,
    /// Its kind (the `kind` header).
    pub kind: &'a str,
    /// Its headers.
    pub headers: &'a BTreeMap<String, String>,
    /// The record's value.
    pub payload: &'a [u8],
}

impl<'a> Outgoing<'a> {
    /// The record: its headers, then the id and kind (which win over headers of the same
    /// name).
    pub fn record(&self) -> FutureRecord<'a, str, [u8]> {
        let id = self.id.to_string();
        let own = [(ID_HEADER, id.as_str()), (KIND_HEADER, self.kind)];
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len() + own.len());
        let given = (self.headers.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| !own.iter().any(|(o, _)| o == k));
        for (key, value) in given.chain(own) {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let record = FutureRecord::to(self.topic)
            .payload(self.payload)
            .headers(headers);
        match self.key {
            Some(key) => record.key(key),
            None => record,
        }
    }
}

/// Whether the brokers have `topic` (with partitions).
pub async fn topic_exists(
    producer: &FutureProducer<Context>,
    topic: &str,
) -> Result<bool, KafkaError> {
    let producer = producer.clone();
    let name = topic.to_owned();
    let metadata = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
    })
    .await
    .expect("reading metadata does not panic")?;
    Ok((metadata.topics().iter())
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

/// Will the brokers refuse this record however often it is sent (too large, invalid, a
/// topic they do not have or do not let this client write)?
pub fn refused_for_good(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::UnknownTopicOrPartition
                | Code::UnknownTopic
                | Code::InvalidTopic
                | Code::TopicAuthorizationFailed
        )
    )
}

/// What to do about `topic` missing on `brokers`.
pub fn missing_topic(topic: &str, brokers: &str) -> String {
    format!(
        "topic {topic} does not exist on the Kafka brokers {brokers}; create it (kafka-topics.sh --create --topic {topic})"
    )
}
