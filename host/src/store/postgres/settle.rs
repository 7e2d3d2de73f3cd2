//! The settle transaction on PostgreSQL, as bulk statements over the whole batch.
//!
//! 1. Fence: clear the claim of every message whose lock token is still current; the
//!    others were taken over and nothing of theirs is written.
//! 2. Lock the state keys the batch read or wrote (advisory transaction locks, in one
//!    order) and load their committed versions, so two hosts cannot both commit a write
//!    based on the same read.
//! 3. Walk the batch in order, in memory, exactly as the SQLite store does row by row:
//!    a handled result whose reads are stale (changed by another host, or by an earlier
//!    message of this batch) re-runs without counting an attempt; the others become
//!    ledger rows, publishes, state writes, attempt errors, dead letters, and for each
//!    message either its removal or its next due time.
//! 4. Write each kind of row with one statement.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::writes::{DeadRows, write_again_held, write_again_leased, write_dead, write_state};
use super::{insert_new, notify};
use crate::effects::{Destination, Effects};
use crate::envelope::{Envelope, NewMessage};
use crate::outcome::Verdict;
use crate::store::{Again, PluginResult, PluginVersion, Result, SettleSummary, Settlement};

/// Where the settled messages are.
#[derive(Clone, Copy)]
pub(super) enum Rows<'a> {
    /// Leased inbox rows: fenced on their tokens here.
    Leased,
    /// Inbox rows this transaction claimed and deleted, with their enqueue times (only
    /// those needing another attempt go back).
    Held(&'a HashMap<Uuid, i64>),
    /// No rows: a transport delivered the messages and re-publishes those to try again.
    Delivered,
}

