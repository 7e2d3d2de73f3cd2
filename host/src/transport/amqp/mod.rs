//! The AMQP transport (RabbitMQ, lapin): the topology declared from config, consumers
//! that settle each batch in the database before acking it, delayed retries through
//! per-delay queues, and dead-letter queues; a supervisor that keeps the consumers
//! running across broker restarts and network cuts.

pub mod config;
pub mod connection;
pub mod consumer;
pub mod delivery;
pub mod depth;
pub mod publish;
pub mod relay;
mod republish;
pub mod supervisor;
pub mod topology;

pub use config::{AmqpConfig, ConsumeSpec, KindFrom, MissingMessageId};

use crate::store::StoreError;

/// Why a consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The broker or the connection failed; the unacked deliveries come back.
    #[error("AMQP error on queue {queue}: {source}")]
    Amqp {
        /// The consumed queue.
        queue: String,
        /// What lapin reported.
        source: lapin::Error,
    },
    /// The broker refused a retry or dead-letter publish.
    #[error("the broker refused to store a {what} of a message from queue {queue} (nack)")]
    Refused {
        /// The consumed queue.
        queue: String,
        /// "retry" or "dead letter".
        what: &'static str,
    },
    /// A topology declaration failed.
    #[error(transparent)]
    Declare(#[from] topology::DeclareError),
    /// The database failed; the batch was not acked and comes back.
    #[error("database error while settling queue {queue}: {source}")]
    Store {
        /// The consumed queue.
        queue: String,
        /// The store's error.
        source: StoreError,
    },
    /// The broker cancelled the consumer (queue deleted) or the connection closed.
    #[error("the consumer of queue {0} was cancelled by the broker")]
    Cancelled(String),
}

impl ConsumeError {
    /// Will consuming work again after a pause (broker, network or database back)? The
    /// rest needs the operator: access refused, a missing queue, conflicting arguments, a
    /// database error that is not about connectivity.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsumeError::Amqp { source, .. } => is_transient(source),
            ConsumeError::Refused { .. } | ConsumeError::Cancelled(_) => true,
            ConsumeError::Declare(e) => e.is_transient(),
            ConsumeError::Store { source, .. } => source.is_transient(),
        }
    }
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
