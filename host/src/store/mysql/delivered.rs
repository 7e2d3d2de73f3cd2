//! What a transport delivered, on MariaDB/MySQL: the ledger lookup that lets a redelivery
//! skip plugins that already settled it, and the settle transaction. A duplicate delivered
//! to two consumers at once is settled by whichever locks it first: the settle locks its
//! messages' slots (`settle::lock_messages`) before reading the ledger, so a concurrent
//! settle of the same message waits there and then reads what the first committed.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{MySqlConnection, MySqlPool, Row};
use uuid::Uuid;

use super::again_on_deadlock;
use super::keyed::{self, IDS};
use super::settle::{Settling, lock_messages, settle_batch};
use crate::store::delivered::drop_settled;
use crate::store::{Delivered, Result, SettleRunner, Settlement};

/// What the ledger and the failed messages say of some messages.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// The plugins that handled each, or dead-lettered it with no operator sending it back
    /// since.
    pub by_id: BTreeMap<Uuid, BTreeSet<String>>,
    /// The messages an operator sent back for another try (a failure `retrying`).
    pub retried: BTreeSet<Uuid>,
}

/// What the ledger and the failed messages say of `ids`.
pub(super) async fn settled_of(conn: &mut MySqlConnection, ids: &[Uuid]) -> Result<Settled> {
    let mut settled = Settled::default();
    if ids.is_empty() {
        return Ok(settled);
    }
    // One statement: a claim asks it for every batch, inside its transaction.
    let keys = keyed::ids(ids.iter().copied());
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.message_id, p.plugin
         FROM {IDS} STRAIGHT_JOIN processed p ON p.message_id = UNHEX(j.id)
         UNION ALL
         SELECT f.message_id, IF(f.status = 'retrying', NULL, f.plugin)
         FROM {IDS} STRAIGHT_JOIN failed_messages f ON f.message_id = UNHEX(j.id)
         WHERE f.status IN ('failed', 'pending', 'retrying')"
    )))
    .bind(&keys)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let id = row.get(0);
        match row.get::<Option<String>, _>(1) {
            Some(plugin) => {
                settled.by_id.entry(id).or_default().insert(plugin);
            }
            None => {
                settled.retried.insert(id);
            }
        }
    }
    Ok(settled)
}

/// Settle `batch` in one transaction (see [`crate::store::Store::settle_delivered`]).
pub(super) async fn settle(
    pool: &MySqlPool,
    batch: &mut [Settlement],
    runner: &dyn SettleRunner,
) -> Result<Delivered> {
    again_on_deadlock!(async {
        let mut tx = pool.begin().await?;
        let delivered = settle_in(&mut tx, batch, runner).await?;
        tx.commit().await?;
        Ok(delivered)
    })
}

/// [`settle`] inside the transaction `conn` is in.
async fn settle_in(
    conn: &mut MySqlConnection,
    batch: &mut [Settlement],
    runner: &dyn SettleRunner,
) -> Result<Delivered> {
    let now = super::now(&mut *conn).await?;
    let ids: Vec<Uuid> = batch.iter().map(|s| s.message.id).collect();
    lock_messages(&mut *conn, &ids).await?;
    let already = settled_of(&mut *conn, &ids).await?;
    let mut duplicates = 0;
    drop_settled(batch, &already.by_id, &mut duplicates);
    let plan = settle_batch(conn, batch, now, Settling::Delivered, runner).await?;
    Ok(Delivered::of(&plan, duplicates))
}
