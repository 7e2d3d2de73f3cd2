//! A handler written in Python (`plugins/python/audit-log`, built with componentize-py
//! against the same WIT) run by the host on SQLite and PostgreSQL, with the guarantees a
//! Rust handler gets: handled with its state and publishes committed once, retried after
//! the delay it asked for, rejected to the failed messages, an uncaught exception a
//! trap (a failed attempt) named by its type and message, and a redelivered message not
//! run twice; an exit is named with its status and a retry hint of 1e30 s waits the
//! policy's longest delay; and a host whose memory limit is below the interpreter's says
//! what to raise.

use serde_json::json;
use sqlx::Row;
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
    records_are_handled_retried_after_their_delay_and_rejected,
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
    // The plugin's 50 ms hint within the policy's longest delay (the tests' is 5 ms).
    python::host(backend, "audit-log", |c| c.retry.max_delay_ms = 1_000).await
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

async fn records_are_handled_retried_after_their_delay_and_rejected(backend: Backend) {
    let host = audit_log(backend).await;
    let queues = vec!["test".to_owned()];

    // A record that follows entry 1 of an entity that has none yet: retried, after the
    // 50 ms it asks for (the host's own backoff here is 1-5 ms).
    let follows = host
        .publish(
            "test",
            "audit.record",
            json!({"entity": "o1", "actor": "bob", "action": "ship", "after": 1}),
        )
        .await;
    let (_, first) = host.worker.run_batch(&queues, 10).await.unwrap();
    assert_eq!((first.handled, first.retried), (0, 1), "{first:?}");
    let delays = host
        .rows("SELECT delay_ms, error FROM attempt_errors")
        .await;
    assert_eq!(delays.len(), 1);
    assert_eq!(delays[0].get::<Option<i64>, _>(0), Some(50));
    assert!(
        delays[0]
            .get::<String, _>(1)
            .contains("o1 is at entry 0, this record follows 1"),
        "{}",
        delays[0].get::<String, _>(1)
    );

    // The entry it follows, and a record without an action.
    host.publish(
        "test",
        "audit.record",
        json!({"entity": "o1", "actor": "ana", "action": "pack"}),
    )
    .await;
    let incomplete = host
        .publish(
            "test",
            "audit.record",
            json!({"entity": "o1", "actor": "eve"}),
        )
        .await;
    let drained = host.drain().await;
    assert_eq!(drained.settled.handled, 2, "{drained:?}");
    assert_eq!(drained.settled.dead, 1, "{drained:?}");

    assert_eq!(state_json(&host, "seq:o1").await, Some(json!(2)));
    let second = state_json(&host, "entry:o1:2").await.unwrap();
    assert_eq!(second["action"], "ship");
    assert_eq!(second["message"], follows.id.to_string());
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE plugin = 'audit-log'")
            .await,
        3,
        "seq:o1 and two entries"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'audit-feed'")
            .await,
        2,
        "one audit.recorded per entry, published once each"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 2);

    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].message_id, incomplete.id);
    assert_eq!(failed[0].plugin, "audit-log");
    assert_eq!(
        failed[0].error,
        format!("rejected: audit record {} has no action", incomplete.id)
    );
}

async fn an_uncaught_exception_is_a_failed_attempt(backend: Backend) {
    let host = audit_log(backend).await;
    // `after` is not a number: comparing it raises TypeError, which the handler does not
    // catch; like a Rust panic, the attempt fails and nothing it did is kept.
    host.publish(
        "test",
        "audit.record",
        json!({"entity": "o1", "actor": "ana", "action": "pack", "after": "one"}),
    )
    .await;
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
    let body = json!({"entity": "o9", "actor": "ana", "action": "refund"}).to_string();
    // The same message twice, as a publisher's retry after a lost confirm would send it,
    // then another: the queue is FIFO, so once the last is handled both copies were
    // settled.
    broker
        .publish("audit.record", Some(&id), body.as_bytes())
        .await;
    broker
        .publish("audit.record", Some(&id), body.as_bytes())
        .await;
    let last = json!({"entity": "o10", "actor": "ana", "action": "refund"}).to_string();
    let last_id = uuid::Uuid::now_v7().to_string();
    broker
        .publish("audit.record", Some(&last_id), last.as_bytes())
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
