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
mod keys;
mod outbox;
mod queues;
mod registry;
mod settle;
mod writes;

use claim::HeldClaim;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::Inbox;
use super::sql::SqlStore;
use super::{Claim, ClaimMode, Hold, KeyOrder, Result, SettleTransaction, StoreError, migrate};
use crate::envelope::NewMessage;
use enqueue::insert_new;
use settle::Settle;
use writes::Settling;

/// Connections per host: the worker's claim/settle, handlers' state reads, the CLI.
const POOL_SIZE: u32 = 8;

/// PostgreSQL-backed [`crate::store::Store`].
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

/// How many times a settle the server rolled back to break a deadlock runs again.
const DEADLOCK_RETRIES: u32 = 5;

/// Whether `e` says PostgreSQL rolled the transaction back to break a deadlock (40P01):
/// it was undone whole, so running it again is the cure.
fn is_deadlock(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(e)) => e.code().as_deref() == Some("40P01"),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Inbox for PostgresStore {
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
        order: KeyOrder,
        lease: Duration,
    ) -> Result<Claim> {
        let idle = &self.idle_queues;
        claim::claim(&self.pool, idle, queues, limit, mode, order, lease).await
    }

    async fn begin_settle(&self, hold: Hold) -> Result<Box<dyn SettleTransaction + '_>> {
        let (tx, settling) = match hold {
            Hold::Lease => (self.pool.begin().await?, Settling::Leased),
            Hold::Transaction(held) => {
                let HeldClaim { tx, created_at } = held.into_inner();
                (tx, Settling::Held(created_at))
            }
        };
        Ok(Box::new(Settle {
            tx,
            channel: &self.channel,
            settling,
        }))
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

    fn settle_again(&self, e: &StoreError, runs: u32) -> bool {
        is_deadlock(e) && runs <= DEADLOCK_RETRIES
    }

    async fn renew(
        &self,
        hold: &mut Hold,
        claims: &[(Uuid, Uuid)],
        lease: Duration,
    ) -> Result<u64> {
        claim::renew(&self.pool, hold, claims, lease).await
    }

    async fn lease_held(
        &self,
        hold: &mut Hold,
        messages: &[crate::envelope::Envelope],
        lease: Duration,
    ) -> Result<Option<Uuid>> {
        claim::lease_held(hold, messages, lease).await
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
}
