//! The outbox relay's side of SQLite: the embedded store serves one host, whose single
//! relay reads unsent rows and marks them sent once the broker confirmed them. Nothing is
//! locked in between; a relay that dies before marking sends those rows again.

use super::SqliteStore;
use crate::store::outbox::{FAILED_SOURCE, OUTBOX_COLUMNS, OutboxSql, outbox_message};
use crate::store::{Hold, OutboxClaim, Result, Undeliverable, now_ms};

#[async_trait::async_trait]
impl OutboxSql for SqliteStore {
    async fn take(&self, limit: u32) -> Result<OutboxClaim> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let messages = rows
            .iter()
            .map(outbox_message)
            .collect::<Result<Vec<_>>>()?;
        Ok(OutboxClaim {
            messages,
            hold: Hold::Lease,
        })
    }

    async fn settle_taken(
        &self,
        _hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()> {
        let now = now_ms();
        let seqs = serde_json::to_string(sent).expect("integers serialise");
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE failed_messages SET status = 'resolved', resolved_at = ?1
             WHERE source = ?3 AND status = 'retrying'
               AND message_id IN (SELECT id FROM outbox WHERE seq IN (SELECT value FROM json_each(?2)))",
        )
        .bind(now)
        .bind(&seqs)
        .bind(FAILED_SOURCE)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE outbox SET sent_at = ? WHERE seq IN (SELECT value FROM json_each(?))")
            .bind(now)
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        for u in undeliverable {
            let attempts: Option<i64> = sqlx::query_scalar(
                "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source,
                                              queue, kind, headers, payload, error, attempts, status,
                                              failed_at, source_exchange, source_routing_key)
                 SELECT id, plugin, '', '', ?3, '', kind, headers, payload, ?2, 1, 'failed', ?4,
                        exchange, routing_key
                 FROM outbox WHERE seq = ?1
                 ON CONFLICT (message_id, plugin) DO UPDATE
                 SET error = excluded.error, attempts = failed_messages.attempts + 1,
                     status = 'failed', failed_at = excluded.failed_at
                 RETURNING attempts",
            )
            .bind(u.seq)
            .bind(&u.error)
            .bind(FAILED_SOURCE)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO attempt_errors (message_id, plugin, plugin_version, plugin_sha256, attempt,
                                             error, delay_ms, at)
                 SELECT id, plugin, '', '', ?2, ?3, NULL, ?4 FROM outbox WHERE seq = ?1",
            )
            .bind(u.seq)
            .bind(attempts.unwrap_or(1))
            .bind(&u.error)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE outbox SET sent_at = ? WHERE seq = ?")
                .bind(now)
                .bind(u.seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
