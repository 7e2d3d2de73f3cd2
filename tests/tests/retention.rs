//! Retention on every store: `cleanup` deletes only rows that are old and finished (dedup
//! and ledger rows of messages that left the inbox, sent outbox rows, resolved failures),
//! keeps dead letters waiting for an operator and the dedup rows of ids the ledger or a
//! dead letter still knows, and a duplicate arriving after its dedup row was deleted is
//! handled again (the documented dedup window). An ordering key's numbering is deleted
//! once idle and nothing carries its numbers (no message in the inbox, no held key, no
//! unresolved failed message), and starts again at 1.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use wharf_host::envelope::NewMessage;
use wharf_host::store::{Cleaned, FailedFilter};
use wharf_host::transport::pump::StopWhen;
use wharf_tests::held::holding;
use wharf_tests::{Backend, Host, conformance, wait_for};

async fn cleanup_deletes_only_old_finished_rows_and_ends_the_dedup_window(backend: Backend) {
    // A host without a plugin for test.noop dead-letters it; test.reject is rejected.
    let first = Host::start(backend, &["fixture-always-reject"]).await;
    let orphan = first.publish("test", "test.noop", json!({})).await;
    first.publish("test", "test.reject", json!({})).await;
    first.publish("parked", "test.noop", json!({})).await;
    first.drain().await;

    // A host with the plugins: the orphan is retried and resolved, two more are handled,
    // one of them publishing to an exchange (an outbox row, marked sent as a relay would).
    let url = first.config.database.url.clone();
    let second = Host::start_with(backend, &["fixture-noop", "fixture-once"], |c| {
        c.database.url = url
    })
    .await;
    let failed = second.failed().await;
    let orphan_row = failed.iter().find(|f| f.message_id == orphan.id).unwrap();
    second
        .store
        .failed_retry(&FailedFilter::id(orphan_row.id), 1)
        .await
        .unwrap();
    let handled = second.publish("test", "test.noop", json!({})).await;
    second
        .publish("test", "test.once", json!({"spin_ms": 0}))
        .await;
    assert_eq!(second.drain().await.settled.handled, 3);
    sqlx::query("UPDATE outbox SET sent_at = created_at")
        .execute(&second.db)
        .await
        .unwrap();
    let again = || second.store.enqueue(std::slice::from_ref(&handled));
    assert_eq!(again().await.unwrap(), 0, "a duplicate is dropped");

    assert_eq!(
        second
            .store
            .cleanup(Duration::from_secs(3600))
            .await
            .unwrap(),
        Cleaned::default(),
        "nothing is an hour old"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cleaned = second.store.cleanup(Duration::ZERO).await.unwrap();
    assert_eq!(
        cleaned,
        Cleaned {
            received: 3,
            processed: 3,
            outbox: 1,
            failed: 1,
            // The resolved orphan's refusal ("no handler"), its one attempt.
            attempt_errors: 1,
            ordering_keys: 0,
            replies: 0,
        }
    );
    assert_eq!(
        second.count("SELECT COUNT(*) FROM received").await,
        2,
        "the parked message, still in the inbox, and the rejected one, waiting for an \
         operator, keep their dedup rows"
    );
    let left = second.failed().await;
    assert_eq!(left.len(), 1, "the rejected message waits for an operator");
    assert_eq!(left[0].status.as_str(), "failed");
    let (_, history) = second.store.failed_get(left[0].id).await.unwrap().unwrap();
    assert_eq!(history.len(), 1, "with its attempt history");

    assert_eq!(
        again().await.unwrap(),
        1,
        "past the dedup window the same id is accepted again"
    );
    assert_eq!(second.drain().await.settled.handled, 1);

    let cli = Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .args(["cleanup", "--older-than", "7d"])
        .env("WHARF_DATABASE_URL", &second.config.database.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{cli:?}");
    assert!(
        stdout.starts_with("deleted rows older than 7days: 0 dedup, 0 ledger"),
        "{stdout}"
    );
}

async fn an_idle_ordering_key_is_deleted_once_nothing_carries_its_numbers(backend: Backend) {
    // Key `k`: its second message a dead letter holding it, its third waiting; key
    // `done`: one message, handled.
    let (host, messages) = holding(backend, "k").await;
    let done = NewMessage::new(
        "test",
        "test.seq",
        json!({"key": "done", "n": 1}).to_string().into_bytes(),
    )
    .with_key("done");
    host.store.enqueue(&[done]).await.unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = host.worker.clone();
    let running = tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    wait_for(
        "k held, done handled",
        Duration::from_secs(20),
        async || {
            host.count("SELECT COUNT(*) FROM held_keys").await == 1
                && host.count("SELECT COUNT(*) FROM processed").await == 2
        },
    )
    .await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    let keys = || host.count("SELECT COUNT(*) FROM ordering_keys");
    assert_eq!(keys().await, 2);

    let cleanup = |older_than| host.store.cleanup(older_than);
    assert_eq!(
        cleanup(Duration::ZERO).await.unwrap().ordering_keys,
        0,
        "a key stays numbered for a minute after its last message, whatever the cut"
    );
    sqlx::query("UPDATE ordering_keys SET updated_at = updated_at - 61000")
        .execute(&host.db)
        .await
        .unwrap();
    assert_eq!(
        cleanup(Duration::from_secs(3600))
            .await
            .unwrap()
            .ordering_keys,
        0
    );
    assert_eq!(
        cleanup(Duration::ZERO).await.unwrap().ordering_keys,
        1,
        "done is idle; k is held, with a message waiting"
    );
    assert!(
        host.store
            .skip_held_key("test", "k", "sequence-a")
            .await
            .unwrap()
    );
    host.drain().await;
    assert_eq!(
        cleanup(Duration::ZERO).await.unwrap().ordering_keys,
        0,
        "k's dead letter may still be sent back with its number"
    );
    let dead = host.failed().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, messages[1].id);
    host.store
        .failed_delete(&FailedFilter::id(dead[0].id), 1)
        .await
        .unwrap();
    assert_eq!(cleanup(Duration::ZERO).await.unwrap().ordering_keys, 1);
    assert_eq!(keys().await, 0);

    let again = NewMessage::new("test", "test.noop", b"{}".to_vec()).with_key("k");
    host.store.enqueue(&[again]).await.unwrap();
    assert_eq!(
        host.count("SELECT seq FROM inbox").await,
        1,
        "the key is numbered from 1 again"
    );
}

/// A claim looks up the ledger only for messages put back, so a duplicate must not get
/// into the inbox while the ledger still knows its id: its dedup row outlives the ledger's.
async fn a_dedup_row_stays_while_the_ledger_keeps_its_id(backend: Backend) {
    let host = Host::start(backend, &["fixture-counter"]).await;
    let counted = host
        .publish("test", "test.count", json!({"key": "k"}))
        .await;
    assert_eq!(host.drain().await.settled.handled, 1);
    // Received two hours ago, handled just now: a cut at one hour leaves the ledger row.
    sqlx::query("UPDATE received SET received_at = received_at - 7200000")
        .execute(&host.db)
        .await
        .unwrap();
    let cleaned = host.store.cleanup(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        cleaned,
        Cleaned::default(),
        "the ledger row is not an hour old"
    );
    let again = || host.store.enqueue(std::slice::from_ref(&counted));
    assert_eq!(again().await.unwrap(), 0, "the duplicate is still dropped");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let cleaned = host.store.cleanup(Duration::ZERO).await.unwrap();
    assert_eq!((cleaned.received, cleaned.processed), (1, 1));
    assert_eq!(
        again().await.unwrap(),
        1,
        "past both, the id is accepted again"
    );
    assert_eq!(host.drain().await.settled.handled, 1);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE version = 2")
            .await,
        1,
        "and handled again: the count's second write"
    );
}

conformance!(
    cleanup_deletes_only_old_finished_rows_and_ends_the_dedup_window,
    a_dedup_row_stays_while_the_ledger_keeps_its_id,
    an_idle_ordering_key_is_deleted_once_nothing_carries_its_numbers,
);
