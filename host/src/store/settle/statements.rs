//! The rows of a [`SettlePlan`] MariaDB/MySQL and SQLite write alike, one multi-row
//! statement per table (PostgreSQL binds each column as an array: `postgres/writes.rs`).

use sqlx::QueryBuilder;

use super::{DeadRow, SettlePlan};
use crate::reply::Answering;
use crate::store::sql::{Change, Sql, Statement, per_statement};
use crate::store::{Result, headers_json};

/// Write the messages the plan publishes to AMQP exchanges and Kafka topics (and its
/// answers to AMQP queues) into the outbox, at `now`.
pub(in crate::store) async fn outbox<DB: Sql>(
    conn: &mut DB::Connection,
    plan: &SettlePlan<'_>,
    now: i64,
) -> Result<()> {
    for rows in per_statement(&plan.outbox, 11) {
        let mut outbox = QueryBuilder::<DB>::new(DB::INSERT_NEW);
        outbox.push(
            " outbox (id, source_message_id, plugin, transport, exchange, routing_key, ordering_key, kind, headers, payload, created_at) ",
        );
        outbox.rows(rows, |row, o| {
            let (transport, exchange, routing_key, key) = o.route().columns();
            row.id(o.publish.id).push(", ").id(o.source).push(", ");
            row.value(o.plugin).push(", ").value(transport).push(", ");
            row.value(exchange).push(", ").value(routing_key).push(", ");
            row.value(key.map(str::to_owned)).push(", ");
            row.value(o.publish.kind.as_str()).push(", ");
            row.json(headers_json(&o.publish.headers)).push(", ");
            row.value(o.publish.payload.as_slice());
            row.push(", ").value(now);
        });
        // A second answer to one request has the first one's id: it is dropped.
        outbox.push(DB::SKIP_EXISTING);
        DB::execute(conn, &mut outbox).await?;
    }
    Ok(())
}

/// Write the plan's answers to requests whose callers wait on a host; a request answered
/// before keeps its first answer.
pub(in crate::store) async fn replies<DB: Sql>(
    conn: &mut DB::Connection,
    plan: &SettlePlan<'_>,
) -> Result<()> {
    let empty = std::collections::BTreeMap::new();
    for rows in per_statement(&plan.replies, 6) {
        let mut replies = QueryBuilder::<DB>::new(DB::INSERT_NEW);
        replies.push(" replies (request_id, status, error, headers, payload, created_at) ");
        replies.rows(rows, |row, r| {
            let (error, headers, payload) = match &r.answer {
                Answering::Given(reply) => (None, &reply.headers, reply.payload.as_slice()),
                Answering::Rejected(error) => (Some(&**error), &empty, &[][..]),
                Answering::Handled => (None, &empty, &[][..]),
            };
            row.id(r.request).push(", ").value(r.answer.status());
            row.push(", ").value(error.map(str::to_owned));
            row.push(", ").json(headers_json(headers));
            row.push(", ").value(payload).push(", ").now();
        });
        replies.push(DB::SKIP_EXISTING);
        DB::execute(conn, &mut replies).await?;
    }
    Ok(())
}

/// Add what each plugin's state gains or loses to its usage (a row per plugin: one
/// statement binds them all).
pub(in crate::store) async fn usage<DB: Sql>(
    conn: &mut DB::Connection,
    plan: &SettlePlan<'_>,
) -> Result<()> {
    if plan.usage.is_empty() {
        return Ok(());
    }
    let mut usage = QueryBuilder::<DB>::new(format!(
        "INSERT INTO plugin_state_usage (plugin, {}, bytes) ",
        DB::KEYS
    ));
    usage.rows(&plan.usage, |row, (plugin, change)| {
        row.value(*plugin).push(", ").value(change.keys).push(", ");
        row.value(change.bytes);
    });
    let changes = [(DB::KEYS, Change::Add), ("bytes", Change::Add)];
    DB::push_upsert(&mut usage, "plugin_state_usage", &["plugin"], &changes);
    DB::execute(conn, &mut usage).await?;
    Ok(())
}

/// Write the plan's attempt errors and failed messages, at `now`: a message a plugin
/// failed before adds its attempts to its failed-message row.
pub(in crate::store) async fn failures<DB: Sql>(
    conn: &mut DB::Connection,
    plan: &SettlePlan<'_>,
    now: i64,
) -> Result<()> {
    for rows in per_statement(&plan.attempt_errors, 8) {
        let mut attempts = QueryBuilder::<DB>::new(
            "INSERT INTO attempt_errors (message_id, plugin, plugin_version, plugin_sha256, attempt, error, delay_ms, at) ",
        );
        attempts.rows(rows, |row, a| {
            row.id(a.message).push(", ").value(a.plugin.name.as_str());
            row.push(", ").value(a.plugin.version.as_str());
            row.push(", ").value(a.plugin.sha256.as_str());
            row.push(", ").value(i64::from(a.attempt));
            row.push(", ").value(&*a.error);
            row.push(", ").value(a.delay.map(|d| d.as_millis() as i64));
            row.push(", ").value(now);
        });
        DB::execute(conn, &mut attempts).await?;
    }
    for rows in per_statement(&plan.dead, 14) {
        dead::<DB>(conn, rows, now).await?;
    }
    Ok(())
}

/// Write failed-message rows.
async fn dead<DB: Sql>(conn: &mut DB::Connection, rows: &[DeadRow<'_>], now: i64) -> Result<()> {
    let mut dead = QueryBuilder::<DB>::new(
        "INSERT INTO failed_messages (message_id, plugin, plugin_version, plugin_sha256, source,
                                      queue, kind, headers, payload, error, attempts, status,
                                      failed_at, source_exchange, source_routing_key,
                                      ordering_key, seq) ",
    );
    dead.rows(rows, |row, d| {
        let m = d.message;
        row.id(m.id).push(", ").value(d.plugin.name.as_str());
        row.push(", ").value(d.plugin.version.as_str());
        row.push(", ").value(d.plugin.sha256.as_str());
        row.push(", ")
            .value(m.source())
            .push(", ")
            .value(m.queue.as_str());
        row.push(", ").value(m.kind.as_str());
        row.push(", ").json(headers_json(&m.headers));
        row.push(", ").value(m.payload.as_slice());
        row.push(", ")
            .value(&*d.error)
            .push(", ")
            .value(i64::from(d.attempts));
        row.push(", 'failed', ").value(now);
        row.push(", ")
            .value(m.amqp_route().map(|(e, _)| e.to_owned()));
        row.push(", ")
            .value(m.amqp_route().map(|(_, k)| k.to_owned()));
        row.push(", ").value(m.key.clone()).push(", ").value(m.seq);
    });
    let changes = [
        ("plugin_version", Change::Take),
        ("plugin_sha256", Change::Take),
        ("error", Change::Take),
        ("attempts", Change::Add),
        ("status", Change::Take),
        ("failed_at", Change::Take),
    ];
    DB::push_upsert(
        &mut dead,
        "failed_messages",
        &["message_id", "plugin"],
        &changes,
    );
    DB::execute(conn, &mut dead).await?;
    Ok(())
}
