//! A consumer of one AMQP queue: take a batch of deliveries, skip the plugins the ledger
//! says already settled each message (a redelivery after a lost ack), dispatch, settle
//! the batch in ONE database transaction, then publish retries to their delay queues
//! and dead letters to the queue's DLQ (with publisher confirms), and only then ack the
//! whole batch with `multiple=true`. A crash anywhere before the ack redelivers the
//! batch; what was committed is found in the ledger and not run again. While a batch
//! settles, the next one already buffered is looked up and handled; acks stay in
//! delivery order. As a bridge
//! (`to_inbox`), the batch is inserted into an inbox queue instead of handled, and acked
//! once the insert committed.

mod handle;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use tokio::sync::watch;
use uuid::Uuid;

use super::delivery::envelope;
use super::republish::Republisher;
use super::{AmqpConfig, ConsumeError, ConsumeSpec};
use crate::dispatch::{Delays, Dispatcher};
use crate::store::{Delivered, NextAttempt, PluginRuns, Settlement, Store, add_runs};
use crate::trace;
use handle::needs_database;

/// Totals of one consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Deliveries acked.
    pub acked: u64,
    /// Messages sent to a delay queue.
    pub retried: u64,
    /// Messages sent to the dead-letter queue.
    pub dead: u64,
    /// Deliveries of messages already settled (a redelivery after a lost ack, or a
    /// duplicate), found in the ledger before the handlers ran (nothing ran) or while
    /// settling (what ran was not written).
    pub duplicates: u64,
    /// Handler runs and stale reads of the settled batches, by plugin.
    pub plugins: BTreeMap<String, PluginRuns>,
}

impl std::ops::AddAssign for ConsumeReport {
    fn add_assign(&mut self, other: Self) {
        self.acked += other.acked;
        self.retried += other.retried;
        self.dead += other.dead;
        self.duplicates += other.duplicates;
        add_runs(&mut self.plugins, other.plugins);
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

    /// Consume until `shutdown` turns true (the batch in hand is finished and acked) or
    /// the channel fails, adding to `report`. The channel is closed either way: the
    /// broker requeues whatever it delivered that was not acked.
    pub async fn run(
        &self,
        connection: &Connection,
        shutdown: watch::Receiver<bool>,
        report: &mut ConsumeReport,
    ) -> Result<(), ConsumeError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(self.amqp_error())?;
        let result = self.consume(&channel, shutdown, report).await;
        if channel.status().connected() {
            // Best effort: a channel that cannot be closed goes with its connection.
            let _ = channel.close(200, "consumer stopped".into()).await;
        }
        result
    }

