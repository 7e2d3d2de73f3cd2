//! The fleet store on MariaDB (>= 10.6) or MySQL (>= 8.0.1): many hosts share one inbox,
//! on the database the systems wharf replaces already run.
//!
//! Claims take the due rows no other host holds with `SELECT ... FOR UPDATE SKIP LOCKED`,
//! in the two designs of [`ClaimMode`]:
//! - held (MariaDB, short handlers): the rows stay locked in the claim's transaction
//!   while the handlers run, and the settle writes into it and commits: no claim is
//!   written, and a crashed host's messages are free the moment its connection drops.
//!   The server ends a transaction idle for a lease (`idle_transaction_timeout`), so a
//!   frozen host loses its claim like a lease; MySQL has no such bound and leases.
//! - leased: the rows are stamped with a lease (`locked_until` + `lock_token`) in one
//!   short transaction; the handlers run outside any transaction and a settle whose token
//!   is no longer current writes nothing (fencing). A crashed host's claims come back
//!   when their lease expires.
//!
//! Statements that lock or delete rows by key reach them through the key list joined as
//! a table (`keyed`), and claims name the index they walk (`FORCE INDEX`): planned as a
//! scan, such a statement waits for and locks rows other hosts hold.
//!
//! Written for both servers: no `RETURNING` (MySQL has none, MariaDB none on `UPDATE`),
//! `?` placeholders with `IN (...)` lists built per call, and `INSERT IGNORE` with a
//! per-call token to tell new rows from duplicates (the driver reports found rows, so
//! `ON DUPLICATE KEY UPDATE` cannot). Times come from the database clock, read once per
//! transaction ([`now`]), so hosts with skewed clocks agree on leases and due times.
//! There is no `LISTEN`/`NOTIFY`: idle hosts poll ([`POLL_EVERY`]).

mod claim;
mod delivered;
mod enqueue;
mod failed;
mod inbox;
mod keyed;
mod keys;
mod outbox;
mod queues;
mod registry;
mod settle;

use claim::HeldClaim;

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder};
use uuid::Uuid;

use super::Inbox;
use super::sql::SqlStore;
use super::{Claim, ClaimMode, Hold, KeyOrder, Result, SettleTransaction, StoreError};
use crate::envelope::NewMessage;
use enqueue::insert_new;
use settle::{Settle, Settling};

/// Connections per host: the worker's claim/settle, handlers' state reads, the CLI.
const POOL_SIZE: u32 = 8;

/// How often an idle host looks for due work: the wake-up latency of a new message on an
/// idle host is at most this (PostgreSQL hosts are woken at once by `NOTIFY`).
pub const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long a host waits for another to finish migrating the database.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// The database clock in Unix milliseconds, as SQL.
pub(super) use super::sql::MYSQL_NOW_MS as NOW_MS;

/// MariaDB/MySQL-backed [`crate::store::Store`].
#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    /// Whether claims may be held in a transaction: the server can end an idle one
    /// (MariaDB's `idle_transaction_timeout`).
    holds: bool,
}

impl MySqlStore {
    /// Connect to `url` (`mysql://user:password@host/database`) and bring the schema up
    /// to date.
    pub async fn open(url: &str) -> Result<Self> {
        let options = MySqlConnectOptions::from_str(url)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Read what committed; the claim and the settle take the locks they need.
                    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        // Hosts started together must not migrate at once (the migrator's own lock does
        // not hold on MariaDB): take a named lock for this database first, on the
        // connection that migrates.
        let mut conn = pool.acquire().await?;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(CONCAT('wharf_migrate:', DATABASE()), ?)")
                .bind(MIGRATION_LOCK_WAIT.as_secs())
                .fetch_one(&mut *conn)
                .await?;
        if locked != Some(1) {
            return Err(StoreError::MigrationLocked(MIGRATION_LOCK_WAIT));
        }
        let migrated = super::migrate(&sqlx::migrate!("../migrations/mysql"), &mut *conn).await;
        sqlx::query("SELECT RELEASE_LOCK(CONCAT('wharf_migrate:', DATABASE()))")
            .execute(&mut *conn)
            .await?;
        migrated?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut *conn)
            .await?;
        Ok(Self {
            pool,
            holds: version.contains("MariaDB"),
        })
    }

    /// The connection pool, for tests and tools that inspect the tables.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }
}

/// `column` (a BINARY(16) UUID) as hyphenated lowercase text, for the readers shared with
/// the other stores, which decode ids from text.
pub(super) fn uuid_text(column: &str) -> String {
    <MySql as super::sql::Dialect>::uuid_text(column)
}

