//! A handler written in Python (`plugins/python/audit-log`, built with componentize-py
//! against the same WIT) run by the host on SQLite and PostgreSQL, with the guarantees a
//! Rust handler gets: each entity's records handled in publish order (its manifest asks
//! for order; it sees each record's key and publishes with it), state and publishes
//! committed once, a request answered through the SDK's reply, rejected to the failed
//! messages, an uncaught exception a trap (a
//! failed attempt) named by its type and message, and a redelivered message not run
//! twice; an exit is named with its status and a retry hint of 1e30 s waits the
//! policy's longest delay; and a host whose memory limit is below the interpreter's says
//! what to raise.

use serde_json::json;
use sqlx::Row;
use wharf_host::effects::Destination;
use wharf_host::envelope::NewMessage;
use wharf_host::requester;
use wharf_host::store::Answer;
use wharf_tests::broker::Broker;
use wharf_tests::{Backend, Host, python};

macro_rules! on_sqlite_and_postgres {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(wharf_tests::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(wharf_tests::Backend::Postgres).await
            })*
        }
    };
}

on_sqlite_and_postgres!(
    records_are_numbered_in_publish_order_and_rejected,
    an_uncaught_exception_is_a_failed_attempt,
    a_redelivered_record_is_not_run_twice,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_below_the_interpreter_s_names_the_setting_to_raise() {
    let (wasm, _) = python::component("audit-log");
    let dir = tempfile::tempdir().unwrap();
    let mut config = wharf_tests::test_config(dir.path());
    config.runtime.memory_limit_mib = 8;
    config.plugins.cache_dir = python::cache_dir();
    let Err(refused) = config.sandbox().unwrap().load(&wasm).await else {
        panic!("a 12.5 MiB memory loaded under an 8 MiB limit");
    };
    let message = refused.to_string();
    assert!(
        message.contains("its memory starts at 12.")
            && message.contains("more than runtime.memory_limit_mib = 8 allows"),
        "{message}"
    );
}

async fn audit_log(backend: Backend) -> Host {
    python::host(backend, "audit-log", |_| {}).await
}

async fn state_json(host: &Host, key: &str) -> Option<serde_json::Value> {
    let rows = host
        .query_rows(format!(
            "SELECT value FROM plugin_state WHERE plugin = 'audit-log' AND key = '{key}'"
        ))
        .await;
    rows.first()
        .map(|r| serde_json::from_slice(&r.get::<Vec<u8>, _>(0)).unwrap())
}

/// An `audit.record` of `entity` (its ordering key, if any) with `record` as payload.
fn record(entity: Option<&str>, record: serde_json::Value) -> NewMessage {
    let message = NewMessage::new("test", "audit.record", record.to_string().into_bytes());
    match entity {
        Some(entity) => message.with_key(entity),
        None => message,
    }
}

async fn records_are_numbered_in_publish_order_and_rejected(backend: Backend) {
    let host = audit_log(backend).await;
    let actions = ["pack", "ship", "refund", "close"];
    // Two entities' records interleaved in one enqueue: one batch holds several records
    // of each, which the plugin's order runs one at a time.
    let mut records: Vec<NewMessage> = (actions.iter())
        .flat_map(|action| {
            ["o1", "o2"].map(|e| record(Some(e), json!({"actor": "ana", "action": action})))
        })
        .collect();
    let keyless = record(None, json!({"actor": "ana", "action": "pack"}));
    let incomplete = record(Some("o3"), json!({"actor": "eve"}));
    records.extend([keyless.clone(), incomplete.clone()]);
    host.store.enqueue(&records).await.unwrap();
    let drained = host.drain().await;
    assert_eq!(drained.settled.handled, 8, "{drained:?}");
    assert_eq!(drained.settled.dead, 2, "{drained:?}");

    for entity in ["o1", "o2"] {
        assert_eq!(
            state_json(&host, &format!("seq:{entity}")).await,
            Some(json!(4))
        );
        for (n, action) in actions.iter().enumerate() {
            let entry = state_json(&host, &format!("entry:{entity}:{}", n + 1)).await;
            assert_eq!(
                entry.unwrap()["action"],
                *action,
                "{entity} in publish order"
            );
        }
    }
    // The feed carries each entity as its key, numbered in the order of its entries.
    let feed = host
        .rows("SELECT ordering_key, seq, payload FROM inbox WHERE queue = 'audit-feed'")
        .await;
    assert_eq!(
        feed.len(),
        8,
        "one audit.recorded per entry, published once each"
    );
    for row in &feed {
        let entry: serde_json::Value = serde_json::from_slice(&row.get::<Vec<u8>, _>(2)).unwrap();
        assert_eq!(entry["entity"], row.get::<String, _>(0));
        assert_eq!(entry["seq"], row.get::<i64, _>(1));
    }
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 8);

    let mut failed: Vec<(uuid::Uuid, String)> = (host.failed().await.into_iter())
        .map(|f| (f.message_id, f.error))
        .collect();
    failed.sort();
    let mut expected = vec![
        (
            keyless.id,
            format!(
                "rejected: audit record {} has no ordering key; publish it with its entity as key (wharf publish --key order-7)",
                keyless.id
            ),
        ),
        (
            incomplete.id,
            format!("rejected: audit record {} has no action", incomplete.id),
        ),
    ];
    expected.sort();
    assert_eq!(failed, expected);

    // A request for an entity's entries, answered through the Python SDK's reply.
    let id = uuid::Uuid::now_v7();
    let ask = requester::message(
        id,
        (Destination::Queue("test".into()), "audit.entries".into()),
        Default::default(),
        json!({"entity": "o1"}).to_string().into_bytes(),
        None,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    wharf_host::store::put(&*host.store, &ask).await.unwrap();
    host.drain().await;
    let Some(Answer::Answered { payload, .. }) = host.store.answer(id).await.unwrap() else {
        panic!("no answer to {id}");
    };
    let answer: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(answer["entries"], 4);
    assert_eq!(answer["last"]["action"], "close");
}

async fn an_uncaught_exception_is_a_failed_attempt(backend: Backend) {
    let host = audit_log(backend).await;
    // A note that is not text: cutting it to 200 characters raises TypeError, which the
    // handler does not catch; like a Rust panic, the attempt fails and nothing it did is
    // kept.
    let note = record(
        Some("o1"),
        json!({"actor": "ana", "action": "pack", "note": 5}),
    );
    host.store.enqueue(&[note]).await.unwrap();
    let (_, settled) = host
        .worker
        .run_batch(&["test".to_owned()], 10)
        .await
        .unwrap();
    assert_eq!((settled.handled, settled.retried), (0, 1), "{settled:?}");
    let errors = host.rows("SELECT error FROM attempt_errors").await;
    let error: String = errors[0].get(0);
    assert!(
        error.starts_with("trapped: uncaught Python exception TypeError: ")
            && error.contains("app.py"),
        "the exception's type, message and line: {error}"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state").await,
        0,
        "nothing written"
    );
}

async fn a_redelivered_record_is_not_run_twice(backend: Backend) {
    let broker = Broker::start_with(backend, &[], |c| python::serve(c, "audit-log")).await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({"actor": "ana", "action": "refund"}).to_string();
    // The same message twice, as a publisher's retry after a lost confirm would send it,
    // then another: the queue is FIFO, so once the last is handled both copies were
    // settled.
    broker
        .publish_keyed("audit.record", &id, "o9", body.as_bytes())
        .await;
    broker
        .publish_keyed("audit.record", &id, "o9", body.as_bytes())
        .await;
    let last_id = uuid::Uuid::now_v7().to_string();
    broker
        .publish_keyed("audit.record", &last_id, "o10", body.as_bytes())
        .await;
    let report = broker
        .consume_until("the last record handled", async |h| {
            h.count("SELECT COUNT(*) FROM processed").await == 2
        })
        .await;
    assert_eq!(report.messages, 3, "{report:?}");
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let host = &broker.host;
    assert_eq!(state_json(host, "seq:o9").await, Some(json!(1)));
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'audit-feed'")
            .await,
        2,
        "one audit.recorded per record, the copy's dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_an_exit_and_a_far_retry_read_as_what_they_are() {
    let host = python::host(Backend::Sqlite, "hostile", |c| {
        c.retry.max_retries = 1;
        c.retry.max_delay_ms = 60_000;
    })
    .await;
    for kind in ["hostile.raise", "hostile.exit", "hostile.far-retry"] {
        host.publish("test", kind, json!({})).await;
    }
    let (_, settled) = host
        .worker
        .run_batch(&["test".to_owned()], 10)
        .await
        .unwrap();
    assert_eq!(settled.retried, 3, "{settled:?}");
    let rows = host
        .rows("SELECT i.kind, a.error, a.delay_ms FROM attempt_errors a JOIN inbox i ON i.id = a.message_id")
        .await;
    let attempt = |kind: &str| -> (String, i64) {
        let row = rows
            .iter()
            .find(|r| r.get::<String, _>(0) == kind)
            .unwrap_or_else(|| panic!("no attempt of {kind}"));
        (row.get(1), row.get(2))
    };
    let (raised, _) = attempt("hostile.raise");
    assert!(
        raised.starts_with("trapped: uncaught Python exception KeyError: 'missing' (at ")
            && raised.contains("app.py\", line 16, in handle)"),
        "{raised}"
    );
    let (exited, _) = attempt("hostile.exit");
    assert!(
        exited.starts_with("trapped: exited with status 1 "),
        "{exited}"
    );
    let (far, delay) = attempt("hostile.far-retry");
    assert_eq!(
        (far.as_str(), delay),
        ("retry requested: later", 60_000),
        "the hint is capped at retry.max_delay_ms"
    );
}
