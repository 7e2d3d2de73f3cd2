//! The failed messages on SQLite: listing them with their attempts' errors, sending them
//! back (to the inbox, or through the outbox to their source exchange) and deleting them.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::SqliteStore;
use crate::store::failed::Operation;
use crate::store::failed::{FailedSql, send_back};
use crate::store::sql::SqlStore;
use crate::store::{FailedFilter, Result, Retried};

#[async_trait::async_trait]
impl FailedSql for SqliteStore {
    async fn retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried> {
        let mut tx = self.begin_write().await?;
        let retried = send_back::<Sqlite>(&mut tx, filter, limit).await?;
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
