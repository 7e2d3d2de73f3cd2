//! What a transport delivered, on SQLite: the ledger lookup that lets a redelivery skip
//! plugins that already settled it. SQLite has one writer (`BEGIN IMMEDIATE`), so a
//! concurrent settle of the same message has committed before this one starts; the
//! ledger check inside the settle transaction sees it, and the results it already wrote
//! are dropped.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::SqliteStore;
use super::parse_uuid;
use super::settle::{Settle, Settling};
use crate::store::Result;
use crate::store::ledger::{DeliveredSettle, LedgerSql};
use crate::store::now_ms;

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

#[async_trait::async_trait]
impl LedgerSql for SqliteStore {
    async fn settled(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
        let mut conn = self.pool.acquire().await?;
        settled_of(&mut conn, ids).await
    }

    async fn begin_delivered(&self, ids: &[Uuid]) -> Result<DeliveredSettle<'_>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let settled = settled_of(&mut tx, ids).await?;
        let settle = Settle {
            tx,
            now: now_ms(),
            settling: Settling::Delivered,
        };
        Ok((Box::new(settle), settled))
    }
}
