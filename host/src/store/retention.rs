//! Retention: which rows [`super::Admin::cleanup`] deletes (the same statements on every
//! store), and what it reports.

use std::time::Duration;

use serde::Serialize;
use sqlx::QueryBuilder;

use super::Result;
use super::sql::{Sql, Statement, clock};

/// What a [`super::Admin::cleanup`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cleaned {
    /// Dedup rows of messages no longer in the inbox, the ledger (after this cleanup) or
    /// the unresolved failed messages: a duplicate of one of these ids arriving later is
    /// accepted and handled again. While any of those rows remains, the id's dedup row
    /// does: a claim looks up the ledger only for messages put back (`inbox.seen`), so a
    /// duplicate must not get in while the ledger still knows its id.
    pub received: u64,
    /// Ledger rows of messages no longer in the inbox.
    pub processed: u64,
    /// Outbox rows already sent.
    pub outbox: u64,
    /// Failed messages handled after a retry (`resolved`).
    pub failed: u64,
    /// Attempt errors of messages no longer in the inbox or the pending dead letters.
    pub attempt_errors: u64,
    /// Ordering keys given no number since the cut and with nothing left that carries one
    /// (a message in the inbox, a held key, a failed message that may be sent back): a
    /// key's next message starts again at 1.
    pub ordering_keys: u64,
    /// Answers to requests of callers waiting on a host (a request repeated with the same
    /// id gets its first answer until then).
    pub replies: u64,
}

impl std::fmt::Display for Cleaned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dedup, {} ledger, {} sent outbox, {} resolved failures, {} attempt errors, {} idle ordering keys, {} answers",
            self.received,
            self.processed,
            self.outbox,
            self.failed,
            self.attempt_errors,
            self.ordering_keys,
            self.replies
        )
    }
}

impl Cleaned {
    /// From the rows each of [`CLEANUP`]'s statements deleted, in order, and the idle
    /// ordering keys.
    fn of(
        [processed, received, outbox, attempt_errors, failed, replies]: [u64; 6],
        ordering_keys: u64,
    ) -> Self {
        Self {
            received,
            processed,
            outbox,
            failed,
            attempt_errors,
            ordering_keys,
            replies,
        }
    }
}

/// Retention as statements around the cut (Unix ms), run in this order in one
/// transaction; see [`super::Admin::cleanup`].
const CLEANUP: [(&str, &str); 6] = [
    (
        "DELETE FROM processed WHERE handled_at < ",
        " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = processed.message_id)",
    ),
    // After the ledger: an id keeps its dedup row while the ledger keeps one of its.
    (
        "DELETE FROM received WHERE received_at < ",
        " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = received.id)
          AND NOT EXISTS (SELECT 1 FROM processed p WHERE p.message_id = received.id)
          AND NOT EXISTS (SELECT 1 FROM failed_messages f
                          WHERE f.message_id = received.id AND f.status <> 'resolved')",
    ),
    ("DELETE FROM outbox WHERE sent_at < ", ""),
    // Attempt errors before failures: a resolved failure's history goes with it.
    (
        "DELETE FROM attempt_errors WHERE at < ",
        " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = attempt_errors.message_id)
          AND NOT EXISTS (SELECT 1 FROM failed_messages f
                          WHERE f.message_id = attempt_errors.message_id
                            AND f.plugin = attempt_errors.plugin AND f.status <> 'resolved')",
    ),
    (
        "DELETE FROM failed_messages WHERE status = 'resolved' AND resolved_at < ",
        "",
    ),
    ("DELETE FROM replies WHERE created_at < ", ""),
];

/// How long an ordering key stays numbered after its last message at least, whatever
/// the cleanup's `older_than`: far longer than an enqueue transaction lasts.
const KEYS_IDLE_AT_LEAST: Duration = Duration::from_secs(60);

/// Delete what is older than `older_than` and finished, inside the transaction `conn` is
/// in; see [`super::Admin::cleanup`].
pub(super) async fn clean<DB: Sql>(
    conn: &mut DB::Connection,
    older_than: Duration,
) -> Result<Cleaned> {
    let now = clock::<DB>(conn).await?;
    let cut = now - older_than.as_millis() as i64;
    let mut deleted = [0u64; 6];
    for (n, (before, after)) in deleted.iter_mut().zip(CLEANUP) {
        let mut statement = QueryBuilder::<DB>::new(before);
        statement.value(cut).push(after);
        *n = DB::execute(conn, &mut statement).await?;
    }
    // Last: the failed messages that carry a key's numbers are the unresolved ones left.
    // An enqueue numbering the key meanwhile holds its row: the delete waits for it and
    // finds it numbered since the cut, or the enqueue waits and numbers the key from 1
    // again. (After the wait the delete sees the row anew but the inbox as it was when it
    // began: an enqueue that numbered the key before the cut and had not committed yet
    // would go unseen, hence a cut at least a minute back.)
    let k = DB::KEY;
    let mut idle = QueryBuilder::<DB>::new("DELETE FROM ordering_keys WHERE updated_at < ");
    idle.value(cut.min(now - KEYS_IDLE_AT_LEAST.as_millis() as i64)).push(format!(
        " AND NOT EXISTS (SELECT 1 FROM inbox i
                          WHERE i.queue = ordering_keys.queue AND i.ordering_key = ordering_keys.{k})
          AND NOT EXISTS (SELECT 1 FROM held_keys h
                          WHERE h.queue = ordering_keys.queue AND h.{k} = ordering_keys.{k})
          AND NOT EXISTS (SELECT 1 FROM failed_messages f
                          WHERE f.queue = ordering_keys.queue
                            AND f.ordering_key = ordering_keys.{k} AND f.status <> 'resolved')"
    ));
    let ordering_keys = DB::execute(conn, &mut idle).await?;
    Ok(Cleaned::of(deleted, ordering_keys))
}
