//! Queues on MariaDB/MySQL: the inbox queues' depths and oldest message, purging a
//! queue's unclaimed messages, and what waits beyond the inbox (outbox, failed messages),
//! for `wharf queues`, the HTTP API and `/metrics`.

use super::NOW_MS;
use crate::store::Result;
use crate::store::admin::AdminSql;
use crate::store::queues::Depths;

use super::MySqlStore;

#[async_trait::async_trait]
impl AdminSql for MySqlStore {
    async fn inbox_depths(&self) -> Result<Vec<Depths>> {
        let depths = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT queue,
                    CAST(SUM(COALESCE(locked_until, 0) > n.now) AS SIGNED) AS in_flight,
                    CAST(SUM(COALESCE(locked_until, 0) <= n.now AND available_at <= n.now) AS SIGNED) AS pending,
                    CAST(SUM(COALESCE(locked_until, 0) <= n.now AND available_at > n.now) AS SIGNED) AS scheduled,
                    MIN(created_at) AS oldest
             FROM inbox, (SELECT {NOW_MS} AS now) n GROUP BY queue"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(depths)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
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
}
