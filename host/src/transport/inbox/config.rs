//! `[inbox]`: how a host consumes the inbox table.

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// `[inbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// Queues to consume; empty means all. When several are listed, each gets lanes of
    /// its own (see `batches_in_flight`), so slow handlers on one queue never hold up
    /// another queue's batches.
    pub queues: Vec<String>,
    /// Messages claimed and settled together.
    pub batch_size: u32,
    /// Batches a host works on at once: while one is being settled, the next one's
    /// handlers run. `runtime.concurrency` bounds the calls across all of them. With
    /// several `queues`, they are shared out among the queues, at least one per queue
    /// (each may hold a database connection: keep the lanes under ~6 per host).
    pub batches_in_flight: usize,
    /// Longest wait between polls when nothing is due, in milliseconds. PostgreSQL hosts
    /// wake earlier: on a new message (NOTIFY) or when a scheduled retry comes due.
    pub poll_interval_ms: u64,
    /// How long a claim lasts without renewal, in ms: the worker renews it every third of
    /// this while handlers run, so it bounds how long a crashed host's messages wait.
    pub lease_ms: u64,
    /// Largest accepted payload: for `publish`, handlers' publishes and AMQP deliveries
    /// (a larger one goes to the failed messages and the dead-letter queue).
    pub max_payload_bytes: usize,
    /// PostgreSQL: when `runtime.deadline_ms` is at most this, a batch is claimed inside a
    /// transaction held open while its handlers run and committed with its results (one
    /// commit per batch; a crashed host's messages return at once). Longer handlers get
    /// leases settled in a later transaction. 0 always leases. SQLite always leases.
    pub hold_claims_up_to_ms: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            batch_size: 64,
            batches_in_flight: 2,
            poll_interval_ms: 200,
            lease_ms: 10_000,
            max_payload_bytes: 1 << 20,
            hold_claims_up_to_ms: 10_000,
        }
    }
}

impl InboxConfig {
    /// Ranges that types cannot express.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key: &str, problem: &str| Err(InvalidSetting::new(key, problem));
        if self.batches_in_flight == 0 {
            return invalid("inbox.batches_in_flight", "must be greater than 0");
        }
        if self.batch_size == 0 {
            return invalid("inbox.batch_size", "must be greater than 0");
        }
        if self.lease_ms < 30 {
            return invalid(
                "inbox.lease_ms",
                "must be at least 30 (the lease is renewed every third of it)",
            );
        }
        Ok(())
    }
}
