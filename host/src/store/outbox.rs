//! The outbox as the relay sees it: messages handlers published to AMQP exchanges,
//! committed with their results and waiting to be sent.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::Hold;

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

/// Outbox messages taken by [`super::Store::claim_outbox`].
#[derive(Debug)]
pub struct OutboxClaim {
    /// The messages, oldest first.
    pub messages: Vec<OutboxMessage>,
    /// What keeps other relays off them.
    pub hold: Hold,
}
