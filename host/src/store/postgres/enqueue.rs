//! Enqueueing on PostgreSQL: a message whose id was received before is skipped
//! (`received`, kept until retention), the others go into the inbox, and idle hosts are
//! woken.

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
    for m in messages {
        ids.push(m.id);
        queues.push(m.queue.as_str());
        kinds.push(m.kind.as_str());
        headers.push(headers_json(&m.headers));
        payloads.push(m.payload.as_slice());
    }
    // `received` remembers every id (dedup on arrival, also after the message left the
    // inbox); only ids it did not know go into the inbox. DISTINCT ON keeps the first of
    // an id given twice in one call.
    let inserted = sqlx::query(
        "WITH m AS (
             SELECT DISTINCT ON (id) * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])
                 WITH ORDINALITY AS t(id, queue, kind, headers, payload, n)
             ORDER BY id, n),
         fresh AS (
             INSERT INTO received (id, queue, received_at)
             SELECT id, queue, wharf_now_ms() FROM m ORDER BY n
             ON CONFLICT DO NOTHING RETURNING id)
         INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at)
         SELECT m.id, m.queue, m.kind, m.headers::jsonb, m.payload, 0, wharf_now_ms(), wharf_now_ms()
         FROM m JOIN fresh USING (id)",
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&kinds)
    .bind(&headers)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted > 0 {
        notify(tx, channel).await?;
    }
    Ok(inserted)
}
