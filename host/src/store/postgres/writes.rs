//! The bulk statements that write a [`SettlePlan`]: each kind of row with one statement
//! over arrays (`UNNEST`), so a batch costs a handful of round trips.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::enqueue::insert_new;
use super::keys;
use super::notify;
use crate::store::settle::{SettlePlan, Stay, statements};
use crate::store::{Result, StoreError, headers_json};

/// What is being settled.
pub(super) enum Settling {
    /// Leased inbox rows: fenced on their tokens here, then removed or rescheduled.
    Leased,
    /// Inbox rows this transaction claimed and deleted, with their enqueue times (only
    /// those needing another attempt go back).
    Held(HashMap<Uuid, i64>),
    /// No rows: a transport delivered the messages and re-publishes those to try again.
    Delivered,
}

/// Write `plan` inside the settle transaction.
pub(super) async fn write(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    plan: &SettlePlan<'_>,
    settling: &Settling,
) -> Result<()> {
    write_handled(tx, plan).await?;
    insert_new(tx, channel, &plan.publishes).await?;
    write_outbox(tx, plan).await?;
    statements::replies::<Postgres>(&mut **tx, plan).await?;
    write_deleted_state(tx, plan).await?;
    write_attempt_errors(tx, plan).await?;
    write_dead(tx, plan).await?;
    match settling {
        Settling::Leased => {
            write_stay_leased(tx, &plan.stay).await?;
            if !plan.done.is_empty() {
                sqlx::query("DELETE FROM inbox WHERE id = ANY($1)")
                    .bind(&plan.done)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        // The claim deleted every message; done ones simply stay deleted.
        Settling::Held(created_at) => write_stay_held(tx, &plan.stay, created_at, None).await?,
        Settling::Delivered => return Ok(()),
    }
    keys::write(tx, &plan.keys, &plan.held).await?;
    if !plan.stay.is_empty() {
        // Hosts waiting for work recompute when the next attempt is due.
        notify(tx, channel).await?;
    }
    Ok(())
}

/// Ledger rows, the failed-message rows of an operator's retry marked resolved, the
/// final value of every key written (not deleted) and the change of each plugin's state
/// usage, in one statement: inside the settle it runs with the batch's state keys locked,
/// so every round trip saved there is one other hosts do not wait for. Usage rows are
/// inserted in plugin order, as they were locked (`StateLocks::usage`).
async fn write_handled(tx: &mut Transaction<'_, Postgres>, plan: &SettlePlan<'_>) -> Result<()> {
    if plan.handled.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = plan.handled.iter().map(|(id, _)| *id).collect();
    let column = |f: fn(&crate::store::PluginVersion) -> &str| -> Vec<&str> {
        plan.handled.iter().map(|(_, p)| f(p)).collect()
    };
    let set: Vec<_> = plan
        .state
        .iter()
        .filter(|(_, w)| w.value.is_some())
        .collect();
    sqlx::query(
        "WITH handled AS (
             INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at)
             SELECT id, name, version, sha256, wharf_now_ms()
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS t(id, name, version, sha256)
             RETURNING message_id, plugin
         ), state AS (
             INSERT INTO plugin_state (plugin, key, value, version, updated_at)
             SELECT plugin, key, value, version, wharf_now_ms()
             FROM UNNEST($5::text[], $6::text[], $7::bytea[], $8::bigint[]) AS t(plugin, key, value, version)
             ON CONFLICT (plugin, key) DO UPDATE
             SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at
         ), usage AS (
             INSERT INTO plugin_state_usage (plugin, keys, bytes)
             SELECT plugin, keys, bytes
             FROM UNNEST($9::text[], $10::bigint[], $11::bigint[]) AS t(plugin, keys, bytes)
             ORDER BY plugin
             ON CONFLICT (plugin) DO UPDATE
             SET keys = plugin_state_usage.keys + excluded.keys,
                 bytes = plugin_state_usage.bytes + excluded.bytes
         )
         UPDATE failed_messages f SET status = 'resolved', resolved_at = wharf_now_ms()
         FROM handled r
         WHERE f.message_id = r.message_id AND f.plugin IN (r.plugin, '') AND f.status = 'retrying'",
    )
    .bind(&ids)
    .bind(column(|p| &p.name))
    .bind(column(|p| &p.version))
    .bind(column(|p| &p.sha256))
    .bind(set.iter().map(|((plugin, _), _)| *plugin).collect::<Vec<_>>())
    .bind(set.iter().map(|((_, key), _)| *key).collect::<Vec<_>>())
    .bind(set.iter().map(|(_, w)| w.value).collect::<Vec<_>>())
    .bind(set.iter().map(|(_, w)| w.version).collect::<Vec<_>>())
    .bind(plan.usage.keys().collect::<Vec<_>>())
    .bind(plan.usage.values().map(|u| u.keys).collect::<Vec<_>>())
    .bind(plan.usage.values().map(|u| u.bytes).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await
    .map_err(StoreError::of_ledger_insert)?;
    Ok(())
}

async fn write_outbox(tx: &mut Transaction<'_, Postgres>, plan: &SettlePlan<'_>) -> Result<()> {
    let rows = &plan.outbox;
    if rows.is_empty() {
        return Ok(());
    }
    let routes: Vec<_> = rows.iter().map(|o| o.route().columns()).collect();
    sqlx::query(
        "INSERT INTO outbox (id, source_message_id, plugin, transport, exchange, routing_key, ordering_key,
                             kind, headers, payload, created_at)
         SELECT id, source, plugin, transport, exchange, route, key, kind, headers::jsonb, payload,
                wharf_now_ms()
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::bytea[])
             AS t(id, source, plugin, transport, exchange, route, key, kind, headers, payload)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(rows.iter().map(|o| o.publish.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.source).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.plugin).collect::<Vec<_>>())
    .bind(routes.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(routes.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(routes.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind(routes.iter().map(|r| r.3).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.publish.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| headers_json(&o.publish.headers)).collect::<Vec<_>>())
    .bind(rows.iter().map(|o| o.publish.payload.as_slice()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Delete the keys the batch deleted (`write_handled` upserts the others).
async fn write_deleted_state(
    tx: &mut Transaction<'_, Postgres>,
    plan: &SettlePlan<'_>,
) -> Result<()> {
    let deleted: Vec<_> = plan
        .state
        .iter()
        .filter(|(_, w)| w.value.is_none())
        .collect();
    if !deleted.is_empty() {
        sqlx::query(
            "DELETE FROM plugin_state s USING UNNEST($1::text[], $2::text[]) AS d(plugin, key)
             WHERE s.plugin = d.plugin AND s.key = d.key",
        )
        .bind(
            deleted
                .iter()
                .map(|((plugin, _), _)| *plugin)
                .collect::<Vec<_>>(),
        )
        .bind(deleted.iter().map(|((_, key), _)| *key).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn write_attempt_errors(
    tx: &mut Transaction<'_, Postgres>,
    plan: &SettlePlan<'_>,
) -> Result<()> {
    let rows = &plan.attempt_errors;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO attempt_errors (message_id, plugin, plugin_version, plugin_sha256, attempt,
                                     error, delay_ms, at)
         SELECT id, plugin, version, sha256, attempt, error, delay, wharf_now_ms()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                     $7::bigint[])
             WITH ORDINALITY AS t(id, plugin, version, sha256, attempt, error, delay, n)
         ORDER BY n",
    )
    .bind(rows.iter().map(|a| a.message).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|a| a.plugin.name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|a| a.plugin.version.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|a| a.plugin.sha256.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|a| a.attempt as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| &*a.error).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|a| a.delay.map(|d| d.as_millis() as i64))
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Record dead letters; a message failed again by the same plugin adds to its row.
async fn write_dead(tx: &mut Transaction<'_, Postgres>, plan: &SettlePlan<'_>) -> Result<()> {
    let rows = &plan.dead;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source, queue, kind,
                                      headers, payload, error, attempts, status, failed_at,
                                      source_exchange, source_routing_key, ordering_key, seq)
         SELECT id, plugin, version, sha256, source, queue, kind, headers::jsonb, payload, error, attempts,
                'failed', wharf_now_ms(), exchange, routing_key, key, seq
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::bytea[], $10::text[], $11::int[], $12::text[], $13::text[],
                     $14::text[], $15::bigint[])
             AS t(id, plugin, version, sha256, source, queue, kind, headers, payload, error, attempts,
                  exchange, routing_key, key, seq)
         ON CONFLICT (message_id, plugin) DO UPDATE
         SET plugin_version = excluded.plugin_version, plugin_sha256 = excluded.plugin_sha256,
             error = excluded.error, attempts = failed_messages.attempts + excluded.attempts,
             status = 'failed', failed_at = excluded.failed_at",
    )
    .bind(rows.iter().map(|d| d.message.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.plugin.name.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.plugin.version.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.plugin.sha256.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.source()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.queue.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| headers_json(&d.message.headers)).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.payload.as_slice()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| &*d.error).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.attempts as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.amqp_route().map(|(e, _)| e)).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.amqp_route().map(|(_, k)| k)).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.key.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.message.seq).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Leased messages that stay: count the attempt, set when the next one is due and what
