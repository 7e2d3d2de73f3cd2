//! The failed messages on SQLite: listing them with their attempts' errors, sending them
//! back (to the inbox, or through the outbox to their source exchange) and deleting them.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::SqliteStore;
use crate::store::failed::FailedSql;
use crate::store::failed::Operation;
use crate::store::{FailedFilter, Result, Retried, now_ms};

#[async_trait::async_trait]
impl FailedSql for SqliteStore {
    async fn retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried> {
        let now = now_ms();
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE failed_messages SET status = 'retrying', last_retry_at = ",
        );
        query.push_bind(now).push(" WHERE id IN (");
        filter.push_ids(&mut query, Operation::Retry, limit);
        query.push(
            ") RETURNING message_id, plugin, queue, kind, headers, payload, source_exchange,
                         source_routing_key",
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = query.build().fetch_all(&mut *tx).await?;
        let mut retried = Retried::default();
        for row in &rows {
            let exchange: Option<String> = row.get("source_exchange");
            let statement = match exchange {
                None => {
                    retried.inbox += 1;
                    sqlx::query(
                        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at,
                                            created_at, seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, 1)
                         ON CONFLICT (id) DO UPDATE
                         SET available_at = MIN(available_at, excluded.available_at), seen = 1",
                    )
                    .bind(row.get::<String, _>("message_id"))
                    .bind(row.get::<String, _>("queue"))
                }
                Some(exchange) => {
                    retried.broker += 1;
                    sqlx::query(
                        "INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key,
                                             kind, headers, payload, created_at)
                         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (id) DO UPDATE SET sent_at = NULL",
                    )
                    .bind(row.get::<String, _>("message_id"))
                    .bind(row.get::<String, _>("plugin"))
                    .bind(exchange)
                    .bind(
                        row.get::<Option<String>, _>("source_routing_key")
                            .unwrap_or_default(),
                    )
                }
            };
            statement
                .bind(row.get::<String, _>("kind"))
                .bind(row.get::<String, _>("headers"))
                .bind(row.get::<Vec<u8>, _>("payload"))
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(retried)
    }

    async fn delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64> {
        let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM failed_messages WHERE id IN (");
        filter.push_ids(&mut query, Operation::Delete, limit);
        query.push(") RETURNING message_id, plugin");
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let gone = query.build().fetch_all(&mut *tx).await?;
        for row in &gone {
            sqlx::query("DELETE FROM attempt_errors WHERE message_id = ? AND plugin = ?")
                .bind(row.get::<String, _>("message_id"))
                .bind(row.get::<String, _>("plugin"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(gone.len() as u64)
    }
}
