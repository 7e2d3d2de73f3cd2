//! Queues on SQLite: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use sqlx::SqlitePool;

use crate::store::queues::{FAILED_BY_PLUGIN, FAILED_BY_SOURCE, OUTBOX_PENDING};
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
    let failed = sqlx::query_as(FAILED_BY_SOURCE).fetch_all(pool).await?;
    Ok(crate::store::queues::queue_stats(depths, failed))
}

/// Delete a queue's unclaimed messages; see [`crate::store::Store::purge_queue`].
pub(super) async fn purge(pool: &SqlitePool, queue: &str) -> Result<u64> {
    let now = now_ms();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "UPDATE failed_messages SET status = 'failed'
         WHERE status = 'retrying' AND message_id IN (
             SELECT id FROM inbox
             WHERE queue = ?1 AND (locked_until IS NULL OR locked_until <= ?2))",
    )
    .bind(queue)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let purged = sqlx::query(
        "DELETE FROM inbox WHERE queue = ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
    )
    .bind(queue)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(purged.rows_affected())
}

/// The outbox backlog and failed messages per plugin; see [`crate::store::Store::backlog`].
pub(super) async fn backlog(pool: &SqlitePool) -> Result<Backlog> {
    let failed = sqlx::query_as(FAILED_BY_PLUGIN).fetch_all(pool).await?;
    let outbox = sqlx::query_scalar(OUTBOX_PENDING).fetch_one(pool).await?;
    Ok(Backlog::of(failed, outbox))
}
