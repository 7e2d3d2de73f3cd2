//! Retention: which rows [`super::Store::cleanup`] deletes, and what it reports.

use serde::Serialize;

/// What a [`super::Store::cleanup`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cleaned {
    /// Dedup rows of messages no longer in the inbox: a duplicate of one of these ids
    /// arriving later is accepted and handled again.
    pub received: u64,
    /// Ledger rows of messages no longer in the inbox.
    pub processed: u64,
    /// Outbox rows already sent.
    pub outbox: u64,
    /// Failed messages handled after a retry (`resolved`).
    pub failed: u64,
    /// Attempt errors of messages no longer in the inbox or the pending dead letters.
    pub attempt_errors: u64,
}

impl Cleaned {
    /// From the rows each of [`CLEANUP`]'s statements deleted, in order.
    pub(crate) fn of([received, processed, outbox, attempt_errors, failed]: [u64; 5]) -> Self {
        Self {
            received,
            processed,
            outbox,
            failed,
            attempt_errors,
        }
    }
}

/// Retention as statements of one `?` (the cut, Unix ms), for the stores that bind with
/// `?` (SQLite, MariaDB/MySQL), run in this order in one transaction; see
/// [`super::Store::cleanup`]. PostgreSQL runs the same rules as one statement.
pub(crate) const CLEANUP: [&str; 5] = [
    "DELETE FROM received WHERE received_at < ?
       AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = received.id)",
    "DELETE FROM processed WHERE handled_at < ?
       AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = processed.message_id)",
    "DELETE FROM outbox WHERE sent_at < ?",
    // Attempt errors before failures: a resolved failure's history goes with it.
    "DELETE FROM attempt_errors WHERE at < ?
       AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = attempt_errors.message_id)
       AND NOT EXISTS (SELECT 1 FROM failed_messages f
                       WHERE f.message_id = attempt_errors.message_id
                         AND f.plugin = attempt_errors.plugin AND f.status <> 'resolved')",
    "DELETE FROM failed_messages WHERE status = 'resolved' AND resolved_at < ?",
];
