//! Claiming on MariaDB/MySQL: due rows no other host holds, locked with `FOR UPDATE SKIP
//! LOCKED`, either taken (deleted) in the claim's transaction, held open until the
//! settle commits it (MariaDB), or stamped with a lease and a fencing token in one short
//! transaction; and keeping either alive while the handlers run.
//!
//! A locking scan also locks the row that ends it, on MariaDB even under READ COMMITTED:
//! with several queues, the first due row of the next queue in `inbox_queue_due`, until
//! the claim commits, or is handed over to leases after `HOLD_AT_MOST`. That queue's
//! lanes skip it meanwhile; a run until idle waits for it (`StopWhen::until_idle`).

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::delivered::{Settled, settled_of};
use super::inbox::{self, CreatedAt};
use super::{NOW_MS, claim_lost, now, push_list};
use crate::envelope::Envelope;
use crate::store::settle::Stay;
use crate::store::sql::turns;
use crate::store::{Claim, ClaimMode, HeldTransaction, Hold, KeyOrder, Result, parse_headers};

/// A claim's open transaction on MariaDB: the batch's rows are deleted in it,
/// uncommitted, so other hosts' claims skip them; the settle writes into it and commits.
pub(super) struct HeldClaim {
    pub(super) tx: Transaction<'static, MySql>,
    /// When each claimed message was enqueued, for those put back.
    pub(super) created_at: CreatedAt,
    /// The claimed messages an operator sent back for another try.
    pub(super) retried: BTreeSet<Uuid>,
}

/// Claim up to `limit` due messages of `queues` (all when empty): held in a transaction
/// when `mode` asks for it and the server can bound an idle transaction (`holds`), else
/// leased for `lease`.
pub(super) async fn claim(
    pool: &MySqlPool,
    queues: &[String],
    limit: u32,
    (mode, order): (ClaimMode, KeyOrder),
    holds: bool,
    lease: Duration,
) -> Result<Claim> {
    let held = holds && mode == ClaimMode::Transaction;
    let mut tx = pool.begin().await?;
    if held {
        // A host that stops renewing (frozen, cut off) loses the claim within `lease`: the
        // server closes a connection whose transaction sat idle that long, rolling it
        // back, and the rows are claimable again. The setting stays on the pooled
        // connection and bounds its later transactions alike; a transaction idle for a
        // whole lease is a stuck one.
        sqlx::query("SET SESSION idle_transaction_timeout = ?")
            .bind(lease.as_millis().div_ceil(1000) as u64)
            .execute(&mut *tx)
            .await?;
    }
    let token = if held { Uuid::nil() } else { Uuid::now_v7() };
    let (mut claimed, created_at, seen) = due(&mut tx, queues, limit, token).await?;
    if order == KeyOrder::Keep {
        // Left locked until this transaction ends, and claimable again after it.
        let blocked = turns::<MySql>(&mut tx, &mut claimed).await?;
        claimed.retain(|m| !blocked.contains(&m.id));
    }
    if claimed.is_empty() {
        tx.rollback().await?;
        return Ok(Claim {
            messages: claimed,
            hold: Hold::Lease,
        });
    }
    if held {
        inbox::take(&mut tx, claimed.iter().map(|m| m.id)).await?;
    } else {
        let mut stamp =
            QueryBuilder::<MySql>::new(format!("UPDATE inbox SET locked_until = {NOW_MS} + "));
        stamp
            .push_bind(lease.as_millis() as i64)
            .push(", lock_token = ")
            .push_bind(token)
            .push(" WHERE id IN (");
        push_list(&mut stamp, claimed.iter().map(|m| m.id));
        stamp.push(")");
        stamp.build().execute(&mut *tx).await?;
    }
    // Only a message put back can have settled plugins: one that arrived once and was
    // never put back is not looked up, and a batch of such costs no statement here.
    let mut settled = if seen.is_empty() {
        Settled::default()
    } else {
        settled_of(&mut tx, &seen).await?
    };
    for message in &mut claimed {
        if let Some(plugins) = settled.by_id.remove(&message.id) {
            message.settled_plugins = plugins;
        }
    }
    let hold = if held {
        Hold::Transaction(HeldTransaction::new(HeldClaim {
            tx,
            created_at,
            retried: settled.retried,
        }))
    } else {
        tx.commit().await?;
        Hold::Lease
    };
    Ok(Claim {
        messages: claimed,
        hold,
    })
}

