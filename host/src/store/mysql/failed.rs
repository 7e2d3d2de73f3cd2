//! The failed messages on MariaDB/MySQL: listing them with their attempts' errors, sending
//! them back (to the inbox, or through the outbox to their source exchange) and deleting
//! them. Neither server lets an `UPDATE`/`DELETE` select its rows from its own table with a
//! `LIMIT`, so the filter's ids are read first (locked), then changed.

use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;

use super::{MySqlStore, again_on_deadlock};
use super::{now, push_list};
use crate::store::failed::FailedSql;
use crate::store::failed::Operation;
use crate::store::{FailedFilter, Result, Retried};

/// The ids of the newest `limit` failed messages `filter` selects in a status `operation`
/// takes, locked for the rest of the transaction (a locking read sees the latest status).
async fn selected(
    conn: &mut MySqlConnection,
    filter: &FailedFilter,
    operation: Operation,
    limit: u64,
) -> Result<Vec<i64>> {
    let mut ids = QueryBuilder::<MySql>::new("");
    filter.push_ids(&mut ids, operation, limit);
    ids.push(" FOR UPDATE");
    Ok(ids.build_query_scalar().fetch_all(&mut *conn).await?)
}

/// Send failed messages back; see [`crate::store::FailedMessages::failed_retry`].
pub(super) async fn retry(pool: &MySqlPool, filter: &FailedFilter, limit: u64) -> Result<Retried> {
    let mut tx = pool.begin().await?;
    let now = now(&mut tx).await?;
    let ids = selected(&mut tx, filter, Operation::Retry, limit).await?;
    let mut retried = Retried::default();
    if ids.is_empty() {
        return Ok(retried);
    }
    let mut mark = QueryBuilder::<MySql>::new(
        "UPDATE failed_messages SET status = 'retrying', last_retry_at = ",
    );
    mark.push_bind(now).push(" WHERE id IN (");
    push_list(&mut mark, ids.iter().copied());
    mark.push(")");
    mark.build().execute(&mut *tx).await?;
    let mut rows = QueryBuilder::<MySql>::new(
        "SELECT message_id, plugin, queue, kind, headers, payload, source_exchange,
                source_routing_key
         FROM failed_messages WHERE id IN (",
    );
    push_list(&mut rows, ids.iter().copied());
    rows.push(")");
    for row in rows.build().fetch_all(&mut *tx).await? {
        let message_id: Uuid = row.get("message_id");
        let exchange: Option<String> = row.get("source_exchange");
        let statement = match exchange {
            None => {
                retried.inbox += 1;
                sqlx::query(
                    "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at,
                                        created_at, seen)
                     VALUES (?, ?, ?, ?, ?, 0, ?, available_at, TRUE)
                     ON DUPLICATE KEY UPDATE available_at = LEAST(available_at, VALUES(available_at)),
                                             seen = TRUE",
                )
                .bind(message_id)
                .bind(row.get::<String, _>("queue"))
            }
            Some(exchange) => {
                retried.broker += 1;
                sqlx::query(
                    "INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key,
                                         kind, headers, payload, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE sent_at = NULL, locked_until = NULL",
                )
                .bind(message_id)
                .bind(message_id)
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

/// Delete failed messages and their history; see [`crate::store::FailedMessages::failed_delete`].
pub(super) async fn delete(pool: &MySqlPool, filter: &FailedFilter, limit: u64) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let ids = selected(&mut tx, filter, Operation::Delete, limit).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut history = QueryBuilder::<MySql>::new(
        "DELETE a FROM attempt_errors a JOIN failed_messages f
             ON a.message_id = f.message_id AND a.plugin = f.plugin
         WHERE f.id IN (",
    );
    push_list(&mut history, ids.iter().copied());
    history.push(")");
    history.build().execute(&mut *tx).await?;
    let mut gone = QueryBuilder::<MySql>::new("DELETE FROM failed_messages WHERE id IN (");
    push_list(&mut gone, ids.iter().copied());
    gone.push(")");
    let deleted = gone.build().execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

#[async_trait::async_trait]
impl FailedSql for MySqlStore {
    async fn retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried> {
        again_on_deadlock!(retry(&self.pool, filter, limit))
    }

    async fn delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64> {
        again_on_deadlock!(delete(&self.pool, filter, limit))
    }
}
