//! The settle transaction on PostgreSQL, as bulk statements over the whole batch.
//!
//! 1. Fence: clear the claim of every message whose lock token is still current; the
//!    others were taken over and nothing of theirs is written.
//! 2. Lock the state keys the batch read or wrote (advisory transaction locks, in one
//!    order) and load their committed versions, so two hosts cannot both commit a write
//!    based on the same read.
//! 3. Build the [`SettlePlan`] (the rules every store shares) and write each kind of its
//!    rows with one statement (`writes`).

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::writes::{Settling, write};
use crate::store::settle::{SettlePlan, StateKey, Versions, state_keys};
use crate::store::{Result, Settlement};

/// Plan and write `batch` inside the caller's transaction.
pub(super) async fn settle_batch<'a>(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    batch: &'a [Settlement],
    settling: Settling<'_>,
) -> Result<SettlePlan<'a>> {
    if batch.is_empty() {
        return Ok(SettlePlan::default());
    }
    let mut fenced = 0;
    let held: Vec<&Settlement> = match settling {
        Settling::Held(_) | Settling::Delivered => batch.iter().collect(),
        Settling::Leased => {
            let ours = fence(tx, batch).await?;
            batch
                .iter()
                .filter(|s| {
                    let ours = ours.contains(&s.message.id);
                    if !ours {
                        tracing::warn!(message_id = %s.message.id, "claim was taken over by another worker; discarding this attempt's results");
                        fenced += 1;
                    }
                    ours
                })
                .collect()
        }
    };
    let versions = lock_state(tx, &held).await?;
    let mut plan = SettlePlan::build(&held, versions);
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

/// Take an advisory lock on every state key the batch's handled results read or wrote,
/// then load their committed versions (absent = 0).
async fn lock_state<'a>(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&'a Settlement],
) -> Result<Versions<'a>> {
    let mut versions: Versions<'a> = state_keys(batch).into_iter().map(|k| (k, 0)).collect();
    if versions.is_empty() {
        return Ok(versions);
    }
    let mut hashes: Vec<i64> = versions.keys().map(|(p, k)| lock_id(p, k)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock(h) FROM UNNEST($1::bigint[]) AS h ORDER BY h")
        .bind(&hashes)
        .execute(&mut **tx)
        .await?;
    let keys: Vec<StateKey<'a>> = versions.keys().copied().collect();
    let (plugins, names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let rows = sqlx::query(
        "SELECT k.n, s.version FROM plugin_state s
         JOIN UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS k(plugin, key, n) USING (plugin, key)",
    )
    .bind(&plugins)
    .bind(&names)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let n: i64 = row.get(0);
        versions.insert(keys[n as usize - 1], row.get(1));
    }
    Ok(versions)
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
