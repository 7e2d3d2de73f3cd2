//! Claiming on MariaDB/MySQL: due rows no other host holds, taken with `FOR UPDATE SKIP
//! LOCKED` and stamped with a lease and a fencing token in one short transaction; and the
//! heartbeat that renews the lease while the handlers run.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::{MySql, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;

use super::delivered::settled_of;
use super::{NOW_MS, now, push_list};
use crate::envelope::Envelope;
use crate::store::{Claim, Hold, Result, parse_headers};

/// Claim up to `limit` due messages of `queues` (all when empty), leased for `lease`.
pub(super) async fn claim(
    pool: &MySqlPool,
    queues: &[String],
    limit: u32,
    lease: Duration,
) -> Result<Claim> {
    let token = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let now = now(&mut tx).await?;
    let mut due = QueryBuilder::<MySql>::new(
        "SELECT id, queue, kind, headers, payload, attempts, available_at FROM inbox
         WHERE available_at <= ",
    );
    due.push_bind(now)
        .push(" AND (locked_until IS NULL OR locked_until <= ")
        .push_bind(now)
        .push(")");
    if !queues.is_empty() {
        due.push(" AND queue IN (");
        push_list(&mut due, queues);
        due.push(")");
    }
    due.push(" ORDER BY available_at LIMIT ")
        .push_bind(i64::from(limit))
        .push(" FOR UPDATE SKIP LOCKED");
    let rows = due.build().fetch_all(&mut *tx).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        claimed.push(Envelope {
            id: row.get("id"),
            queue: row.get("queue"),
            kind: row.get("kind"),
            headers: parse_headers(row.get("headers"))?,
            payload: row.get("payload"),
            attempts: row.get::<i32, _>("attempts") as u32,
            lock_token: token,
            settled_plugins: BTreeSet::new(),
            origin: Default::default(),
            due_at: Some(row.get("available_at")),
        });
    }
    if !claimed.is_empty() {
        let mut stamp = QueryBuilder::<MySql>::new("UPDATE inbox SET locked_until = ");
        stamp
            .push_bind(now + lease.as_millis() as i64)
            .push(", lock_token = ")
            .push_bind(token)
            .push(" WHERE id IN (");
        push_list(&mut stamp, claimed.iter().map(|m| m.id));
        stamp.push(")");
        stamp.build().execute(&mut *tx).await?;
        let ids: Vec<Uuid> = claimed.iter().map(|m| m.id).collect();
        let mut by_id = settled_of(&mut tx, &ids).await?;
        for message in &mut claimed {
            if let Some(plugins) = by_id.remove(&message.id) {
                message.settled_plugins = plugins;
            }
        }
    }
    tx.commit().await?;
    Ok(Claim {
        messages: claimed,
        hold: Hold::Lease,
    })
}

/// Keep the claimed messages (id, lock token) for another `lease` from now; how many
/// are still held.
pub(super) async fn renew(
    pool: &MySqlPool,
    claims: &[(Uuid, Uuid)],
    lease: Duration,
) -> Result<u64> {
    let Some((_, token)) = claims.first() else {
        return Ok(0);
    };
    let mut renew =
        QueryBuilder::<MySql>::new(format!("UPDATE inbox SET locked_until = {NOW_MS} + "));
    renew
        .push_bind(lease.as_millis() as i64)
        .push(" WHERE lock_token = ")
        .push_bind(token)
        .push(" AND id IN (");
    push_list(&mut renew, claims.iter().map(|(id, _)| *id));
    renew.push(")");
    Ok(renew.build().execute(pool).await?.rows_affected())
}
