//! What a Kafka consumer keeps of a batch of records: reading them into envelopes
//! (refusals, a message twice, the keys' turn), whether one may have been handed out
//! before, and committing the offsets after it.

use std::collections::BTreeMap;

use rdkafka::Offset;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{Records, Topic};
use crate::transport::broker::order::Moved;
use crate::transport::broker::{self, Read};
use crate::transport::kafka::record::envelope;
use crate::transport::source::Batch;

impl Topic<'_> {
    /// Read a batch of records into envelopes: refuse those that cannot be handled, count
    /// a message given twice in the batch once, and give the keyed ones their turn.
    pub(super) fn read(&self, batch: Vec<OwnedMessage>) -> Batch<Records> {
        let consumer = self.consumer;
        let max_payload = consumer.dispatcher.max_payload_bytes();
        let records = batch
            .iter()
            .map(|r| envelope(r, &consumer.spec, max_payload));
        let Read {
            mut envelopes,
            by_id,
            refused,
            duplicates,
        } = broker::read(records, &self.label);
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
    pub(super) fn commit(&self, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
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
    pub(super) fn offsets(
        &self,
        next: &BTreeMap<i32, i64>,
    ) -> Result<TopicPartitionList, KafkaError> {
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
