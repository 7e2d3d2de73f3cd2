//! The inbox rows a claim or a settle takes, and the ones it puts back.
//!
//! A batch's rows are deleted before anything else of its settle locks a row (a held
//! claim deletes them as it claims; a leased settle right after its fence), and the
//! messages that stay for another attempt are inserted again at the end, uncommitted
//! until then. Deleting a row needs the lock of its entry in every index, and a claim
//! that skipped the row (`SKIP LOCKED`) can still hold the entry of the index it walked
//! until it ends: a settle waiting for that must not hold anything the claim's own
//! settle will ask for (its state keys, usage rows), or the two deadlock.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::keyed::{self, IDS};
use crate::store::settle::{PARK_AT_MOST, Stay};
use crate::store::{Result, Settlement, headers_json};

/// When each taken message was enqueued, for those put back.
pub(super) type CreatedAt = HashMap<Uuid, i64>;

/// Delete the rows of `ids` (locked by the caller's transaction already, or about to be).
pub(super) async fn take(
    conn: &mut MySqlConnection,
    ids: impl IntoIterator<Item = Uuid>,
) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE i FROM {IDS} STRAIGHT_JOIN inbox i FORCE INDEX (PRIMARY) ON i.id = UNHEX(j.id)"
    )))
    .bind(keyed::ids(ids))
    .execute(conn)
    .await?;
    Ok(())
}

/// Fence a leased batch: lock its rows, keep those its tokens still hold, and take them.
/// Returns the messages still ours, with their enqueue times.
pub(super) async fn fence(conn: &mut MySqlConnection, batch: &[Settlement]) -> Result<CreatedAt> {
    let current: Vec<(Uuid, Option<Uuid>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT i.id, i.lock_token, i.created_at
         FROM {IDS} STRAIGHT_JOIN inbox i FORCE INDEX (PRIMARY) ON i.id = UNHEX(j.id)
         FOR UPDATE"
    )))
    .bind(keyed::ids(batch.iter().map(|s| s.message.id)))
    .fetch_all(&mut *conn)
    .await?;
    let tokens: BTreeSet<(Uuid, Uuid)> = batch
        .iter()
        .map(|s| (s.message.id, s.message.lock_token))
        .collect();
    let ours: CreatedAt = current
        .into_iter()
        .filter(|(id, token, _)| token.is_some_and(|t| tokens.contains(&(*id, t))))
        .map(|(id, _, created_at)| (id, created_at))
        .collect();
    if !ours.is_empty() {
        take(conn, ours.keys().copied()).await?;
    }
    Ok(ours)
}

/// Insert the taken messages of `stay` again, their attempt counted, due after their
/// delay from `now` (those that park, `parked` of them, after [`PARK_AT_MOST`]), with
/// what they hold of their key, seen; leased until `leased`'s time under its token when
/// given.
pub(super) async fn put_back(
    conn: &mut MySqlConnection,
    stay: &[Stay<'_>],
    parked: &HashSet<Uuid>,
    created_at: &CreatedAt,
    now: i64,
    leased: Option<(Uuid, i64)>,
) -> Result<()> {
    if stay.is_empty() {
        return Ok(());
    }
    let mut rows = QueryBuilder::<MySql>::new(
        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at,
                            created_at, lock_token, locked_until, seen, ordering_key, seq,
                            holds, parked) ",
    );
    rows.push_values(stay, |mut row, s| {
        let m = s.message;
        let parks = parked.contains(&m.id);
        let delay = if parks { PARK_AT_MOST } else { s.delay };
        row.push_bind(m.id)
            .push_bind(&m.queue)
            .push_bind(&m.kind)
            .push_bind(headers_json(&m.headers))
            .push_bind(&m.payload)
            .push_bind(m.attempts as i32 + i32::from(s.counts))
            .push_bind(now + delay.as_millis() as i64)
            .push_bind(created_at.get(&m.id).copied().unwrap_or(now))
            .push_bind(leased.map(|(token, _)| token))
            .push_bind(leased.map(|(_, until)| until))
            .push_bind(true)
            .push_bind(&m.key)
            .push_bind(m.seq)
            .push_bind(s.holds.as_deref())
            .push_bind(parks);
    });
    rows.build().execute(conn).await?;
    Ok(())
}
