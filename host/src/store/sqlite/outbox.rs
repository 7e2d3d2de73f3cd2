//! The outbox relay's side of SQLite: the embedded store serves one host, whose single
//! relay reads unsent rows and marks them sent once the broker confirmed them. Nothing is
//! locked in between; a relay that dies before marking sends those rows again.

use std::collections::BTreeMap;

use sqlx::SqlitePool;
use uuid::Uuid;

use crate::store::outbox::{OUTBOX_COLUMNS, outbox_message};
use crate::store::{Hold, OutboxClaim, Result, headers_json, now_ms};

pub(super) async fn claim(pool: &SqlitePool, limit: u32) -> Result<OutboxClaim> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?"
    )))
    .bind(i64::from(limit))
    .fetch_all(pool)
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

pub(super) async fn sent(pool: &SqlitePool, seqs: &[i64]) -> Result<()> {
    let seqs = serde_json::to_string(seqs).expect("integers serialise");
    sqlx::query("UPDATE outbox SET sent_at = ? WHERE seq IN (SELECT value FROM json_each(?))")
        .bind(now_ms())
        .bind(seqs)
        .execute(pool)
        .await?;
    Ok(())
}

/// Put a message in the outbox for a relay (the HTTP API's publish); `false` when the
/// outbox has its id already.
pub(super) async fn add(
    pool: &SqlitePool,
    id: Uuid,
    (exchange, routing_key): (&str, &str),
    kind: &str,
    headers: &BTreeMap<String, String>,
    payload: &[u8],
) -> Result<bool> {
    let added = sqlx::query(
        "INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key, kind, headers, payload, created_at)
         VALUES (?, ?, '', ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(id.to_string())
    .bind(exchange)
    .bind(routing_key)
    .bind(kind)
    .bind(headers_json(headers))
    .bind(payload)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(added == 1)
}
