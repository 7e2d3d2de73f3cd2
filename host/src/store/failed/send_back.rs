//! Sending failed messages back where they came from, as MariaDB/MySQL and SQLite do it:
//! the filter's ids read (and locked, where the database locks rows), marked `retrying`,
//! and each message put back into the inbox or, when it came from an exchange, into the
//! outbox. PostgreSQL does it in one statement (`postgres/failed.rs`).

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{FailedFilter, Operation, Retried};
use crate::store::outbox::TRANSPORT_OF_FAILED;
use crate::store::sql::{Change, Sql, Statement, clock};
use crate::store::{Result, StoreError};

/// Send back the newest `limit` failed messages `filter` selects, inside the transaction
/// `conn` is in; see [`crate::store::FailedMessages::failed_retry`].
pub(in crate::store) async fn send_back<DB: Sql>(
    conn: &mut DB::Connection,
    filter: &FailedFilter,
    limit: u64,
) -> Result<Retried> {
    let now = clock::<DB>(conn).await?;
    let mut selected = QueryBuilder::<DB>::new("");
    filter.push_ids(&mut selected, Operation::Retry, limit);
    selected.push(DB::LOCK_ROWS);
    let ids: Vec<i64> = (DB::fetch_all(conn, &mut selected).await?.iter())
        .map(|row| DB::column(row, "id"))
        .collect();
    let mut retried = Retried::default();
    if ids.is_empty() {
        return Ok(retried);
    }
    let mut mark =
        QueryBuilder::<DB>::new("UPDATE failed_messages SET status = 'retrying', last_retry_at = ");
    mark.value(now)
        .push(" WHERE id IN (")
        .list(ids.iter().copied());
    DB::execute(conn, mark.push(")")).await?;
    let mut rows = QueryBuilder::<DB>::new(format!(
        "SELECT {} AS message_id, plugin, queue, kind, {} AS headers, payload, source_exchange,
                source_routing_key, ordering_key, seq, {TRANSPORT_OF_FAILED} AS transport
         FROM failed_messages WHERE id IN (",
        DB::uuid_text("message_id"),
        DB::json_text("headers"),
    ));
    rows.list(ids.iter().copied()).push(")");
    for row in DB::fetch_all(conn, &mut rows).await? {
        let id: String = DB::column(&row, "message_id");
        let id = Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("message id {id:?}: {e}")))?;
        let exchange: Option<String> = DB::column(&row, "source_exchange");
        let mut back = QueryBuilder::<DB>::new(match exchange {
            None => {
                "INSERT INTO inbox (id, kind, headers, payload, available_at,
                                    queue, created_at, attempts, seen, ordering_key, seq) VALUES ("
            }
            Some(_) => {
                "INSERT INTO outbox (id, kind, headers, payload, created_at, plugin, transport,
                                     exchange, routing_key, ordering_key, source_message_id)
                 VALUES ("
            }
        });
        let kind: String = DB::column(&row, "kind");
        let headers: String = DB::column(&row, "headers");
        let payload: Vec<u8> = DB::column(&row, "payload");
        back.id(id).push(", ").value(kind).push(", ").json(headers);
        back.push(", ")
            .value(payload.as_slice())
            .push(", ")
            .value(now);
        match exchange {
            None => {
                retried.inbox += 1;
                let queue: String = DB::column(&row, "queue");
                let key: Option<String> = DB::column(&row, "ordering_key");
                let seq: Option<i64> = DB::column(&row, "seq");
                back.push(", ").value(queue).push(", ").value(now);
                back.push(", 0, TRUE, ")
                    .value(key)
                    .push(", ")
                    .value(seq)
                    .push(")");
                let changes = [("available_at", Change::Least), ("seen", Change::Take)];
                DB::push_upsert(&mut back, "inbox", &["id"], &changes);
            }
            Some(exchange) => {
                retried.broker += 1;
                let plugin: String = DB::column(&row, "plugin");
                let transport: String = DB::column(&row, "transport");
                let routing_key: Option<String> = DB::column(&row, "source_routing_key");
                let key: Option<String> = DB::column(&row, "ordering_key");
                back.push(", ").value(plugin).push(", ").value(transport);
                back.push(", ").value(exchange);
                back.push(", ").value(routing_key.unwrap_or_default());
                back.push(", ").value(key).push(", ").id(id).push(")");
                let clear: Vec<_> = (DB::OUTBOX_SENT.iter())
                    .map(|&c| (c, Change::Clear))
                    .collect();
                DB::push_upsert(&mut back, "outbox", &["id"], &clear);
            }
        }
        DB::execute(conn, &mut back).await?;
        // The key this failure held goes on once the message is handled.
        let plugin: String = DB::column(&row, "plugin");
        let mut release = QueryBuilder::<DB>::new("DELETE FROM held_keys WHERE message_id = ");
        release.id(id).push(" AND plugin = ").value(plugin);
        DB::execute(conn, &mut release).await?;
    }
    Ok(retried)
}
