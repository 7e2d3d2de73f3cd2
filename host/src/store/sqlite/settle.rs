//! The settle transaction: for each claimed message, check its claim is still current,
//! then per plugin record the ledger row and commit the effects (ok), schedule another
//! attempt (retry), or write the dead letter (failed); finally remove the message or put
//! it back with its next due time.

use std::time::Duration;

use sqlx::{Row, SqliteConnection};

use super::{headers_json, insert_new};
use crate::effects::{Destination, Effects};
use crate::envelope::{Envelope, NewMessage};
use crate::outcome::Verdict;
use crate::store::{Again, PluginResult, PluginVersion, Result, SettleSummary, Settlement};

/// Apply `batch` inside the caller's transaction. `delivered` is `None` for claimed
/// inbox rows, or collects the transport-delivered messages that need another attempt.
pub(super) async fn settle_batch(
    conn: &mut SqliteConnection,
    batch: &[Settlement],
    now: i64,
    mut delivered: Option<&mut Vec<Again>>,
) -> Result<SettleSummary> {
    let mut summary = SettleSummary::default();
    for settlement in batch {
        settle_one(
            conn,
            settlement,
            now,
            &mut summary,
            delivered.as_deref_mut(),
        )
        .await?;
    }
    Ok(summary)
}

async fn settle_one(
    conn: &mut SqliteConnection,
    s: &Settlement,
    now: i64,
    summary: &mut SettleSummary,
    delivered: Option<&mut Vec<Again>>,
) -> Result<()> {
    let message = &s.message;
    let id = message.id.to_string();
    let still_ours = delivered.is_some()
        || sqlx::query(
        "UPDATE inbox SET locked_until = NULL, lock_token = NULL WHERE id = ? AND lock_token = ?",
    )
    .bind(&id)
    .bind(message.lock_token.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !still_ours {
        tracing::warn!(message_id = %message.id, "claim was taken over by another worker; discarding this attempt's results");
        summary.fenced += 1;
        return Ok(());
    }

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
        dead_letter(conn, message, &none, message.attempts + 1, error, now).await?;
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
                if let Some(key) = stale_read(conn, &plugin.name, effects).await? {
                    tracing::debug!(message_id = %message.id, plugin = plugin.name, key, "state changed while the handler ran; running it again");
                    summary.conflicts += 1;
                    schedule(Duration::ZERO, false);
                    continue;
                }
                handled(conn, message, plugin, effects, now).await?;
                summary.handled += 1;
            }
            Verdict::Retry { error, delay } => {
                record_attempt(
                    conn,
                    message,
                    &plugin.name,
                    *attempt,
                    error,
                    Some(*delay),
                    now,
                )
                .await?;
                summary.retried += 1;
                schedule(*delay, true);
            }
            Verdict::Dead { error } => {
                record_attempt(conn, message, &plugin.name, *attempt, error, None, now).await?;
                dead_letter(conn, message, plugin, *attempt, error, now).await?;
                summary.failed += 1;
            }
            Verdict::Deferred { delay } => {
                summary.deferred += 1;
                schedule(*delay, false);
            }
        }
    }

    if let Some(to_publish) = delivered {
        if let Some((delay, counts)) = again {
            to_publish.push(Again {
                id: message.id,
                delay,
                counts,
            });
        }
        return Ok(());
    }
    match again {
        Some((delay, counts)) => {
            sqlx::query("UPDATE inbox SET attempts = attempts + ?, available_at = ? WHERE id = ?")
                .bind(counts as i64)
                .bind(now + delay.as_millis() as i64)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
        }
        None => {
            sqlx::query("DELETE FROM inbox WHERE id = ?")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// The first state key the call read whose version has changed since.
async fn stale_read(
    conn: &mut SqliteConnection,
    plugin: &str,
    effects: &Effects,
) -> Result<Option<String>> {
    for (key, seen) in &effects.reads {
        let current: i64 =
            sqlx::query("SELECT version FROM plugin_state WHERE plugin = ? AND key = ?")
                .bind(plugin)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?
                .map_or(0, |r| r.get("version"));
        if current != *seen {
            return Ok(Some(key.clone()));
        }
    }
    Ok(None)
}

async fn handled(
    conn: &mut SqliteConnection,
    message: &Envelope,
    plugin: &PluginVersion,
    effects: &Effects,
    now: i64,
) -> Result<()> {
    let id = message.id.to_string();
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
    .await?;
    for publish in &effects.publishes {
        match &publish.destination {
            Destination::Queue(queue) => {
                let new = NewMessage {
                    id: publish.id,
                    queue: queue.clone(),
                    kind: publish.kind.clone(),
                    headers: publish.headers.clone(),
                    payload: publish.payload.clone(),
                };
                insert_new(conn, &new, now).await?;
            }
            Destination::Exchange {
                exchange,
                routing_key,
            } => {
                sqlx::query(
                    "INSERT INTO outbox (id, source_message_id, plugin, exchange, routing_key, kind, headers, payload, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(publish.id.to_string())
                .bind(&id)
                .bind(&plugin.name)
                .bind(exchange)
                .bind(routing_key)
                .bind(&publish.kind)
                .bind(headers_json(&publish.headers))
                .bind(&publish.payload)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    for (key, value) in &effects.writes {
        match value {
            Some(value) => sqlx::query(
                "INSERT INTO plugin_state (plugin, key, value, version, updated_at) VALUES (?, ?, ?, 1, ?)
                 ON CONFLICT (plugin, key) DO UPDATE
                 SET value = excluded.value, version = plugin_state.version + 1, updated_at = excluded.updated_at",
            )
            .bind(&plugin.name)
            .bind(key)
            .bind(value)
            .bind(now),
            None => sqlx::query("DELETE FROM plugin_state WHERE plugin = ? AND key = ?")
                .bind(&plugin.name)
                .bind(key),
        }
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "UPDATE failed_messages SET status = 'resolved', resolved_at = ?
         WHERE message_id = ? AND plugin IN (?, '') AND status = 'retrying'",
    )
    .bind(now)
    .bind(&id)
    .bind(&plugin.name)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn record_attempt(
    conn: &mut SqliteConnection,
    message: &Envelope,
    plugin: &str,
    attempt: u32,
    error: &str,
    delay: Option<Duration>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO attempt_errors (message_id, plugin, attempt, error, delay_ms, at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(message.id.to_string())
    .bind(plugin)
    .bind(attempt)
    .bind(error)
    .bind(delay.map(|d| d.as_millis() as i64))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn dead_letter(
    conn: &mut SqliteConnection,
    message: &Envelope,
    plugin: &PluginVersion,
    attempts: u32,
    error: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source, queue, kind,
                                      headers, payload, error, attempts, status, failed_at,
                                      source_exchange, source_routing_key)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'failed', ?, ?, ?)
         ON CONFLICT (message_id, plugin) DO UPDATE
         SET plugin_version = excluded.plugin_version, plugin_sha256 = excluded.plugin_sha256,
             error = excluded.error, attempts = failed_messages.attempts + excluded.attempts,
             status = 'failed', failed_at = excluded.failed_at",
    )
    .bind(message.id.to_string())
    .bind(&plugin.name)
    .bind(&plugin.version)
    .bind(&plugin.sha256)
    .bind(message.source())
    .bind(&message.queue)
    .bind(&message.kind)
    .bind(headers_json(&message.headers))
    .bind(&message.payload)
    .bind(error)
    .bind(attempts)
    .bind(now)
    .bind(message.amqp_route().map(|(e, _)| e))
    .bind(message.amqp_route().map(|(_, k)| k))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
