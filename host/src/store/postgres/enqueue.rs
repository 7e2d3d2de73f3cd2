//! Enqueueing on PostgreSQL: a message whose id was received before is skipped
//! (`received`, kept until retention), the others go into the inbox numbered per ordering
//! key (`ordering_keys`), and idle hosts are woken.

use sqlx::{Postgres, Transaction};

use super::notify;
use crate::envelope::NewMessage;
use crate::store::{Result, headers_json};

/// Insert the messages whose ids were not received before, in one statement; wakes idle
/// hosts when any was new. Returns how many were new.
pub(super) async fn insert_new(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    messages: &[NewMessage],
) -> Result<u64> {
    if messages.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(messages.len());
    let mut queues = Vec::with_capacity(messages.len());
    let mut kinds = Vec::with_capacity(messages.len());
    let mut headers = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut attempts = Vec::with_capacity(messages.len());
    let mut delays = Vec::with_capacity(messages.len());
    for m in messages {
        ids.push(m.id);
        queues.push(m.queue.as_str());
        kinds.push(m.kind.as_str());
        headers.push(headers_json(&m.headers));
        payloads.push(m.payload.as_slice());
        keys.push(m.key.as_deref());
        attempts.push(i32::try_from(m.attempts).unwrap_or(i32::MAX));
        delays.push(m.delay_ms());
    }
    // `received` remembers every id (dedup on arrival, also after the message left the
    // inbox); only ids it did not know go into the inbox. DISTINCT ON keeps the first of
    // an id given twice in one call. The new messages of a (queue, key) take the next
    // numbers of its row in `ordering_keys`, in the order given (`r` of `c`); the rows are
    // locked in (queue, key) order, so two enqueues of the same keys wait, not deadlock.
    let inserted = sqlx::query(
        "WITH m AS (
             SELECT DISTINCT ON (id) * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::int[], $8::bigint[])
                 WITH ORDINALITY AS t(id, queue, kind, headers, payload, key, attempts, delay, n)
             ORDER BY id, n),
         fresh AS (
             INSERT INTO received (id, queue, received_at)
             SELECT id, queue, wharf_now_ms() FROM m ORDER BY n
             ON CONFLICT DO NOTHING RETURNING id),
         new AS (
             SELECT m.*, row_number() OVER w AS r, count(*) OVER w AS c
             FROM m JOIN fresh USING (id)
             WINDOW w AS (PARTITION BY m.queue, m.key ORDER BY m.n
                          ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
         numbered AS (
             INSERT INTO ordering_keys (queue, key, last_seq, updated_at)
             SELECT queue, key, max(c), wharf_now_ms() FROM new WHERE key IS NOT NULL
             GROUP BY queue, key ORDER BY queue, key
             ON CONFLICT (queue, key) DO UPDATE
                 SET last_seq = ordering_keys.last_seq + EXCLUDED.last_seq,
                     updated_at = EXCLUDED.updated_at
             RETURNING queue, key, last_seq)
         INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at, ordering_key, seq)
         SELECT new.id, new.queue, new.kind, new.headers::jsonb, new.payload, new.attempts,
                wharf_now_ms() + new.delay, wharf_now_ms(),
                new.key, numbered.last_seq - new.c + new.r
         FROM new LEFT JOIN numbered ON numbered.queue = new.queue AND numbered.key = new.key",
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&kinds)
    .bind(&headers)
    .bind(&payloads)
    .bind(&keys)
    .bind(&attempts)
    .bind(&delays)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted > 0 {
        notify(tx, channel).await?;
    }
    Ok(inserted)
}