/// Apply `batch` inside the caller's transaction. Returns what it did and the messages
/// that need another attempt.
pub(super) async fn settle_batch(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    batch: &[Settlement],
    rows: Rows<'_>,
) -> Result<(SettleSummary, Vec<Again>)> {
    let mut summary = SettleSummary::default();
    if batch.is_empty() {
        return Ok((summary, Vec::new()));
    }
    let batch: Vec<&Settlement> = match rows {
        Rows::Held(_) | Rows::Delivered => batch.iter().collect(),
        Rows::Leased => {
            let ours = fence(tx, batch).await?;
            batch
                .iter()
                .filter(|s| {
                    let ours = ours.contains(&s.message.id);
                    if !ours {
                        tracing::warn!(message_id = %s.message.id, "claim was taken over by another worker; discarding this attempt's results");
                        summary.fenced += 1;
                    }
                    ours
                })
                .collect()
        }
    };
    let mut versions = lock_state(tx, &batch).await?;
    let mut plan = Plan::default();
    for s in &batch {
        plan.add(s, &mut versions, &mut summary);
    }
    let again = plan
        .again
        .iter()
        .map(|(m, counts, delay)| Again {
            id: m.id,
            delay: Duration::from_millis(*delay as u64),
            counts: *counts != 0,
        })
        .collect();
    plan.write(tx, channel, &versions, rows).await?;
    Ok((summary, again))
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

/// A state key of one plugin.
pub(super) type Key = (String, String);

/// Take an advisory lock on every state key the batch's handled results read or wrote,
/// then load their committed versions (absent = 0).
async fn lock_state(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[&Settlement],
) -> Result<BTreeMap<Key, i64>> {
    let mut keys: BTreeMap<Key, i64> = BTreeMap::new();
    for s in batch {
        for r in &s.results {
            if let Verdict::Handled(effects) = &r.verdict {
                for key in effects.reads.keys().chain(effects.writes.keys()) {
                    keys.insert((r.plugin.name.clone(), key.clone()), 0);
                }
            }
        }
    }
    if keys.is_empty() {
        return Ok(keys);
    }
    let mut hashes: Vec<i64> = keys.keys().map(|(p, k)| lock_id(p, k)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock(h) FROM UNNEST($1::bigint[]) AS h ORDER BY h")
        .bind(&hashes)
        .execute(&mut **tx)
        .await?;
    let (plugins, names): (Vec<&str>, Vec<&str>) =
        keys.keys().map(|(p, k)| (p.as_str(), k.as_str())).unzip();
    let rows = sqlx::query(
        "SELECT s.plugin, s.key, s.version FROM plugin_state s
         JOIN UNNEST($1::text[], $2::text[]) AS k(plugin, key) USING (plugin, key)",
    )
    .bind(&plugins)
    .bind(&names)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        keys.insert((row.get(0), row.get(1)), row.get(2));
    }
    Ok(keys)
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

/// Rows to write, gathered from the whole batch; each table's rows as one array per
/// column, ready for `UNNEST`.
#[derive(Default)]
struct Plan<'a> {
    ledger: Vec<(Uuid, PluginVersion)>,
    publishes: Vec<NewMessage>,
    outbox: OutboxRows,
    /// Final value of each written key (`None` deletes).
    state: BTreeMap<Key, Option<Vec<u8>>>,
    /// Failed rows of (message, plugin) brought back by `failed retry` and now handled.
    resolved: Vec<(Uuid, String)>,
    attempt_errors: AttemptRows,
    dead: DeadRows,
    /// Messages that stay for another attempt: (message, whether the attempt counts,
    /// delay in ms).
    again: Vec<(&'a Envelope, i32, i64)>,
    done: Vec<Uuid>,
}

#[derive(Default)]
struct OutboxRows {
    id: Vec<Uuid>,
    source: Vec<Uuid>,
    plugin: Vec<String>,
    exchange: Vec<String>,
    routing_key: Vec<String>,
    kind: Vec<String>,
    headers: Vec<String>,
    payload: Vec<Vec<u8>>,
}

#[derive(Default)]
struct AttemptRows {
    message: Vec<Uuid>,
    plugin: Vec<String>,
    attempt: Vec<i32>,
    error: Vec<String>,
    /// Wait before the next attempt; `None` for the final one.
    delay_ms: Vec<Option<i64>>,
}

impl AttemptRows {
    fn push(
        &mut self,
        message: Uuid,
        plugin: &str,
        attempt: u32,
        error: &str,
        delay: Option<Duration>,
    ) {
        self.message.push(message);
        self.plugin.push(plugin.to_owned());
        self.attempt.push(attempt as i32);
        self.error.push(error.to_owned());
        self.delay_ms.push(delay.map(|d| d.as_millis() as i64));
    }
}

impl<'a> Plan<'a> {
    fn add(
        &mut self,
        s: &'a Settlement,
        versions: &mut BTreeMap<Key, i64>,
        summary: &mut SettleSummary,
    ) {
        let message = &s.message;
        // The next attempt: the longest delay any plugin asked for, and whether it counts.
        let mut again: Option<(Duration, bool)> = None;
        let mut schedule = |delay: Duration, counts: bool| {
            let (d, c) = again.get_or_insert((delay, counts));
            *d = (*d).max(delay);
            *c |= counts;
        };
        if let Some(error) = &s.refused {
            let none = PluginVersion {
                name: String::new(),
                version: String::new(),
                sha256: String::new(),
            };
            self.dead
                .push(message, &none, message.attempts + 1, error.clone());
            summary.failed += 1;
        }
        for result in &s.results {
            let PluginResult {
                plugin,
                attempt,
                verdict,
            } = result;
            match verdict {
                Verdict::Handled(effects) => {
                    let name = &plugin.name;
                    let stale = effects
                        .reads
                        .iter()
                        .find(|(key, seen)| versions[&(name.clone(), (*key).clone())] != **seen);
                    if let Some((key, _)) = stale {
                        tracing::debug!(message_id = %message.id, plugin = name, key, "state changed while the handler ran; running it again");
                        summary.conflicts += 1;
                        schedule(Duration::ZERO, false);
                        continue;
                    }
                    self.handled(message, plugin, effects, versions);
                    summary.handled += 1;
                }
                Verdict::Retry { error, delay } => {
                    self.attempt_errors.push(
                        message.id,
                        &plugin.name,
                        *attempt,
                        error,
                        Some(*delay),
                    );
                    summary.retried += 1;
                    schedule(*delay, true);
                }
                Verdict::Dead { error } => {
                    self.attempt_errors
                        .push(message.id, &plugin.name, *attempt, error, None);
                    self.dead.push(message, plugin, *attempt, error.clone());
                    summary.failed += 1;
                }
                Verdict::Deferred { delay } => {
                    summary.deferred += 1;
                    schedule(*delay, false);
                }
            }
        }
        match again {
            Some((delay, counts)) => {
                self.again
                    .push((message, counts as i32, delay.as_millis() as i64))
            }
            None => self.done.push(message.id),
        }
    }

    fn handled(
        &mut self,
        message: &Envelope,
        plugin: &PluginVersion,
        effects: &Effects,
        versions: &mut BTreeMap<Key, i64>,
    ) {
        self.ledger.push((message.id, plugin.clone()));
        for publish in &effects.publishes {
            match &publish.destination {
                Destination::Queue(queue) => self.publishes.push(NewMessage {
                    id: publish.id,
                    queue: queue.clone(),
                    kind: publish.kind.clone(),
                    headers: publish.headers.clone(),
                    payload: publish.payload.clone(),
                }),
                Destination::Exchange {
                    exchange,
                    routing_key,
                } => {
                    let o = &mut self.outbox;
                    o.id.push(publish.id);
                    o.source.push(message.id);
                    o.plugin.push(plugin.name.clone());
                    o.exchange.push(exchange.clone());
                    o.routing_key.push(routing_key.clone());
                    o.kind.push(publish.kind.clone());
                    o.headers.push(
                        serde_json::to_string(&publish.headers).expect("a string map serialises"),
                    );
                    o.payload.push(publish.payload.clone());
                }
            }
        }
        for (key, value) in &effects.writes {
            let key = (plugin.name.clone(), key.clone());
            let version = versions.entry(key.clone()).or_insert(0);
            // A delete leaves the key absent (version 0), like the SQLite store.
            *version = if value.is_some() { *version + 1 } else { 0 };
            self.state.insert(key, value.clone());
        }
        self.resolved.push((message.id, plugin.name.clone()));
    }

    async fn write(
        self,
        tx: &mut Transaction<'_, Postgres>,
        channel: &str,
        versions: &BTreeMap<Key, i64>,
        rows: Rows<'_>,
    ) -> Result<()> {
        if !self.ledger.is_empty() {
            let (ids, plugins): (Vec<Uuid>, Vec<&PluginVersion>) =
                self.ledger.iter().map(|(id, p)| (*id, p)).unzip();
            sqlx::query(
                "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at)
                 SELECT id, name, version, sha256, wharf_now_ms()
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS t(id, name, version, sha256)",
            )
            .bind(&ids)
            .bind(plugins.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
            .bind(plugins.iter().map(|p| p.version.as_str()).collect::<Vec<_>>())
            .bind(plugins.iter().map(|p| p.sha256.as_str()).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
            let (ids, plugins): (Vec<Uuid>, Vec<&str>) = self
                .resolved
                .iter()
                .map(|(id, p)| (*id, p.as_str()))
                .unzip();
            sqlx::query(
                "UPDATE failed_messages f SET status = 'resolved', resolved_at = wharf_now_ms()
                 FROM UNNEST($1::uuid[], $2::text[]) AS r(id, plugin)
                 WHERE f.message_id = r.id AND f.plugin IN (r.plugin, '') AND f.status = 'retrying'",
            )
            .bind(&ids)
            .bind(&plugins)
            .execute(&mut **tx)
            .await?;
        }
        insert_new(tx, channel, &self.publishes).await?;
        if !self.outbox.id.is_empty() {
            let o = self.outbox;
            sqlx::query(
                "INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key, kind, headers, payload, created_at)
                 SELECT id, source, plugin, exchange, key, kind, headers::jsonb, payload, wharf_now_ms()
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[])
                     AS t(id, source, plugin, exchange, key, kind, headers, payload)",
            )
            .bind(o.id)
            .bind(o.source)
            .bind(o.plugin)
            .bind(o.exchange)
            .bind(o.routing_key)
            .bind(o.kind)
            .bind(o.headers)
            .bind(o.payload)
            .execute(&mut **tx)
            .await?;
        }
        write_state(tx, self.state, versions).await?;
        if !self.attempt_errors.message.is_empty() {
            let a = self.attempt_errors;
            sqlx::query(
                "INSERT INTO attempt_errors (message_id, plugin, attempt, error, delay_ms, at)
                 SELECT id, plugin, attempt, error, delay, wharf_now_ms()
                 FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::text[], $5::bigint[])
                     WITH ORDINALITY AS t(id, plugin, attempt, error, delay, n)
                 ORDER BY n",
            )
            .bind(a.message)
            .bind(a.plugin)
            .bind(a.attempt)
            .bind(a.error)
            .bind(a.delay_ms)
            .execute(&mut **tx)
            .await?;
        }
        write_dead(tx, self.dead).await?;
        match rows {
            Rows::Leased => {
                write_again_leased(tx, &self.again).await?;
                if !self.done.is_empty() {
                    sqlx::query("DELETE FROM inbox WHERE id = ANY($1)")
                        .bind(&self.done)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            // The claim deleted every message; done ones simply stay deleted.
            Rows::Held(created_at) => write_again_held(tx, &self.again, created_at, None).await?,
            Rows::Delivered => return Ok(()),
        }
        if !self.again.is_empty() {
            // Hosts waiting for work recompute when the next attempt is due.
            notify(tx, channel).await?;
        }
        Ok(())
    }
}
