//! The AMQP transport (RabbitMQ, lapin): the topology declared from config, consumers
//! that settle each batch in the database before acking it, delayed retries through
//! per-delay queues, and dead-letter queues; a supervisor that keeps the consumers
//! running across broker restarts and network cuts.

pub mod consumer;
pub mod delivery;
pub mod depth;
mod detours;
pub mod publish;
pub mod relay;
pub mod supervisor;
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
    /// Bridge: instead of handling the deliveries here, move them into this inbox queue
    /// (deduplicated on message id, acked once the insert committed); the inbox worker of
    /// any host handles them from there.
    #[serde(default)]
    pub to_inbox: Option<String>,
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

/// Will the same operation work again once the broker or the network is back? Connection
/// and channel loss, a forced close (broker restart), missed heartbeats and resource
/// errors are transient; access refused, an unknown virtual host or queue, and arguments
/// that conflict with what the broker has are for the operator to fix.
pub fn is_transient(error: &lapin::Error) -> bool {
    use lapin::ErrorKind;
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    match error.kind() {
        ErrorKind::ProtocolError(e) => match e.kind() {
            AMQPErrorKind::Soft(soft) => !matches!(
                soft,
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
            ),
            AMQPErrorKind::Hard(hard) => matches!(
                hard,
                AMQPHardError::CONNECTIONFORCED
                    | AMQPHardError::RESOURCEERROR
                    | AMQPHardError::INTERNALERROR
                    | AMQPHardError::CHANNELERROR
                    | AMQPHardError::UNEXPECTEDFRAME
                    | AMQPHardError::FRAMEERROR
            ),
        },
        ErrorKind::IOError(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::ChannelsLimitReached
        | ErrorKind::MissingHeartbeatError => true,
        _ => false,
    }
}
