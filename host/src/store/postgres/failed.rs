//! The failed messages on PostgreSQL: listing them with their attempts' errors, sending
//! them back (to the inbox, or through the outbox to their source exchange) and deleting
//! them.

use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::notify;
use crate::store::failed::{Operation, attempt_error, failed_message};
use crate::store::{
    AttemptError, FailedFilter, FailedMessage, FailedPage, PageRequest, Result, Retried,
};

/// The columns `failed_message` reads, as text and 64-bit integers; the payload itself
/// only with `payload` (one message's detail; a list's items carry its size).
fn failed_columns(payload: bool) -> String {
    format!(
        "id, message_id::text AS message_id, plugin, plugin_version, plugin_sha256, source,
         queue, kind, headers::text AS headers, {}, octet_length(payload)::bigint AS payload_bytes,
         error, attempts::bigint AS attempts, status, failed_at, last_retry_at, resolved_at",
        if payload {
            "payload"
        } else {
            "NULL::bytea AS payload"
        }
    )
}

/// A page of the failed messages `filter` selects; see [`crate::store::Store::failed_list`].
pub(super) async fn list(
    pool: &PgPool,
    filter: &FailedFilter,
    page: PageRequest,
) -> Result<FailedPage> {
    let (mut rows, mut count) = filter.page_queries::<Postgres>(&failed_columns(false), page);
    let rows = rows.build().fetch_all(pool).await?;
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    let items = rows.iter().map(failed_message).collect::<Result<_>>()?;
    Ok(FailedPage::of(total, items, page.limit))
}

/// One failed message with its attempts' errors; see [`crate::store::Store::failed_get`].
pub(super) async fn get(
    pool: &PgPool,
    id: i64,
) -> Result<Option<(FailedMessage, Vec<AttemptError>)>> {
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM failed_messages WHERE id = $1",
        failed_columns(true)
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let failed = failed_message(&row)?;
    let history = sqlx::query(
        "SELECT attempt::bigint AS attempt, plugin_version, plugin_sha256, error, delay_ms, at
         FROM attempt_errors
         WHERE message_id = $1 AND plugin = $2 ORDER BY id",
    )
    .bind(failed.message_id)
    .bind(&failed.plugin)
    .fetch_all(pool)
    .await?
    .iter()
    .map(attempt_error)
    .collect();
    Ok(Some((failed, history)))
}

/// Send failed messages back; see [`crate::store::Store::failed_retry`].
pub(super) async fn retry(
    pool: &PgPool,
    channel: &str,
    filter: &FailedFilter,
    limit: u64,
) -> Result<Retried> {
    let mut query = QueryBuilder::<Postgres>::new(
        "WITH retried AS (
             UPDATE failed_messages SET status = 'retrying', last_retry_at = wharf_now_ms()
             WHERE ",
    );
    // The status again at the top: a row a concurrent delete or retry took while this
    // one waited for its lock is checked anew, and skipped.
    query.push(Operation::Retry.statuses()).push(" AND id IN (");
    filter.push_ids(&mut query, Operation::Retry, limit);
    query.push(
        ") RETURNING message_id, plugin, queue, kind, headers, payload,
                       source_exchange, source_routing_key),
         back AS (
             INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at,
                                seen)
             SELECT DISTINCT ON (message_id) message_id, queue, kind, headers, payload, 0,
                    wharf_now_ms(), wharf_now_ms(), true
             FROM retried WHERE source_exchange IS NULL
             ON CONFLICT (id) DO UPDATE
             SET available_at = LEAST(inbox.available_at, excluded.available_at), seen = true),
         out AS (
             INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key, kind,
                                 headers, payload, created_at)
             SELECT DISTINCT ON (message_id) message_id, message_id, plugin, source_exchange,
                    source_routing_key, kind, headers, payload, wharf_now_ms()
             FROM retried WHERE source_exchange IS NOT NULL
             ON CONFLICT (id) DO UPDATE SET sent_at = NULL)
         SELECT COUNT(*) FILTER (WHERE source_exchange IS NULL) AS inbox,
                COUNT(*) FILTER (WHERE source_exchange IS NOT NULL) AS broker
         FROM retried",
    );
    let mut tx = pool.begin().await?;
    let row = query.build().fetch_one(&mut *tx).await?;
    let retried = Retried {
        inbox: row.get::<i64, _>("inbox") as u64,
        broker: row.get::<i64, _>("broker") as u64,
    };
    if retried.inbox > 0 {
        notify(&mut tx, channel).await?;
    }
    tx.commit().await?;
    Ok(retried)
}

/// Delete failed messages and their history; see [`crate::store::Store::failed_delete`].
pub(super) async fn delete(pool: &PgPool, filter: &FailedFilter, limit: u64) -> Result<u64> {
    let mut query =
        QueryBuilder::<Postgres>::new("WITH gone AS (DELETE FROM failed_messages WHERE ");
    query
        .push(Operation::Delete.statuses())
        .push(" AND id IN (");
    filter.push_ids(&mut query, Operation::Delete, limit);
    query.push(
        ") RETURNING message_id, plugin),
         history AS (
             DELETE FROM attempt_errors a USING gone
             WHERE a.message_id = gone.message_id AND a.plugin = gone.plugin)
         SELECT COUNT(*) FROM gone",
    );
    let deleted: i64 = query.build_query_scalar().fetch_one(pool).await?;
    Ok(deleted as u64)
}
