//! Queues on PostgreSQL: the inbox queues' depths and oldest message, purging a queue's
//! unclaimed messages, and what waits beyond the inbox (outbox, failed messages), for
//! `wharf queues`, the HTTP API and `/metrics`.

use sqlx::Row;

use crate::store::Result;
use crate::store::admin::AdminSql;
use crate::store::queues::Depths;
use std::time::Duration;

use super::PostgresStore;
use crate::store::Cleaned;

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

    async fn delete_older(&self, older_than: Duration) -> Result<Cleaned> {
        let row = sqlx::query(
            "WITH cut AS (SELECT wharf_now_ms() - $1 AS t),
             received_gone AS (
                 DELETE FROM received r USING cut WHERE r.received_at < cut.t
                   AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = r.id)
                   AND NOT EXISTS (SELECT 1 FROM processed p
                                   WHERE p.message_id = r.id AND p.handled_at >= cut.t)
                   AND NOT EXISTS (SELECT 1 FROM failed_messages f
                                   WHERE f.message_id = r.id AND f.status <> 'resolved')
                 RETURNING 1),
             processed_gone AS (
                 DELETE FROM processed p USING cut WHERE p.handled_at < cut.t
                   AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = p.message_id)
                 RETURNING 1),
             outbox_gone AS (
                 DELETE FROM outbox o USING cut WHERE o.sent_at < cut.t RETURNING 1),
             failed_gone AS (
                 DELETE FROM failed_messages f USING cut
                 WHERE f.status = 'resolved' AND f.resolved_at < cut.t RETURNING 1),
             errors_gone AS (
                 DELETE FROM attempt_errors a USING cut WHERE a.at < cut.t
                   AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = a.message_id)
                   AND NOT EXISTS (SELECT 1 FROM failed_messages f
                                   WHERE f.message_id = a.message_id AND f.plugin = a.plugin
                                     AND f.status <> 'resolved')
                 RETURNING 1)
             SELECT (SELECT COUNT(*) FROM received_gone), (SELECT COUNT(*) FROM processed_gone),
                    (SELECT COUNT(*) FROM outbox_gone), (SELECT COUNT(*) FROM failed_gone),
                    (SELECT COUNT(*) FROM errors_gone)",
        )
        .bind(older_than.as_millis() as i64)
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| row.get::<i64, _>(i) as u64;
        Ok(Cleaned {
            received: n(0),
            processed: n(1),
            outbox: n(2),
            failed: n(3),
            attempt_errors: n(4),
        })
    }
}