/// Lock up to `limit` due rows of `queues` that no other host holds, as messages carrying
/// `token`, with their enqueue times and the ids of those seen before (`inbox.seen`).
async fn due(
    conn: &mut MySqlConnection,
    queues: &[String],
    limit: u32,
    token: Uuid,
) -> Result<(Vec<Envelope>, CreatedAt, Vec<Uuid>)> {
    // The index is named: on a table whose statistics are stale (new, just filled) the
    // optimizer may scan and sort it instead, and a locking read that sorts locks every
    // due row it read, not just the batch it returns.
    let index = match queues.len() {
        1 => "inbox_queue_due",
        _ => "inbox_due",
    };
    let mut due = QueryBuilder::<MySql>::new(format!(
        "SELECT id, queue, kind, headers, payload, attempts, available_at, created_at, seen,
                ordering_key, seq
         FROM inbox FORCE INDEX ({index})
         WHERE available_at <= {NOW_MS}
           AND (locked_until IS NULL OR locked_until <= {NOW_MS})"
    ));
    if !queues.is_empty() {
        due.push(" AND queue IN (");
        push_list(&mut due, queues);
        due.push(")");
    }
    due.push(" ORDER BY available_at LIMIT ")
        .push_bind(i64::from(limit))
        .push(" FOR UPDATE SKIP LOCKED");
    let rows = due.build().fetch_all(&mut *conn).await?;
    let created_at = rows
        .iter()
        .map(|row| (row.get("id"), row.get("created_at")))
        .collect();
    let seen = rows
        .iter()
        .filter(|row| row.get::<bool, _>("seen"))
        .map(|row| row.get("id"))
        .collect();
    let messages = rows
        .iter()
        .map(|row| {
            Ok(Envelope {
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
                key: row.get("ordering_key"),
                seq: row.get("seq"),
                turn: None,
            })
        })
        .collect::<Result<_>>()?;
    Ok((messages, created_at, seen))
}

/// Hand a held claim over to leases: its `messages` go back into the inbox leased under a
/// new token and the transaction commits. `None` when the claim is a lease already.
pub(super) async fn lease_held(
    hold: &mut Hold,
    messages: &[Envelope],
    lease: Duration,
) -> Result<Option<Uuid>> {
    let Hold::Transaction(held) = std::mem::replace(hold, Hold::Lease) else {
        return Ok(None);
    };
    let HeldClaim {
        mut tx, created_at, ..
    } = held.into_inner();
    let token = Uuid::now_v7();
    let stay = Stay::unchanged(messages);
    let handed_over = async {
        let now = now(&mut tx).await?;
        let leased = Some((token, now + lease.as_millis() as i64));
        inbox::put_back(&mut tx, &stay, &HashSet::new(), &created_at, now, leased).await
    };
    handed_over.await.map_err(claim_lost)?;
    tx.commit().await.map_err(|e| claim_lost(e.into()))?;
    Ok(Some(token))
}

/// Keep the claimed messages (id, lock token) for another `lease` from now; how many
/// are still held. A held claim only needs its transaction to show it is alive.
pub(super) async fn renew(
    pool: &MySqlPool,
    hold: &mut Hold,
    claims: &[(Uuid, Uuid)],
    lease: Duration,
) -> Result<u64> {
    if let Hold::Transaction(held) = hold {
        // Any statement restarts the server's idle-transaction clock.
        sqlx::query("SELECT 1")
            .execute(&mut *held.get_mut::<HeldClaim>().tx)
            .await
            .map_err(|e| claim_lost(e.into()))?;
        return Ok(claims.len() as u64);
    }
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
