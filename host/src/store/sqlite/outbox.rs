//! The outbox relay's side of SQLite: the embedded store serves one host, whose single
//! relay reads unsent rows and marks them sent once the broker confirmed them. Nothing is
//! locked in between; a relay that dies before marking sends those rows again.

use sqlx::SqlitePool;

use crate::store::outbox::{OUTBOX_COLUMNS, outbox_message};
use crate::store::{Hold, OutboxClaim, Result, now_ms};

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
