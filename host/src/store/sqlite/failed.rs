//! The failed messages on SQLite: listing them with their attempts' errors, sending them
//! back (to the inbox, or through the outbox to their source exchange) and deleting them.

use sqlx::{Row, SqlitePool};

use crate::store::failed::{attempt_error, failed_message};
use crate::store::{AttemptError, FailedMessage, Result, Retried, RetrySelection, now_ms};

/// Every failed message, newest first; see [`crate::store::Store::failed_list`].
pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<FailedMessage>> {
    let rows = sqlx::query("SELECT * FROM failed_messages ORDER BY id DESC")
        .fetch_all(pool)
        .await?;
    rows.iter().map(failed_message).collect()
}

/// One failed message with its attempts' errors; see [`crate::store::Store::failed_get`].
pub(super) async fn get(
    pool: &SqlitePool,
    id: i64,
) -> Result<Option<(FailedMessage, Vec<AttemptError>)>> {
    let Some(row) = sqlx::query("SELECT * FROM failed_messages WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let failed = failed_message(&row)?;
    let history = sqlx::query(
        "SELECT attempt, error, delay_ms, at FROM attempt_errors
         WHERE message_id = ? AND plugin = ? ORDER BY id",
    )
    .bind(failed.message_id.to_string())
    .bind(&failed.plugin)
    .fetch_all(pool)
    .await?
    .iter()
    .map(attempt_error)
    .collect();
    Ok(Some((failed, history)))
}

/// Send failed messages back; see [`crate::store::Store::failed_retry`].
pub(super) async fn retry(pool: &SqlitePool, which: RetrySelection) -> Result<Retried> {
    let now = now_ms();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let (all, id) = match which {
        RetrySelection::All => (true, 0),
        RetrySelection::One(id) => (false, id),
    };
    let rows = sqlx::query(
        "UPDATE failed_messages SET status = 'retrying', last_retry_at = ?1
         WHERE (?2 OR id = ?3) AND status IN ('failed', 'pending')
         RETURNING message_id, plugin, queue, kind, headers, payload, source_exchange,
                   source_routing_key",
    )
    .bind(now)
    .bind(all)
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let mut retried = Retried::default();
    for row in &rows {
        let exchange: Option<String> = row.get("source_exchange");
        let statement = match exchange {
            None => {
                retried.inbox += 1;
                sqlx::query(
                    "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6)
                     ON CONFLICT (id) DO UPDATE SET available_at = MIN(available_at, excluded.available_at)",
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

/// Delete a failed message and its history; see [`crate::store::Store::failed_delete`].
pub(super) async fn delete(pool: &SqlitePool, id: i64) -> Result<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let row = sqlx::query("DELETE FROM failed_messages WHERE id = ? RETURNING message_id, plugin")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = &row {
        sqlx::query("DELETE FROM attempt_errors WHERE message_id = ? AND plugin = ?")
            .bind(row.get::<String, _>("message_id"))
            .bind(row.get::<String, _>("plugin"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(row.is_some())
}
