//! Held keys: an ordering key whose later messages wait because an ordered plugin
//! dead-lettered one of its messages (`store::settle::keys`). Operators list them, with
//! the message that holds each and how many wait behind it, and skip one (the key goes on
//! without the message); retrying the failed message releases its key instead, once it is
//! handled (`failed`). An ordered AMQP consumer asks which of its keys are held or wait in
//! the inbox: their next deliveries join them there.

use std::collections::BTreeSet;

use serde::Serialize;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::sql::{Sql, SqlStore, Statement};
use super::{Result, StoreError};

/// A key held for one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldKey {
    /// The inbox queue.
    pub queue: String,
    /// The ordering key.
    pub key: String,
    /// The ordered plugin whose dead letter holds it.
    pub plugin: String,
    /// The dead-lettered message (in the failed messages).
    pub message_id: Uuid,
    /// Its place in the key.
    pub seq: i64,
    /// When the key was held (Unix ms).
    pub held_at: i64,
    /// Messages of the key in the inbox after it.
    pub waiting: i64,
}

/// The held keys' part of a [`super::Store`].
#[async_trait::async_trait]
pub trait HeldKeys: Send + Sync {
    /// The held keys, oldest first, at most `limit`.
    async fn held_keys(&self, limit: u32) -> Result<Vec<HeldKey>>;

    /// How many keys are held, by plugin.
    async fn held_by_plugin(&self) -> Result<Vec<(String, u64)>>;

    /// Let the key `(queue, key)` go on for `plugin` without the message that holds it:
    /// its next waiting message is due now. `false` when it was not held.
    async fn skip_held_key(&self, queue: &str, key: &str, plugin: &str) -> Result<bool>;

    /// Of `keys`, those of inbox queue `queue` that have messages in the inbox or are
    /// held: a message of one of them that arrives another way goes in behind them.
    async fn keys_in_inbox(&self, queue: &str, keys: &[&str]) -> Result<BTreeSet<String>>;
}

#[async_trait::async_trait]
impl<S: SqlStore> HeldKeys for S {
    async fn held_keys(&self, limit: u32) -> Result<Vec<HeldKey>> {
        list::<S::DB>(&mut *self.pool().acquire().await?, limit).await
    }

    async fn held_by_plugin(&self) -> Result<Vec<(String, u64)>> {
        by_plugin::<S::DB>(&mut *self.pool().acquire().await?).await
    }

    async fn skip_held_key(&self, queue: &str, key: &str, plugin: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let skipped = skip::<S::DB>(&mut tx, queue, key, plugin).await?;
        tx.commit().await?;
        Ok(skipped)
    }

    async fn keys_in_inbox(&self, queue: &str, keys: &[&str]) -> Result<BTreeSet<String>> {
        if keys.is_empty() {
            return Ok(BTreeSet::new());
        }
        in_inbox::<S::DB>(&mut *self.pool().acquire().await?, queue, keys).await
    }
}

async fn list<DB: Sql>(conn: &mut DB::Connection, limit: u32) -> Result<Vec<HeldKey>> {
    let k = DB::KEY;
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT h.queue, h.{k} AS k, h.plugin, {} AS message_id, h.seq, h.held_at,
                (SELECT COUNT(*) FROM inbox i
                 WHERE i.queue = h.queue AND i.ordering_key = h.{k} AND i.seq > h.seq) AS waiting
         FROM held_keys h ORDER BY h.held_at, h.queue, h.{k}, h.plugin LIMIT ",
        DB::uuid_text("h.message_id")
    ));
    query.value(i64::from(limit));
    DB::fetch_all(conn, &mut query)
        .await?
        .iter()
        .map(|row| {
            let id: String = DB::column(row, "message_id");
            Ok(HeldKey {
                queue: DB::column(row, "queue"),
                key: DB::column(row, "k"),
                plugin: DB::column(row, "plugin"),
                message_id: Uuid::parse_str(&id)
                    .map_err(|e| StoreError::Corrupt(format!("message id {id:?}: {e}")))?,
                seq: DB::column(row, "seq"),
                held_at: DB::column(row, "held_at"),
                waiting: DB::column(row, "waiting"),
            })
        })
        .collect()
}

