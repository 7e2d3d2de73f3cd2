//! The outbox as the relay sees it ([`Outbox`]): messages handlers published to AMQP
//! exchanges, committed with their results and waiting to be sent. Adding one is written
//! once over every SQL store; a store writes how a relay takes and settles them
//! ([`OutboxSql`]).

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::sql::{Dialect, Run, SqlStore, Statement};
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
