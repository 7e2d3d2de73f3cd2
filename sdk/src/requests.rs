//! What a handler asks of its host besides its verdict, shared by the WIT imports
//! (`host`) and the native test host (`testing`): the severity of a log line and where a
//! published message goes.

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the handler coped with.
    Warn,
    /// A failure.
    Error,
}

/// Where a published message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An inbox queue.
    Queue(String),
    /// An AMQP exchange with a routing key.
    Exchange {
        /// Exchange name.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
}
