//! A consumer of one AMQP queue, as a [`Source`] driven by the [`pump`]: take a batch of
//! deliveries, skip the plugins the ledger says already settled each message (a
//! redelivery after a lost ack), dispatch, settle the batch in ONE database transaction,
//! then publish retries to their delay queues and dead letters to the queue's DLQ (with
//! publisher confirms), and only then ack the whole batch with `multiple=true`. A crash
//! anywhere before the ack redelivers the batch; what was committed is found in the
//! ledger and not run again. Pipelined: while a batch settles, the next one already
//! buffered is looked up and handled; acks stay in delivery order. As a bridge
//! (`to_inbox`), the batch is inserted into an inbox queue instead of handled, and acked
//! once the insert committed. An ordered consumer keeps each key's order (`order`).

mod bridge;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use super::delivery::envelope;
use super::republish::Republisher;
use super::{AmqpConfig, ConsumeError, ConsumeSpec};
use crate::dispatch::Dispatcher;
use crate::settle::{Delivered, NextAttempt};
use crate::store::{SettleSummary, Settlement, Store, StoreError};
use crate::transport::broker::order::{Keys, Moved, Parking, Turn};
use crate::transport::broker::{self, Read, needs_database};
use crate::transport::pump::{self, Progress};
use crate::transport::source::{Batch, Source, SourceError};

impl SourceError for ConsumeError {
    fn is_transient(&self) -> bool {
        ConsumeError::is_transient(self)
    }
}

/// One consumer of `spec.queue` on its own channel.
pub struct Consumer {
    spec: ConsumeSpec,
    amqp: AmqpConfig,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
}

impl Consumer {
    /// A consumer of `spec.queue`.
    pub fn new(
        spec: ConsumeSpec,
        amqp: AmqpConfig,
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        Self {
            spec,
            amqp,
            store,
            dispatcher,
        }
    }

    fn amqp_error(&self) -> impl Fn(lapin::Error) -> ConsumeError + '_ {
        |source| ConsumeError::Amqp {
            queue: self.spec.queue.clone(),
            source,
        }
    }

    /// The inbox queue of the consumed queue's name, where an ordered consumer's keys wait.
    fn parking(&self) -> Parking<'_> {
        Parking {
            store: &*self.store,
            queue: &self.spec.queue,
        }
    }

    fn store_error(&self) -> impl Fn(StoreError) -> ConsumeError + '_ {
        |source| ConsumeError::Store {
            queue: self.spec.queue.clone(),
            source,
        }
    }

    /// Consume until `shutdown` turns true (the batch in hand is finished and acked) or
    /// the channel fails, adding to `progress`. The channel is closed either way: the
    /// broker requeues whatever it delivered that was not acked.
    pub async fn run(
        &self,
        connection: &Connection,
        shutdown: watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<(), ConsumeError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(self.amqp_error())?;
        let result = self.consume(&channel, shutdown, progress).await;
        if channel.status().connected() {
            // Best effort: a channel that cannot be closed goes with its connection.
            let _ = channel.close(200, "consumer stopped".into()).await;
        }
        result
    }

    async fn consume(
        &self,
        channel: &Channel,
        shutdown: watch::Receiver<bool>,
        progress: &Progress,
    ) -> Result<(), ConsumeError> {
        let err = self.amqp_error();
        channel
            .basic_qos(self.spec.prefetch, BasicQosOptions::default())
            .await
            .map_err(&err)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(&err)?;
        let deliveries = channel
            .basic_consume(
                self.spec.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(&err)?;
        let republisher = Republisher::new(channel, &self.spec.queue).await?;
        let queue = Queue {
            consumer: self,
            label: format!("amqp:{}", self.spec.queue),
            deliveries: Mutex::new((deliveries, None)),
            republisher: Mutex::new(republisher),
            keys: self.spec.ordered.then(Keys::default),
        };
        pump::run(&queue, &self.dispatcher, shutdown, progress).await
    }
}

/// The queue a consumer takes its batches from, on the consumer's channel.
struct Queue<'a> {
    consumer: &'a Consumer,
    /// `amqp:<queue>`.
    label: String,
    /// The deliveries, and the one [`Source::wait`] received first.
    deliveries: Mutex<(lapin::Consumer, Option<Delivery>)>,
    republisher: Mutex<Republisher<'a>>,
    /// An ordered consumer's batches and keys.
    keys: Option<Keys>,
}

/// A batch of deliveries taken, not acked yet.
struct Deliveries {
    batch: Vec<Delivery>,
    /// Index in `batch` of each message id's delivery, and its attempts so far.
    by_id: HashMap<Uuid, (usize, u32)>,
    /// Deliveries refused before any plugin ran (unreadable, oversize).
    refused: Vec<Settlement>,
    /// Deliveries of messages already settled, found so far.
    duplicates: u64,
    /// An ordered consumer's: the batch's turn, and what it moves into the inbox.
    order: Option<(Turn, Moved)>,
}

