//! What the outbox relays (AMQP, Kafka) share: the next batch of their transport's rows,
//! oldest first, waiting while there are none (until the poll interval passes or this
//! host's settle wrote to the outbox), and settling a batch once sent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::store::{Hold, Outbox, OutboxClaim, StoreError, Transport, Undeliverable};

/// The rows of one transport's outbox, batch by batch.
pub struct OutboxFeed {
    store: Arc<dyn Outbox>,
    transport: Transport,
    batch_size: u32,
    poll: Duration,
    wake: Arc<Notify>,
}

impl OutboxFeed {
    /// `transport`'s rows of `store`, `batch_size` at a time, looked for every `poll`
    /// while there are none, or at once when `wake` is notified.
    pub fn new(
        store: Arc<dyn Outbox>,
        transport: Transport,
        batch_size: u32,
        poll: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            transport,
            batch_size,
            poll,
            wake,
        }
    }

    /// The next batch, once there is one; `None` when `shutdown` turned true.
    pub async fn next(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<OutboxClaim>, StoreError> {
        while !*shutdown.borrow() {
            let claim = (self.store)
                .claim_outbox(self.transport, self.batch_size)
                .await?;
            if !claim.messages.is_empty() {
                return Ok(Some(claim));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        Ok(None)
    }

    /// Settle a batch: `sent` marked sent, `undeliverable` moved to the failed messages.
    pub async fn done(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<(), StoreError> {
        self.store.outbox_sent(hold, sent, undeliverable).await?;
        crate::metrics::outbox_published(sent.len() as u64);
        Ok(())
    }
}
