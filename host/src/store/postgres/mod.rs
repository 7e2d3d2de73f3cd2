//! The fleet store on PostgreSQL: many hosts share one inbox.
//!
//! A claim picks due rows no other host holds with `FOR UPDATE SKIP LOCKED`, in one of two
//! ways ([`ClaimMode`]; the worker picks one from the handlers' deadline):
//!
//! - **Held transaction**: `DELETE ... SKIP LOCKED RETURNING` inside a transaction that
//!   stays open while the handlers run; the settle writes the batch's results into it and
//!   commits. One commit per batch, no fencing needed (the rows are ours until we commit or
//!   the connection drops), and a crashed host's messages are claimable the moment its
//!   connection closes. Messages that need another attempt are inserted back. A frozen
//!   host is cut off by `idle_in_transaction_session_timeout` (set to the lease), which
//!   the heartbeat resets. A batch that runs long anyway (calls queueing for a slow
//!   plugin's permits) is handed over to leases (`lease_held`): its rows go back leased
//!   under a new token and the transaction commits.
//! - **Lease**: the rows get `locked_until` and a fresh `lock_token` and the claim commits
//!   at once, so handlers run outside any transaction. The settle transaction first
//!   re-takes every message whose token is still current (fencing): a host that lost its
//!   lease writes nothing. A crashed host's claims come back when the lease expires.
//!
//! Held transactions are the default for short handlers: measured here (PostgreSQL 15,
//! 2 cores, batch 100, 256 B, trivial plugin, `cargo bench -p wharf-tests -- postgres`)
//! they settle ~28k msgs/s against ~18k for leases, whose claim is an UPDATE that writes a
//! new row version and whose settle adds the fencing statement. Past
//! `inbox.hold_claims_up_to_ms` of handler deadline, leases take over: a transaction open
//! for minutes pins a connection and holds back vacuum on every table.
//!
//! Every statement of a settle is a bulk statement over the whole batch (`UNNEST` of
//! arrays), so a batch costs a handful of round trips, not a few per message. Times come
//! from the database clock (`wharf_now_ms()`), so hosts with skewed clocks agree on leases
//! and due times. New messages `NOTIFY` the schema's channel so idle hosts wake up at once
//! instead of polling.

mod claim;
mod delivered;
mod enqueue;
mod failed;
mod outbox;
mod queues;
mod registry;
mod settle;
mod writes;

pub use claim::HeldClaim;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::sql::SqlStore;
use super::{
    AttemptError, Backlog, Claim, ClaimMode, Cleaned, FailedFilter, FailedMessage, FailedPage,
    HeldTransaction, Hold, OutboxClaim, PageRequest, QueueStats, Result, Retried,
    SettleTransaction, Store, Undeliverable, migrate,
};
use crate::envelope::NewMessage;
use enqueue::insert_new;
use settle::Settle;
use writes::Settling;

/// Connections per host: the worker's claim/settle, handlers' state reads, the CLI.
const POOL_SIZE: u32 = 8;

/// PostgreSQL-backed [`Store`].
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// `NOTIFY` channel of this schema: hosts on other schemas are not woken.
    channel: String,
    /// Listens on `channel`: new messages and retries rescheduled.
    listener: Listener,
    /// `NOTIFY` channel of this schema's plugin registry.
    plugins_channel: String,
    /// Listens on `plugins_channel`: deploys and rollbacks.
    plugins_listener: Listener,
    /// Queues whose last claim found nothing (see `claim::plan_per_call`).
    idle_queues: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl PostgresStore {
    /// Connect to `url` (`postgres://...`; the schema comes from its `search_path`, e.g.
    /// `?options=-csearch_path%3Dmyschema`) and bring the schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        migrate(&sqlx::migrate!("../migrations/postgres"), &pool).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        Ok(Self {
            pool,
            channel: format!("wharf_inbox:{schema}"),
            listener: Listener::default(),
            plugins_channel: format!("wharf_plugins:{schema}"),
            plugins_listener: Listener::default(),
            idle_queues: Default::default(),
        })
    }

    /// The connection pool, for tests and tools that inspect the tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A `LISTEN` on one channel, opened on the first wait and kept, so notifications
