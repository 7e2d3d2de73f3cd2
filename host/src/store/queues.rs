//! Queues as the stores count them: an inbox queue's depths and oldest message, what
//! waits beyond the inbox, and the merge of a store's two counts into one row per queue.

use std::collections::BTreeMap;

use serde::Serialize;

/// Depths of one inbox queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
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

/// Dead letters waiting for an operator, by queue: (queue, count) rows.
pub(in crate::store) const FAILED_BY_QUEUE: &str =
    "SELECT queue, COUNT(*) AS failed FROM failed_messages
     WHERE status IN ('failed', 'pending') GROUP BY queue";

/// Dead letters waiting for an operator, by plugin: (plugin, count) rows.
pub(in crate::store) const FAILED_BY_PLUGIN: &str = "SELECT plugin, COUNT(*) FROM failed_messages
     WHERE status IN ('failed', 'pending') GROUP BY plugin ORDER BY plugin";

/// Outbox messages not yet published: one count.
pub(in crate::store) const OUTBOX_PENDING: &str =
    "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL";

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

/// Merge a store's two counts into [`QueueStats`] per queue, by name: the inbox's
/// (queue, in flight, pending, scheduled, oldest created_at) rows and the failed
/// messages' (queue, failed).
pub(in crate::store) fn queue_stats(
    depths: impl IntoIterator<Item = (String, i64, i64, i64, i64)>,
    failed: impl IntoIterator<Item = (String, i64)>,
) -> Vec<QueueStats> {
    fn entry(stats: &mut BTreeMap<String, QueueStats>, queue: String) -> &mut QueueStats {
        stats.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        })
    }
    let mut stats = BTreeMap::new();
    for (queue, in_flight, pending, scheduled, oldest_at) in depths {
        let e = entry(&mut stats, queue);
        (e.in_flight, e.pending, e.scheduled, e.oldest_at) = (
            in_flight as u64,
            pending as u64,
            scheduled as u64,
            Some(oldest_at),
        );
    }
    for (queue, failed) in failed {
        entry(&mut stats, queue).failed = failed as u64;
    }
    stats.into_values().collect()
}
