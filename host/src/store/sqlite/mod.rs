//! The embedded store on SQLite: one file, WAL mode, no server. Claims are always leases
//! (`locked_until` + `lock_token`), whatever [`ClaimMode`] asks: SQLite has one writer, so
//! a transaction held while handlers run would stall every publish. The handler runs
//! outside any transaction, and a settle whose token is no longer current is refused
//! (fencing). A crashed host's claims come back when their lease expires.

mod delivered;
mod failed;
mod keys;
mod outbox;
mod queues;
mod registry;
mod settle;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::Inbox;
use super::sql::{SqlStore, turns};
use super::{
    Claim, ClaimMode, Hold, KeyOrder, Result, SettleTransaction, StoreError, headers_json, now_ms,
    parse_headers,
};
use crate::envelope::{Envelope, NewMessage};
use delivered::settled_of;
use settle::{Settle, Settling};

/// SQLite-backed [`crate::store::Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `url` (`sqlite://path`) and migrate it.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        super::migrate(&sqlx::migrate!("../migrations/sqlite"), &pool).await?;
        Ok(Self { pool })
    }

    /// The connection pool, for tests and tools that inspect the tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

pub(super) fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("id {s:?}: {e}")))
}

/// Insert `message` unless its id was received before, numbered after its key's last
/// message (`ordering_keys`) when it has a key; true when inserted.
pub(super) async fn insert_new(
    conn: &mut sqlx::SqliteConnection,
    message: &NewMessage,
    now: i64,
) -> Result<bool> {
    let id = message.id.to_string();
    let fresh = sqlx::query(
        "INSERT INTO received (id, queue, received_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(&id)
    .bind(&message.queue)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(false);
    }
    let seq: Option<i64> = match &message.key {
        Some(key) => Some(
            sqlx::query_scalar(
                "INSERT INTO ordering_keys (queue, key, last_seq, updated_at) VALUES (?, ?, 1, ?)
                 ON CONFLICT (queue, key) DO UPDATE
                     SET last_seq = last_seq + 1, updated_at = excluded.updated_at
                 RETURNING last_seq",
            )
            .bind(&message.queue)
            .bind(key)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?,
        ),
        None => None,
    };
    sqlx::query(
        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at, ordering_key, seq)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&message.queue)
    .bind(&message.kind)
    .bind(headers_json(&message.headers))
    .bind(&message.payload)
    .bind(i64::from(message.attempts))
    .bind(now.saturating_add(message.delay_ms()))
    .bind(now)
    .bind(&message.key)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

impl SqlStore for SqliteStore {
    type DB = sqlx::Sqlite;

    fn pool(&self) -> &sqlx::SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait::async_trait]
impl Inbox for SqliteStore {
    async fn enqueue(&self, messages: &[NewMessage]) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut inserted = 0;
        for message in messages {
            inserted += insert_new(&mut tx, message, now).await? as u64;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn claim(
        &self,
        queues: &[String],
        limit: u32,
        _mode: ClaimMode,
        order: KeyOrder,
        lease: Duration,
    ) -> Result<Claim> {
        let now = now_ms();
        let token = Uuid::now_v7();
        let queues = serde_json::to_string(queues).expect("strings serialise");
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT id, queue, ordering_key, seq FROM inbox
                 WHERE available_at <= ?3 AND (locked_until IS NULL OR locked_until <= ?3)
                   AND (?4 = '[]' OR queue IN (SELECT value FROM json_each(?4)))
                 ORDER BY available_at LIMIT ?5)
             UPDATE inbox SET locked_until = ?1, lock_token = ?2
             WHERE id IN (
                 SELECT id FROM due i
                 -- With keys kept in order: not while an earlier message of the key that is
                 -- not claimed with it has not run yet or runs for the first time.
                 WHERE NOT ?6 OR i.ordering_key IS NULL OR NOT EXISTS (
                     SELECT 1 FROM inbox p
                     WHERE p.queue = i.queue AND p.ordering_key = i.ordering_key
                       AND p.seq < i.seq AND p.holds IS NULL
                       AND p.id NOT IN (SELECT id FROM due)))
             RETURNING id, queue, kind, headers, payload, attempts, available_at, seen,
                       ordering_key, seq",
        )
        .bind(now + lease.as_millis() as i64)
        .bind(token.to_string())
        .bind(now)
        .bind(&queues)
        .bind(limit)
        .bind(order == KeyOrder::Keep)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        // Only a message put back can have settled plugins: the others are not looked up.
        let mut seen = Vec::new();
        for row in &rows {
            claimed.push(Envelope {
                id: parse_uuid(row.get("id"))?,
                queue: row.get("queue"),
                kind: row.get("kind"),
                headers: parse_headers(row.get("headers"))?,
                payload: row.get("payload"),
                attempts: row.get::<i64, _>("attempts") as u32,
                lock_token: token,
                settled_plugins: BTreeSet::new(),
                origin: Default::default(),
                due_at: Some(row.get("available_at")),
                key: row.get("ordering_key"),
                seq: row.get("seq"),
                turn: None,
            });
            if row.get::<bool, _>("seen") {
                seen.push(claimed[claimed.len() - 1].id);
            }
        }
        if order == KeyOrder::Keep {
            // The claim left what waits: nothing is blocked here.
            turns::<sqlx::Sqlite>(&mut tx, &mut claimed).await?;
        }
        if !seen.is_empty() {
            let mut by_id = settled_of(&mut tx, &seen).await?;
            for message in &mut claimed {
                if let Some(plugins) = by_id.remove(&message.id) {
                    message.settled_plugins = plugins;
                }
            }
        }
        tx.commit().await?;
        Ok(Claim {
            messages: claimed,
            hold: Hold::Lease,
        })
    }

    async fn begin_settle(&self, _hold: Hold) -> Result<Box<dyn SettleTransaction + '_>> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(Settle {
            tx,
            now: now_ms(),
            settling: Settling::Claimed,
        }))
    }

    async fn mark_seen(&self, ids: &[Uuid], token: Uuid) -> Result<()> {
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        sqlx::query(
            "UPDATE inbox SET seen = 1,
                 locked_until = CASE WHEN lock_token = ?2 THEN NULL ELSE locked_until END,
                 lock_token = CASE WHEN lock_token = ?2 THEN NULL ELSE lock_token END
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&ids).expect("strings serialise"))
        .bind(token.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn renew(
        &self,
        _hold: &mut Hold,
        claims: &[(Uuid, Uuid)],
        lease: Duration,
    ) -> Result<u64> {
        let until = now_ms() + lease.as_millis() as i64;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut held = 0;
        for (id, token) in claims {
            held +=
                sqlx::query("UPDATE inbox SET locked_until = ? WHERE id = ? AND lock_token = ?")
                    .bind(until)
                    .bind(id.to_string())
                    .bind(token.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
        }
        tx.commit().await?;
        Ok(held)
    }
}
