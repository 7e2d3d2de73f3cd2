//! The outbox relay's side of MariaDB/MySQL: a relay leases the unsent rows it takes
//! (`locked_until`, skipping rows other hosts' relays hold) and marks them sent once the
//! broker confirmed them. A relay that dies leaves its rows to the next after the lease.

use std::time::Duration;

use sqlx::{MySql, QueryBuilder};

use super::MySqlStore;
use super::{now, push_list, uuid_text};
use crate::store::outbox::{OutboxSql, Transport, outbox_message, settle_sent};
use crate::store::{Hold, OutboxClaim, Result, Undeliverable};

/// How long a relay holds the rows it took before another may send them.
const OUTBOX_LEASE: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl OutboxSql for MySqlStore {
    async fn take(&self, transport: Transport, limit: u32) -> Result<OutboxClaim> {
        let mut tx = self.pool.begin().await?;
        let now = now(&mut tx).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, {} AS id, exchange, routing_key, ordering_key, kind, headers, payload
             FROM outbox FORCE INDEX (outbox_unsent)
             WHERE transport = ? AND sent_at IS NULL
               AND (locked_until IS NULL OR locked_until <= ?)
             ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED",
            uuid_text("id")
        )))
        .bind(transport.column())
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let messages = rows
            .iter()
            .map(outbox_message)
            .collect::<Result<Vec<_>>>()?;
        if !messages.is_empty() {
            let mut lease = QueryBuilder::<MySql>::new("UPDATE outbox SET locked_until = ");
            lease
                .push_bind(now + OUTBOX_LEASE.as_millis() as i64)
                .push(" WHERE seq IN (");
            push_list(&mut lease, messages.iter().map(|m| m.seq));
            lease.push(")");
            lease.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
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
        let mut tx = self.pool.begin().await?;
        settle_sent::<MySql>(&mut tx, sent, undeliverable).await?;
        tx.commit().await?;
        Ok(())
    }
}
