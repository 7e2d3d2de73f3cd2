//! What a transport delivered, on PostgreSQL: the ledger lookup that lets a redelivery
//! skip plugins that already settled it, and the start of its settle transaction. That
//! transaction first takes an advisory lock on each message id of the batch (the two-key
//! lock space, which never meets the single-key state locks), so a concurrent settle of
//! the same message by another consumer or host finishes first; the ledger check that
//! follows sees its rows, and the results it already wrote are dropped.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgExecutor, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::PostgresStore;
use super::settle::Settle;
use super::writes::Settling;
use crate::store::Result;
use crate::store::ledger::{DeliveredSettle, LedgerSql};

/// Plugins that handled each of `ids`, or dead-lettered it with no operator sending it
/// back since.
pub(super) async fn settled<'e>(
    executor: impl PgExecutor<'e>,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
    // One index probe per id. `message_id = ANY($1)` looks the same but, on a ledger
    // not yet analyzed (a new schema, the first minute of a run), is planned as a
    // sequential scan of the whole table for every batch: measured, 800 such scans took
    // a 20,000-message run from ~14k to ~4k msgs/s. `OFFSET 0` keeps each lateral probe
    // a parameterized index scan.
    let rows = sqlx::query(
        "SELECT i.id AS message_id, s.plugin FROM UNNEST($1::uuid[]) AS i(id)
         CROSS JOIN LATERAL (
             SELECT plugin FROM processed WHERE message_id = i.id
             UNION ALL
             SELECT plugin FROM failed_messages
             WHERE message_id = i.id AND status IN ('failed', 'pending')
             OFFSET 0) AS s",
    )
    .bind(ids)
    .fetch_all(executor)
    .await?;
    let mut by_id: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        by_id
            .entry(row.get("message_id"))
            .or_default()
            .insert(row.get("plugin"));
    }
    Ok(by_id)
}

/// Begin the settle transaction of the delivered messages `ids`, holding their locks;
/// with the plugins that settled each already.
pub(super) async fn begin(
    pool: &PgPool,
    ids: &[Uuid],
) -> Result<(
    Transaction<'static, Postgres>,
    BTreeMap<Uuid, BTreeSet<String>>,
)> {
    let mut keys: Vec<(i32, i32)> = ids.iter().map(|id| lock_keys(*id)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut tx = if keys.is_empty() {
        pool.begin().await?
    } else {
        // The locks are taken with the `BEGIN`, in one round trip (the keys are
        // integers, written into the statement); the ledger is read by a statement of its
        // own, whose snapshot is taken once they are held.
        let locks: Vec<String> = keys.iter().map(|(a, b)| format!("({a}, {b})")).collect();
        pool.begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT pg_advisory_xact_lock(a, b) FROM (VALUES {}) AS k(a, b) ORDER BY a, b",
            locks.join(", ")
        )))
        .await?
    };
    let already = settled(&mut *tx, ids).await?;
    Ok((tx, already))
}

/// The advisory lock of a message id: its last 8 bytes (random in v4/v7/v8 ids) as the
/// two keys of `pg_advisory_xact_lock(int, int)`.
fn lock_keys(id: Uuid) -> (i32, i32) {
    let b = id.as_bytes();
    (
        i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        i32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    )
}

#[async_trait::async_trait]
impl LedgerSql for PostgresStore {
    async fn settled(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
        settled(&self.pool, ids).await
    }

    async fn begin_delivered(&self, ids: &[Uuid]) -> Result<DeliveredSettle<'_>> {
        let (tx, settled) = begin(&self.pool, ids).await?;
        let settle = Settle {
            tx,
            channel: &self.channel,
            settling: Settling::Delivered,
        };
        Ok((Box::new(settle), settled))
    }
}
