//! The settle transaction on PostgreSQL, as bulk statements over the whole batch.
//!
//! 1. Fence: clear the claim of every message whose lock token is still current; the
//!    others were taken over and nothing of theirs is written.
//! 2. Lock the state keys the batch read or wrote (advisory transaction locks, in one
//!    order) and load their committed values, so two hosts cannot both commit a write
//!    based on the same read, and run the stale and contended results over them
//!    ([`resolve`]). A key such a run newly touches is locked without waiting (`pg_try_advisory_xact_lock`):
//!    taking it out of order could deadlock against another host's settle, so a key
//!    held elsewhere sends that result back for another round instead.
//! 3. Build the [`SettlePlan`] (the rules every store shares) within the plugins' state
//!    quotas (their `plugin_state_usage` rows locked, in plugin order, when their state
//!    changes) and write each kind of its rows with one statement (`writes`).

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::writes::{Settling, write};
use crate::store::settle::{
    SettlePlan, SettleRunner, SharedView, StateLocks, StateUsage, fenced_off, finish, plan, resolve,
};
use crate::store::{Result, SettleSummary, Settlement};

/// Settle `batch` in `tx` and end it ([`finish`]).
pub(super) async fn settle_in(
    mut tx: Transaction<'_, Postgres>,
    channel: &str,
    batch: &mut [Settlement],
    settling: Settling<'_>,
    runner: &dyn SettleRunner,
) -> Result<SettleSummary> {
    let settled = settle_batch(&mut tx, channel, batch, settling, runner).await;
    finish(tx, settled.map(|plan| plan.summary)).await
}

/// Plan and write `batch` inside the caller's transaction, running its stale and contended
/// results through `runner`.
pub(super) async fn settle_batch<'a>(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    batch: &'a mut [Settlement],
    settling: Settling<'_>,
    runner: &dyn SettleRunner,
) -> Result<SettlePlan<'a>> {
    if batch.is_empty() {
        return Ok(SettlePlan::default());
    }
    let mut fenced = 0;
    let mut held: Vec<&mut Settlement> = match settling {
        Settling::Held(_) | Settling::Delivered => batch.iter_mut().collect(),
        Settling::Leased => {
            let ours = fence(tx, batch).await?;
            let of = batch.len();
            let (held, lost): (Vec<_>, Vec<_>) =
                batch.iter_mut().partition(|s| ours.contains(&s.message.id));
            let lost: Vec<Uuid> = lost.iter().map(|s| s.message.id).collect();
            fenced_off(&lost, of);
            fenced = lost.len() as u64;
            held
        }
    };
    let (view, runs) = resolve(&mut held, &mut Locks(tx), runner).await?;
    let held: Vec<&Settlement> = held.into_iter().map(|s| &*s).collect();
    let mut plan = plan(&held, &view, runs, &mut Locks(tx), runner).await?;
    plan.summary.fenced = fenced;
    write(tx, channel, &plan, settling).await?;
    Ok(plan)
}

/// Clear the claims still held by these settlements' tokens; returns their message ids.
async fn fence(tx: &mut Transaction<'_, Postgres>, batch: &[Settlement]) -> Result<HashSet<Uuid>> {
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
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Advisory locks on state keys, taken in the settle transaction.
struct Locks<'t, 'c>(&'t mut Transaction<'c, Postgres>);

#[async_trait::async_trait]
impl StateLocks for Locks<'_, '_> {
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
            .execute(&mut **self.0)
            .await?;
        } else {
            let all: bool = sqlx::query_scalar(
                "SELECT bool_and(pg_try_advisory_xact_lock(h)) FROM UNNEST($1::bigint[]) AS h",
            )
            .bind(&hashes)
            .fetch_one(&mut **self.0)
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
        .fetch_all(&mut **self.0)
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
        .fetch_all(&mut **self.0)
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
