//! A settle's ordering keys on MariaDB/MySQL (see `store::settle::keys`): the batch's key
//! rows locked in (queue, key) order with their turns read, the keys dead letters hold,
//! and the keys that move on. Every read here sees what other settles committed (READ
//! COMMITTED, the key rows locked first); the rows are reached through a joined key list
//! (`keyed`), never a scan.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{MySqlConnection, Row};
use uuid::Uuid;

use super::keyed::{self, IDS, KEY_STEPS};
use crate::store::Result;
use crate::store::settle::{KeyHold, KeyStep, parked};

/// `steps` as [`KEY_STEPS`] reads them, one per key (its lowest seq), in (queue, key)
/// order: the order their rows are locked in.
fn by_key<'a>(steps: impl IntoIterator<Item = &'a KeyStep<'a>>) -> String {
    let mut keys = BTreeMap::new();
    for s in steps {
        let seq = keys.entry((s.queue, s.key)).or_insert(s.seq);
        *seq = (*seq).min(s.seq);
    }
    keyed::json(keys.into_iter().map(|((q, k), seq)| (q, k, seq)))
}

/// Lock the key rows of `steps` and read their turns; returns the messages that may park
/// (their key did not move since their claim).
pub(super) async fn lock(
    conn: &mut MySqlConnection,
    steps: &[KeyStep<'_>],
) -> Result<HashSet<Uuid>> {
    if steps.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT o.queue, o.`key`, o.turn
         FROM {KEY_STEPS} STRAIGHT_JOIN ordering_keys o FORCE INDEX (PRIMARY) ON o.queue = j.queue AND o.`key` = j.k
         FOR UPDATE"
    )))
    .bind(by_key(steps))
    .fetch_all(&mut *conn)
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
    conn: &mut MySqlConnection,
    steps: &[KeyStep<'_>],
    held: &[KeyHold<'_>],
    now: i64,
) -> Result<()> {
    if !held.is_empty() {
        let mut hold = sqlx::QueryBuilder::new(
            "INSERT IGNORE INTO held_keys (queue, `key`, plugin, message_id, seq, held_at) ",
        );
        hold.push_values(held, |mut row, h| {
            row.push_bind(&h.message.queue)
                .push_bind(&h.message.key)
                .push_bind(h.plugin)
                .push_bind(h.message.id)
                .push_bind(h.message.seq)
                .push_bind(now);
        });
        hold.build().execute(&mut *conn).await?;
    }
    let moving: Vec<&KeyStep> = steps.iter().filter(|s| s.moves).collect();
    if moving.is_empty() {
        return Ok(());
    }
    let keys = by_key(moving);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {KEY_STEPS} STRAIGHT_JOIN ordering_keys o FORCE INDEX (PRIMARY) ON o.queue = j.queue AND o.`key` = j.k
         SET o.turn = o.turn + 1"
    )))
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    // Read, not locked: with the key rows locked, a settle that parks one of them has
    // committed (READ COMMITTED shows it) or waits and sees the key moved. A locking read
    // could not skip locked rows either: a claim's scan locks the row that ends it, often
    // the first parked one, which is then never woken.
    let parked: Vec<(Uuid, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT p.id, p.queue, p.ordering_key, p.seq
         FROM {KEY_STEPS} STRAIGHT_JOIN inbox p FORCE INDEX (inbox_key_seq)
             ON p.queue = j.queue AND p.ordering_key = j.k AND p.seq > j.seq
         WHERE p.parked"
    )))
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    let mut first: BTreeMap<(String, String), (i64, Uuid)> = BTreeMap::new();
    for (id, queue, key, seq) in parked {
        let at = first.entry((queue, key)).or_insert((seq, id));
        if seq < at.0 {
            *at = (seq, id);
        }
    }
    if first.is_empty() {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {IDS} STRAIGHT_JOIN inbox i FORCE INDEX (PRIMARY) ON i.id = UNHEX(j.id)
         SET i.parked = FALSE, i.available_at = ?
         WHERE i.parked"
    )))
    .bind(keyed::ids(first.into_values().map(|(_, id)| id)))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