async fn in_inbox<DB: Sql>(
    conn: &mut DB::Connection,
    queue: &str,
    keys: &[&str],
) -> Result<BTreeSet<String>> {
    let k = DB::KEY;
    let mut query = QueryBuilder::<DB>::new("SELECT ordering_key AS k FROM inbox WHERE queue = ");
    query.value(queue).push(" AND ordering_key IN (");
    query.list(keys.iter().copied()).push(")");
    query.push(format!(
        " UNION SELECT {k} AS k FROM held_keys WHERE queue = "
    ));
    query.value(queue).push(format!(" AND {k} IN ("));
    query.list(keys.iter().copied()).push(")");
    let rows = DB::fetch_all(conn, &mut query).await?;
    Ok(rows.iter().map(|row| DB::column(row, "k")).collect())
}

async fn by_plugin<DB: Sql>(conn: &mut DB::Connection) -> Result<Vec<(String, u64)>> {
    let mut query = QueryBuilder::<DB>::new(
        "SELECT plugin, COUNT(*) AS n FROM held_keys GROUP BY plugin ORDER BY plugin",
    );
    let rows = DB::fetch_all(conn, &mut query).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let n: i64 = DB::column(row, "n");
            (DB::column(row, "plugin"), n as u64)
        })
        .collect())
}

/// Skip the held key, with its key row locked as a settle locks it (so a settle parking a
/// message of the key sees the turn moved).
async fn skip<DB: Sql>(
    conn: &mut DB::Connection,
    queue: &str,
    key: &str,
    plugin: &str,
) -> Result<bool> {
    let k = DB::KEY;
    let mut lock = QueryBuilder::<DB>::new("SELECT turn FROM ordering_keys WHERE queue = ");
    lock.value(queue).push(format!(" AND {k} = ")).value(key);
    DB::fetch_all(conn, lock.push(DB::LOCK_ROWS)).await?;
    let mut held = QueryBuilder::<DB>::new("SELECT seq FROM held_keys WHERE queue = ");
    held.value(queue).push(format!(" AND {k} = ")).value(key);
    held.push(" AND plugin = ").value(plugin);
    let Some(row) = DB::fetch_all(conn, held.push(DB::LOCK_ROWS)).await?.pop() else {
        return Ok(false);
    };
    let seq: i64 = DB::column(&row, "seq");
    let mut delete = QueryBuilder::<DB>::new("DELETE FROM held_keys WHERE queue = ");
    delete.value(queue).push(format!(" AND {k} = ")).value(key);
    DB::execute(conn, delete.push(" AND plugin = ").value(plugin)).await?;
    let mut turn =
        QueryBuilder::<DB>::new("UPDATE ordering_keys SET turn = turn + 1 WHERE queue = ");
    turn.value(queue).push(format!(" AND {k} = ")).value(key);
    DB::execute(conn, &mut turn).await?;
    let mut next = QueryBuilder::<DB>::new(format!(
        "SELECT {} AS id FROM inbox WHERE queue = ",
        DB::uuid_text("id")
    ));
    next.value(queue).push(" AND ordering_key = ").value(key);
    next.push(" AND seq > ").value(seq);
    next.push(" AND parked ORDER BY seq LIMIT 1")
        .push(DB::LOCK_ROWS);
    if let Some(row) = DB::fetch_all(conn, &mut next).await?.pop() {
        let id: String = DB::column(&row, "id");
        let id = Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("message id {id:?}: {e}")))?;
        let mut wake = QueryBuilder::<DB>::new("UPDATE inbox SET parked = FALSE, available_at = ");
        wake.now().push(" WHERE id = ").id(id);
        DB::execute(conn, &mut wake).await?;
    }
    Ok(true)
}
