//! A settle's ordering keys on SQLite (see `store::settle::keys`), row by row: one writer
//! holds the database, so reading a key's turn is locking it.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::store::Result;
use crate::store::settle::{KeyHold, KeyStep, parked};

/// The turns of the keys of `steps`; returns the messages that may park (their key did
/// not move since their claim).
pub(super) async fn lock(
    conn: &mut SqliteConnection,
    steps: &[KeyStep<'_>],
) -> Result<HashSet<Uuid>> {
    let mut turns = HashMap::new();
    for s in steps {
        let key = (s.queue.to_owned(), s.key.to_owned());
        if turns.contains_key(&key) {
            continue;
        }
        let turn: Option<i64> =
            sqlx::query_scalar("SELECT turn FROM ordering_keys WHERE queue = ? AND key = ?")
                .bind(s.queue)
                .bind(s.key)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(turn) = turn {
            turns.insert(key, turn);
        }
    }
    Ok(parked(steps, &turns))
}

/// Hold the keys of `held` for their plugins, and move on the keys of `steps` that move:
/// their turn grows and the first parked message after the settled one is due now.
pub(super) async fn write(
    conn: &mut SqliteConnection,
    steps: &[KeyStep<'_>],
    held: &[KeyHold<'_>],
    now: i64,
) -> Result<()> {
    for h in held {
        sqlx::query(
            "INSERT INTO held_keys (queue, key, plugin, message_id, seq, held_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&h.message.queue)
        .bind(&h.message.key)
        .bind(h.plugin)
        .bind(h.message.id.to_string())
        .bind(h.message.seq)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let mut moving = BTreeMap::new();
    for s in steps.iter().filter(|s| s.moves) {
        let seq = moving.entry((s.queue, s.key)).or_insert(s.seq);
        *seq = (*seq).min(s.seq);
    }
    for ((queue, key), seq) in moving {
        sqlx::query("UPDATE ordering_keys SET turn = turn + 1 WHERE queue = ? AND key = ?")
            .bind(queue)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE inbox SET parked = 0, available_at = ?
             WHERE id = (SELECT id FROM inbox
                         WHERE queue = ? AND ordering_key = ? AND seq > ? AND parked
                         ORDER BY seq LIMIT 1)",
        )
        .bind(now)
        .bind(queue)
        .bind(key)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
