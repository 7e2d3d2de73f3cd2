//! What an operator and the metrics ask of a store ([`Admin`]): queue depths and purges,
//! the backlog beyond the inbox, readiness and retention. Written once over every SQL
//! store; a store writes only what its SQL does differently ([`AdminSql`]).

use std::time::Duration;

use sqlx::QueryBuilder;

use super::queues::{Depths, FAILED_BY_PLUGIN, FAILED_BY_SOURCE, OUTBOX_PENDING, queue_stats};
use super::sql::{Column, Run, SqlStore};
use super::{Backlog, Cleaned, QueueStats, Result, retention};

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
    /// rows, resolved failures, attempt errors nothing refers to any more, and the
    /// numbering of ordering keys nothing carries a number of. Dead letters still waiting
    /// for an operator are kept whatever their age.
    async fn cleanup(&self, older_than: Duration) -> Result<Cleaned>;
}

/// What each store writes of [`Admin`] in its own SQL.
#[async_trait::async_trait]
pub(super) trait AdminSql {
    /// Each inbox queue's depths, counted at the store's clock.
    async fn inbox_depths(&self) -> Result<Vec<Depths>>;

    /// [`Admin::purge_queue`].
    async fn purge(&self, queue: &str) -> Result<u64>;
}

#[async_trait::async_trait]
impl<S: SqlStore + AdminSql> Admin for S {
    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        let depths = self.inbox_depths().await?;
        let conn = &mut *self.pool().acquire().await?;
        let rows = S::DB::fetch_all(conn, &mut QueryBuilder::new(FAILED_BY_SOURCE)).await?;
        let failed = rows
            .iter()
            .map(|r| (S::DB::column(r, "source"), S::DB::column(r, "failed")));
        Ok(queue_stats(depths, failed))
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        self.purge(queue).await
    }

    async fn backlog(&self) -> Result<Backlog> {
        let conn = &mut *self.pool().acquire().await?;
        let rows = S::DB::fetch_all(conn, &mut QueryBuilder::new(FAILED_BY_PLUGIN)).await?;
        let failed = rows
            .iter()
            .map(|r| (S::DB::column(r, "plugin"), S::DB::column(r, "failed")))
            .collect();
        let rows = S::DB::fetch_all(conn, &mut QueryBuilder::new(OUTBOX_PENDING)).await?;
        Ok(Backlog::of(failed, S::DB::column(&rows[0], "pending")))
    }

    async fn ping(&self) -> Result<()> {
        let conn = &mut *self.pool().acquire().await?;
        S::DB::fetch_all(conn, &mut QueryBuilder::new("SELECT 1")).await?;
        Ok(())
    }

    async fn cleanup(&self, older_than: Duration) -> Result<Cleaned> {
        let mut tx = self.begin_write().await?;
        let cleaned = retention::clean::<S::DB>(&mut tx, older_than).await?;
        tx.commit().await?;
        Ok(cleaned)
    }
}
