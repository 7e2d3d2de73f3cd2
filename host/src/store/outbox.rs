//! The outbox as the relay sees it ([`Outbox`]): messages handlers published to AMQP
//! exchanges, committed with their results and waiting to be sent. Adding one is written
//! once over every SQL store; a store writes how a relay takes and settles them
//! ([`OutboxSql`]).

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::sql::{Change, Dialect, Run, Sql, SqlStore, Statement, clock};
use super::{Hold, Result, StoreError, headers_json, parse_headers};

/// A message a handler published to an AMQP exchange, waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Order of insertion.
    pub seq: i64,
    /// The published message's id.
    pub id: Uuid,
    /// Target exchange.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Kind (the AMQP `type`).
    pub kind: String,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
}

/// An outbox message the broker cannot take as it is (its exchange does not exist): it
/// leaves the outbox for the failed messages, so the messages behind it go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undeliverable {
    /// Its [`OutboxMessage::seq`].
    pub seq: i64,
    /// Why, and what to do.
    pub error: String,
}

/// What the rows of an undeliverable outbox message become in `failed_messages`.
pub(super) const FAILED_SOURCE: &str = "outbox";

/// Outbox messages taken by [`super::Outbox::claim_outbox`].
#[derive(Debug)]
pub struct OutboxClaim {
    /// The messages, oldest first.
    pub messages: Vec<OutboxMessage>,
    /// What keeps other relays off them.
    pub hold: Hold,
}

/// The columns [`outbox_message`] reads, with the id and headers as text.
pub(super) const OUTBOX_COLUMNS: &str = "seq, id, exchange, routing_key, kind, headers, payload";

/// An outbox message from a row of [`OUTBOX_COLUMNS`] (PostgreSQL casts `id` and
/// `headers` to text), on either database.
pub(super) fn outbox_message<R: Row>(row: &R) -> Result<OutboxMessage>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let id: String = row.get("id");
    Ok(OutboxMessage {
        seq: row.get("seq"),
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("id {id:?}: {e}")))?,
        exchange: row.get("exchange"),
        routing_key: row.get("routing_key"),
        kind: row.get("kind"),
        headers: parse_headers(&row.get::<String, _>("headers"))?,
        payload: row.get("payload"),
    })
}

/// The outbox role of a store: what the relay takes, and what the HTTP API publishes.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Put a message in the outbox, for a relay to publish to `exchange` with
    /// `routing_key` (the HTTP API's publish); `false` when the outbox has its id already.
    async fn outbox_add(
        &self,
        id: Uuid,
        (exchange, routing_key): (&str, &str),
        kind: &str,
        headers: &BTreeMap<String, String>,
        payload: &[u8],
    ) -> Result<bool>;

    /// Take up to `limit` unsent outbox messages, oldest first, for the relay.
    /// PostgreSQL locks them in a transaction held until [`Outbox::outbox_sent`] (other
    /// hosts' relays skip them; a relay that dies releases them); SQLite, one host's
    /// store, holds nothing.
    async fn claim_outbox(&self, limit: u32) -> Result<OutboxClaim>;

    /// Settle a claim and release it: mark `sent` (the broker confirmed them) sent, and
    /// move the `undeliverable` ones to the failed messages (source `outbox`, with their
    /// exchange and routing key: a retry puts them back in the outbox), each with an
    /// attempt recording why. A failed outbox message an operator retried and the broker
    /// now confirmed is resolved.
    async fn outbox_sent(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()>;
}

/// What each store writes of [`Outbox`] in its own SQL: what a relay's claim holds, and
/// how it is settled.
#[async_trait::async_trait]
pub(super) trait OutboxSql {
    /// [`Outbox::claim_outbox`].
    async fn take(&self, limit: u32) -> Result<OutboxClaim>;

