//! The outbox relay's side of MariaDB/MySQL: a relay leases the unsent rows it takes
//! (`locked_until`, skipping rows other hosts' relays hold) and marks them sent once the
//! broker confirmed them. A relay that dies leaves its rows to the next after the lease.

use std::time::Duration;

use sqlx::{MySql, QueryBuilder};

use super::MySqlStore;
use super::{now, push_list, uuid_text};
use crate::store::outbox::{FAILED_SOURCE, OutboxSql, outbox_message};
use crate::store::{Hold, OutboxClaim, Result, Undeliverable};

/// How long a relay holds the rows it took before another may send them.
const OUTBOX_LEASE: Duration = Duration::from_secs(30);

#[async_trait::async_trait]
impl OutboxSql for MySqlStore {
    async fn take(&self, limit: u32) -> Result<OutboxClaim> {
        let mut tx = self.pool.begin().await?;
        let now = now(&mut tx).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, {} AS id, exchange, routing_key, kind, headers, payload
             FROM outbox FORCE INDEX (outbox_unsent)
             WHERE sent_at IS NULL AND (locked_until IS NULL OR locked_until <= ?)
             ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED",
            uuid_text("id")
        )))
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
        if sent.is_empty() && undeliverable.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let now = now(&mut tx).await?;
        if !sent.is_empty() {
            let mut resolved = QueryBuilder::<MySql>::new(
                "UPDATE failed_messages f JOIN outbox o ON o.id = f.message_id
                 SET f.status = 'resolved', f.resolved_at = ",
            );
            resolved
                .push_bind(now)
                .push(" WHERE f.status = 'retrying' AND f.source = ")
                .push_bind(FAILED_SOURCE)
                .push(" AND o.seq IN (");
            push_list(&mut resolved, sent.iter().copied());
            resolved.push(")");
            resolved.build().execute(&mut *tx).await?;
        }
        for u in undeliverable {
            sqlx::query(
                "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source,
                                              queue, kind, headers, payload, error, attempts, status,
                                              failed_at, source_exchange, source_routing_key)
                 SELECT id, plugin, '', '', ?, '', kind, headers, payload, ?, 1, 'failed', ?,
                        exchange, routing_key
                 FROM outbox WHERE seq = ?
                 ON DUPLICATE KEY UPDATE error = VALUES(error), attempts = attempts + 1,
                                         status = 'failed', failed_at = VALUES(failed_at)",
            )
            .bind(FAILED_SOURCE)
            .bind(&u.error)
            .bind(now)
            .bind(u.seq)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO attempt_errors (message_id, plugin, plugin_version, plugin_sha256, attempt,
                                             error, delay_ms, at)
                 SELECT o.id, o.plugin, '', '', f.attempts, ?, NULL, ?
                 FROM outbox o JOIN failed_messages f ON f.message_id = o.id AND f.plugin = o.plugin
                 WHERE o.seq = ?",
            )
            .bind(&u.error)
            .bind(now)
            .bind(u.seq)
            .execute(&mut *tx)
            .await?;
        }
        let mut done =
            QueryBuilder::<MySql>::new("UPDATE outbox SET locked_until = NULL, sent_at = ");
        done.push_bind(now).push(" WHERE seq IN (");
        push_list(
            &mut done,
            sent.iter()
                .copied()
                .chain(undeliverable.iter().map(|u| u.seq)),
        );
        done.push(")");
        done.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
