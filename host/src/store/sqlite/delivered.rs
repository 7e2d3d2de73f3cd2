//! What a transport delivered, on SQLite: the ledger lookup that lets a redelivery skip
//! plugins that already settled it, and the settle transaction. SQLite has one writer
//! (`BEGIN IMMEDIATE`), so a concurrent settle of the same message has committed before
//! this one starts; the ledger check inside the transaction sees it, and the results it
//! already wrote are dropped here.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::parse_uuid;
use super::settle::{Settling, settle_batch};
use crate::store::delivered::drop_settled;
use crate::store::{Delivered, Result, SettleRunner, Settlement, now_ms};

/// Plugins that handled each of `ids`, or dead-lettered it with no operator sending it
/// back since.
pub(super) async fn settled_of(
    conn: &mut SqliteConnection,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let ids = serde_json::to_string(&ids).expect("strings serialise");
    let done = sqlx::query(
        "SELECT message_id, plugin FROM processed WHERE message_id IN (SELECT value FROM json_each(?1))
         UNION ALL
         SELECT message_id, plugin FROM failed_messages
         WHERE message_id IN (SELECT value FROM json_each(?1)) AND status IN ('failed', 'pending')",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for row in &done {
        by_id
            .entry(parse_uuid(row.get("message_id"))?)
            .or_default()
            .insert(row.get("plugin"));
    }
    Ok(by_id)
}

/// Settle `batch` in one transaction (see [`crate::store::Store::settle_delivered`]).
pub(super) async fn settle(
    pool: &SqlitePool,
    batch: &mut [Settlement],
    runner: &dyn SettleRunner,
) -> Result<Delivered> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let ids: Vec<Uuid> = batch.iter().map(|s| s.message.id).collect();
    let already = settled_of(&mut tx, &ids).await?;
    let mut duplicates = 0;
    drop_settled(batch, &already, &mut duplicates);
    let plan = settle_batch(&mut tx, batch, now_ms(), Settling::Delivered, runner).await?;
    tx.commit().await?;
    Ok(Delivered::of(&plan, duplicates))
}