    async fn consume(
        &self,
        channel: &Channel,
        mut shutdown: watch::Receiver<bool>,
        report: &mut ConsumeReport,
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
        let mut deliveries = channel
            .basic_consume(
                self.spec.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(&err)?;
        let mut republisher = Republisher::new(channel, &self.spec.queue).await?;
        // Pipelined: while one batch settles, the next one (already buffered) is looked
        // up and handled. Acks stay in order: a batch is acked only after the one before.
        let mut pending: Option<Prepared> = None;
        loop {
            let Some(current) = pending.take() else {
                let first = tokio::select! {
                    next = deliveries.next() => next,
                    _ = shutdown.changed() => return Ok(()),
                };
                let mut batch = vec![
                    first
                        .ok_or_else(|| ConsumeError::Cancelled(self.spec.queue.clone()))?
                        .map_err(&err)?,
                ];
                self.take_buffered(&mut deliveries, &mut batch)?;
                pending = Some(self.prepare(batch).await?);
                continue;
            };
            let mut next = Vec::new();
            if !*shutdown.borrow() {
                self.take_buffered(&mut deliveries, &mut next)?;
            }
            if next.is_empty() {
                self.finish(&mut republisher, current, report).await?;
            } else {
                let (finished, prepared) = tokio::join!(
                    self.finish(&mut republisher, current, report),
                    self.prepare(next)
                );
                finished?;
                pending = Some(prepared?);
            }
            if pending.is_none() && *shutdown.borrow() {
                return Ok(());
            }
        }
    }

    /// Add the deliveries already buffered to `batch`, up to `amqp.batch_size`.
    fn take_buffered(
        &self,
        deliveries: &mut lapin::Consumer,
        batch: &mut Vec<Delivery>,
    ) -> Result<(), ConsumeError> {
        while batch.len() < self.amqp.batch_size {
            match deliveries.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery.map_err(self.amqp_error())?),
                _ => break,
            }
        }
        Ok(())
    }

    /// Read the batch, look it up in the ledger and run its handlers (or, as a bridge,
    /// insert it into the inbox).
    async fn prepare(&self, batch: Vec<Delivery>) -> Result<Prepared, ConsumeError> {
        let store_error = |source| ConsumeError::Store {
            queue: self.spec.queue.clone(),
            source,
        };
        let received = SystemTime::now();
        let mut duplicates = 0;
        let mut refused = Vec::new();
        let mut envelopes = Vec::with_capacity(batch.len());
        let mut by_id: HashMap<Uuid, (usize, u32)> = HashMap::with_capacity(batch.len());
        for (i, delivery) in batch.iter().enumerate() {
            let (message, refusal) = envelope(
                delivery,
                &self.spec,
                self.amqp.missing_message_id,
                self.dispatcher.max_payload_bytes(),
            );
            if by_id.insert(message.id, (i, message.attempts)).is_some() {
                // The same message twice in one batch: the first one settles it.
                tracing::debug!(message_id = %message.id, "duplicate delivery in one batch; acked with it");
                duplicates += 1;
                continue;
            }
            match refusal {
                Some(reason) => {
                    tracing::warn!(message_id = %message.id, queue = self.spec.queue, "{reason}");
                    refused.push(Settlement {
                        message,
                        results: Vec::new(),
                        refused: Some(reason),
                    });
                }
                None => envelopes.push(message),
            }
        }
        trace::start_missing(&mut envelopes);
        trace::batch_span("wharf.claim", received, &envelopes, Vec::new);
        let mut settlements = match &self.spec.to_inbox {
            Some(inbox) => {
                duplicates += self.bridge(envelopes, inbox).await.map_err(store_error)?;
                Vec::new()
            }
            None => {
                // Only a redelivery or a retry can have been settled already (`handle`).
                let seen =
                    batch.iter().any(|d| d.redelivered) || envelopes.iter().any(|m| m.attempts > 0);
                let (settlements, ran_nothing) =
                    self.handle(envelopes, seen).await.map_err(store_error)?;
                duplicates += ran_nothing;
                settlements
            }
        };
        settlements.extend(refused);
        if !self.amqp.ledger {
            // Handled with no effects: nothing to write, retry or dead-letter; only acked.
            settlements.retain(needs_database);
        }
        Ok(Prepared {
            batch,
            by_id,
            settlements,
            duplicates,
        })
    }

    /// Settle a prepared batch, publish its retries and dead letters, ack it.
    async fn finish(
        &self,
        republisher: &mut Republisher<'_>,
        prepared: Prepared,
        report: &mut ConsumeReport,
    ) -> Result<(), ConsumeError> {
        let Prepared {
            batch,
            by_id,
            mut settlements,
            duplicates,
        } = prepared;
        let store_error = |source| ConsumeError::Store {
            queue: self.spec.queue.clone(),
            source,
        };
        let last_tag = batch.last().expect("a batch is never empty").delivery_tag;
        report.duplicates += duplicates;
        let Delivered {
            summary,
            try_again,
            dead,
        } = if settlements.is_empty() {
            Delivered::default()
        } else {
            let settling = SystemTime::now();
            let delivered = self
                .store
                .settle_delivered(
                    &mut settlements,
                    &self.dispatcher.settle_runner(Delays::Exact),
                )
                .await
                .map_err(store_error)?;
            let messages = settlements.iter().map(|s| &s.message);
            trace::batch_span("wharf.settle", settling, messages, || {
                trace::settle_attributes(&delivered.summary)
            });
            self.dispatcher.observe(&settlements, &delivered.summary);
            delivered
        };
        report.duplicates += summary.duplicates;
        let source = format!("amqp:{}", self.spec.queue);
        crate::metrics::dedup_skipped(&source, duplicates);
        crate::metrics::settled(&source, &summary);
        add_runs(&mut report.plugins, summary.plugins);
        let mut confirms = Vec::new();
        for NextAttempt { id, delay, counts } in &try_again {
            let (i, attempts) = by_id[id];
            let attempts = attempts + u32::from(*counts);
            confirms.push(republisher.retry(&batch[i], *delay, attempts).await?);
            report.retried += 1;
        }
        for (id, error) in &dead {
            confirms.push(republisher.dead_letter(&batch[by_id[id].0], error).await?);
            report.dead += 1;
        }
        for confirm in confirms {
            match confirm.await.map_err(self.amqp_error())? {
                Confirmation::Ack(_) | Confirmation::NotRequested => {}
                Confirmation::Nack(_) => {
                    return Err(ConsumeError::Refused {
                        queue: self.spec.queue.clone(),
                        what: "retry or dead letter",
                    });
                }
            }
        }
        republisher
            .channel()
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
            .map_err(self.amqp_error())?;
        report.acked += batch.len() as u64;
        Ok(())
    }
}

/// A batch read and handled, waiting to be settled and acked.
struct Prepared {
    batch: Vec<Delivery>,
    /// Index in `batch` of each message id's delivery, and its attempts so far.
    by_id: HashMap<Uuid, (usize, u32)>,
    settlements: Vec<Settlement>,
    /// Deliveries of messages already settled, found so far.
    duplicates: u64,
}
