//! The outbox as the relay sees it: messages handlers published to AMQP exchanges,
//! committed with their results and waiting to be sent.

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::{Hold, Result, StoreError, parse_headers};

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

/// Outbox messages taken by [`super::Store::claim_outbox`].
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
