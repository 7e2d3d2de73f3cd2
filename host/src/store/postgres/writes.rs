//! The bulk statements that write a settled batch's rows other than the ledger and the
//! outbox: messages that stay for another attempt, plugin state, dead letters.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::settle::Key;
use crate::envelope::Envelope;
use crate::store::{PluginVersion, Result};

/// Dead letters to record, one array per column.
#[derive(Default)]
pub(super) struct DeadRows {
    message: Vec<Uuid>,
    plugin: Vec<String>,
    version: Vec<String>,
    sha256: Vec<String>,
    source: Vec<String>,
    exchange: Vec<Option<String>>,
    routing_key: Vec<Option<String>>,
    queue: Vec<String>,
    kind: Vec<String>,
    headers: Vec<String>,
    payload: Vec<Vec<u8>>,
    error: Vec<String>,
    attempts: Vec<i32>,
}

impl DeadRows {
    pub(super) fn push(
        &mut self,
        m: &Envelope,
        plugin: &PluginVersion,
        attempts: u32,
        error: String,
    ) {
        self.message.push(m.id);
        self.plugin.push(plugin.name.clone());
        self.version.push(plugin.version.clone());
        self.sha256.push(plugin.sha256.clone());
        self.source.push(m.source());
        let route = m.amqp_route();
        self.exchange.push(route.map(|(e, _)| e.to_owned()));
        self.routing_key.push(route.map(|(_, k)| k.to_owned()));
        self.queue.push(m.queue.clone());
        self.kind.push(m.kind.clone());
        self.headers
            .push(serde_json::to_string(&m.headers).expect("a string map serialises"));
        self.payload.push(m.payload.clone());
        self.error.push(error);
        self.attempts.push(attempts as i32);
    }
}

/// Leased messages that stay: count the attempt and set when the next one is due.
pub(super) async fn write_again_leased(
    tx: &mut Transaction<'_, Postgres>,
    again: &[(&Envelope, i32, i64)],
) -> Result<()> {
    if again.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = again.iter().map(|(m, _, _)| m.id).collect();
    let counts: Vec<i32> = again.iter().map(|a| a.1).collect();
    let delays: Vec<i64> = again.iter().map(|a| a.2).collect();
    sqlx::query(
        "UPDATE inbox i SET attempts = i.attempts + a.counts, available_at = wharf_now_ms() + a.delay
         FROM UNNEST($1::uuid[], $2::int[], $3::bigint[]) AS a(id, counts, delay)
         WHERE i.id = a.id",
    )
    .bind(ids)
    .bind(counts)
    .bind(delays)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Messages a held claim deleted that stay: put them back with the attempt counted and
/// their next due time; leased for `lease` ms under `token` when given.
pub(super) async fn write_again_held(
    tx: &mut Transaction<'_, Postgres>,
    again: &[(&Envelope, i32, i64)],
    created_at: &HashMap<Uuid, i64>,
    leased: Option<(Uuid, i64)>,
) -> Result<()> {
    if again.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&Envelope) -> String| -> Vec<String> {
        again.iter().map(|(m, _, _)| f(m)).collect()
    };
    let ids: Vec<Uuid> = again.iter().map(|(m, _, _)| m.id).collect();
    let payloads: Vec<&[u8]> = again.iter().map(|(m, _, _)| m.payload.as_slice()).collect();
    let attempts: Vec<i32> = again
        .iter()
        .map(|(m, c, _)| m.attempts as i32 + c)
        .collect();
    let delays: Vec<i64> = again.iter().map(|a| a.2).collect();
    let created: Vec<Option<i64>> = ids.iter().map(|id| created_at.get(id).copied()).collect();
    sqlx::query(
        "INSERT INTO inbox (id, queue, kind, headers, payload, attempts, available_at, created_at,
                            lock_token, locked_until)
         SELECT id, queue, kind, headers::jsonb, payload, attempts, wharf_now_ms() + delay,
                COALESCE(created, wharf_now_ms()), $9,
                -- now() is when the held transaction began; the lease starts now.
                (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $10
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::int[],
                     $7::bigint[], $8::bigint[])
             AS t(id, queue, kind, headers, payload, attempts, delay, created)",
    )
    .bind(&ids)
    .bind(column(&|m| m.queue.clone()))
    .bind(column(&|m| m.kind.clone()))
    .bind(column(&|m| {
        serde_json::to_string(&m.headers).expect("a string map serialises")
    }))
    .bind(payloads)
    .bind(attempts)
    .bind(delays)
    .bind(created)
    .bind(leased.map(|(token, _)| token))
    .bind(leased.map(|(_, ms)| ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Upsert the final value of every written key with its new version; delete the others.
pub(super) async fn write_state(
    tx: &mut Transaction<'_, Postgres>,
    state: BTreeMap<Key, Option<Vec<u8>>>,
    versions: &BTreeMap<Key, i64>,
) -> Result<()> {
    let mut set: (Vec<String>, Vec<String>, Vec<Vec<u8>>, Vec<i64>) = Default::default();
    let mut deleted: (Vec<String>, Vec<String>) = Default::default();
    for (key, value) in state {
        let version = versions[&key];
        match value {
            Some(value) => {
                set.0.push(key.0);
                set.1.push(key.1);
                set.2.push(value);
                set.3.push(version);
            }
            None => {
                deleted.0.push(key.0);
                deleted.1.push(key.1);
            }
        }
    }
    if !set.0.is_empty() {
        sqlx::query(
            "INSERT INTO plugin_state (plugin, key, value, version, updated_at)
             SELECT plugin, key, value, version, wharf_now_ms()
             FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::bigint[]) AS t(plugin, key, value, version)
             ON CONFLICT (plugin, key) DO UPDATE
             SET value = excluded.value, version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(set.0)
        .bind(set.1)
        .bind(set.2)
        .bind(set.3)
        .execute(&mut **tx)
        .await?;
    }
    if !deleted.0.is_empty() {
        sqlx::query(
            "DELETE FROM plugin_state s USING UNNEST($1::text[], $2::text[]) AS d(plugin, key)
             WHERE s.plugin = d.plugin AND s.key = d.key",
        )
        .bind(deleted.0)
        .bind(deleted.1)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Record dead letters; a message failed again by the same plugin adds to its row.
pub(super) async fn write_dead(tx: &mut Transaction<'_, Postgres>, d: DeadRows) -> Result<()> {
    if d.message.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source, queue, kind,
                                      headers, payload, error, attempts, status, failed_at,
                                      source_exchange, source_routing_key)
         SELECT id, plugin, version, sha256, source, queue, kind, headers::jsonb, payload, error, attempts,
                'failed', wharf_now_ms(), exchange, routing_key
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::bytea[], $10::text[], $11::int[], $12::text[], $13::text[])
             AS t(id, plugin, version, sha256, source, queue, kind, headers, payload, error, attempts,
                  exchange, routing_key)
         ON CONFLICT (message_id, plugin) DO UPDATE
         SET plugin_version = excluded.plugin_version, plugin_sha256 = excluded.plugin_sha256,
             error = excluded.error, attempts = failed_messages.attempts + excluded.attempts,
             status = 'failed', failed_at = excluded.failed_at",
    )
    .bind(d.message)
    .bind(d.plugin)
    .bind(d.version)
    .bind(d.sha256)
    .bind(d.source)
    .bind(d.queue)
    .bind(d.kind)
    .bind(d.headers)
    .bind(d.payload)
    .bind(d.error)
    .bind(d.attempts)
    .bind(d.exchange)
    .bind(d.routing_key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
