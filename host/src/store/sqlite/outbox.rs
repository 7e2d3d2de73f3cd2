//! The outbox relay's side of SQLite: the embedded store serves one host, whose single
//! relay reads unsent rows and marks them sent once the broker confirmed them. Nothing is
//! locked in between; a relay that dies before marking sends those rows again.

use sqlx::Sqlite;

use super::SqliteStore;
use crate::store::outbox::{OUTBOX_COLUMNS, OutboxSql, Transport, outbox_message, settle_sent};
use crate::store::sql::SqlStore;
use crate::store::{Hold, OutboxClaim, Result, Undeliverable};

#[async_trait::async_trait]
impl OutboxSql for SqliteStore {
    async fn take(&self, transport: Transport, limit: u32) -> Result<OutboxClaim> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE transport = ? AND sent_at IS NULL
             ORDER BY seq LIMIT ?"
        )))
        .bind(transport.column())
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
        let mut tx = self.begin_write().await?;
        settle_sent::<Sqlite>(&mut tx, sent, undeliverable).await?;
        tx.commit().await?;
        Ok(())
    }
}
