//! What an operator and the metrics ask of a store ([`Admin`]): queue depths and purges,
//! the backlog beyond the inbox, readiness and retention.

use std::time::Duration;

use super::{Backlog, Cleaned, QueueStats, Result};

/// The admin role of a store, as the HTTP API, the CLI and the metrics use it.
#[async_trait::async_trait]
pub trait Admin: Send + Sync {
    /// Depth of every queue that has messages or failures.
    async fn queue_stats(&self) -> Result<Vec<QueueStats>>;

    /// Delete the messages of inbox queue `queue` no worker has claimed; returns how
    /// many. Claimed ones are left to finish. A failed message an operator sent back
    /// among them (`retrying`) is `failed` again, to be retried or deleted.
    async fn purge_queue(&self, queue: &str) -> Result<u64>;

    /// Unsent outbox messages and dead letters per plugin (for metrics).
    async fn backlog(&self) -> Result<Backlog>;

    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// Retention: delete, in one transaction, what is older than `older_than` and
    /// finished: dedup and ledger rows of messages no longer in the inbox, sent outbox
    /// rows, resolved failures, and attempt errors nothing refers to any more. Dead
    /// letters still waiting for an operator are kept whatever their age.
    async fn cleanup(&self, older_than: Duration) -> Result<Cleaned>;
}
