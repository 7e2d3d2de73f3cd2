//! Transports: where messages come from. Each is a [`source::Source`] (take a batch
//! with what holds it, keep it held while its handlers run, settle it and release it at
//! the source), driven by the one [`pump`]: `inbox` claims batches from the store's inbox
//! table; `amqp` consumes RabbitMQ queues (and relays the outbox to exchanges); `kafka`
//! consumes Kafka topics in the fleet's group; what the consumers of a broker share is in
//! `broker`, what the outbox relays share in `outbox`.

pub mod amqp;
pub mod broker;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod pump;
pub mod source;

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::retry::RetryPolicy;

/// Waits between tries while a database or a broker is away: 100 ms doubling up to 10 s.
pub const OUTAGE_BACKOFF: RetryPolicy = RetryPolicy {
    max_retries: u32::MAX,
    base_delay_ms: 100,
    multiplier: 2.0,
    max_delay_ms: 10_000,
    jitter: 0.2,
};

/// A supervised task that ran this long before failing starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// How a supervisor backs off before starting a failed task again: [`OUTAGE_BACKOFF`]
/// by the failures in a row, counted from 1 again after a run of [`HEALTHY_RUN`].
#[derive(Debug, Default)]
pub struct Restarts {
    failures: u32,
}

impl Restarts {
    /// The task started at `started` failed: the failures in a row, and how long to wait.
    pub fn failed(&mut self, started: Instant) -> (u32, Duration) {
        if started.elapsed() >= HEALTHY_RUN {
            self.failures = 0;
        }
        self.failures += 1;
        (
            self.failures,
            OUTAGE_BACKOFF.delay(self.failures, &mut rand::rng()),
        )
    }

    /// The task started at `started` failed with `error`, a failure that passes: log
    /// `what` stopped, why, and what happens `then`, and wait the backoff. `false` when
    /// `shutdown` came first (the task is not started again).
    pub async fn back_off<E: std::fmt::Display + Sync>(
        &mut self,
        started: Instant,
        (what, error, then): (&str, &E, &str),
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let (failures, delay) = self.failed(started);
        tracing::warn!(failures, ?delay, "{what}: {error}; {then}");
        crate::shutdown::sleep_or_stop(delay, shutdown).await
    }
}
