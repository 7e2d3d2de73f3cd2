//! Publishing messages: where one goes, its kind, headers and ordering key. What a handler
//! publishes is delivered once the message it handles is handled successfully.

use crate::requests::Destination;
use crate::{Result, host, reject};

/// A message to publish, built up and then sent:
///
/// ```no_run
/// # fn f() -> wharf_sdk::Result<()> {
/// use wharf_sdk::Outgoing;
/// Outgoing::queue("audit-feed", "audit.recorded")
///     .key("order-7")
///     .send(&serde_json::json!({"seq": 3}))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub(crate) destination: Destination,
    pub(crate) kind: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) key: Option<String>,
}

impl Outgoing {
    /// A message of `kind` to an inbox queue.
    pub fn queue(queue: &str, kind: &str) -> Self {
        Self::to(Destination::Queue(queue.to_owned()), kind)
    }

    /// A message of `kind` to an AMQP exchange with `routing_key`, through the outbox relay.
    pub fn exchange(exchange: &str, routing_key: &str, kind: &str) -> Self {
        let destination = Destination::Exchange {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        };
        Self::to(destination, kind)
    }

    /// A message of `kind` to a Kafka topic, through the outbox relay: its [`key`](Self::key)
    /// is the record's key (so its partition: the records of one key keep their order),
    /// its id and kind travel in the `message-id` and `kind` headers.
    pub fn topic(topic: &str, kind: &str) -> Self {
        Self::to(Destination::Topic(topic.to_owned()), kind)
    }

    fn to(destination: Destination, kind: &str) -> Self {
        Self {
            destination,
            kind: kind.to_owned(),
            headers: Vec::new(),
            key: None,
        }
    }

    /// Its ordering key: the messages a handler publishes with one key to one queue keep
    /// the order it published them in, for the plugins that handle keys in order (to an
    /// exchange, the key travels in the `partition_key` header; to a topic, it is the
    /// record's key).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// Add a header.
    pub fn header(mut self, key: &str, value: &str) -> Self {
        self.headers.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Publish it with a JSON payload. Returns the new message's id.
    ///
    /// A queue, kind, header or key the host does not accept (see "Limits and quotas" in
    /// wharf's README) is an error, a *reject* when passed on with `?`. Publishing more
    /// messages or bytes than the host allows one call ends the call: the message is
    /// rejected.
    pub fn send(self, payload: &serde_json::Value) -> Result<String> {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| reject(format!("cannot encode payload: {e}")))?;
        self.send_bytes(&payload)
    }

    /// Publish it with a raw payload. Returns the new message's id.
    pub fn send_bytes(self, payload: &[u8]) -> Result<String> {
        host::publish(self, payload)
    }
}

/// Publish a message to an inbox queue (see [`Outgoing`] for a key or headers); it is
/// delivered once the current message is handled successfully. Returns the new message's
/// id.
pub fn publish(queue: &str, kind: &str, payload: &serde_json::Value) -> Result<String> {
    Outgoing::queue(queue, kind).send(payload)
}

/// Publish a message to an AMQP exchange through the outbox relay (see [`Outgoing`] for a
/// key or headers).
pub fn publish_to_exchange(
    exchange: &str,
    routing_key: &str,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<String> {
    Outgoing::exchange(exchange, routing_key, kind).send(payload)
}

/// Publish a record to a Kafka topic with `key` through the outbox relay (see
/// [`Outgoing`] for headers).
pub fn publish_to_topic(
    topic: &str,
    key: &str,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<String> {
    Outgoing::topic(topic, kind).key(key).send(payload)
}
