//! What a transport delivered, on MariaDB/MySQL: the ledger lookup that lets a redelivery
//! skip plugins that already settled it, and the settle transaction. A duplicate delivered
//! to two consumers at once is settled by whichever locks it first: the settle locks its
//! messages' slots (`settle::lock_messages`) before reading the ledger, so a concurrent
//! settle of the same message waits there and then reads what the first committed.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;

use super::settle::{Settling, lock_messages, settle_batch};
use super::{DEADLOCK_RETRIES, is_deadlock, push_list};
use crate::store::delivered::drop_settled;
use crate::store::{Delivered, Result, SettleRunner, Settlement};

/// Plugins that handled each of `ids`, or dead-lettered it with no operator sending it
/// back since.
pub(super) async fn settled_of(
    conn: &mut MySqlConnection,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
    let mut by_id: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    if ids.is_empty() {
        return Ok(by_id);
    }
    let mut done = QueryBuilder::<MySql>::new(
        "SELECT message_id, plugin FROM processed WHERE message_id IN (",
    );
    push_list(&mut done, ids.iter().copied());
    done.push(")");
    let mut failed = QueryBuilder::<MySql>::new(
        "SELECT message_id, plugin FROM failed_messages
         WHERE status IN ('failed', 'pending') AND message_id IN (",
    );
    push_list(&mut failed, ids.iter().copied());
    failed.push(")");
    for mut query in [done, failed] {
        for row in query.build().fetch_all(&mut *conn).await? {
            by_id
                .entry(row.get("message_id"))
                .or_default()
                .insert(row.get("plugin"));
        }
    }
    Ok(by_id)
}

/// Settle `batch` in one transaction (see [`crate::store::Store::settle_delivered`]).
pub(super) async fn settle(
    pool: &MySqlPool,
    batch: &mut [Settlement],
    runner: &dyn SettleRunner,
) -> Result<Delivered> {
    let mut tries = 0;
    loop {
        let mut tx = pool.begin().await?;
        match settle_in(&mut tx, batch, runner).await {
            Ok(delivered) => {
                tx.commit().await?;
                return Ok(delivered);
            }
            Err(e) if is_deadlock(&e) && tries < DEADLOCK_RETRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
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
    drop_settled(batch, &already, &mut duplicates);
    let plan = settle_batch(conn, batch, now, Settling::Delivered, runner).await?;
    Ok(Delivered::of(&plan, duplicates))
}
