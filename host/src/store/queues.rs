//! Queues as the stores count them: an inbox queue's depths and oldest message, what
//! waits beyond the inbox, and the merge of a store's two counts into one row per queue.

use std::collections::BTreeMap;

use serde::Serialize;

/// Where a queue's messages come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueSource {
    /// An inbox queue (the inbox table).
    #[default]
    Inbox,
    /// A consumed AMQP queue: the store knows only its dead letters.
    Amqp,
    /// A consumed Kafka topic: the store knows only its dead letters.
    Kafka,
}

impl QueueSource {
    /// How a message's source names it: `inbox`, `amqp`, `kafka`.
    pub fn prefix(self) -> &'static str {
        match self {
            QueueSource::Inbox => "inbox",
            QueueSource::Amqp => "amqp",
            QueueSource::Kafka => "kafka",
        }
    }
}

/// Depths of one queue as the store sees them: an inbox queue's messages, and the dead
/// letters of inbox and AMQP queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Inbox or AMQP.
    pub source: QueueSource,
    /// Queue name.
    pub queue: String,
    /// Due and not claimed.
    pub pending: u64,
    /// Claimed by a worker right now.
    pub in_flight: u64,
    /// Waiting for a retry delay.
    pub scheduled: u64,
    /// Dead letters not yet retried.
    pub failed: u64,
    /// When the oldest message in the queue was enqueued (Unix ms); `None` when empty.
    pub oldest_at: Option<i64>,
}

/// Dead letters waiting for an operator, by source (`inbox:<queue>`, `amqp:<queue>`,
/// `kafka:<topic>`):
/// (source, count) rows.
pub(in crate::store) const FAILED_BY_SOURCE: &str =
    "SELECT source, COUNT(*) AS failed FROM failed_messages
     WHERE status IN ('failed', 'pending') GROUP BY source";

/// Dead letters waiting for an operator, by plugin: (plugin, count) rows.
pub(in crate::store) const FAILED_BY_PLUGIN: &str =
    "SELECT plugin, COUNT(*) AS failed FROM failed_messages
     WHERE status IN ('failed', 'pending') GROUP BY plugin ORDER BY plugin";

/// Outbox messages not yet published: one count.
pub(in crate::store) const OUTBOX_PENDING: &str =
    "SELECT COUNT(*) AS pending FROM outbox WHERE sent_at IS NULL";

/// What waits beyond the inbox queues: for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Dead letters not yet retried, by the plugin that failed them (`""`: no handler).
    pub failed_by_plugin: Vec<(String, u64)>,
    /// Outbox messages not yet published.
    pub outbox_pending: u64,
}

impl Backlog {
    /// From the rows of [`FAILED_BY_PLUGIN`] and the count of [`OUTBOX_PENDING`].
    pub(in crate::store) fn of(failed_by_plugin: Vec<(String, i64)>, outbox_pending: i64) -> Self {
        Self {
            failed_by_plugin: failed_by_plugin
                .into_iter()
                .map(|(plugin, n)| (plugin, n as u64))
                .collect(),
            outbox_pending: outbox_pending as u64,
        }
    }
}

/// An inbox queue's depths: (queue, in flight, pending, scheduled, oldest created_at).
pub(in crate::store) type Depths = (String, i64, i64, i64, i64);

/// Merge a store's two counts into [`QueueStats`] per queue: the inbox's (queue, in
/// flight, pending, scheduled, oldest created_at) rows and the failed messages' (source,
/// failed).
pub(in crate::store) fn queue_stats(
    depths: impl IntoIterator<Item = Depths>,
    failed: impl IntoIterator<Item = (String, i64)>,
) -> Vec<QueueStats> {
    type Stats = BTreeMap<(QueueSource, String), QueueStats>;
    fn entry(stats: &mut Stats, source: QueueSource, queue: String) -> &mut QueueStats {
        stats
            .entry((source, queue.clone()))
            .or_insert_with(|| QueueStats {
                source,
                queue,
                ..QueueStats::default()
            })
    }
    let mut stats = Stats::new();
    for (queue, in_flight, pending, scheduled, oldest_at) in depths {
        let e = entry(&mut stats, QueueSource::Inbox, queue);
        (e.in_flight, e.pending, e.scheduled, e.oldest_at) = (
            in_flight as u64,
            pending as u64,
            scheduled as u64,
            Some(oldest_at),
        );
    }
    for (source, failed) in failed {
        let (source, queue) = match source.split_once(':') {
            Some(("amqp", queue)) => (QueueSource::Amqp, queue),
            Some(("kafka", queue)) => (QueueSource::Kafka, queue),
            Some((_, queue)) => (QueueSource::Inbox, queue),
            None => (QueueSource::Inbox, source.as_str()),
        };
        entry(&mut stats, source, queue.to_owned()).failed = failed as u64;
    }
    stats.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_count_for_the_queue_and_source_they_came_from() {
        let depths = [("orders".to_owned(), 1, 2, 3, 40)];
        let failed = [
            ("inbox:orders".to_owned(), 5),
            ("amqp:orders".to_owned(), 7),
            ("inbox:audit".to_owned(), 1),
            ("kafka:orders".to_owned(), 2),
        ];
        let stats = queue_stats(depths, failed);
        let row = |source, queue: &str| {
            stats
                .iter()
                .find(|q| q.source == source && q.queue == queue)
                .cloned()
                .unwrap()
        };
        let orders = row(QueueSource::Inbox, "orders");
        assert_eq!(
            (
                orders.in_flight,
                orders.pending,
                orders.scheduled,
                orders.failed
            ),
            (1, 2, 3, 5)
        );
        assert_eq!(orders.oldest_at, Some(40));
        let amqp = row(QueueSource::Amqp, "orders");
        assert_eq!((amqp.pending, amqp.failed, amqp.oldest_at), (0, 7, None));
        assert_eq!(row(QueueSource::Inbox, "audit").failed, 1);
        assert_eq!(row(QueueSource::Kafka, "orders").failed, 2);
        assert_eq!(stats.len(), 4);
    }
}
