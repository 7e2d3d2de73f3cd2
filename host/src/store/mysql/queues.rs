//! Queues on MariaDB/MySQL: the inbox queues' depths and oldest message, purging a
//! queue's unclaimed messages, and what waits beyond the inbox (outbox, failed messages),
//! for `wharf queues`, the HTTP API and `/metrics`.

use sqlx::MySqlPool;

use super::NOW_MS;
use crate::store::queues::{FAILED_BY_PLUGIN, FAILED_BY_SOURCE, OUTBOX_PENDING};
use crate::store::{Backlog, QueueStats, Result};

/// The inbox queues' depths; see [`crate::store::Store::queue_stats`].
pub(super) async fn stats(pool: &MySqlPool) -> Result<Vec<QueueStats>> {
    let depths: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT queue,
                CAST(SUM(COALESCE(locked_until, 0) > n.now) AS SIGNED) AS in_flight,
                CAST(SUM(COALESCE(locked_until, 0) <= n.now AND available_at <= n.now) AS SIGNED) AS pending,
                CAST(SUM(COALESCE(locked_until, 0) <= n.now AND available_at > n.now) AS SIGNED) AS scheduled,
                MIN(created_at) AS oldest
         FROM inbox, (SELECT {NOW_MS} AS now) n GROUP BY queue"
    )))
    .fetch_all(pool)
    .await?;
    let failed = sqlx::query_as(FAILED_BY_SOURCE).fetch_all(pool).await?;
    Ok(crate::store::queues::queue_stats(depths, failed))
}

/// Delete a queue's unclaimed messages; see [`crate::store::Store::purge_queue`].
pub(super) async fn purge(pool: &MySqlPool, queue: &str) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE failed_messages f JOIN inbox i ON i.id = f.message_id SET f.status = 'failed'
         WHERE f.status = 'retrying' AND i.queue = ?
           AND (i.locked_until IS NULL OR i.locked_until <= {NOW_MS})"
    )))
    .bind(queue)
    .execute(&mut *tx)
    .await?;
    let purged = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM inbox WHERE queue = ? AND (locked_until IS NULL OR locked_until <= {NOW_MS})"
    )))
    .bind(queue)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(purged.rows_affected())
}

/// The outbox backlog and failed messages per plugin; see [`crate::store::Store::backlog`].
pub(super) async fn backlog(pool: &MySqlPool) -> Result<Backlog> {
    let failed = sqlx::query_as(FAILED_BY_PLUGIN).fetch_all(pool).await?;
    let outbox = sqlx::query_scalar(OUTBOX_PENDING).fetch_one(pool).await?;
    Ok(Backlog::of(failed, outbox))
}
