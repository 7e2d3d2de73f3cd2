//! The Kafka outbox relay: what handlers published to topics was committed to the outbox
//! with their results; the relay takes those rows oldest first, produces them in that
//! order with the idempotent producer (`acks=all`; the record's key is the publish's key,
//! its id and kind travel in the `message-id` and `kind` headers, so a wharf consumer of
//! the topic deduplicates it), and marks them sent once the brokers acknowledged them. At
//! least once: a relay that dies between the acknowledgement and the mark produces them
//! again, with the same `message-id`. A record to a topic the brokers do not have (asked
//! before the batch is produced), or one they refuse for good (too large, invalid), goes
//! to the failed messages with the reason, and the records behind it go on; a retry puts
//! it back in the outbox.

use std::collections::{BTreeMap, HashSet};

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use super::client::Context;
use super::produce::{self, Outgoing};
use crate::store::{OutboxMessage, StoreError, Undeliverable};
use crate::transport::outbox::OutboxFeed;

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The brokers or the client failed; unacknowledged records stay unsent.
    #[error("Kafka error while relaying the outbox: {0}")]
    Kafka(#[from] KafkaError),
    /// The database failed; the batch stays unsent.
    #[error("database error while relaying the outbox: {0}")]
    Store(#[from] StoreError),
}

impl RelayError {
    /// Will relaying work again after a pause?
    pub fn is_transient(&self) -> bool {
        match self {
            RelayError::Kafka(e) => super::is_transient(e),
            RelayError::Store(e) => e.is_transient(),
        }
    }
}

/// Totals of the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Records the brokers acknowledged.
    pub sent: u64,
    /// Records moved to the failed messages (missing topic, refused record).
    pub undeliverable: u64,
}

/// Relays the outbox's rows for Kafka topics.
pub struct Relay {
    feed: OutboxFeed,
    producer: FutureProducer<Context>,
    brokers: String,
}

impl Relay {
    /// A relay of the Kafka rows of `feed`, producing with `producer` to `brokers`.
    pub fn new(feed: OutboxFeed, producer: FutureProducer<Context>, brokers: &str) -> Self {
        Self {
            feed,
            producer,
            brokers: brokers.to_owned(),
        }
    }

    /// Relay until `shutdown` (the batch in hand is finished) or a failure, adding to
    /// `report`.
    pub async fn run(
        &self,
        mut shutdown: watch::Receiver<bool>,
        report: &mut RelayReport,
    ) -> Result<(), RelayError> {
        // Topics the brokers had when last asked; asked again after a restart.
        let mut known = HashSet::new();
        while let Some(claim) = self.feed.next(&mut shutdown).await? {
            let missing = self.missing_topics(&claim.messages, &mut known).await?;
            let (sent, undeliverable) = self.produce(&claim.messages, &missing).await?;
            report.sent += sent.len() as u64;
            report.undeliverable += undeliverable.len() as u64;
            (self.feed).done(claim.hold, &sent, &undeliverable).await?;
        }
        Ok(())
    }

    /// The topics of `messages` the brokers do not have, with what to do; those they
    /// have join `known`.
    async fn missing_topics(
        &self,
        messages: &[OutboxMessage],
        known: &mut HashSet<String>,
    ) -> Result<BTreeMap<String, String>, RelayError> {
        let mut missing = BTreeMap::new();
        let asked: HashSet<&str> = (messages.iter())
            .map(|m| m.exchange.as_str())
            .filter(|t| !known.contains(*t))
            .collect();
        for topic in asked {
            if produce::topic_exists(&self.producer, topic).await? {
                known.insert(topic.to_owned());
            } else {
                let error = produce::missing_topic(topic, &self.brokers);
                missing.insert(
                    topic.to_owned(),
                    format!("{error}, then retry this message"),
                );
            }
        }
        Ok(missing)
    }

    /// Produce `messages` in order (those to `missing` topics aside) and wait for the
    /// brokers; the seqs to mark sent, and those to move to the failed messages.
    async fn produce(
        &self,
        messages: &[OutboxMessage],
        missing: &BTreeMap<String, String>,
    ) -> Result<(Vec<i64>, Vec<Undeliverable>), RelayError> {
        let mut undeliverable = Vec::new();
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(error) = missing.get(&m.exchange) {
                undeliverable.push(self.undeliverable(m, error.clone()));
                continue;
            }
            let outgoing = Outgoing {
                id: m.id,
                topic: &m.exchange,
                key: m.key.as_deref(),
                kind: &m.kind,
                headers: &m.headers,
                payload: &m.payload,
            };
            // Queued one by one, in outbox order: one key's records reach its partition
            // in the order they were published.
            match self.producer.send_result(outgoing.record()) {
                Ok(delivery) => pending.push((m, delivery)),
                Err((e, _)) => return Err(e.into()),
            }
        }
        let mut sent = Vec::with_capacity(pending.len());
        for (m, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => sent.push(m.seq),
                Ok(Err((e, _))) if produce::refused_for_good(&e) => {
                    let error = format!(
                        "the Kafka brokers refused the record for topic {}: {e}; fix what the handler publishes, then retry this message",
                        m.exchange
                    );
                    undeliverable.push(self.undeliverable(m, error));
                }
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(KafkaError::Canceled.into()),
            }
        }
        Ok((sent, undeliverable))
    }

    fn undeliverable(&self, m: &OutboxMessage, error: String) -> Undeliverable {
        tracing::warn!(
            message_id = %m.id,
            topic = m.exchange,
            "outbox message moved to the failed messages: {error}"
        );
        Undeliverable { seq: m.seq, error }
    }
}
