//! Queues on PostgreSQL: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use sqlx::PgPool;

use crate::store::{Backlog, QueueStats, Result};

/// The inbox queues' depths; see [`crate::store::Store::queue_stats`].
pub(super) async fn stats(pool: &PgPool) -> Result<Vec<QueueStats>> {
    let depths = sqlx::query_as(
        "SELECT queue,
                COUNT(*) FILTER (WHERE locked_until > wharf_now_ms()) AS in_flight,
                COUNT(*) FILTER (WHERE (locked_until IS NULL OR locked_until <= wharf_now_ms())
                                   AND available_at <= wharf_now_ms()) AS pending,
                COUNT(*) FILTER (WHERE (locked_until IS NULL OR locked_until <= wharf_now_ms())
                                   AND available_at > wharf_now_ms()) AS scheduled,
                MIN(created_at) AS oldest
         FROM inbox GROUP BY queue",
    )
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
pub(super) async fn purge(pool: &PgPool, queue: &str) -> Result<u64> {
    let purged = sqlx::query(
        "DELETE FROM inbox WHERE id IN (
             SELECT id FROM inbox
             WHERE queue = $1 AND (locked_until IS NULL OR locked_until <= wharf_now_ms())
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(queue)
    .execute(pool)
    .await?;
    Ok(purged.rows_affected())
}

/// The outbox backlog and failed messages per plugin; see [`crate::store::Store::backlog`].
pub(super) async fn backlog(pool: &PgPool) -> Result<Backlog> {
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
