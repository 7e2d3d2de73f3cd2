//! How a handler says it did not succeed: *retry* (transient) or *reject* (permanent).

use std::fmt;
use std::time::Duration;

/// The result type of a handler.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A handler failure, turned by the host into a delayed retry or a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Try again later; `delay` overrides the host's backoff when given.
    Retry {
        /// Why, kept in the attempt history.
        reason: String,
        /// Minimum wait before the next attempt.
        delay: Option<Duration>,
    },
    /// Give up: the message goes to the failed messages with this reason.
    Reject(String),
}

/// A transient failure: the host retries with exponential backoff.
pub fn retry(reason: impl Into<String>) -> Error {
    Error::Retry {
        reason: reason.into(),
        delay: None,
    }
}

/// A transient failure that should not be retried before `delay` has passed.
pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Error {
    Error::Retry {
        reason: reason.into(),
        delay: Some(delay),
    }
}

/// A permanent failure: no retry, straight to the failed messages.
pub fn reject(reason: impl Into<String>) -> Error {
    Error::Reject(reason.into())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Retry {
                reason,
                delay: None,
            } => write!(f, "retry: {reason}"),
            Error::Retry {
                reason,
                delay: Some(d),
            } => write!(f, "retry after {d:?}: {reason}"),
            Error::Reject(reason) => write!(f, "reject: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
