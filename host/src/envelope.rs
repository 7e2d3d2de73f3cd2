//! The envelope: one message as the host sees it between its source and the settler.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The AMQP header that carries a message's ordering key (seed 004's `partition_key`).
pub const KEY_HEADER: &str = "partition_key";

/// The header that says when (Unix ms) a request's caller stops waiting: a request due
/// after it is not handled.
pub const EXPIRES_HEADER: &str = "expires-at";

/// A message to put into the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Producer-supplied id; duplicates of an id already received are dropped.
    pub id: Uuid,
    /// Inbox queue.
    pub queue: String,
    /// Message kind, used for routing.
    pub kind: String,
    /// Producer headers.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
    /// Ordering key: the inbox numbers the messages of one (queue, key) in enqueue order.
    pub key: Option<String>,
    /// Attempts already made: 0, but for a broker's delivery moved into the inbox after
    /// an attempt that counted ([`Self::after_attempt`]).
    pub attempts: u32,
    /// How long after it is enqueued it becomes due: none, but for a delivery moved into
    /// the inbox to wait out its retry delay.
    pub delay: Duration,
}

impl NewMessage {
    /// A message with a fresh UUID v7 id.
    pub fn new(queue: &str, kind: &str, payload: Vec<u8>) -> Self {
        Self {
            id: Uuid::now_v7(),
            queue: queue.to_owned(),
            kind: kind.to_owned(),
            headers: BTreeMap::new(),
            payload,
            key: None,
            attempts: 0,
            delay: Duration::ZERO,
        }
    }

    /// [`Self::delay`] in ms, as the stores add it to the time it is enqueued.
    pub fn delay_ms(&self) -> i64 {
        i64::try_from(self.delay.as_millis()).unwrap_or(i64::MAX)
    }

    /// This message, after `attempts` attempts (counted), due `delay` after it is
    /// enqueued.
    pub fn after_attempt(self, attempts: u32, delay: Duration) -> Self {
        Self {
            attempts,
            delay,
            ..self
        }
    }

    /// This message with ordering key `key`.
    pub fn with_key(self, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..self
        }
    }
}

/// A message claimed from a source, on its way to the handlers.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Message id.
    pub id: Uuid,
    /// Inbox queue it sits in.
    pub queue: String,
    /// Message kind.
    pub kind: String,
    /// Producer headers.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub payload: Vec<u8>,
    /// Attempts already made (0 on first delivery).
    pub attempts: u32,
    /// The claim's fencing token: settling needs it to still be current.
    pub lock_token: Uuid,
    /// Plugins that already handled this message or dead-lettered it; not called again.
    pub settled_plugins: BTreeSet<String>,
    /// Where it came from.
    pub origin: Origin,
    /// When it became due in the inbox (Unix ms): enqueued, or its retry delay ended;
    /// `None` for a delivery from the broker.
    pub due_at: Option<i64>,
    /// Ordering key.
    pub key: Option<String>,
    /// Its place among the inbox messages of its (queue, key), from 1; `None` without a
    /// key or for a delivery from the broker (ordered by delivery).
    pub seq: Option<i64>,
    /// Where it stands among its key's messages for the ordered plugins: set by a claim
    /// that keeps keys in order ([`crate::store::KeyOrder::Keep`]) on keyed messages.
    pub turn: Option<KeyTurn>,
}

impl Envelope {
    /// This message as one to enqueue into the inbox queue `queue`, with its id, headers
    /// and key.
    pub fn into_inbox(self, queue: &str) -> NewMessage {
        NewMessage {
            id: self.id,
            queue: queue.to_owned(),
            kind: self.kind,
            headers: self.headers,
            payload: self.payload,
            key: self.key,
            attempts: 0,
            delay: Duration::ZERO,
        }
    }
}

