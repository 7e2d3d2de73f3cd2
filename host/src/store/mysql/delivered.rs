//! What a transport delivered, on MariaDB/MySQL: the ledger lookup that lets a redelivery
//! skip plugins that already settled it. A duplicate delivered to two consumers at once
//! is settled by whichever locks it first: its settle locks the messages' slots
//! (`settle::lock_messages`) before reading the ledger here, so a concurrent settle of the
//! same message waits there and then reads what the first committed.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{MySqlConnection, Row};
use uuid::Uuid;

use super::MySqlStore;
use super::keyed::{self, IDS};
use super::settle::{Settle, Settling, lock_messages};
use crate::store::Result;
use crate::store::ledger::{DeliveredSettle, LedgerSql};

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
         FROM {IDS} STRAIGHT_JOIN processed p FORCE INDEX (PRIMARY) ON p.message_id = UNHEX(j.id)
         UNION ALL
         SELECT f.message_id, IF(f.status = 'retrying', NULL, f.plugin)
         FROM {IDS} STRAIGHT_JOIN failed_messages f FORCE INDEX (failed_messages_pair) ON f.message_id = UNHEX(j.id)
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

#[async_trait::async_trait]
impl LedgerSql for MySqlStore {
    async fn settled(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
        let mut conn = self.pool.acquire().await?;
        Ok(settled_of(&mut conn, ids).await?.by_id)
    }

    async fn begin_delivered(&self, ids: &[Uuid]) -> Result<DeliveredSettle<'_>> {
        // The messages' slots first, so a concurrent settle of one of them has committed
        // before the ledger is read.
        let mut tx = self.pool.begin().await?;
        let now = super::now(&mut tx).await?;
        lock_messages(&mut tx, ids).await?;
        let already = settled_of(&mut tx, ids).await?;
        let settle = Settle {
            tx,
            now,
            settling: Settling::Delivered,
        };
        Ok((Box::new(settle), already.by_id))
    }
}
