//! Queues on SQLite: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use crate::store::admin::AdminSql;
use crate::store::queues::Depths;
use crate::store::{Result, now_ms};

use super::SqliteStore;

#[async_trait::async_trait]
impl AdminSql for SqliteStore {
    async fn inbox_depths(&self) -> Result<Vec<Depths>> {
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
        .fetch_all(&self.pool)
        .await?;
        Ok(depths)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
}