/// How many times a transaction InnoDB chose as a deadlock victim is run again.
pub(super) const DEADLOCK_RETRIES: u32 = 5;

/// Whether `e` says InnoDB rolled the transaction back to break a deadlock (or it waited
/// too long for a lock): running it again is the cure.
pub(super) fn is_deadlock(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(e)) => e
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| matches!(e.number(), 1205 | 1213)),
        _ => false,
    }
}

/// Run the transaction `$body` (an async block) again, up to [`DEADLOCK_RETRIES`] times,
/// when InnoDB chose it as a deadlock victim: it was rolled back whole, so running it again
/// is safe.
macro_rules! again_on_deadlock {
    ($body:expr) => {{
        let mut tries = 0;
        loop {
            match $body.await {
                Err(e)
                    if $crate::store::mysql::is_deadlock(&e)
                        && tries < $crate::store::mysql::DEADLOCK_RETRIES =>
                {
                    tries += 1;
                    tracing::debug!("chosen as a deadlock victim; running it again: {e}");
                }
                done => break done,
            }
        }
    }};
}
pub(super) use again_on_deadlock;

/// A claim held in a transaction fails as a whole when its connection is gone (the
/// server closed it after the idle timeout, or it was cut) or InnoDB rolled the
/// transaction back to break a deadlock: nothing was written and the messages are
/// claimable again.
pub(super) fn claim_lost(e: StoreError) -> StoreError {
    e.lost_claim_if(rolled_back)
}

fn rolled_back(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            // Deadlock victim; connection killed (KILL, idle timeout); server shutdown.
            .is_some_and(|e| matches!(e.number(), 1213 | 1927 | 1053)),
        _ => false,
    }
}

/// The database clock, in Unix milliseconds.
pub(super) async fn now(conn: &mut MySqlConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {NOW_MS}")))
            .fetch_one(conn)
            .await?,
    )
}

/// `, ?` for each of `items` after the first `?`: the placeholders of an `IN (...)` list.
pub(super) fn push_list<T>(query: &mut QueryBuilder<MySql>, items: impl IntoIterator<Item = T>)
where
    T: for<'t> sqlx::Encode<'t, MySql> + sqlx::Type<MySql>,
{
    let mut list = query.separated(", ");
    for item in items {
        list.push_bind(item);
    }
}

impl SqlStore for MySqlStore {
    type DB = MySql;

    fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, MySql>> {
        Ok(self.pool.begin().await?)
    }
}

#[async_trait::async_trait]
impl Inbox for MySqlStore {
    async fn enqueue(&self, messages: &[NewMessage]) -> Result<u64> {
        again_on_deadlock!(async {
            let mut tx = self.pool.begin().await?;
            let now = now(&mut tx).await?;
            let inserted = insert_new(&mut tx, messages, now).await?;
            tx.commit().await?;
            Ok(inserted)
        })
    }

    async fn claim(
        &self,
        queues: &[String],
        limit: u32,
        mode: ClaimMode,
        order: KeyOrder,
        lease: Duration,
    ) -> Result<Claim> {
        let how = (mode, order);
        again_on_deadlock!(claim::claim(
            &self.pool, queues, limit, how, self.holds, lease
        ))
    }

    async fn begin_settle(&self, hold: Hold) -> Result<Box<dyn SettleTransaction + '_>> {
        let (mut tx, settling) = match hold {
            Hold::Transaction(held) => {
                let HeldClaim {
                    tx,
                    created_at,
                    retried,
                } = held.into_inner();
                (tx, Settling::Held(created_at, retried))
            }
            Hold::Lease => (self.pool.begin().await?, Settling::Leased(None)),
        };
        let now = match now(&mut tx).await {
            Ok(now) => now,
            Err(e) if matches!(settling, Settling::Held(..)) => return Err(claim_lost(e)),
            Err(e) => return Err(e),
        };
        Ok(Box::new(Settle { tx, now, settling }))
    }

    async fn mark_seen(&self, ids: &[Uuid], token: Uuid) -> Result<()> {
        // `locked_until` is set first, while `lock_token` is the old.
        let mut seen = QueryBuilder::<MySql>::new(
            "UPDATE inbox SET seen = TRUE, locked_until = IF(lock_token = ",
        );
        seen.push_bind(token)
            .push(", NULL, locked_until), lock_token = IF(lock_token = ")
            .push_bind(token)
            .push(", NULL, lock_token) WHERE id IN (");
        push_list(&mut seen, ids.iter().copied());
        seen.push(")");
        seen.build().execute(&self.pool).await?;
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
        let _ = queues;
        tokio::time::sleep(at_most.min(POLL_EVERY)).await;
        Ok(())
    }
}
