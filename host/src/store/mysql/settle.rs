//! The settle transaction on MariaDB/MySQL ([`SettleTransaction`]).
//!
//! - Fence (leased claims): lock the batch's rows, keep those whose lock token is still
//!   current and take them (`inbox`); the others were taken over and nothing of theirs
//!   is written. A claim held in this transaction took its rows already.
//! - Lock the state keys the batch read or wrote (their rows of `state_lock_slots`,
//!   `FOR UPDATE` in slot order) and load their committed values, so two hosts cannot
//!   both commit a write based on the same read. A key a run inside the settle newly
//!   touches is locked without waiting (`NOWAIT`): taking it out of order could deadlock
//!   against another host's settle, so a key held elsewhere sends that result back for
//!   another round instead.
//! - The plugins' state usage: their `plugin_state_usage` rows locked, in plugin order.
//! - Write the plan; the messages that stay go back into the inbox.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sha2::{Digest, Sha256};
use sqlx::{MySql, MySqlConnection, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::enqueue::insert_new;
use super::inbox::{self, CreatedAt};
use super::keyed::{self, SLOTS, STATE_KEYS};
use super::keys;
use super::{claim_lost, push_list};
use crate::store::settle::statements;
use crate::store::{
    Result, SettlePlan, SettleTransaction, Settlement, SharedView, StateLocks, StateUsage,
    StoreError,
};

/// Slots of `state_lock_slots` (2^18): the lower half for delivered messages' ids, the
/// upper half for state keys, so a settle that locks both (ids first) takes them in one
/// order.
const LOCK_SLOTS: u32 = 1 << 18;

/// What is being settled.
pub(super) enum Settling {
    /// Leased inbox rows: fenced on their tokens and taken (with their enqueue times,
    /// once fenced), the others left alone.
    Leased(Option<CreatedAt>),
    /// Inbox rows the claim transaction this settle writes into took, with their enqueue
    /// times (all still ours), and the messages among them an operator sent back.
    Held(CreatedAt, BTreeSet<Uuid>),
    /// Messages a transport delivered: no inbox rows; it re-publishes those to try again.
    Delivered,
}

/// A settle's transaction on MariaDB/MySQL, at `now` (the database's Unix ms when it
/// began).
pub(super) struct Settle {
    pub tx: Transaction<'static, MySql>,
    pub now: i64,
    pub settling: Settling,
}

#[async_trait::async_trait]
impl SettleTransaction for Settle {
    async fn fence(&mut self, batch: &[Settlement]) -> Result<Option<HashSet<Uuid>>> {
        let Settling::Leased(taken) = &mut self.settling else {
            return Ok(None);
        };
        let ours = inbox::fence(&mut self.tx, batch).await?;
        let held = ours.keys().copied().collect();
        *taken = Some(ours);
        Ok(Some(held))
    }

    async fn write(&mut self, plan: &SettlePlan<'_>) -> Result<()> {
        let (taken, retried) = match &self.settling {
            Settling::Leased(taken) => (taken.as_ref(), None),
            Settling::Held(taken, retried) => (Some(taken), Some(retried)),
            Settling::Delivered => (None, None),
        };
        write(&mut self.tx, plan, self.now, taken, retried).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let held = matches!(self.settling, Settling::Held(..));
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
            Settling::Held(..) => claim_lost(e),
            _ => e,
        }
    }
}

/// Row locks on state keys' slots, taken in the settle transaction.
#[async_trait::async_trait]
impl StateLocks for Settle {
    async fn lock(
        &mut self,
        keys: &[(String, String)],
        wait: bool,
        view: &SharedView,
    ) -> Result<bool> {
        let slots: BTreeSet<u32> = keys.iter().map(|(p, k)| lock_slot(p, k)).collect();
        match lock_slots(&mut self.tx, &slots, wait).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if !wait && is_lock_refused(&*e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT s.plugin, s.`key`, s.value, s.version
             FROM {STATE_KEYS} STRAIGHT_JOIN plugin_state s FORCE INDEX (PRIMARY)
                 ON s.plugin = j.plugin AND s.`key` = j.k"
        )))
        .bind(keyed::json(keys))
        .fetch_all(&mut *self.tx)
        .await?;
        let mut committed: BTreeMap<(String, String), (Vec<u8>, i64)> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect();
        let mut view = view.lock().expect("no panic while the view is locked");
        for (plugin, key) in keys {
            let value = committed.remove(&(plugin.clone(), key.clone()));
            view.load(plugin, key, value);
        }
        Ok(true)
    }

    async fn usage(&mut self, plugins: &[&str]) -> Result<BTreeMap<String, StateUsage>> {
        let mut usage = QueryBuilder::<MySql>::new(
            "SELECT plugin, `keys`, bytes FROM plugin_state_usage WHERE plugin IN (",
        );
        push_list(&mut usage, plugins.iter().copied());
        usage.push(") ORDER BY plugin FOR UPDATE");
        let rows = usage.build().fetch_all(&mut *self.tx).await?;
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

/// Whether `e` is a `NOWAIT` lock refused because another transaction holds the row
/// (MariaDB and MySQL: 1205 lock wait timeout; MySQL 8: 3572).
fn is_lock_refused(e: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(e.code().as_deref(), Some("HY000") | Some("40001"))
        && (e.message().contains("NOWAIT") || e.message().contains("Lock wait timeout"))
}

/// The lock slot of a state key: 17 bits of its sha256, in the upper half.
fn lock_slot(plugin: &str, key: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(plugin)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    let bits = u32::from_le_bytes(digest[..4].try_into().expect("sha256 has 32 bytes"));
    LOCK_SLOTS / 2 + bits % (LOCK_SLOTS / 2)
}

/// Lock the slots of messages `ids` (17 random bits of each id, in the lower half) until
/// the transaction ends, so two settles of the same delivered message take turns.
pub(super) async fn lock_messages(conn: &mut MySqlConnection, ids: &[Uuid]) -> Result<()> {
    let slots: BTreeSet<u32> = ids
        .iter()
        .map(|id| {
            let bits = u32::from_le_bytes(id.as_bytes()[12..].try_into().expect("16 bytes"));
            bits % (LOCK_SLOTS / 2)
        })
        .collect();
    if slots.is_empty() {
        return Ok(());
    }
    lock_slots(conn, &slots, true).await?;
    Ok(())
}

/// Lock `slots` of `state_lock_slots` in ascending order (so every settle takes them in
/// one order), waiting for them or (`wait` false) failing at once when one is held.
async fn lock_slots(
    conn: &mut MySqlConnection,
    slots: &BTreeSet<u32>,
    wait: bool,
) -> std::result::Result<(), sqlx::Error> {
    let nowait = if wait { "" } else { " NOWAIT" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT s.slot FROM {SLOTS} STRAIGHT_JOIN state_lock_slots s FORCE INDEX (PRIMARY) ON s.slot = j.slot
         FOR UPDATE{nowait}"
    )))
    .bind(keyed::json(slots))
    .execute(conn)
    .await?;
    Ok(())
}

