//! A consumer of one Kafka topic in the fleet's group, as a [`Source`] driven by the
//! [`pump`]: take a batch of records from the partitions this host owns, give its keyed
//! records their turn (a key's records run in offset order), send the keys waiting in the
//! inbox queue of the topic's name there, run the handlers (skipping, for records that
//! may have been settled before, the plugins the ledger lists), settle the batch in ONE
//! database transaction, move the records that need another attempt (and their keys'
//! later ones) into that inbox queue, send dead letters to the dead-letter topic, and only
//! then commit the batch's offsets. A crash or a rebalance anywhere before the commit
//! hands the records out again; what was committed is found in the ledger. Pipelined:
//! the next batch runs while one is being finished; commits stay in offset order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::Offset;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use super::client::{self, Context, KafkaLink, Lags};
use super::dead_letters::DeadLetters;
use super::record::envelope;
use super::{ConsumeError, KafkaConfig, TopicSpec};
use crate::dispatch::{Delays, Dispatcher};
use crate::settle::{self, Delivered};
use crate::store::{SettleSummary, Settlement, Store, StoreError};
use crate::transport::broker::order::{Keys, Moved, Parking, Turn};
use crate::transport::broker::{self, needs_database};
use crate::transport::pump::{self, Progress};
use crate::transport::source::{Batch, Source, SourceError};

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
        let producer = client::producer(&self.config, &self.link, &self.lags).map_err(&err)?;
        let dead_letters = DeadLetters::new(self.spec.dead_letter_topic(), producer);
        let dead_letter_error = |source| ConsumeError::DeadLetter {
            topic: self.spec.topic.clone(),
            dead_letters: dead_letters.topic.clone(),
            source,
        };
        (dead_letters.create(&self.config, partitions).await).map_err(dead_letter_error)?;
        kafka.subscribe(&[&self.spec.topic]).map_err(&err)?;
        let topic = Topic {
            consumer: self,
            kafka: &kafka,
            label: format!("kafka:{}", self.spec.topic),
            first: Mutex::new(None),
            taken_up_to: std::sync::Mutex::new(HashMap::new()),
            committed: std::sync::Mutex::new(BTreeMap::new()),
            keys: Keys::default(),
            dead_letters,
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
    dead_letters: DeadLetters,
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
                &self.keys,
                &held.turn,
                envelopes,
                &held.by_id,
                &mut held.moved,
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

    /// Settle the batch, move what needs another attempt into the inbox, send its dead
    /// letters, commit its offsets.
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
            mut summary,
            try_again,
            dead,
        } = if settlements.is_empty() {
            Delivered::default()
        } else {
            settle::delivered(&*consumer.store, settlements, dispatcher, Delays::Exact)
                .await
                .map_err(consumer.store_error())?
        };
        summary.duplicates += duplicates;
        // Kafka has no delay queues: every record that needs another attempt waits in the
        // inbox, in its key's order.
        let later: HashSet<Uuid> = try_again.iter().map(|a| a.id).collect();
        (consumer.parking())
            .move_to_inbox(moved, later, settlements, &by_id)
            .await
            .map_err(consumer.store_error())?;
        let dead: Vec<(&OwnedMessage, &str)> = (dead.iter())
            .map(|(id, error)| (&batch[by_id[id].0], error.as_str()))
            .collect();
        if !dead.is_empty() {
            self.dead_letters
                .send(&dead)
                .await
                .map_err(|source| ConsumeError::DeadLetter {
                    topic: consumer.spec.topic.clone(),
                    dead_letters: self.dead_letters.topic.clone(),
                    source,
                })?;
        }
        self.commit(&batch).map_err(consumer.kafka_error())?;
        Ok(summary)
    }
}

impl Topic<'_> {
    /// Read a batch of records into envelopes: refuse those that cannot be handled, count
    /// a message given twice in the batch once, and give the keyed ones their turn.
    fn read(&self, batch: Vec<OwnedMessage>) -> Batch<Records> {
        let consumer = self.consumer;
        let max_payload = consumer.dispatcher.max_payload_bytes();
        let mut duplicates = 0;
        let mut refused = Vec::new();
        let mut envelopes = Vec::with_capacity(batch.len());
        let mut by_id: HashMap<Uuid, (usize, u32)> = HashMap::with_capacity(batch.len());
        for (i, record) in batch.iter().enumerate() {
            let (message, refusal) = envelope(record, &consumer.spec, max_payload);
            if by_id.insert(message.id, (i, 0)).is_some() {
                tracing::debug!(message_id = %message.id, "a message twice in one batch; committed with it");
                duplicates += 1;
                continue;
            }
            match refusal {
                Some(reason) => {
                    tracing::warn!(message_id = %message.id, topic = consumer.spec.topic, "{reason}");
                    refused.push(Settlement {
                        message,
                        results: Vec::new(),
                        refused: Some(reason),
                    });
                }
                None => envelopes.push(message),
            }
        }
        let seen = self.seen(&batch);
        let turn = self.keys.take(&mut envelopes);
        Batch {
            messages: envelopes,
            taken: batch.len() as u64,
            held: Records {
                batch,
                by_id,
                refused,
                duplicates,
                seen,
                turn,
                moved: Moved::default(),
            },
        }
    }

    /// Whether a record of `batch` may have been handed out before: the first of its
    /// partition does not follow on from the last one taken (this consumer just got the
    /// partition, or got it back after another host had it). Notes where each partition
    /// is up to.
    fn seen(&self, batch: &[OwnedMessage]) -> bool {
        let mut taken_up_to = self.taken_up_to.lock().expect("no panic holds the offsets");
        let mut seen = false;
        for record in batch {
            let next = taken_up_to.insert(record.partition(), record.offset() + 1);
            seen |= next != Some(record.offset());
        }
        seen
    }

    /// Commit, after the settle, the offset after each partition's last record of
    /// `batch`, for the partitions this host still owns: a revoked one's next owner
    /// reads it from the group's last commit, and the ledger skips what was settled.
    fn commit(&self, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for record in batch {
            let at = next.entry(record.partition()).or_default();
            *at = (*at).max(record.offset() + 1);
        }
        let offsets = self.offsets(&next)?;
        if offsets.count() > 0 {
            self.kafka.commit(&offsets, CommitMode::Async)?;
            let mut committed = self.committed.lock().expect("no panic holds the offsets");
            committed.extend(next);
        }
        Ok(())
    }

    /// `next` (offset by partition) as a list, without the partitions this host does not
    /// own now.
    fn offsets(&self, next: &BTreeMap<i32, i64>) -> Result<TopicPartitionList, KafkaError> {
        let owned = self.kafka.assignment()?;
        let topic = &self.consumer.spec.topic;
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in next {
            if owned.find_partition(topic, partition).is_some() {
                offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
            }
        }
        Ok(offsets)
    }
}
