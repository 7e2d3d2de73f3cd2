//! How the consumed queues look on the broker, for `wharf queues` and the HTTP API:
//! messages ready, the consumers attached (0 means no host is consuming: stopped, or
//! reconnecting after the broker or the network went away) and dead letters waiting in
//! the queue's DLQ; and purging one.

use lapin::options::{QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use serde::Serialize;

use super::AmqpConfig;
use super::topology::dead_letter_queue;

/// One consumed queue on the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// Messages ready for delivery (not counting those delivered and not yet acked);
    /// `None` when the queue does not exist.
    pub ready: Option<u32>,
    /// Consumers attached, from every host.
    pub consumers: Option<u32>,
    /// Messages in the queue's dead-letter queue.
    pub dead_letters: Option<u32>,
}

/// Look up every `[[amqp.consume]]` queue (passively: nothing is declared).
pub async fn depths(amqp: &AmqpConfig) -> Result<Vec<QueueDepth>, lapin::Error> {
    let connection = Connection::connect(&amqp.url, ConnectionProperties::default()).await?;
    let mut depths = Vec::new();
    for spec in &amqp.consume {
        let queue = look_up(&connection, &spec.queue).await?;
        let dlq = look_up(&connection, &dead_letter_queue(&spec.queue)).await?;
        depths.push(QueueDepth {
            queue: spec.queue.clone(),
            ready: queue.map(|(ready, _)| ready),
            consumers: queue.map(|(_, consumers)| consumers),
            dead_letters: dlq.map(|(ready, _)| ready),
        });
    }
    let _ = connection.close(200, "looked".into()).await;
    Ok(depths)
}

/// (ready, consumers) of `queue`, `None` if it does not exist. A channel of its own: a
/// passive declare of a missing queue closes the channel.
async fn look_up(connection: &Connection, queue: &str) -> Result<Option<(u32, u32)>, lapin::Error> {
    let channel: Channel = connection.create_channel().await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = channel.close(200, "looked".into()).await;
            Ok(Some((q.message_count(), q.consumer_count())))
        }
        Err(e) if !super::is_transient(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Purge `queue` on the broker: its ready messages are deleted (those delivered and not
/// yet acked stay). Returns how many were deleted.
pub async fn purge(amqp: &AmqpConfig, queue: &str) -> Result<u32, lapin::Error> {
    let connection = Connection::connect(&amqp.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let purged = channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await;
    let _ = connection.close(200, "purged".into()).await;
    purged
}
