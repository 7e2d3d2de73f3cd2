//! The settle transaction on PostgreSQL ([`SettleTransaction`]), as bulk statements over
//! the whole batch.
//!
//! - Fence: clear the claim of every message whose lock token is still current; the
//!   others were taken over and nothing of theirs is written.
//! - Lock the state keys the batch read or wrote (advisory transaction locks, in one
//!   order) and load their committed values, so two hosts cannot both commit a write
//!   based on the same read. A key a run inside the settle newly touches is locked without
//!   waiting (`pg_try_advisory_xact_lock`): taking it out of order could deadlock against
//!   another host's settle, so a key held elsewhere sends that result back for another
//!   round instead.
//! - The plugins' state usage: their `plugin_state_usage` rows locked, in plugin order.
//! - Write each kind of the plan's rows with one statement (`writes`).

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::claim::claim_lost;
use super::writes::{Settling, write};
use crate::store::{
    Result, SettlePlan, SettleTransaction, Settlement, SharedView, StateLocks, StateUsage,
    StoreError,
};

/// A settle's transaction on PostgreSQL.
pub(super) struct Settle<'s> {
    pub tx: Transaction<'static, Postgres>,
    /// Where hosts waiting for work are told a message is due again.
    pub channel: &'s str,
    pub settling: Settling,
}

#[async_trait::async_trait]
impl SettleTransaction for Settle<'_> {
    async fn fence(&mut self, batch: &[Settlement]) -> Result<Option<HashSet<Uuid>>> {
        if !matches!(self.settling, Settling::Leased) {
            return Ok(None);
        }
        let ids: Vec<Uuid> = batch.iter().map(|s| s.message.id).collect();
        let tokens: Vec<Uuid> = batch.iter().map(|s| s.message.lock_token).collect();
        let rows = sqlx::query(
            "UPDATE inbox i SET locked_until = NULL, lock_token = NULL
             FROM UNNEST($1::uuid[], $2::uuid[]) AS c(id, token)
             WHERE i.id = c.id AND i.lock_token = c.token
             RETURNING i.id",
        )
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
    }

    async fn write(&mut self, plan: &SettlePlan<'_>) -> Result<()> {
        write(&mut self.tx, self.channel, plan, &self.settling).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let held = matches!(self.settling, Settling::Held(_));
        let committed = self.tx.commit().await.map_err(StoreError::from);
        if held {
            committed.map_err(claim_lost)
        } else {
            committed
        }
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }

    fn failed(&self, e: StoreError) -> StoreError {
        match self.settling {
            Settling::Held(_) => claim_lost(e),
            _ => e,
        }
    }
}

#[async_trait::async_trait]
impl StateLocks for Settle<'_> {
    async fn lock(
        &mut self,
        keys: &[(String, String)],
        wait: bool,
        view: &SharedView,
    ) -> Result<bool> {
        let mut hashes: Vec<i64> = keys.iter().map(|(p, k)| lock_id(p, k)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        if wait {
            sqlx::query(
                "SELECT pg_advisory_xact_lock(h) FROM UNNEST($1::bigint[]) AS h ORDER BY h",
            )
            .bind(&hashes)
            .execute(&mut *self.tx)
            .await?;
        } else {
            let all: bool = sqlx::query_scalar(
                "SELECT bool_and(pg_try_advisory_xact_lock(h)) FROM UNNEST($1::bigint[]) AS h",
            )
            .bind(&hashes)
            .fetch_one(&mut *self.tx)
            .await?;
            if !all {
                return Ok(false);
            }
        }
        let (plugins, names): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|(p, k)| (p.as_str(), k.as_str())).unzip();
        let rows = sqlx::query(
            "SELECT k.n, s.value, s.version FROM plugin_state s
             JOIN UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS k(plugin, key, n) USING (plugin, key)",
        )
        .bind(&plugins)
        .bind(&names)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut committed: Vec<Option<(Vec<u8>, i64)>> = vec![None; keys.len()];
        for row in &rows {
            let n: i64 = row.get(0);
            committed[n as usize - 1] = Some((row.get(1), row.get(2)));
        }
        let mut view = view.lock().expect("no panic while the view is locked");
        for ((plugin, key), committed) in keys.iter().zip(committed) {
            view.load(plugin, key, committed);
        }
        Ok(true)
    }

    async fn usage(&mut self, plugins: &[&str]) -> Result<BTreeMap<String, StateUsage>> {
        let rows = sqlx::query(
            "SELECT plugin, keys, bytes FROM plugin_state_usage WHERE plugin = ANY($1)
             ORDER BY plugin FOR UPDATE",
        )
        .bind(plugins)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let usage = StateUsage {
                    keys: r.get(1),
                    bytes: r.get(2),
                };
                (r.get(0), usage)
            })
            .collect())
    }
}

/// The advisory lock id of a state key: 64 bits of its sha256.
fn lock_id(plugin: &str, key: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(plugin)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}
