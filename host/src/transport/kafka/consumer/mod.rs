//! A consumer of one Kafka topic in the fleet's group, as a [`Source`] driven by the
//! [`pump`]: take a batch of records from the partitions this host owns, give its keyed
//! records their turn (a key's records run in offset order), send the keys waiting in the
//! inbox queue of the topic's name there, run the handlers (skipping, for records that
//! may have been settled before, the plugins the ledger lists), settle the batch in ONE
//! database transaction (dead letters go to the outbox for the dead-letter topic there),
//! move the records that need another attempt (and their keys' later ones) into that
//! inbox queue, and only then commit the batch's offsets. A crash or a rebalance anywhere before the commit
//! hands the records out again; what was committed is found in the ledger. Pipelined:
//! the next batch runs while one is being finished; commits stay in offset order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use super::client::{self, Context, KafkaLink, Lags};
use super::dead_letters;
use super::{ConsumeError, KafkaConfig, TopicSpec};
use crate::dispatch::Dispatcher;
use crate::settle::{Delivered, NextAttempt};
use crate::store::{SettleSummary, Settlement, Store, StoreError};
use crate::transport::broker::order::{Keys, Moved, Parking, Turn};
use crate::transport::broker::{self, needs_database};
use crate::transport::pump::{self, Progress};
use crate::transport::source::{Batch, Source, SourceError};

mod records;

impl SourceError for ConsumeError {
    fn is_transient(&self) -> bool {
        ConsumeError::is_transient(self)
    }
}

/// How long reading the topic's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// One consumer of `spec.topic`.
pub struct Consumer {
    spec: TopicSpec,
    config: KafkaConfig,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
    link: KafkaLink,
    lags: Lags,
}

impl Consumer {
    /// A consumer of `spec.topic`, reporting to `link` and `lags`.
    pub fn new(
        spec: TopicSpec,
        config: KafkaConfig,
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        (link, lags): (KafkaLink, Lags),
    ) -> Self {
        Self {
            spec,
            config,
            store,
            dispatcher,
            link,
            lags,
        }
    }

    fn kafka_error(&self) -> impl Fn(KafkaError) -> ConsumeError + '_ {
        |source| ConsumeError::Kafka {
            topic: self.spec.topic.clone(),
            source,
        }
    }

    fn store_error(&self) -> impl Fn(StoreError) -> ConsumeError + '_ {
        |source| ConsumeError::Store {
            topic: self.spec.topic.clone(),
            source,
        }
    }

    /// Join the group and consume until `shutdown` turns true (the batch in hand is
    /// finished and committed) or the consumer fails, adding to `progress`. The consumer
    /// leaves the group either way: its partitions go to the other hosts, from the
    /// offsets committed.
    pub async fn run(
        &self,
        shutdown: watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<(), ConsumeError> {
        let err = self.kafka_error();
        let kafka = Arc::new(
            client::consumer(&self.config, &self.spec, &self.link, &self.lags).map_err(&err)?,
        );
        let partitions = self.partitions(&kafka).await?;
        dead_letters::create(&self.config, &self.spec, partitions).await?;
        kafka.subscribe(&[&self.spec.topic]).map_err(&err)?;
        let topic = Topic {
            consumer: self,
            kafka: &kafka,
            label: format!("kafka:{}", self.spec.topic),
            first: Mutex::new(None),
            taken_up_to: std::sync::Mutex::new(HashMap::new()),
            committed: std::sync::Mutex::new(BTreeMap::new()),
            keys: Keys::default(),
        };
        let consumed = pump::run(&topic, &self.dispatcher, shutdown, progress).await;
        // The last batches' commits went out asynchronously: commit the same offsets
        // again, waiting, before leaving the group.
        let committed = topic.offsets(&topic.committed.lock().expect("no panic holds the offsets"));
        if let Ok(offsets) = committed.map_err(&err)
            && offsets.count() > 0
        {
            let last = kafka.clone();
            let flushed =
                tokio::task::spawn_blocking(move || last.commit(&offsets, CommitMode::Sync));
            if let Ok(Err(e)) = flushed.await {
                tracing::debug!(
                    topic = self.spec.topic,
                    "last Kafka offset commit on leaving: {e}"
                );
            }
        }
        consumed
    }

    /// The topic's partitions, from the brokers' metadata; a topic they do not know is
    /// an error for the operator.
    async fn partitions(&self, kafka: &Arc<StreamConsumer<Context>>) -> Result<i32, ConsumeError> {
        let kafka = kafka.clone();
        let topic = self.spec.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            kafka.fetch_metadata(Some(&topic), METADATA_TIMEOUT)
        })
        .await
        .expect("reading metadata does not panic")
        .map_err(self.kafka_error())?;
        let known = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.spec.topic);
        match known {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as i32)
            }
            _ => Err(ConsumeError::MissingTopic {
                topic: self.spec.topic.clone(),
                brokers: self.config.brokers.clone(),
            }),
        }
    }

    /// The inbox queue of the topic's name, where records that need another attempt and
    /// their keys' later records wait.
    fn parking(&self) -> Parking<'_> {
        Parking {
            store: &*self.store,
            queue: &self.spec.topic,
        }
    }
}

