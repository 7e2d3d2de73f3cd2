//! Enqueueing on MariaDB/MySQL: a message whose id was received before is skipped
//! (`received`, kept until retention), the others go into the inbox numbered per ordering
//! key (`ordering_keys`).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::push_list;
use crate::envelope::NewMessage;
use crate::store::sql::per_statement;
use crate::store::{Result, StoreError, headers_json};

/// Insert the messages whose ids were not received before, at `now`; returns how many
/// were new. The ids this call inserts into `received` carry its own token, so a second
/// read tells them from ids received before (or by a concurrent call).
pub(super) async fn insert_new(
    conn: &mut MySqlConnection,
    messages: &[NewMessage],
    now: i64,
) -> Result<u64> {
    let token = Uuid::now_v7();
    // The first of an id given twice in one call.
    let mut seen = BTreeSet::new();
    let mut inserted = 0;
    for messages in per_statement(messages, 8) {
        inserted += insert_run(conn, messages, now, token, &mut seen).await?;
    }
    Ok(inserted)
}

/// [`insert_new`] for a run of messages one statement binds, skipping ids `seen` in the
/// runs before.
async fn insert_run(
    conn: &mut MySqlConnection,
    messages: &[NewMessage],
    now: i64,
    token: Uuid,
    seen: &mut BTreeSet<Uuid>,
) -> Result<u64> {
    let mut received =
        QueryBuilder::<MySql>::new("INSERT IGNORE INTO received (id, queue, received_at, token) ");
    received.push_values(messages, |mut row, m| {
        row.push_bind(m.id)
            .push_bind(&m.queue)
            .push_bind(now)
            .push_bind(token);
    });
    received.build().execute(&mut *conn).await?;
    let mut fresh = QueryBuilder::<MySql>::new("SELECT id FROM received WHERE token = ");
    fresh.push_bind(token).push(" AND id IN (");
    push_list(&mut fresh, messages.iter().map(|m| m.id));
    fresh.push(")");
    let fresh: BTreeSet<Uuid> = fresh
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let new: Vec<&NewMessage> = messages
        .iter()
        .filter(|m| fresh.contains(&m.id) && seen.insert(m.id))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    let seqs = number(conn, &new, now).await?;
    let mut inbox = QueryBuilder::<MySql>::new(
        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at, ordering_key, seq) ",
    );
    inbox.push_values(new.iter().zip(seqs), |mut row, (m, seq)| {
        row.push_bind(m.id)
            .push_bind(&m.queue)
            .push_bind(&m.kind)
            .push_bind(headers_json(&m.headers))
            .push_bind(&m.payload)
            .push_bind(m.attempts)
            .push_bind(now.saturating_add(m.delay_ms()))
            .push_bind(now)
            .push_bind(&m.key)
            .push_bind(seq);
    });
    inbox.build().execute(&mut *conn).await?;
    Ok(new.len() as u64)
}

/// The numbers of `messages` among their keys' messages, in the order given: each key's
/// row of `ordering_keys` moves on by its messages (rows written in (queue, key) order, so
/// two enqueues of the same keys wait, not deadlock). `None` for a message without a key.
async fn number(
    conn: &mut MySqlConnection,
    messages: &[&NewMessage],
    now: i64,
) -> Result<Vec<Option<i64>>> {
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for m in messages {
        if let Some(key) = &m.key {
            *counts.entry((m.queue.as_str(), key.as_str())).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return Ok(vec![None; messages.len()]);
    }
    let mut upsert = QueryBuilder::<MySql>::new(
        "INSERT INTO ordering_keys (queue, `key`, last_seq, updated_at) ",
    );
    upsert.push_values(&counts, |mut row, ((queue, key), count)| {
        row.push_bind(*queue)
            .push_bind(*key)
            .push_bind(*count)
            .push_bind(now);
    });
    upsert.push(
        " ON DUPLICATE KEY UPDATE last_seq = last_seq + VALUES(last_seq), updated_at = VALUES(updated_at)",
    );
    upsert.build().execute(&mut *conn).await?;
    let mut read = QueryBuilder::<MySql>::new(
        "SELECT queue, `key`, last_seq FROM ordering_keys WHERE (queue, `key`) IN (",
    );
    let mut pairs = read.separated(", ");
    for (queue, key) in counts.keys() {
        pairs
            .push("(")
            .push_bind_unseparated(*queue)
            .push_unseparated(", ")
            .push_bind_unseparated(*key)
            .push_unseparated(")");
    }
    read.push(") FOR UPDATE");
    let rows: Vec<(String, String, i64)> = read.build_query_as().fetch_all(&mut *conn).await?;
    let mut next: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (queue, key, last) in rows {
        let count = counts[&(queue.as_str(), key.as_str())];
        next.insert((queue, key), last - count + 1);
    }
    let mut seqs = Vec::with_capacity(messages.len());
    for m in messages {
        let Some(key) = &m.key else {
            seqs.push(None);
            continue;
        };
        let seq = next
            .get_mut(&(m.queue.clone(), key.clone()))
            .ok_or_else(|| StoreError::Corrupt(format!("ordering key {key:?} not numbered")))?;
        seqs.push(Some(*seq));
        *seq += 1;
    }
    Ok(seqs)
}