/// they hold of their key, and mark them seen (their next claim looks up which plugins
/// settled them). Those that park are parked after (`keys::write`).
async fn write_stay_leased(tx: &mut Transaction<'_, Postgres>, stay: &[Stay<'_>]) -> Result<()> {
    if stay.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE inbox i SET attempts = i.attempts + a.counts, available_at = wharf_now_ms() + a.delay,
                           seen = true, holds = a.holds, parked = false
         FROM UNNEST($1::uuid[], $2::int[], $3::bigint[], $4::text[])
             AS a(id, counts, delay, holds)
         WHERE i.id = a.id",
    )
    .bind(stay.iter().map(|s| s.message.id).collect::<Vec<_>>())
    .bind(stay.iter().map(|s| i32::from(s.counts)).collect::<Vec<_>>())
    .bind(delays(stay))
    .bind(stay.iter().map(|s| s.holds.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// When each of `stay` is due, in ms from now.
fn delays(stay: &[Stay<'_>]) -> Vec<i64> {
    stay.iter().map(|s| s.delay.as_millis() as i64).collect()
}

/// Messages a held claim deleted that stay: put them back with the attempt counted, their
/// next due time and what they hold of their key (as [`write_stay_leased`]), seen; leased
/// for `lease` ms under `token` when given.
pub(super) async fn write_stay_held(
    tx: &mut Transaction<'_, Postgres>,
    stay: &[Stay<'_>],
    created_at: &HashMap<Uuid, i64>,
    leased: Option<(Uuid, i64)>,
) -> Result<()> {
    if stay.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at,
                            lock_token, locked_until, seen, ordering_key, seq, holds)
         SELECT id, queue, kind, headers::jsonb, payload, attempts, wharf_now_ms() + delay,
                COALESCE(created, wharf_now_ms()), $9,
                -- now() is when the held transaction began; the lease starts now.
                (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $10, true, key, seq,
                holds
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::int[],
                     $7::bigint[], $8::bigint[], $11::text[], $12::bigint[], $13::text[])
             AS t(id, queue, kind, headers, payload, attempts, delay, created, key, seq, holds)",
    )
    .bind(stay.iter().map(|s| s.message.id).collect::<Vec<_>>())
    .bind(
        stay.iter()
            .map(|s| s.message.queue.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        stay.iter()
            .map(|s| s.message.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        stay.iter()
            .map(|s| headers_json(&s.message.headers))
            .collect::<Vec<_>>(),
    )
    .bind(
        stay.iter()
            .map(|s| s.message.payload.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(
        stay.iter()
            .map(|s| s.message.attempts as i32 + i32::from(s.counts))
            .collect::<Vec<_>>(),
    )
    .bind(delays(stay))
    .bind(
        stay.iter()
            .map(|s| created_at.get(&s.message.id).copied())
            .collect::<Vec<_>>(),
    )
    .bind(leased.map(|(token, _)| token))
    .bind(leased.map(|(_, ms)| ms))
    .bind(
        stay.iter()
            .map(|s| s.message.key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(stay.iter().map(|s| s.message.seq).collect::<Vec<_>>())
    .bind(stay.iter().map(|s| s.holds.as_deref()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
