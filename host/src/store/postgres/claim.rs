//! Claiming on PostgreSQL, in the two designs of the module docs: a lease stamped on the
//! rows, or the rows deleted inside a transaction held open until the settle; and keeping
//! either alive while the handlers run.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::parse_headers;
use crate::envelope::Envelope;
use crate::store::{Claim, ClaimMode, Hold, Result, StoreError};

/// The due rows a claim takes: `$1` queues (all when empty), `$2` how many.
macro_rules! due_rows {
    () => {
        "SELECT id FROM inbox
         WHERE available_at <= wharf_now_ms()
           AND (locked_until IS NULL OR locked_until <= wharf_now_ms())
           AND (cardinality($1::text[]) = 0 OR queue = ANY($1))
         ORDER BY available_at LIMIT $2
         FOR UPDATE SKIP LOCKED"
    };
}

/// The claimed rows `c`, each with the plugins that already handled or dead-lettered it.
macro_rules! claimed_rows {
    () => {
        "SELECT c.id, c.queue, c.kind, c.headers::text AS headers, c.payload, c.attempts,
                c.created_at,
                ARRAY(SELECT plugin FROM processed p WHERE p.message_id = c.id
                      UNION
                      SELECT plugin FROM failed_messages f
                      WHERE f.message_id = c.id AND f.status IN ('failed', 'pending')) AS settled
         FROM c ORDER BY c.available_at"
    };
}

/// A claim's open transaction: the batch's rows are deleted in it, uncommitted, so other
/// hosts skip them; the settle writes into it and commits.
pub struct HeldTransaction {
    pub(super) tx: Transaction<'static, Postgres>,
    /// When each claimed message was enqueued, for those put back for another attempt.
    pub(super) created_at: HashMap<Uuid, i64>,
}

impl std::fmt::Debug for HeldTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldTransaction")
            .field("messages", &self.created_at.len())
            .finish_non_exhaustive()
    }
}

/// Claim up to `limit` due messages of `queues` as `mode` asks; see [`crate::store::Store::claim`].
pub(super) async fn claim(
    pool: &PgPool,
    queues: &[String],
    limit: u32,
    mode: ClaimMode,
    lease: Duration,
) -> Result<Claim> {
    match mode {
        ClaimMode::Lease => {
            let token = Uuid::now_v7();
            let rows = sqlx::query(concat!(
                "WITH c AS (
                     UPDATE inbox SET locked_until = wharf_now_ms() + $3, lock_token = $4
                     WHERE id IN (",
                due_rows!(),
                ") RETURNING *)",
                claimed_rows!()
            ))
            .bind(queues)
            .bind(i64::from(limit))
            .bind(lease.as_millis() as i64)
            .bind(token)
            .fetch_all(pool)
            .await?;
            Ok(Claim {
                messages: envelopes(&rows, token)?,
                hold: Hold::Lease,
            })
        }
        ClaimMode::Transaction => {
            let mut tx = pool.begin().await?;
            // A host that stops renewing (frozen, cut off) loses the claim after `lease`:
            // the server ends the idle transaction and the rows are claimable again.
            sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
                .bind(lease.as_millis().to_string())
                .execute(&mut *tx)
                .await?;
            let rows = sqlx::query(concat!(
                "WITH c AS (DELETE FROM inbox WHERE id IN (",
                due_rows!(),
                ") RETURNING *)",
                claimed_rows!()
            ))
            .bind(queues)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(Claim {
                    messages: Vec::new(),
                    hold: Hold::Lease,
                });
            }
            let created_at = rows
                .iter()
                .map(|r| (r.get("id"), r.get("created_at")))
                .collect();
            Ok(Claim {
                messages: envelopes(&rows, Uuid::nil())?,
                hold: Hold::Transaction(HeldTransaction { tx, created_at }),
            })
        }
    }
}

/// Keep a claim for another `lease`; see [`crate::store::Store::renew`].
pub(super) async fn renew(
    pool: &PgPool,
    hold: &mut Hold,
    claims: &[(Uuid, Uuid)],
    lease: Duration,
) -> Result<u64> {
    if let Hold::Transaction(held) = hold {
        // Any statement restarts the server's idle-in-transaction clock.
        sqlx::query("SELECT 1")
            .execute(&mut *held.tx)
            .await
            .map_err(|e| claim_lost(e.into()))?;
        return Ok(claims.len() as u64);
    }
    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = claims.iter().copied().unzip();
    let held = sqlx::query(
        "UPDATE inbox i SET locked_until = wharf_now_ms() + $3
         FROM UNNEST($1::uuid[], $2::uuid[]) AS c(id, token)
         WHERE i.id = c.id AND i.lock_token = c.token",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(lease.as_millis() as i64)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(held)
}

fn envelopes(rows: &[PgRow], token: Uuid) -> Result<Vec<Envelope>> {
    rows.iter()
        .map(|row| {
            Ok(Envelope {
                id: row.get("id"),
                queue: row.get("queue"),
                kind: row.get("kind"),
                headers: parse_headers(row.get("headers"))?,
                payload: row.get("payload"),
                attempts: row.get::<i32, _>("attempts") as u32,
                lock_token: token,
                settled_plugins: row.get::<Vec<String>, _>("settled").into_iter().collect(),
                origin: Default::default(),
            })
        })
        .collect()
}

/// A claim held in a transaction fails as a whole when its connection is gone or the
/// server rolled the transaction back (a deadlock or serialization conflict with another
/// writer): nothing was written and the messages are claimable again.
pub(super) fn claim_lost(e: StoreError) -> StoreError {
    match e {
        StoreError::Database(e) if rolled_back(&e) => StoreError::ClaimLost(e),
        e => e,
    }
}

fn rolled_back(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        // Idle-in-transaction timeout, connection exceptions, transaction rollbacks,
        // operator intervention.
        sqlx::Error::Database(e) => e.code().is_some_and(|c| {
            c == "25P03" || ["08", "40", "57P"].iter().any(|class| c.starts_with(class))
        }),
        _ => false,
    }
}