/// A keyed message's place in its key's order, as claimed, for the plugins that keep it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTurn {
    /// How many times the key's order had moved on when it was claimed
    /// (`ordering_keys.turn`): a settle parking the message checks it did not move since.
    /// `None` where the store checks otherwise (PostgreSQL looks again under a lock).
    pub turn: Option<i64>,
    /// Ordered plugins an earlier message of the key still owes a verdict, or whose key is
    /// held by a dead letter: they wait.
    pub waits_for: BTreeSet<String>,
    /// The ordered plugins that still owed this message a verdict after its last settle,
    /// space-separated; `None` before its first run.
    pub holds: Option<String>,
    /// The plugins routed to it that keep the order of keys, and what a dead letter of
    /// theirs does to the key (filled by dispatch).
    pub ordered: BTreeMap<String, DeadLetterKey>,
    /// Ordered plugins an earlier message of its key in the same batch runs first: they
    /// run it inside the settle, after that one (filled by dispatch).
    pub runs_after: BTreeSet<String>,
}

/// What happens to a key when an ordered plugin dead-letters one of its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKey {
    /// The key's later messages wait for the plugin until an operator retries the failed
    /// message or skips it.
    #[default]
    Hold,
    /// The key's later messages go on.
    Skip,
}

/// The source a message was taken from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// A row of the inbox table (`queue` is the inbox queue).
    #[default]
    Inbox,
    /// A delivery from an AMQP queue (`queue` is the AMQP queue).
    Amqp {
        /// Exchange it was published to (empty: the default exchange).
        exchange: String,
        /// Its routing key.
        routing_key: String,
    },
    /// A record of a Kafka topic (`queue` is the topic).
    Kafka {
        /// Its partition.
        partition: i32,
        /// Its offset in the partition.
        offset: i64,
    },
}

impl Origin {
    /// Whether a broker delivered it (AMQP, Kafka), as opposed to an inbox row.
    pub fn is_delivery(&self) -> bool {
        !matches!(self, Origin::Inbox)
    }

    /// How its source name starts: `inbox:`, `amqp:`, `kafka:`.
    fn prefix(&self) -> &'static str {
        match self {
            Origin::Inbox => "inbox:",
            Origin::Amqp { .. } => "amqp:",
            Origin::Kafka { .. } => "kafka:",
        }
    }
}

impl Envelope {
    /// The source name shown to handlers and stored with failures.
    pub fn source(&self) -> String {
        format!("{}{}", self.origin.prefix(), self.queue)
    }

    /// Whether `source` is this message's [`Self::source`] (without building it).
    pub fn is_from(&self, source: &str) -> bool {
        source.strip_prefix(self.origin.prefix()) == Some(self.queue.as_str())
    }

    /// Whether `other` came from the same queue ([`Self::source`]) as this message.
    pub fn same_queue(&self, other: &Envelope) -> bool {
        self.queue == other.queue && self.origin.prefix() == other.origin.prefix()
    }

    /// When its requester stops waiting (Unix ms), when it said.
    pub fn expires_at(&self) -> Option<i64> {
        self.headers.get(EXPIRES_HEADER)?.parse().ok()
    }

    /// Exchange and routing key of a message that came from AMQP.
    pub fn amqp_route(&self) -> Option<(&str, &str)> {
        match &self.origin {
            Origin::Amqp {
                exchange,
                routing_key,
            } => Some((exchange, routing_key)),
            Origin::Inbox | Origin::Kafka { .. } => None,
        }
    }
}

/// A `message_id` as a UUID: itself when it is one, else a UUID derived from its sha256
/// (the same id always maps to the same UUID, so dedup works for any id scheme).
pub fn message_uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_else(|_| hashed_uuid(b"message_id:", id.as_bytes()))
}

/// A UUID (v8) derived from the sha256 of `domain` and `bytes`.
pub fn hashed_uuid(domain: &[u8], bytes: &[u8]) -> Uuid {
    let digest = Sha256::new()
        .chain_update(domain)
        .chain_update(bytes)
        .finalize();
    Uuid::new_v8(digest[..16].try_into().expect("sha256 has 32 bytes"))
}
