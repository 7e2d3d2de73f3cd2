//! The AMQP transport (RabbitMQ, lapin): the topology declared from config, consumers
//! that settle each batch in the database before acking it, delayed retries through
//! per-delay queues, and dead-letter queues.

pub mod consumer;
pub mod delivery;
pub mod topology;

use serde::{Deserialize, Serialize};

/// `[[amqp.consume]]`: a queue this host consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeSpec {
    /// Queue name.
    pub queue: String,
    /// Unacknowledged deliveries the broker sends ahead per consumer (`basic.qos`).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Consumers (each on its own channel) this host runs on the queue.
    #[serde(default = "one")]
    pub consumers: usize,
    /// Where a message's kind comes from: `type` (the `type` property, else the routing
    /// key) or `routing-key`.
    #[serde(default)]
    pub kind_from: KindFrom,
}

/// Source of a delivery's kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KindFrom {
    /// The `type` property; the routing key when it is absent.
    #[default]
    Type,
    /// The routing key.
    RoutingKey,
}

/// What to do with a delivery that has no `message_id` property.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingMessageId {
    /// Move it to the failed messages with the reason "missing message_id".
    #[default]
    Fail,
    /// Derive a deterministic id from the body's sha256 (equal bodies are duplicates).
    BodyHash,
}

fn default_prefetch() -> u16 {
    256
}

fn one() -> usize {
    1
}
