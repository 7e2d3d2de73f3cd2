//! The outbox relay's side of PostgreSQL: unsent rows are taken `FOR UPDATE SKIP LOCKED`
//! in a transaction that stays open while the relay publishes them and waits for the
//! broker's confirms, then marked sent in it and committed. Other hosts' relays skip the
//! locked rows; a relay that dies or stalls past `idle_in_transaction_session_timeout`
//! loses the transaction and the rows are sent again (at least once).

use super::PostgresStore;
use super::claim::HeldClaim;
use crate::store::outbox::{FAILED_SOURCE, FAILED_SOURCES, OutboxSql, Transport, outbox_message};
use crate::store::{HeldTransaction, Hold, OutboxClaim, Result, Undeliverable};

/// How a relay's transaction begins, in one round trip: it may hold its rows 30 s
/// between statements (publishing, awaiting confirms).
const BEGIN: &str = "BEGIN; SET LOCAL idle_in_transaction_session_timeout = 30000";

#[async_trait::async_trait]
impl OutboxSql for PostgresStore {
    async fn take(&self, transport: Transport, limit: u32) -> Result<OutboxClaim> {
        let mut tx = self.pool.begin_with(BEGIN).await?;
        let rows = sqlx::query(
            "SELECT seq, id::text AS id, exchange, routing_key, ordering_key, kind,
                    headers::text AS headers, payload
             FROM outbox WHERE transport = $1 AND sent_at IS NULL
             ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(transport.column())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let messages = rows
            .iter()
            .map(outbox_message)
            .collect::<Result<Vec<_>>>()?;
        if messages.is_empty() {
            tx.rollback().await?;
            return Ok(OutboxClaim {
                messages,
                hold: Hold::Lease,
            });
        }
        Ok(OutboxClaim {
            messages,
            hold: Hold::Transaction(HeldTransaction::new(HeldClaim {
                tx,
                created_at: Default::default(),
            })),
        })
    }

    async fn settle_taken(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()> {
        let mut tx = match hold {
            Hold::Transaction(held) => held.into_inner::<HeldClaim>().tx,
            Hold::Lease => self.pool.begin().await?,
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH done AS (
                 UPDATE outbox SET sent_at = wharf_now_ms() WHERE seq = ANY($1) RETURNING id)
             UPDATE failed_messages f SET status = 'resolved', resolved_at = wharf_now_ms()
             FROM done
             WHERE f.message_id = done.id AND f.source IN {FAILED_SOURCES} AND f.status = 'retrying'"
        )))
        .bind(sent)
        .execute(&mut *tx)
        .await?;
        for u in undeliverable {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH gone AS (
                     UPDATE outbox SET sent_at = wharf_now_ms() WHERE seq = $1
                     RETURNING id, plugin, kind, headers, payload, transport, exchange, routing_key,
                               ordering_key),
                 failed AS (
                     INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256,
                                                  source, queue, kind, headers, payload, error,
                                                  attempts, status, failed_at, source_exchange,
                                                  source_routing_key, ordering_key)
                     SELECT id, plugin, '', '', {FAILED_SOURCE}, '', kind, headers, payload, $2, 1,
                            'failed', wharf_now_ms(), exchange, routing_key, ordering_key
                     FROM gone
                     ON CONFLICT (message_id, plugin) DO UPDATE
                     SET error = excluded.error, attempts = failed_messages.attempts + 1,
                         status = 'failed', failed_at = excluded.failed_at
                     RETURNING message_id, plugin, attempts)
                 INSERT INTO attempt_errors (message_id, plugin, plugin_version, plugin_sha256,
                                             attempt, error, delay_ms, at)
                 SELECT message_id, plugin, '', '', attempts, $2, NULL, wharf_now_ms() FROM failed"
            )))
            .bind(u.seq)
            .bind(&u.error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
