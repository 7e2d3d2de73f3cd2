//! Effects a handler asked for during one call, buffered by the runtime and committed by
//! the store only if the call's outcome is *ok* — in the same transaction that records the
//! message as handled.

use std::collections::BTreeMap;

use uuid::Uuid;

/// Where a published message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An inbox queue: inserted into the inbox in the settle transaction.
    Queue(String),
    /// An AMQP exchange: written to the outbox for the relay.
    Exchange {
        /// Exchange name.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// A Kafka topic: written to the outbox for the Kafka relay; the publish's key is
    /// the record's key.
    Topic(String),
}

impl Destination {
    /// What its names weigh against a call's publish budget.
    pub fn bytes(&self) -> usize {
        match self {
            Destination::Queue(queue) => queue.len(),
            Destination::Exchange {
                exchange,
                routing_key,
            } => exchange.len() + routing_key.len(),
            Destination::Topic(topic) => topic.len(),
        }
    }
}

/// One buffered publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Id the new message will carry (returned to the handler).
    pub id: Uuid,
    /// Target.
    pub destination: Destination,
    /// Message kind.
    pub kind: String,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
    /// Ordering key, to an inbox queue or a topic (to an exchange it is in `headers`).
    pub key: Option<String>,
}

/// A handler's answer to the request it handled.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
}

/// Everything one call wants to change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Messages to publish, in call order.
    pub publishes: Vec<Publish>,
    /// State writes by key: `Some` sets, `None` deletes. Last write wins.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Version of each state key the call read from the store (0 = absent). The settle
    /// refuses the effects when any of them changed meanwhile, and the message runs again.
    pub reads: BTreeMap<String, i64>,
    /// Its answer, when the message is a request and the handler answered.
    pub reply: Option<Reply>,
}
