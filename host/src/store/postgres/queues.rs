//! Queues on PostgreSQL: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use sqlx::PgPool;

use crate::store::queues::{FAILED_BY_PLUGIN, FAILED_BY_SOURCE, OUTBOX_PENDING};
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
    let failed = sqlx::query_as(FAILED_BY_SOURCE).fetch_all(pool).await?;
    Ok(crate::store::queues::queue_stats(depths, failed))
}

/// Delete a queue's unclaimed messages; see [`crate::store::Store::purge_queue`].
pub(super) async fn purge(pool: &PgPool, queue: &str) -> Result<u64> {
    let purged: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM inbox WHERE id IN (
                 SELECT id FROM inbox
                 WHERE queue = $1 AND (locked_until IS NULL OR locked_until <= wharf_now_ms())
                 FOR UPDATE SKIP LOCKED)
             RETURNING id),
         back AS (
             UPDATE failed_messages f SET status = 'failed'
             FROM gone WHERE f.message_id = gone.id AND f.status = 'retrying')
         SELECT COUNT(*) FROM gone",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?;
    Ok(purged as u64)
}

/// The outbox backlog and failed messages per plugin; see [`crate::store::Store::backlog`].
pub(super) async fn backlog(pool: &PgPool) -> Result<Backlog> {
    let failed = sqlx::query_as(FAILED_BY_PLUGIN).fetch_all(pool).await?;
    let outbox = sqlx::query_scalar(OUTBOX_PENDING).fetch_one(pool).await?;
    Ok(Backlog::of(failed, outbox))
}