impl Source for Queue<'_> {
    type Held = Deliveries;
    type Error = ConsumeError;
    /// What the failed batch held is unacked: only closing the channel returns it to the
    /// queue, so the supervisor starts the consumer again on a new one.
    const GOES_ON_AFTER_ERROR: bool = false;
    const PIPELINED: bool = true;

    fn label(&self) -> &str {
        &self.label
    }

    fn batch_size(&self) -> u32 {
        u32::try_from(self.consumer.amqp.batch_size).unwrap_or(u32::MAX)
    }

    async fn take(&self, limit: u32) -> Result<Option<Batch<Deliveries>>, ConsumeError> {
        let mut batch = Vec::new();
        {
            let (deliveries, first) = &mut *self.deliveries.lock().await;
            batch.extend(first.take());
            while batch.len() < limit as usize {
                match deliveries.next().now_or_never() {
                    Some(Some(delivery)) => {
                        batch.push(delivery.map_err(self.consumer.amqp_error())?)
                    }
                    _ => break,
                }
            }
        }
        Ok((!batch.is_empty()).then(|| {
            let mut batch = self.consumer.read(batch);
            if let Some(keys) = &self.keys {
                let turn = keys.take(&mut batch.messages);
                batch.held.order = Some((turn, Moved::default()));
            }
            batch
        }))
    }

    async fn wait(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ConsumeError> {
        let (deliveries, first) = &mut *self.deliveries.lock().await;
        if first.is_some() {
            return Ok(());
        }
        let next = tokio::select! {
            next = deliveries.next() => next,
            _ = shutdown.changed() => return Ok(()),
        };
        let queue = &self.consumer.spec.queue;
        *first = Some(
            next.ok_or_else(|| ConsumeError::Cancelled(queue.clone()))?
                .map_err(self.consumer.amqp_error())?,
        );
        Ok(())
    }

    async fn handle(
        &self,
        batch: &mut Batch<Deliveries>,
        dispatcher: &Dispatcher,
    ) -> Result<Vec<Settlement>, ConsumeError> {
        let consumer = self.consumer;
        let envelopes = std::mem::take(&mut batch.messages);
        let held = &mut batch.held;
        let mut settlements = match &consumer.spec.to_inbox {
            Some(inbox) => {
                held.duplicates += consumer
                    .bridge(envelopes, inbox)
                    .await
                    .map_err(consumer.store_error())?;
                Vec::new()
            }
            None => {
                let envelopes = match (&self.keys, &mut held.order) {
                    (Some(keys), Some((turn, moved))) => consumer
                        .parking()
                        .behind_the_inbox((keys, turn), envelopes, &held.by_id, moved, dispatcher)
                        .await
                        .map_err(consumer.store_error())?,
                    _ => envelopes,
                };
                // Only a redelivery or a retry can have been settled already (`handle`).
                let seen = held.batch.iter().any(|d| d.redelivered)
                    || envelopes.iter().any(|m| m.attempts > 0);
                let store = &*consumer.store;
                let (settlements, ran_nothing) =
                    broker::handle(store, consumer.amqp.ledger, envelopes, seen, dispatcher)
                        .await
                        .map_err(consumer.store_error())?;
                held.duplicates += ran_nothing;
                settlements
            }
        };
        settlements.append(&mut held.refused);
        if !consumer.amqp.ledger {
            // Handled with no effects: nothing to write, retry or dead-letter; only acked.
            settlements.retain(needs_database);
        }
        Ok(settlements)
    }

    /// Settle the batch, publish its retries and dead letters, ack it.
    async fn finish(
        &self,
        held: Deliveries,
        settlements: &mut Vec<Settlement>,
        dispatcher: &Dispatcher,
    ) -> Result<SettleSummary, ConsumeError> {
        let consumer = self.consumer;
        let Deliveries {
            batch,
            by_id,
            duplicates,
            order,
            ..
        } = held;
        let last_tag = batch.last().expect("a batch is never empty").delivery_tag;
        let Delivered {
            summary,
            try_again,
            dead,
        } = broker::settle(&*consumer.store, settlements, duplicates, dispatcher)
            .await
            .map_err(consumer.store_error())?;
        let moved = match order {
            Some((_turn, moved)) => {
                let later: Vec<&NextAttempt> = try_again.iter().filter(|a| a.to_inbox).collect();
                consumer
                    .parking()
                    .move_to_inbox(moved, &later, settlements, &by_id)
                    .await
                    .map_err(consumer.store_error())?
            }
            None => Default::default(),
        };
        let mut republisher = self.republisher.lock().await;
        let mut confirms = Vec::new();
        let back = try_again.iter().filter(|a| !moved.contains(&a.id));
        for NextAttempt {
            id, delay, counts, ..
        } in back
        {
            let (i, attempts) = by_id[id];
            let attempts = attempts + u32::from(*counts);
            confirms.push(republisher.retry(&batch[i], *delay, attempts).await?);
        }
        for (id, error) in &dead {
            confirms.push(republisher.dead_letter(&batch[by_id[id].0], error).await?);
        }
        for confirm in confirms {
            match confirm.await.map_err(consumer.amqp_error())? {
                Confirmation::Ack(_) | Confirmation::NotRequested => {}
                Confirmation::Nack(_) => {
                    return Err(ConsumeError::Refused {
                        queue: consumer.spec.queue.clone(),
                        what: "retry or dead letter",
                    });
                }
            }
        }
        republisher
            .channel()
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
            .map_err(consumer.amqp_error())?;
        Ok(summary)
    }
}

impl Consumer {
    /// Read a batch of deliveries into envelopes: refuse those that cannot be handled,
    /// and count a message delivered twice in the batch once.
    fn read(&self, batch: Vec<Delivery>) -> Batch<Deliveries> {
        let deliveries = batch.iter().map(|delivery| {
            envelope(
                delivery,
                &self.spec,
                self.amqp.missing_message_id,
                self.dispatcher.max_payload_bytes(),
            )
        });
        let Read {
            envelopes,
            by_id,
            refused,
            duplicates,
        } = broker::read(deliveries, &format!("amqp:{}", self.spec.queue));
        Batch {
            messages: envelopes,
            taken: batch.len() as u64,
            held: Deliveries {
                batch,
                by_id,
                refused,
                duplicates,
                order: None,
            },
        }
    }
}