    /// [`Outbox::outbox_sent`].
    async fn settle_taken(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()>;
}

#[async_trait::async_trait]
impl<S: SqlStore + OutboxSql> Outbox for S {
    async fn outbox_add(
        &self,
        id: Uuid,
        (exchange, routing_key): (&str, &str),
        kind: &str,
        headers: &BTreeMap<String, String>,
        payload: &[u8],
    ) -> Result<bool> {
        let mut add = QueryBuilder::new(S::DB::INSERT_NEW);
        add.push(
            " outbox (id, source_message_id, plugin, exchange, routing_key, kind, headers, payload, created_at) VALUES (",
        );
        add.id(id).push(", ").id(id).push(", '', ");
        add.value(exchange).push(", ").value(routing_key).push(", ");
        add.value(kind)
            .push(", ")
            .json(headers_json(headers))
            .push(", ");
        add.value(payload).push(", ").now().push(")");
        add.push(S::DB::SKIP_EXISTING);
        let conn = &mut *self.pool().acquire().await?;
        Ok(S::DB::execute(conn, &mut add).await? == 1)
    }

    async fn claim_outbox(&self, limit: u32) -> Result<OutboxClaim> {
        self.take(limit).await
    }

    async fn outbox_sent(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()> {
        self.settle_taken(hold, sent, undeliverable).await
    }
}

/// Settle a relay's claim as MariaDB/MySQL and SQLite do, inside the transaction `conn` is
/// in, at the store's clock: see [`Outbox::outbox_sent`]. PostgreSQL does it in one
/// statement.
pub(super) async fn settle_sent<DB: Sql>(
    conn: &mut DB::Connection,
    sent: &[i64],
    undeliverable: &[Undeliverable],
) -> Result<()> {
    if sent.is_empty() && undeliverable.is_empty() {
        return Ok(());
    }
    let now = clock::<DB>(conn).await?;
    if !sent.is_empty() {
        let mut resolved = QueryBuilder::<DB>::new(
            "UPDATE failed_messages SET status = 'resolved', resolved_at = ",
        );
        resolved
            .value(now)
            .push(" WHERE status = 'retrying' AND source = ");
        resolved.value(FAILED_SOURCE);
        resolved.push(" AND message_id IN (SELECT id FROM outbox WHERE seq IN (");
        resolved.list(sent.iter().copied()).push("))");
        DB::execute(conn, &mut resolved).await?;
    }
    for u in undeliverable {
        let mut failed = QueryBuilder::<DB>::new(
            "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source,
                                          queue, kind, headers, payload, error, attempts, status,
                                          failed_at, source_exchange, source_routing_key)
             SELECT id, plugin, '', '', ",
        );
        failed
            .value(FAILED_SOURCE)
            .push(", '', kind, headers, payload, ");
        failed
            .value(u.error.as_str())
            .push(", 1, 'failed', ")
            .value(now);
        failed
            .push(", exchange, routing_key FROM outbox WHERE seq = ")
            .value(u.seq);
        let changes = [
            ("error", Change::Take),
            ("attempts", Change::Add),
            ("status", Change::Take),
            ("failed_at", Change::Take),
        ];
        DB::push_upsert(
            &mut failed,
            "failed_messages",
            &["message_id", "plugin"],
            &changes,
        );
        DB::execute(conn, &mut failed).await?;
        let mut attempt = QueryBuilder::<DB>::new(
            "INSERT INTO attempt_errors (message_id, plugin, plugin_version, plugin_sha256, attempt,
                                         error, delay_ms, at)
             SELECT o.id, o.plugin, '', '', f.attempts, ",
        );
        attempt.value(u.error.as_str()).push(", NULL, ").value(now);
        attempt.push(
            " FROM outbox o JOIN failed_messages f ON f.message_id = o.id AND f.plugin = o.plugin
              WHERE o.seq = ",
        );
        attempt.value(u.seq);
        DB::execute(conn, &mut attempt).await?;
    }
    let done = sent
        .iter()
        .copied()
        .chain(undeliverable.iter().map(|u| u.seq));
    let mut mark = QueryBuilder::<DB>::new("UPDATE outbox SET sent_at = ");
    mark.value(now).push(" WHERE seq IN (").list(done).push(")");
    DB::execute(conn, &mut mark).await?;
    Ok(())
}