/// The topic a consumer takes its batches from.
struct Topic<'a> {
    consumer: &'a Consumer,
    kafka: &'a StreamConsumer<Context>,
    /// `kafka:<topic>`.
    label: String,
    /// The record [`Source::wait`] received first.
    first: Mutex<Option<OwnedMessage>>,
    /// The offset after the last record taken, by partition: a record that does not
    /// follow on from it may have been handed out (and settled) before.
    taken_up_to: std::sync::Mutex<HashMap<i32, i64>>,
    /// The offsets committed, by partition.
    committed: std::sync::Mutex<BTreeMap<i32, i64>>,
    keys: Keys,
}

/// A batch of records taken, not committed yet.
struct Records {
    batch: Vec<OwnedMessage>,
    /// Index in `batch` of each message id's record (and 0 attempts).
    by_id: HashMap<Uuid, (usize, u32)>,
    /// Records refused before any plugin ran.
    refused: Vec<Settlement>,
    /// Records of messages already settled, found so far.
    duplicates: u64,
    /// Whether a record may have been handed out before (after a restart or rebalance).
    seen: bool,
    /// The batch's turn among the consumer's batches, and what it moves into the inbox.
    turn: Turn,
    moved: Moved,
}

impl Source for Topic<'_> {
    type Held = Records;
    type Error = ConsumeError;
    /// The consumer has read past the failed batch: only a consumer that joins again
    /// reads it again (from the offsets committed), so the supervisor starts a new one.
    const GOES_ON_AFTER_ERROR: bool = false;
    const PIPELINED: bool = true;

    fn label(&self) -> &str {
        &self.label
    }

    fn batch_size(&self) -> u32 {
        u32::try_from(self.consumer.config.batch_size).unwrap_or(u32::MAX)
    }

    async fn take(&self, limit: u32) -> Result<Option<Batch<Records>>, ConsumeError> {
        let mut batch = Vec::new();
        batch.extend(self.first.lock().await.take());
        while batch.len() < limit as usize {
            match self.kafka.recv().now_or_never() {
                Some(record) => batch.push(record.map_err(self.consumer.kafka_error())?.detach()),
                None => break,
            }
        }
        Ok((!batch.is_empty()).then(|| self.read(batch)))
    }

    async fn wait(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ConsumeError> {
        let mut first = self.first.lock().await;
        if first.is_some() {
            return Ok(());
        }
        let record = tokio::select! {
            record = self.kafka.recv() => record,
            _ = shutdown.changed() => return Ok(()),
        };
        *first = Some(record.map_err(self.consumer.kafka_error())?.detach());
        Ok(())
    }

    async fn handle(
        &self,
        batch: &mut Batch<Records>,
        dispatcher: &Dispatcher,
    ) -> Result<Vec<Settlement>, ConsumeError> {
        let consumer = self.consumer;
        let held = &mut batch.held;
        let envelopes = std::mem::take(&mut batch.messages);
        let envelopes = (consumer.parking())
            .behind_the_inbox(
                (&self.keys, &held.turn),
                envelopes,
                &held.by_id,
                &mut held.moved,
                dispatcher,
            )
            .await
            .map_err(consumer.store_error())?;
        let store = &*consumer.store;
        let ledger = consumer.config.ledger;
        let (mut settlements, ran_nothing) =
            broker::handle(store, ledger, envelopes, held.seen, dispatcher)
                .await
                .map_err(consumer.store_error())?;
        held.duplicates += ran_nothing;
        settlements.append(&mut held.refused);
        if !ledger {
            // Handled with no effects: nothing to write, retry or dead-letter; committed.
            settlements.retain(needs_database);
        }
        Ok(settlements)
    }

    /// Settle the batch (its dead letters go to the outbox for the dead-letter topic),
    /// move what needs another attempt into the inbox, commit its offsets.
    async fn finish(
        &self,
        held: Records,
        settlements: &mut Vec<Settlement>,
        dispatcher: &Dispatcher,
    ) -> Result<SettleSummary, ConsumeError> {
        let consumer = self.consumer;
        let Records {
            batch,
            by_id,
            duplicates,
            moved,
            ..
        } = held;
        let Delivered {
            summary, try_again, ..
        } = broker::settle(&*consumer.store, settlements, duplicates, dispatcher)
            .await
            .map_err(consumer.store_error())?;
        // Kafka has no delay queues: every record that needs another attempt waits in the
        // inbox, in its key's order.
        let later: Vec<&NextAttempt> = try_again.iter().collect();
        (consumer.parking())
            .move_to_inbox(moved, &later, settlements, &by_id)
            .await
            .map_err(consumer.store_error())?;
        self.commit(&batch).map_err(consumer.kafka_error())?;
        Ok(summary)
    }
}
