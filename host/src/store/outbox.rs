//! The outbox as the relays see it ([`Outbox`]): messages handlers published to AMQP
//! exchanges and Kafka topics, committed with their results and waiting to be sent, each
//! by the relay of its [`Transport`]. Adding one is written once over every SQL store; a
//! store writes how a relay takes and settles them ([`OutboxSql`]).

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Decode, QueryBuilder, Row, Type};
use uuid::Uuid;

use super::sql::{Change, Dialect, Run, Sql, SqlStore, Statement, clock};
use super::{Hold, Result, StoreError, headers_json, parse_headers};
use crate::effects::Destination;

/// Which relay sends an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The AMQP relay: to an exchange with a routing key.
    Amqp,
    /// The Kafka relay: to a topic with the record's key.
    Kafka,
}

impl Transport {
    /// Its name in the outbox's `transport` column.
    pub(super) fn column(self) -> &'static str {
        match self {
            Transport::Amqp => "amqp",
            Transport::Kafka => "kafka",
        }
    }
}

/// Where an outbox message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// An AMQP exchange and routing key.
    Exchange {
        /// Exchange name.
        exchange: &'a str,
        /// Routing key.
        routing_key: &'a str,
    },
    /// A Kafka topic, and the record's key.
    Topic {
        /// Topic name.
        topic: &'a str,
        /// The record's key.
        key: Option<&'a str>,
    },
}

impl<'a> Route<'a> {
    /// Where a publish to `destination` with ordering `key` goes through the outbox;
    /// `None` for an inbox queue (inserted into the inbox, not relayed).
    pub fn of(destination: &'a Destination, key: Option<&'a str>) -> Option<Self> {
        match destination {
            Destination::Queue(_) => None,
            Destination::Exchange {
                exchange,
                routing_key,
            } => Some(Route::Exchange {
                exchange,
                routing_key,
            }),
            Destination::Topic(topic) => Some(Route::Topic { topic, key }),
        }
    }

    /// Its outbox columns: `transport`, `exchange` (or topic), `routing_key` (empty to a
    /// topic) and `ordering_key` (a record's key).
    pub(super) fn columns(self) -> (&'static str, &'a str, &'a str, Option<&'a str>) {
        match self {
            Route::Exchange {
                exchange,
                routing_key,
            } => (Transport::Amqp.column(), exchange, routing_key, None),
            Route::Topic { topic, key } => (Transport::Kafka.column(), topic, "", key),
        }
    }
}

/// A message a handler published to an AMQP exchange or a Kafka topic, waiting in the
/// outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Order of insertion.
    pub seq: i64,
    /// The published message's id.
    pub id: Uuid,
    /// Target exchange, or topic.
    pub exchange: String,
    /// Routing key (empty to a topic).
    pub routing_key: String,
    /// A Kafka record's key.
    pub key: Option<String>,
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

/// The `source` of an undeliverable outbox row in `failed_messages`, by the row's
/// `transport` column: `outbox` (AMQP) or `outbox:kafka`. A retry puts it back in the
/// outbox for the same relay.
pub(super) const FAILED_SOURCE: &str =
    "CASE transport WHEN 'kafka' THEN 'outbox:kafka' ELSE 'outbox' END";

/// The `source`s of failed outbox rows (see [`FAILED_SOURCE`]), as an SQL list.
pub(super) const FAILED_SOURCES: &str = "('outbox', 'outbox:kafka')";

/// The transport a failed message's `source` sends it back through (see
/// [`FAILED_SOURCE`]), as an SQL expression.
pub(super) const TRANSPORT_OF_FAILED: &str =
    "CASE source WHEN 'outbox:kafka' THEN 'kafka' ELSE 'amqp' END";

/// Outbox messages taken by [`super::Outbox::claim_outbox`].
#[derive(Debug)]
pub struct OutboxClaim {
    /// The messages, oldest first.
    pub messages: Vec<OutboxMessage>,
    /// What keeps other relays off them.
    pub hold: Hold,
}

