//! Enqueueing on MariaDB/MySQL: a message whose id was received before is skipped
//! (`received`, kept until retention), the others go into the inbox.

use std::collections::BTreeSet;

use sqlx::{MySql, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::push_list;
use crate::envelope::NewMessage;
use crate::store::sql::per_statement;
use crate::store::{Result, headers_json};

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
    let mut inbox = QueryBuilder::<MySql>::new(
        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at) ",
    );
    inbox.push_values(&new, |mut row, m| {
        row.push_bind(m.id)
            .push_bind(&m.queue)
            .push_bind(&m.kind)
            .push_bind(headers_json(&m.headers))
            .push_bind(&m.payload)
            .push_bind(0)
            .push_bind(now)
            .push_bind(now);
    });
    inbox.build().execute(&mut *conn).await?;
    Ok(new.len() as u64)
}
