//! A settle's ordering keys on PostgreSQL (see `store::settle::keys`): the batch's key
//! rows locked in (queue, key) order with their turns read, the keys dead letters hold,
//! and the keys that move on (their turn grows, their first parked message is woken).

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::store::Result;
use crate::store::settle::{KeyHold, KeyStep, parked};

/// Lock the key rows of `steps` and read their turns; returns the messages that may park
/// (their key did not move since their claim).
pub(super) async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    steps: &[KeyStep<'_>],
) -> Result<HashSet<Uuid>> {
    if steps.is_empty() {
        return Ok(HashSet::new());
    }
    let (queues, keys): (Vec<&str>, Vec<&str>) = steps.iter().map(|s| (s.queue, s.key)).unzip();
    let rows = sqlx::query(
        "SELECT o.queue, o.key, o.turn FROM ordering_keys o
         WHERE (o.queue, o.key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
         ORDER BY o.queue, o.key FOR UPDATE",
    )
    .bind(&queues)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    let turns: HashMap<(String, String), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(parked(steps, &turns))
}

/// Hold the keys of `held` for their plugins, and move on the keys of `steps` that move:
/// their turn grows and the first parked message after the settled one is due now.
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
    if moving.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH m AS (
             SELECT DISTINCT ON (queue, key) queue, key, seq
             FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS t(queue, key, seq)
             ORDER BY queue, key, seq),
         turned AS (
             UPDATE ordering_keys o SET turn = o.turn + 1
             FROM m WHERE o.queue = m.queue AND o.key = m.key)
         UPDATE inbox i SET parked = false, available_at = wharf_now_ms()
         FROM m
         WHERE i.id = (SELECT p.id FROM inbox p
                       WHERE p.queue = m.queue AND p.ordering_key = m.key AND p.seq > m.seq
                         AND p.parked
                       ORDER BY p.seq LIMIT 1)",
    )
    .bind(moving.iter().map(|s| s.queue).collect::<Vec<_>>())
    .bind(moving.iter().map(|s| s.key).collect::<Vec<_>>())
    .bind(moving.iter().map(|s| s.seq).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
