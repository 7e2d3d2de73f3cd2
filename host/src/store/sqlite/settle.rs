//! The settle transaction on SQLite ([`SettleTransaction`]): fence each claimed message
//! on its lock token, load the state keys the batch touched, write the plan row by row.
//! SQLite has one writer (`BEGIN IMMEDIATE`), so the state loaded here cannot change
//! before the commit and taking a key's "lock" is loading it.

use std::collections::{BTreeMap, HashSet};

use sqlx::{Row, Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

use super::insert_new;
use super::keys;
use crate::store::settle::{PARK_AT_MOST, statements};
use crate::store::{
    Result, SettlePlan, SettleTransaction, Settlement, SharedView, StateLocks, StateUsage,
    StoreError,
};

/// What is being settled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Settling {
    /// Leased inbox rows: fenced on their tokens, then removed or rescheduled.
    Claimed,
    /// Messages a transport delivered: no inbox rows; it re-publishes those to try again.
    Delivered,
}

/// A settle's transaction on SQLite, at `now` (Unix ms).
pub(super) struct Settle {
    pub tx: Transaction<'static, Sqlite>,
    pub now: i64,
    pub settling: Settling,
}

#[async_trait::async_trait]
impl SettleTransaction for Settle {
    async fn fence(&mut self, batch: &[Settlement]) -> Result<Option<HashSet<Uuid>>> {
        if self.settling == Settling::Delivered {
            return Ok(None);
        }
        let mut ours = HashSet::with_capacity(batch.len());
        for s in batch {
            let cleared = sqlx::query(
                "UPDATE inbox SET locked_until = NULL, lock_token = NULL WHERE id = ? AND lock_token = ?",
            )
            .bind(s.message.id.to_string())
            .bind(s.message.lock_token.to_string())
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
            if cleared == 1 {
                ours.insert(s.message.id);
            }
        }
        Ok(Some(ours))
    }

    async fn write(&mut self, plan: &SettlePlan<'_>) -> Result<()> {
        write(&mut self.tx, plan, self.now, self.settling).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

/// Loads state keys in the settle transaction, which already excludes every other writer.
#[async_trait::async_trait]
impl StateLocks for Settle {
    async fn lock(
        &mut self,
        keys: &[(String, String)],
        _wait: bool,
        view: &SharedView,
    ) -> Result<bool> {
        for (plugin, key) in keys {
            let row =
                sqlx::query("SELECT value, version FROM plugin_state WHERE plugin = ? AND key = ?")
                    .bind(plugin)
                    .bind(key)
                    .fetch_optional(&mut *self.tx)
                    .await?;
            let committed = row.map(|r| (r.get("value"), r.get("version")));
            view.lock()
                .expect("no panic while the view is locked")
                .load(plugin, key, committed);
        }
        Ok(true)
    }

    async fn usage(&mut self, plugins: &[&str]) -> Result<BTreeMap<String, StateUsage>> {
        let mut usage = BTreeMap::new();
        for plugin in plugins {
            let row = sqlx::query("SELECT keys, bytes FROM plugin_state_usage WHERE plugin = ?")
                .bind(plugin)
                .fetch_optional(&mut *self.tx)
                .await?;
            if let Some(row) = row {
                let held = StateUsage {
                    keys: row.get(0),
                    bytes: row.get(1),
                };
                usage.insert(plugin.to_string(), held);
            }
        }
        Ok(usage)
    }
}

async fn write(
    conn: &mut SqliteConnection,
    plan: &SettlePlan<'_>,
    now: i64,
    settling: Settling,
) -> Result<()> {
    let parked = keys::lock(conn, &plan.keys).await?;
    for (id, plugin) in &plan.handled {
        let id = id.to_string();
        sqlx::query(
            "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&plugin.name)
        .bind(&plugin.version)
        .bind(&plugin.sha256)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::of_ledger_insert)?;
        sqlx::query(
            "UPDATE failed_messages SET status = 'resolved', resolved_at = ?
             WHERE message_id = ? AND plugin IN (?, '') AND status = 'retrying'",
        )
        .bind(now)
        .bind(&id)
        .bind(&plugin.name)
        .execute(&mut *conn)
        .await?;
    }
    for message in &plan.publishes {
        insert_new(conn, message, now).await?;
    }
    statements::outbox::<Sqlite>(conn, plan, now).await?;
    statements::replies::<Sqlite>(conn, plan).await?;
    for ((plugin, key), write) in &plan.state {
        match write.value {
            Some(value) => sqlx::query(
                "INSERT INTO plugin_state (plugin, key, value, version, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (plugin, key) DO UPDATE
                 SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at",
            )
            .bind(plugin)
            .bind(key)
            .bind(value)
            .bind(write.version)
            .bind(now),
            None => sqlx::query("DELETE FROM plugin_state WHERE plugin = ? AND key = ?")
                .bind(plugin)
                .bind(key),
        }
        .execute(&mut *conn)
        .await?;
    }
    statements::usage::<Sqlite>(conn, plan).await?;
    statements::failures::<Sqlite>(conn, plan, now).await?;
    if settling == Settling::Delivered {
        return Ok(());
    }
    for stay in &plan.stay {
        let parks = parked.contains(&stay.message.id);
        let delay = if parks { PARK_AT_MOST } else { stay.delay };
        sqlx::query(
            "UPDATE inbox SET attempts = attempts + ?, available_at = ?, seen = 1, holds = ?,
                              parked = ?
             WHERE id = ?",
        )
        .bind(i64::from(stay.counts))
        .bind(now + delay.as_millis() as i64)
        .bind(stay.holds.as_deref())
        .bind(parks)
        .bind(stay.message.id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    for id in &plan.done {
        sqlx::query("DELETE FROM inbox WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    keys::write(conn, &plan.keys, &plan.held, now).await
}
