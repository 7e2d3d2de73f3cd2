//! Where a consumer re-publishes the deliveries it does not finish: another attempt
//! through the queue's delay queue for that delay (declared on first use; it dead-letters
//! back to the queue), or a copy to the queue's dead-letter queue. Persistent, on the consumer's
//! confirming channel; the consumer awaits the confirms before it acks.

use std::collections::HashSet;

use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};

use super::ConsumeError;
use super::delivery::{for_dead_letter, for_retry};
use super::topology::{declare_dead_letter_queue, declare_retry_queue};

/// Publishes a consumer makes besides acks: retries and dead letters.
pub(super) struct Republisher<'a> {
    channel: &'a Channel,
    queue: &'a str,
    dlq: ShortString,
    /// Delay queues already declared on this channel.
    delay_queues: HashSet<ShortString>,
}

impl<'a> Republisher<'a> {
    /// Re-publishes deliveries from `queue`, published on `channel` (in confirm mode);
    /// declares the queue's dead-letter queue.
    pub(super) async fn new(channel: &'a Channel, queue: &'a str) -> Result<Self, ConsumeError> {
        let dlq = declare_dead_letter_queue(channel, queue).await?;
        Ok(Self {
            channel,
            queue,
            dlq,
            delay_queues: HashSet::new(),
        })
    }

    /// The channel.
    pub(super) fn channel(&self) -> &Channel {
        self.channel
    }

    /// Send `delivery` to wait `delay` in its delay queue, which dead-letters it back to
    /// the queue; with `attempts` in `x-retry-count`. No delay: straight back.
    pub(super) async fn retry(
        &mut self,
        delivery: &Delivery,
        delay: std::time::Duration,
        attempts: u32,
    ) -> Result<lapin::PublisherConfirm, ConsumeError> {
        let routing_key: ShortString = if delay.is_zero() {
            self.queue.into()
        } else {
            let name: ShortString = super::topology::retry_queue(self.queue, delay).into();
            if !self.delay_queues.contains(&name) {
                declare_retry_queue(self.channel, self.queue, delay).await?;
                self.delay_queues.insert(name.clone());
            }
            name
        };
        let properties = persistent(for_retry(delivery, attempts));
        self.channel
            .basic_publish(
                "".into(),
                routing_key,
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: lapin::Error) -> ConsumeError {
        ConsumeError::Amqp {
            queue: self.queue.to_owned(),
            source,
        }
    }

    /// Send a copy of `delivery` to the dead-letter queue with the error and its origin.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: &str,
    ) -> Result<lapin::PublisherConfirm, ConsumeError> {
        let properties = persistent(for_dead_letter(delivery, error));
        self.channel
            .basic_publish(
                "".into(),
                self.dlq.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await
            .map_err(|source| self.error(source))
    }
}

/// Delivery mode 2: the broker writes the message to disk.
fn persistent(properties: BasicProperties) -> BasicProperties {
    properties.with_delivery_mode(2)
}
