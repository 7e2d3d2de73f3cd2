//! Queues on PostgreSQL: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use crate::store::Result;
use crate::store::admin::AdminSql;
use crate::store::queues::Depths;

use super::PostgresStore;

#[async_trait::async_trait]
impl AdminSql for PostgresStore {
    async fn inbox_depths(&self) -> Result<Vec<Depths>> {
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
        .fetch_all(&self.pool)
        .await?;
        Ok(depths)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
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
        .fetch_one(&self.pool)
        .await?;
        Ok(purged as u64)
    }
}
