//! Reading the failed messages, written once for every SQL store: a page of those a
//! filter selects, and one with its attempts' errors.

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{AttemptError, FailedFilter, FailedMessage, FailedPage, FailedStatus, PageRequest};
use crate::store::sql::{Sql, Statement};
use crate::store::{Result, StoreError, parse_headers};

/// The columns [`FailedMessage::of`] reads, ids and JSON as text and integers as 64
/// bits; the payload itself only with `payload` (one message's detail; a list's items
/// carry its size).
fn columns<DB: Sql>(payload: bool) -> String {
    format!(
        "id, {} AS message_id, plugin, plugin_version, plugin_sha256, source, queue, kind,
         {} AS headers, {} AS payload, {} AS payload_bytes, error,
         CAST(attempts AS {}) AS attempts, status, failed_at, last_retry_at, resolved_at",
        DB::uuid_text("message_id"),
        DB::json_text("headers"),
        if payload { "payload" } else { DB::NO_BYTES },
        DB::byte_length("payload"),
        DB::BIGINT,
    )
}

impl FailedMessage {
    /// A failed message from a row of [`columns`].
    fn of<DB: Sql>(row: &DB::Row) -> Result<Self> {
        let status: String = DB::column(row, "status");
        let message_id: String = DB::column(row, "message_id");
        let headers: String = DB::column(row, "headers");
        let payload_bytes: i64 = DB::column(row, "payload_bytes");
        let attempts: i64 = DB::column(row, "attempts");
        Ok(FailedMessage {
            id: DB::column(row, "id"),
            message_id: Uuid::parse_str(&message_id)
                .map_err(|e| StoreError::Corrupt(format!("id {message_id:?}: {e}")))?,
            plugin: DB::column(row, "plugin"),
            plugin_version: DB::column(row, "plugin_version"),
            plugin_sha256: DB::column(row, "plugin_sha256"),
            source: DB::column(row, "source"),
            queue: DB::column(row, "queue"),
            kind: DB::column(row, "kind"),
            headers: parse_headers(&headers)?,
            payload: DB::column(row, "payload"),
            payload_bytes: payload_bytes as u64,
            error: DB::column(row, "error"),
            attempts: attempts as u32,
            status: FailedStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
            failed_at: DB::column(row, "failed_at"),
            last_retry_at: DB::column(row, "last_retry_at"),
            resolved_at: DB::column(row, "resolved_at"),
        })
    }
}

impl AttemptError {
    /// One attempt of a history from a row of `attempt, plugin_version, plugin_sha256,
    /// error, delay_ms, at` (integers as 64 bits).
    fn of<DB: Sql>(row: &DB::Row) -> Self {
        let attempt: i64 = DB::column(row, "attempt");
        let delay_ms: Option<i64> = DB::column(row, "delay_ms");
        AttemptError {
            attempt: attempt as u32,
            plugin_version: DB::column(row, "plugin_version"),
            plugin_sha256: DB::column(row, "plugin_sha256"),
            error: DB::column(row, "error"),
            delay_ms: delay_ms.map(|d| d as u64),
            at: DB::column(row, "at"),
        }
    }
}

/// A page of the failed messages `filter` selects; see [`crate::store::FailedMessages::failed_list`].
pub(in crate::store) async fn list<DB: Sql>(
    conn: &mut DB::Connection,
    filter: &FailedFilter,
    page: PageRequest,
) -> Result<FailedPage> {
    let (mut rows, mut count) = filter.page_queries::<DB>(&columns::<DB>(false), page);
    let rows = DB::fetch_all(&mut *conn, &mut rows).await?;
    let counted = DB::fetch_all(conn, &mut count).await?;
    let total: i64 = counted.first().map_or(0, |row| DB::column(row, "n"));
    let items = rows
        .iter()
        .map(FailedMessage::of::<DB>)
        .collect::<Result<_>>()?;
    Ok(FailedPage::of(total, items, page.limit))
}

/// One failed message with its attempts' errors; see [`crate::store::FailedMessages::failed_get`].
pub(in crate::store) async fn get<DB: Sql>(
    conn: &mut DB::Connection,
    id: i64,
) -> Result<Option<(FailedMessage, Vec<AttemptError>)>> {
    let mut one = QueryBuilder::<DB>::new(format!(
        "SELECT {} FROM failed_messages WHERE id = ",
        columns::<DB>(true)
    ));
    one.value(id);
    let Some(row) = DB::fetch_all(&mut *conn, &mut one).await?.pop() else {
        return Ok(None);
    };
    let failed = FailedMessage::of::<DB>(&row)?;
    let mut history = QueryBuilder::<DB>::new(format!(
        "SELECT CAST(attempt AS {}) AS attempt, plugin_version, plugin_sha256, error, delay_ms, at
         FROM attempt_errors WHERE message_id = ",
        DB::BIGINT
    ));
    DB::push_uuid(&mut history, failed.message_id);
    history.push(" AND plugin = ").value(failed.plugin.as_str());
    history.push(" ORDER BY id");
    let history = DB::fetch_all(conn, &mut history).await?;
    let history = history.iter().map(AttemptError::of::<DB>).collect();
    Ok(Some((failed, history)))
}