/// between waits are not lost; a connection that failed is opened again on the next.
#[derive(Debug, Default)]
struct Listener {
    current: Mutex<Option<PgListener>>,
}

impl Listener {
    /// Return on a notification on `channel` or after `at_most`.
    async fn wait(&self, pool: &PgPool, channel: &str, at_most: Duration) -> Result<()> {
        let mut guard = self.current.lock().await;
        let listener = match &mut *guard {
            Some(listener) => listener,
            None => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(channel).await?;
                guard.insert(listener)
            }
        };
        match tokio::time::timeout(at_most, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(e)) => {
                *guard = None;
                Err(e.into())
            }
        }
    }
}

/// Wake hosts waiting on `channel` when the transaction commits.
pub(super) async fn notify(tx: &mut Transaction<'_, Postgres>, channel: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl SqlStore for PostgresStore {
    type DB = Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn enqueue(&self, messages: &[NewMessage]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let inserted = insert_new(&mut tx, &self.channel, messages).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn claim(
        &self,
        queues: &[String],
        limit: u32,
        mode: ClaimMode,
        lease: Duration,
    ) -> Result<Claim> {
        claim::claim(&self.pool, &self.idle_queues, queues, limit, mode, lease).await
    }

    async fn begin_settle(&self, hold: Hold) -> Result<Box<dyn SettleTransaction + '_>> {
        let (tx, settling) = match hold {
            Hold::Lease => (self.pool.begin().await?, Settling::Leased),
            Hold::Transaction(HeldTransaction::Postgres(HeldClaim { tx, created_at })) => {
                (tx, Settling::Held(created_at))
            }
            Hold::Transaction(other) => unreachable!("{other:?} was claimed by another store"),
        };
        Ok(Box::new(Settle {
            tx,
            channel: &self.channel,
            settling,
        }))
    }

    async fn begin_settle_delivered(
        &self,
        ids: &[Uuid],
    ) -> Result<(
        Box<dyn SettleTransaction + '_>,
        BTreeMap<Uuid, BTreeSet<String>>,
    )> {
        let (tx, settled) = delivered::begin(&self.pool, ids).await?;
        let settle = Settle {
            tx,
            channel: &self.channel,
            settling: Settling::Delivered,
        };
        Ok((Box::new(settle), settled))
    }

    async fn mark_seen(&self, ids: &[Uuid], token: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE inbox SET seen = true,
                 locked_until = CASE WHEN lock_token = $2 THEN NULL ELSE locked_until END,
                 lock_token = CASE WHEN lock_token = $2 THEN NULL ELSE lock_token END
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn settled_plugins(&self, ids: &[Uuid]) -> Result<BTreeMap<Uuid, BTreeSet<String>>> {
        delivered::settled(&self.pool, ids).await
    }

    async fn lease_held(
        &self,
        hold: &mut Hold,
        messages: &[crate::envelope::Envelope],
        lease: Duration,
    ) -> Result<Option<Uuid>> {
        claim::lease_held(hold, messages, lease).await
    }

    async fn renew(
        &self,
        hold: &mut Hold,
        claims: &[(Uuid, Uuid)],
        lease: Duration,
    ) -> Result<u64> {
        claim::renew(&self.pool, hold, claims, lease).await
    }

    async fn wait_for_work(&self, queues: &[String], at_most: Duration) -> Result<()> {
        // Sleep until the next scheduled retry is due, a new message is notified, or
        // `at_most` passed (a safety net for a lost notification or an expired lease).
        // Rows another host holds in a claim transaction are skipped: they are not due.
        let next_due: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT GREATEST(available_at, COALESCE(locked_until, 0)) - wharf_now_ms() FROM inbox
             WHERE true {}
             ORDER BY 1 LIMIT 1 FOR KEY SHARE SKIP LOCKED",
            claim::queue_filter(queues)
        )))
        // The idle path: planned for the queue (see `claim::plan_per_call`).
        .persistent(queues.len() != 1)
        .bind(queues)
        .fetch_optional(&self.pool)
        .await?;
        let wait = match next_due {
            Some(ms) if ms <= 0 => return Ok(()),
            Some(ms) => at_most.min(Duration::from_millis(ms as u64)),
            None => at_most,
        };
        self.listener.wait(&self.pool, &self.channel, wait).await
    }

    async fn state_get(&self, plugin: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let row =
            sqlx::query("SELECT value, version FROM plugin_state WHERE plugin = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| (r.get("value"), r.get("version"))))
    }

    async fn failed_list(&self, filter: &FailedFilter, page: PageRequest) -> Result<FailedPage> {
        super::failed::list::<Postgres>(&mut *self.pool.acquire().await?, filter, page).await
    }

    async fn failed_get(&self, id: i64) -> Result<Option<(FailedMessage, Vec<AttemptError>)>> {
        super::failed::get::<Postgres>(&mut *self.pool.acquire().await?, id).await
    }

    async fn failed_retry(&self, filter: &FailedFilter, limit: u64) -> Result<Retried> {
        failed::retry(&self.pool, &self.channel, filter, limit).await
    }

    async fn failed_delete(&self, filter: &FailedFilter, limit: u64) -> Result<u64> {
        failed::delete(&self.pool, filter, limit).await
    }

    async fn cleanup(&self, older_than: Duration) -> Result<Cleaned> {
        let row = sqlx::query(
            "WITH cut AS (SELECT wharf_now_ms() - $1 AS t),
             received_gone AS (
                 DELETE FROM received r USING cut WHERE r.received_at < cut.t
                   AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = r.id)
                   AND NOT EXISTS (SELECT 1 FROM processed p
                                   WHERE p.message_id = r.id AND p.handled_at >= cut.t)
                   AND NOT EXISTS (SELECT 1 FROM failed_messages f
                                   WHERE f.message_id = r.id AND f.status <> 'resolved')
                 RETURNING 1),
             processed_gone AS (
                 DELETE FROM processed p USING cut WHERE p.handled_at < cut.t
                   AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = p.message_id)
                 RETURNING 1),
             outbox_gone AS (
                 DELETE FROM outbox o USING cut WHERE o.sent_at < cut.t RETURNING 1),
             failed_gone AS (
                 DELETE FROM failed_messages f USING cut
                 WHERE f.status = 'resolved' AND f.resolved_at < cut.t RETURNING 1),
             errors_gone AS (
                 DELETE FROM attempt_errors a USING cut WHERE a.at < cut.t
                   AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.id = a.message_id)
                   AND NOT EXISTS (SELECT 1 FROM failed_messages f
                                   WHERE f.message_id = a.message_id AND f.plugin = a.plugin
                                     AND f.status <> 'resolved')
                 RETURNING 1)
             SELECT (SELECT COUNT(*) FROM received_gone), (SELECT COUNT(*) FROM processed_gone),
                    (SELECT COUNT(*) FROM outbox_gone), (SELECT COUNT(*) FROM failed_gone),
                    (SELECT COUNT(*) FROM errors_gone)",
        )
        .bind(older_than.as_millis() as i64)
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| row.get::<i64, _>(i) as u64;
        Ok(Cleaned {
            received: n(0),
            processed: n(1),
            outbox: n(2),
            failed: n(3),
            attempt_errors: n(4),
        })
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn outbox_add(
        &self,
        id: Uuid,
        route: (&str, &str),
        kind: &str,
        headers: &BTreeMap<String, String>,
        payload: &[u8],
    ) -> Result<bool> {
        outbox::add(&self.pool, id, route, kind, headers, payload).await
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>> {
        queues::stats(&self.pool).await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        queues::purge(&self.pool, queue).await
    }

    async fn backlog(&self) -> Result<Backlog> {
        queues::backlog(&self.pool).await
    }

    async fn claim_outbox(&self, limit: u32) -> Result<OutboxClaim> {
        outbox::claim(&self.pool, limit).await
    }

    async fn outbox_sent(
        &self,
        hold: Hold,
        sent: &[i64],
        undeliverable: &[Undeliverable],
    ) -> Result<()> {
        outbox::sent(&self.pool, hold, sent, undeliverable).await
    }
}
