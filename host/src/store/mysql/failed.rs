//! The failed messages on MariaDB/MySQL: listing them with their attempts' errors, sending
//! them back (to the inbox, or through the outbox to their source exchange) and deleting
//! them. Neither server lets an `UPDATE`/`DELETE` select its rows from its own table with a
//! `LIMIT`, so the filter's ids are read first (locked), then changed.

use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder};

use super::push_list;
use super::{MySqlStore, again_on_deadlock};
use crate::store::failed::Operation;
use crate::store::failed::{FailedSql, send_back};
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
        again_on_deadlock!(async {
            let mut tx = self.pool.begin().await?;
            let retried = send_back::<MySql>(&mut tx, filter, limit).await?;
            tx.commit().await?;
            Ok(retried)
        })
    }

    async fn delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64> {
        again_on_deadlock!(delete(&self.pool, filter, limit))
    }
}