/// The columns [`outbox_message`] reads, with the id and headers as text.
pub(super) const OUTBOX_COLUMNS: &str =
    "seq, id, exchange, routing_key, ordering_key, kind, headers, payload";

/// An outbox message from a row of [`OUTBOX_COLUMNS`] (PostgreSQL casts `id` and
/// `headers` to text), on either database.
pub(super) fn outbox_message<R: Row>(row: &R) -> Result<OutboxMessage>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let id: String = row.get("id");
    Ok(OutboxMessage {
        seq: row.get("seq"),
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("id {id:?}: {e}")))?,
        exchange: row.get("exchange"),
        routing_key: row.get("routing_key"),
        key: row.get("ordering_key"),
        kind: row.get("kind"),
        headers: parse_headers(&row.get::<String, _>("headers"))?,
        payload: row.get("payload"),
    })
}

/// The outbox role of a store: what the relays take, and what the HTTP API publishes.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Put a message in the outbox, for a relay to publish to `route` (the HTTP API's
    /// publish); `false` when the outbox has its id already.
    async fn outbox_add(
        &self,
        id: Uuid,
        route: Route<'_>,
        kind: &str,
        headers: &BTreeMap<String, String>,
        payload: &[u8],
    ) -> Result<bool>;

    /// Take up to `limit` unsent outbox messages of `transport`, oldest first, for its
    /// relay.
    /// PostgreSQL locks them in a transaction held until [`Outbox::outbox_sent`] (other
    /// hosts' relays skip them; a relay that dies releases them); SQLite, one host's
    /// store, holds nothing.
    async fn claim_outbox(&self, transport: Transport, limit: u32) -> Result<OutboxClaim>;

    /// Settle a claim and release it: mark `sent` (the broker confirmed them) sent, and
    /// move the `undeliverable` ones to the failed messages (source `outbox` or
    /// `outbox:kafka`, with their exchange and routing key or topic and key: a retry puts
    /// them back in the outbox), each with an
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
    async fn take(&self, transport: Transport, limit: u32) -> Result<OutboxClaim>;

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
        route: Route<'_>,
        kind: &str,
        headers: &BTreeMap<String, String>,
        payload: &[u8],
    ) -> Result<bool> {
        let (transport, exchange, routing_key, key) = route.columns();
        let mut add = QueryBuilder::new(S::DB::INSERT_NEW);
        add.push(
            " outbox (id, source_message_id, plugin, transport, exchange, routing_key, ordering_key, kind, headers, payload, created_at) VALUES (",
        );
        add.id(id).push(", ").id(id).push(", '', ").value(transport);
        add.push(", ").value(exchange).push(", ").value(routing_key);
        add.push(", ").value(key.map(str::to_owned)).push(", ");
        add.value(kind)
            .push(", ")
            .json(headers_json(headers))
            .push(", ");
        add.value(payload).push(", ").now().push(")");
        add.push(S::DB::SKIP_EXISTING);
        let conn = &mut *self.pool().acquire().await?;
        Ok(S::DB::execute(conn, &mut add).await? == 1)
    }

    async fn claim_outbox(&self, transport: Transport, limit: u32) -> Result<OutboxClaim> {
        self.take(transport, limit).await
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
        resolved.value(now).push(format!(
            " WHERE status = 'retrying' AND source IN {FAILED_SOURCES}
              AND message_id IN (SELECT id FROM outbox WHERE seq IN ("
        ));
        resolved.list(sent.iter().copied()).push("))");
        DB::execute(conn, &mut resolved).await?;
    }
    for u in undeliverable {
        let mut failed = QueryBuilder::<DB>::new(format!(
            "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source,
                                          queue, kind, headers, payload, error, attempts, status,
                                          failed_at, source_exchange, source_routing_key,
                                          ordering_key)
             SELECT id, plugin, '', '', {FAILED_SOURCE}, '', kind, headers, payload, "
        ));
        failed
            .value(u.error.as_str())
            .push(", 1, 'failed', ")
            .value(now);
        failed
            .push(", exchange, routing_key, ordering_key FROM outbox WHERE seq = ")
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
