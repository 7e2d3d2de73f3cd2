//! The inbox transport: messages waiting in the store's inbox table (published with
//! `wharf publish`, by a handler, or bridged from AMQP). Lanes of claim -> dispatch ->
//! settle loops take batches of due messages; the store holds each batch (a held
//! transaction or a lease, [`claim_mode`]) until its settle, and a heartbeat keeps the
//! claim while the handlers run (`worker`: the inbox as a [`crate::transport::source::Source`]).

mod config;
mod worker;

pub use config::InboxConfig;
pub use worker::Worker;

use std::time::Duration;

use crate::store::ClaimMode;

/// How long a batch may keep its claim transaction open. A batch that runs longer (a
/// slow plugin's calls queueing for its permits) is handed over to leases: an open
/// transaction holds back vacuum and slows every other claim's scan (measured: a slow
/// plugin's 5 s held batch cost a fast plugin on another queue 16% of its throughput).
pub const HOLD_AT_MOST: Duration = Duration::from_millis(200);

/// Hold the claim transaction open while the handlers run when they are short (their
/// `deadline` is at most `inbox.hold_claims_up_to_ms`): one commit per batch, and a
/// crashed host's messages return at once. Longer handlers get leases, so no
/// transaction stays open for minutes (it would pin a connection and hold back
/// vacuum). See the PostgreSQL store's module docs for the measurements.
pub fn claim_mode(inbox: &InboxConfig, deadline: Duration) -> ClaimMode {
    if deadline <= Duration::from_millis(inbox.hold_claims_up_to_ms) {
        ClaimMode::Transaction
    } else {
        ClaimMode::Lease
    }
}

/// The queues each lane of a run claims from. One queue (or all, `[]`): every lane takes
/// any of them. Several: each queue has lanes of its own, `batches_in_flight` in all but
/// at least one per queue, so a batch never mixes queues and a queue of slow handlers
/// never holds up another queue's batches.
pub fn lanes(queues: &[String], batches_in_flight: usize) -> Vec<Vec<String>> {
    if queues.len() <= 1 {
        return vec![queues.to_vec(); batches_in_flight];
    }
    (0..batches_in_flight.max(queues.len()))
        .map(|i| vec![queues[i % queues.len()].clone()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::lanes;

    #[test]
    fn several_queues_get_lanes_of_their_own() {
        let q = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(lanes(&[], 2), [q(&[]), q(&[])]);
        assert_eq!(lanes(&q(&["a"]), 2), [q(&["a"]), q(&["a"])]);
        assert_eq!(lanes(&q(&["a", "b"]), 2), [q(&["a"]), q(&["b"])]);
        assert_eq!(
            lanes(&q(&["a", "b", "c"]), 2),
            [q(&["a"]), q(&["b"]), q(&["c"])]
        );
        assert_eq!(
            lanes(&q(&["a", "b"]), 4),
            [q(&["a"]), q(&["b"]), q(&["a"]), q(&["b"])]
        );
    }
}
