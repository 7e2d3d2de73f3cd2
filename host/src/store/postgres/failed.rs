//! The failed messages on PostgreSQL: listing them with their attempts' errors, sending
//! them back (to the inbox, or through the outbox to their source exchange) and deleting
//! them.

use sqlx::{Postgres, QueryBuilder, Row};

use super::PostgresStore;
use super::notify;
use crate::store::failed::FailedSql;
use crate::store::failed::Operation;
use crate::store::outbox::TRANSPORT_OF_FAILED;
use crate::store::{FailedFilter, Result, Retried};

#[async_trait::async_trait]
impl FailedSql for PostgresStore {
    async fn retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried> {
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
            ") RETURNING message_id, plugin, queue, kind, headers, payload, source,
                           source_exchange, source_routing_key, ordering_key, seq),
             released AS (
                 DELETE FROM held_keys h USING retried r
                 WHERE h.message_id = r.message_id AND h.plugin = r.plugin),
             back AS (
                 INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at,
                                    seen, ordering_key, seq)
                 SELECT DISTINCT ON (message_id) message_id, queue, kind, headers, payload, 0,
                        wharf_now_ms(), wharf_now_ms(), true, ordering_key, seq
                 FROM retried WHERE source_exchange IS NULL
                 ON CONFLICT (id) DO UPDATE
                 SET available_at = LEAST(inbox.available_at, excluded.available_at), seen = true),
             out AS (
                 INSERT INTO outbox (id, source_message_id, plugin, transport, exchange, routing_key,
                                     ordering_key, kind, headers, payload, created_at)
                 SELECT DISTINCT ON (message_id) message_id, message_id, plugin, ",
        );
        query.push(TRANSPORT_OF_FAILED).push(
            ", source_exchange, source_routing_key, ordering_key, kind, headers, payload,
                        wharf_now_ms()
                 FROM retried WHERE source_exchange IS NOT NULL
                 ON CONFLICT (id) DO UPDATE SET sent_at = NULL)
             SELECT COUNT(*) FILTER (WHERE source_exchange IS NULL) AS inbox,
                    COUNT(*) FILTER (WHERE source_exchange IS NOT NULL) AS broker
             FROM retried",
        );
        let mut tx = self.pool.begin().await?;
        let row = query.build().fetch_one(&mut *tx).await?;
        let retried = Retried {
            inbox: row.get::<i64, _>("inbox") as u64,
            broker: row.get::<i64, _>("broker") as u64,
        };
        if retried.inbox > 0 {
            notify(&mut tx, &self.channel).await?;
        }
        tx.commit().await?;
        Ok(retried)
    }

    async fn delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64> {
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
        let deleted: i64 = query.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(deleted as u64)
    }
}
