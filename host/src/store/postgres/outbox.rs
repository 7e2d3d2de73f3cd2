//! The outbox relay's side of PostgreSQL: unsent rows are taken `FOR UPDATE SKIP LOCKED`
//! in a transaction that stays open while the relay publishes them and waits for the
//! broker's confirms, then marked sent in it and committed. Other hosts' relays skip the
//! locked rows; a relay that dies or stalls past `idle_in_transaction_session_timeout`
//! loses the transaction and the rows are sent again (at least once).

use std::time::Duration;

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

use super::claim::HeldClaim;
use crate::store::outbox::outbox_message;
use crate::store::{HeldTransaction, Hold, OutboxClaim, Result, headers_json};

/// How long a relay may hold its rows between statements (publishing, awaiting confirms).
const HOLD: Duration = Duration::from_secs(30);

pub(super) async fn claim(pool: &PgPool, limit: u32) -> Result<OutboxClaim> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
        .bind(HOLD.as_millis().to_string())
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT seq, id::text AS id, exchange, routing_key, kind, headers::text AS headers, payload
         FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let messages = rows
        .iter()
        .map(outbox_message)
        .collect::<Result<Vec<_>>>()?;
    if messages.is_empty() {
        tx.rollback().await?;
        return Ok(OutboxClaim {
            messages,
            hold: Hold::Lease,
        });
    }
    Ok(OutboxClaim {
        messages,
        hold: Hold::Transaction(HeldTransaction::Postgres(HeldClaim {
            tx,
            created_at: Default::default(),
        })),
    })
}

pub(super) async fn sent(pool: &PgPool, hold: Hold, seqs: &[i64]) -> Result<()> {
    let statement = "UPDATE outbox SET sent_at = wharf_now_ms() WHERE seq = ANY($1)";
    match hold {
        Hold::Transaction(HeldTransaction::Postgres(HeldClaim { mut tx, .. })) => {
            sqlx::query(statement).bind(seqs).execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Hold::Lease => {
            sqlx::query(statement).bind(seqs).execute(pool).await?;
        }
        Hold::Transaction(other) => unreachable!("{other:?} was claimed by another store"),
    }
    Ok(())
}

/// Put a message in the outbox for a relay (the HTTP API's publish); `false` when the
/// outbox has its id already.
pub(super) async fn add(
    pool: &PgPool,
    id: Uuid,
    (exchange, routing_key): (&str, &str),
    kind: &str,
    headers: &BTreeMap<String, String>,
    payload: &[u8],
) -> Result<bool> {
    let added = sqlx::query(
        "INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key, kind, headers, payload, created_at)
         VALUES ($1, $1, '', $2, $3, $4, $5::jsonb, $6, wharf_now_ms())
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(exchange)
    .bind(routing_key)
    .bind(kind)
    .bind(headers_json(headers))
    .bind(payload)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(added == 1)
}