/// Write `plan`; the messages that stay go back into the inbox when the batch's rows
/// were `taken` (not for a transport's deliveries). The failures of handled messages an
/// operator sent back are resolved; `retried` says which those can be when known.
async fn write(
    conn: &mut MySqlConnection,
    plan: &SettlePlan<'_>,
    now: i64,
    taken: Option<&CreatedAt>,
    retried: Option<&BTreeSet<Uuid>>,
) -> Result<()> {
    let parked = keys::lock(conn, &plan.keys).await?;
    if !plan.handled.is_empty() {
        let mut ledger = QueryBuilder::<MySql>::new(
            "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at) ",
        );
        ledger.push_values(&plan.handled, |mut row, (id, plugin)| {
            row.push_bind(*id)
                .push_bind(&plugin.name)
                .push_bind(&plugin.version)
                .push_bind(&plugin.sha256)
                .push_bind(now);
        });
        ledger
            .build()
            .execute(&mut *conn)
            .await
            .map_err(StoreError::of_ledger_insert)?;
        let sent_back = |id: &Uuid| retried.is_none_or(|r| r.contains(id));
        if plan.handled.iter().any(|(id, _)| sent_back(id)) {
            let mut resolved = QueryBuilder::<MySql>::new(
                "UPDATE failed_messages SET status = 'resolved', resolved_at = ",
            );
            resolved
                .push_bind(now)
                .push(" WHERE status = 'retrying' AND (");
            // Per plugin: its failures, and failures of no plugin, of the messages it handled.
            let mut by_plugin: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
            for (id, plugin) in &plan.handled {
                by_plugin.entry(&plugin.name).or_default().push(*id);
            }
            for (n, (plugin, ids)) in by_plugin.into_iter().enumerate() {
                if n > 0 {
                    resolved.push(" OR ");
                }
                resolved
                    .push("(plugin IN (")
                    .push_bind(plugin)
                    .push(", '') AND message_id IN (");
                push_list(&mut resolved, ids);
                resolved.push("))");
            }
            resolved.push(")");
            resolved.build().execute(&mut *conn).await?;
        }
    }
    insert_new(conn, &plan.publishes, now).await?;
    statements::outbox::<MySql>(conn, plan, now).await?;
    statements::replies::<MySql>(conn, plan).await?;
    let (written, deleted): (Vec<_>, Vec<_>) =
        plan.state.iter().partition(|(_, w)| w.value.is_some());
    if !written.is_empty() {
        let mut state = QueryBuilder::<MySql>::new(
            "INSERT INTO plugin_state (plugin, `key`, value, version, updated_at) ",
        );
        state.push_values(&written, |mut row, ((plugin, key), write)| {
            row.push_bind(*plugin)
                .push_bind(*key)
                .push_bind(write.value.expect("partitioned on a value"))
                .push_bind(write.version)
                .push_bind(now);
        });
        state.push(
            " ON DUPLICATE KEY UPDATE value = VALUES(value), version = VALUES(version),
                                      updated_at = VALUES(updated_at)",
        );
        state.build().execute(&mut *conn).await?;
    }
    if !deleted.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE s FROM {STATE_KEYS} STRAIGHT_JOIN plugin_state s FORCE INDEX (PRIMARY)
                 ON s.plugin = j.plugin AND s.`key` = j.k"
        )))
        .bind(keyed::json(deleted.iter().map(|(key, _)| key)))
        .execute(&mut *conn)
        .await?;
    }
    statements::usage::<MySql>(conn, plan).await?;
    statements::failures::<MySql>(conn, plan, now).await?;
    if let Some(created_at) = taken {
        inbox::put_back(conn, &plan.stay, &parked, created_at, now, None).await?;
    }
    keys::write(conn, &plan.keys, &plan.held, now).await
}
