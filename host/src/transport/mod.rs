//! Transports: where messages come from. `inbox` claims batches from the store's inbox
//! table; `amqp` consumes RabbitMQ queues (and relays the outbox to exchanges). Both hand
//! their messages to the same `dispatch` and settle each batch in one transaction of the
//! store; what they share is here.

pub mod amqp;
pub mod inbox;

use crate::retry::RetryPolicy;

/// Waits between tries while a database or a broker is away: 100 ms doubling up to 10 s.
pub const OUTAGE_BACKOFF: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    base_delay_ms: 100,
    multiplier: 2.0,
    max_delay_ms: 10_000,
    jitter: 0.2,
};
