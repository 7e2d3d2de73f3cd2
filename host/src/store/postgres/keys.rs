//! A settle's ordering keys on PostgreSQL (see `store::settle::keys`), without counting
//! turns or locking keys, so the settle that moves a key on (nearly every one) pays one
//! statement: it wakes the first parked message after the one it settled. A settle
//! parking a message first locks (`FOR SHARE`) the rows that make it wait, its key's
//! earlier messages and the key's holds, then looks at them again. A settle moving the
//! key on changes one of those rows: if it did so first, the parking settle waited for it
//! to commit and sees the key moved (the message stays due); if not, it waits for the
//! parking settle to commit, and its wake, a statement after that change, sees the
//! message parked. Neither misses the other.

use sqlx::{Postgres, Transaction};

use crate::store::Result;
use crate::store::settle::{KeyHold, KeyStep, PARK_AT_MOST};

/// Hold the keys of `held` for their plugins; wake the first parked message after each
/// moving step; park the messages of `steps` that still wait for every plugin they
/// waited for (their earlier messages, as committed now, still hold it, or a dead letter
/// holds the key for it). Runs after the batch's messages are written, each statement
/// after the ones before it returned (see the module docs).
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    steps: &[KeyStep<'_>],
    held: &[KeyHold<'_>],
) -> Result<()> {
    if !held.is_empty() {
        sqlx::query(
            "INSERT INTO held_keys (queue, key, plugin, message_id, seq, held_at)
             SELECT queue, key, plugin, id, seq, wharf_now_ms()
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[])
                 AS t(queue, key, plugin, id, seq)
             ON CONFLICT DO NOTHING",
        )
        .bind(
            held.iter()
                .map(|h| h.message.queue.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            held.iter()
                .map(|h| h.message.key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(held.iter().map(|h| h.plugin).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.message.id).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.message.seq).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let moving: Vec<&KeyStep> = steps.iter().filter(|s| s.moves).collect();
    if !moving.is_empty() {
        // The ids looked up first (`ANY` of an array): joined to the rows they update, a
        // plan could hash every row of the inbox for a batch of keys (measured: 14 ms
        // beside 20,000 rows, against 0.1 ms).
        sqlx::query(
            "UPDATE inbox SET parked = false, available_at = wharf_now_ms()
             WHERE id = ANY(ARRAY(
                 SELECT w.id
                 FROM (SELECT queue, key, min(seq) AS seq
                       FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(queue, key, seq)
                       GROUP BY queue, key) m
                 CROSS JOIN LATERAL (
                     SELECT p.id FROM inbox p
                     WHERE p.queue = m.queue AND p.ordering_key = m.key
                       AND p.seq > m.seq AND p.parked
                     ORDER BY p.seq LIMIT 1) w))",
        )
        .bind(moving.iter().map(|s| s.queue).collect::<Vec<_>>())
        .bind(moving.iter().map(|s| s.key).collect::<Vec<_>>())
        .bind(moving.iter().map(|s| s.seq).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let parking: Vec<&KeyStep> = steps.iter().filter(|s| !s.waits.is_empty()).collect();
    if parking.is_empty() {
        return Ok(());
    }
    let (ids, queues, keys, seqs) = (
        parking.iter().map(|s| s.message).collect::<Vec<_>>(),
        parking.iter().map(|s| s.queue).collect::<Vec<_>>(),
        parking.iter().map(|s| s.key).collect::<Vec<_>>(),
        parking.iter().map(|s| s.seq).collect::<Vec<_>>(),
    );
    sqlx::query(
        "SELECT 1 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(queue, key, seq)
         JOIN inbox p ON p.queue = t.queue AND p.ordering_key = t.key AND p.seq < t.seq
         FOR SHARE OF p",
    )
    .bind(&queues)
    .bind(&keys)
    .bind(&seqs)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "SELECT 1 FROM UNNEST($1::text[], $2::text[]) AS t(queue, key)
         JOIN held_keys h ON h.queue = t.queue AND h.key = t.key
         FOR SHARE OF h",
    )
    .bind(&queues)
    .bind(&keys)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE inbox i SET parked = true, available_at = wharf_now_ms() + $6
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])
             AS t(id, queue, key, seq, waits)
         WHERE i.id = t.id AND NOT EXISTS (
             SELECT 1 FROM unnest(string_to_array(t.waits, ' ')) AS w(plugin)
             WHERE NOT EXISTS (
                       SELECT 1 FROM inbox p
                       WHERE p.queue = t.queue AND p.ordering_key = t.key AND p.seq < t.seq
                         AND (p.holds IS NULL OR w.plugin = ANY(string_to_array(p.holds, ' '))))
               AND NOT EXISTS (
                       SELECT 1 FROM held_keys h
                       WHERE h.queue = t.queue AND h.key = t.key AND h.plugin = w.plugin
                         AND h.seq < t.seq))",
    )
    .bind(&ids)
    .bind(&queues)
    .bind(&keys)
    .bind(&seqs)
    .bind(
        parking
            .iter()
            .map(|s| s.waits.join(" "))
            .collect::<Vec<_>>(),
    )
    .bind(PARK_AT_MOST.as_millis() as i64)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
