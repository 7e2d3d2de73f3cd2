//! Queues on SQLite: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use sqlx::SqlitePool;

use crate::store::{Backlog, QueueStats, Result, now_ms};

/// The inbox queues' depths; see [`crate::store::Store::queue_stats`].
pub(super) async fn stats(pool: &SqlitePool) -> Result<Vec<QueueStats>> {
    let now = now_ms();
    let depths = sqlx::query_as(
        "SELECT queue,
                SUM(locked_until > ?1) AS in_flight,
                SUM((locked_until IS NULL OR locked_until <= ?1) AND available_at <= ?1) AS pending,
                SUM((locked_until IS NULL OR locked_until <= ?1) AND available_at > ?1) AS scheduled,
                MIN(created_at) AS oldest
         FROM inbox GROUP BY queue",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    let failed = sqlx::query_as(
        "SELECT queue, COUNT(*) AS failed FROM failed_messages
         WHERE status IN ('failed', 'pending') GROUP BY queue",
    )
    .fetch_all(pool)
    .await?;
    Ok(crate::store::queues::queue_stats(depths, failed))
}

/// Delete a queue's unclaimed messages; see [`crate::store::Store::purge_queue`].
pub(super) async fn purge(pool: &SqlitePool, queue: &str) -> Result<u64> {
    let purged = sqlx::query(
        "DELETE FROM inbox WHERE queue = ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
    )
    .bind(queue)
    .bind(now_ms())
    .execute(pool)
    .await?;
    Ok(purged.rows_affected())
}

/// The outbox backlog and failed messages per plugin; see [`crate::store::Store::backlog`].
pub(super) async fn backlog(pool: &SqlitePool) -> Result<Backlog> {
    let failed_by_plugin: Vec<(String, i64)> = sqlx::query_as(
        "SELECT plugin, COUNT(*) FROM failed_messages
         WHERE status IN ('failed', 'pending') GROUP BY plugin ORDER BY plugin",
    )
    .fetch_all(pool)
    .await?;
    let outbox_pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?;
    Ok(Backlog {
        failed_by_plugin: failed_by_plugin
            .into_iter()
            .map(|(plugin, n)| (plugin, n as u64))
            .collect(),
        outbox_pending: outbox_pending as u64,
    })
}
