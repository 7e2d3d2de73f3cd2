//! End-to-end flows through the inbox with real plugins, run against both stores (the
//! conformance suite): dedup, retry, reject, exhaustion, traps, exactly-once effects,
//! fan-out, `failed retry`.

use serde_json::json;
use sqlx::Row;
use wharf_host::store::{FailedFilter, Retried};
use wharf_tests::{Backend, Host, conformance};

async fn the_same_message_id_twice_is_handled_once(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    let message = host.publish("test", "test.noop", json!({})).await;
    assert_eq!(
        host.store
            .enqueue(std::slice::from_ref(&message))
            .await
            .unwrap(),
        0
    );
    let report = host.drain().await;
    assert_eq!(report.settled.handled, 1);
    // A duplicate arriving after the message was handled is dropped too.
    assert_eq!(
        host.store
            .enqueue(std::slice::from_ref(&message))
            .await
            .unwrap(),
        0
    );
    assert_eq!(host.drain().await.messages, 0);
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
}

async fn retry_until_attempt_n_succeeds_with_growing_delays(backend: Backend) {
    let host = Host::start(backend, &["fixture-flaky"]).await;
    host.publish("test", "test.flaky", json!({"succeed_on": 4}))
        .await;
    let report = host.drain().await;
    assert_eq!((report.settled.retried, report.settled.handled), (3, 1));
    let history = host
        .rows("SELECT attempt, delay_ms, error FROM attempt_errors ORDER BY id")
        .await;
    let seen: Vec<(i64, i64, String)> = history
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // The fixture's manifest policy: base 10 ms, x2, no jitter.
    assert_eq!(
        seen,
        [
            (1, 10, "retry requested: not yet: attempt 1".to_owned()),
            (2, 20, "retry requested: not yet: attempt 2".to_owned()),
            (3, 40, "retry requested: not yet: attempt 3".to_owned()),
        ]
    );
    let done = host
        .rows("SELECT kind, payload FROM inbox WHERE queue = 'results'")
        .await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].get::<String, _>(0), "test.done");
    assert_eq!(done[0].get::<Vec<u8>, _>(1), br#"{"attempt":4}"#);
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
}

async fn a_reject_goes_straight_to_the_failed_messages(backend: Backend) {
    let host = Host::start(backend, &["fixture-always-reject"]).await;
    let message = host.publish("test", "test.reject", json!({"n": 1})).await;
    let report = host.drain().await;
    assert_eq!((report.settled.dead, report.settled.retried), (1, 0));
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.message_id, message.id);
    assert_eq!(
        (f.plugin.as_str(), f.plugin_version.as_str()),
        ("always-reject", "1.0.0")
    );
    assert_eq!(
        f.error,
        format!("rejected: order {} can never be valid", message.id)
    );
    assert_eq!(
        (f.attempts, f.status.as_str(), f.source.as_str()),
        (1, "failed", "inbox:test")
    );
    assert_eq!(
        (f.payload.as_deref(), f.payload_bytes),
        (None, 7),
        "a list has the size"
    );
    let (detail, history) = host.store.failed_get(f.id).await.unwrap().unwrap();
    assert_eq!(detail.payload.as_deref(), Some(&br#"{"n":1}"#[..]));
    assert_eq!(history.len(), 1);
}

async fn exhaustion_records_every_attempts_error_and_a_panic_is_contained(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-panic", "fixture-noop"], |c| {
        c.retry.max_retries = 2
    })
    .await;
    host.publish("test", "test.panic", json!({})).await;
    host.publish("test", "test.noop", json!({})).await;
    let report = host.drain().await;
    assert_eq!(
        (
            report.settled.retried,
            report.settled.dead,
            report.settled.handled
        ),
        (2, 1, 1)
    );
    let failed = host.failed().await;
    let f = &failed[0];
    assert_eq!(f.attempts, 3);
    assert!(
        f.error
            .starts_with("trapped: panicked: fixture panics on purpose"),
        "{}",
        f.error
    );
    assert!(
        f.error.ends_with("(retries exhausted after 3 attempts)"),
        "{}",
        f.error
    );
    let (_, history) = host.store.failed_get(f.id).await.unwrap().unwrap();
    let attempts: Vec<u32> = history.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(
        history
            .iter()
            .all(|a| a.error.contains("fixture panics on purpose"))
    );
    assert_eq!(
        history.iter().map(|a| a.delay_ms).collect::<Vec<_>>(),
        [Some(1), Some(2), None]
    );
    // Every attempt names the version that ran it and its component's hash.
    for a in &history {
        assert_eq!(a.plugin_version.as_deref(), Some(f.plugin_version.as_str()));
        assert_eq!(a.plugin_sha256.as_deref(), Some(f.plugin_sha256.as_str()));
        assert_eq!(a.plugin_sha256.as_ref().map(String::len), Some(64));
    }
}

async fn an_infinite_loop_is_cut_by_the_deadline_while_other_messages_flow(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-infinite-loop", "fixture-noop"], |c| {
        c.retry.max_retries = 0
    })
    .await;
    host.publish("test", "test.loop", json!({})).await;
    for _ in 0..20 {
        host.publish("test", "test.noop", json!({})).await;
    }
    let report = host.drain().await;
    assert_eq!((report.settled.handled, report.settled.dead), (20, 1));
    let failed = host.failed().await;
    assert_eq!(failed[0].plugin, "infinite-loop");
    assert!(
        failed[0].error.contains("deadline of 300 ms exceeded"),
        "{}",
        failed[0].error
    );
}

async fn a_memory_bomb_hits_the_cap_and_costs_only_its_own_message(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-memory-bomb", "fixture-noop"], |c| {
        c.retry.max_retries = 0
    })
    .await;
    host.publish("test", "test.alloc", json!({})).await;
    host.publish("test", "test.noop", json!({})).await;
    let report = host.drain().await;
    assert_eq!((report.settled.handled, report.settled.dead), (1, 1));
    let failed = host.failed().await;
    assert!(
        failed[0].error.contains("memory limit of 32 MiB exceeded"),
        "{}",
        failed[0].error
    );
}

async fn every_message_gets_a_fresh_instance_even_after_a_memory_bomb_in_the_same_slots(
    backend: Backend,
) {
    let host = Host::start_with(backend, &["fixture-memory-bomb", "fixture-noop"], |c| {
        c.retry.max_retries = 0
    })
    .await;
    host.publish("test", "test.alloc", json!({})).await;
    for _ in 0..40 {
        host.publish("test", "test.isolation", json!({})).await;
    }
    let report = host.drain().await;
    // The fixture rejects when its static counter or heap marker survived an earlier call.
    assert_eq!((report.settled.handled, report.settled.dead), (40, 1));
    let failed = host.failed().await;
    assert_eq!(failed[0].kind, "test.alloc");
}

async fn effects_of_a_retried_attempt_are_discarded_and_committed_once_on_success(
    backend: Backend,
) {
    let host = Host::start(backend, &["fixture-effects-then-retry"]).await;
    host.publish("test", "test.effects", json!({})).await;
    let report = host.drain().await;
    assert_eq!((report.settled.retried, report.settled.handled), (1, 1));
    let effects = host
        .rows("SELECT payload FROM inbox WHERE queue = 'effects'")
        .await;
    assert_eq!(
        effects.len(),
        1,
        "only the successful attempt's publish is committed"
    );
    assert_eq!(effects[0].get::<Vec<u8>, _>(0), br#"{"attempt":2}"#);
    let (counter, version) = host
        .store
        .state_get("effects-then-retry", "counter")
        .await
        .unwrap()
        .expect("state written");
    assert_eq!((counter.as_slice(), version), (&b"1"[..], 1));
}

async fn fan_out_settles_per_plugin_and_a_retrying_plugin_does_not_rerun_the_other(
    backend: Backend,
) {
    let host = Host::start(
        backend,
        &["send-confirmation", "fixture-effects-then-retry"],
    )
    .await;
    let order = json!({"order_id": "o-1", "customer_email": "a@example.com",
                       "items": [{"sku": "A", "quantity": 1}]});
    host.publish("test", "order.created", order).await;
    let report = host.drain().await;
    assert_eq!((report.settled.handled, report.settled.retried), (2, 1));
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'emails'")
            .await,
        1
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 2);
}

async fn the_example_chain_runs_end_to_end_and_records_versions(backend: Backend) {
    let host = Host::start_with(
        backend,
        &["send-confirmation", "update-stock", "send-email"],
        |c| {
            c.inbox.queues.clear();
            c.plugin
                .entry("update-stock".into())
                .or_default()
                .config
                .extend([
                    ("initial_stock".to_owned(), "10".to_owned()),
                    ("low_stock_threshold".to_owned(), "5".to_owned()),
                ]);
        },
    )
    .await;
    let order = json!({"order_id": "o-7", "customer_email": "a@example.com",
                       "items": [{"sku": "A", "quantity": 6}]});
    host.publish("orders", "order.created", order).await;
    host.drain().await;
    let handled = host
        .rows("SELECT plugin, plugin_version, plugin_sha256 FROM processed ORDER BY plugin")
        .await;
    let plugins: Vec<String> = handled.iter().map(|r| r.get(0)).collect();
    assert_eq!(plugins, ["send-confirmation", "send-email", "update-stock"]);
    assert!(
        handled
            .iter()
            .all(|r| r.get::<String, _>(1) == "0.1.0" && r.get::<String, _>(2).len() == 64)
    );
    let (stock, _) = host
        .store
        .state_get("update-stock", "stock:A")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stock, b"4");
    let outbox = host
        .rows("SELECT exchange, routing_key, kind FROM outbox")
        .await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (
            outbox[0].get::<String, _>(0),
            outbox[0].get::<String, _>(1),
            outbox[0].get::<String, _>(2)
        ),
        ("inventory".into(), "stock.low".into(), "stock.low".into())
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
}

async fn no_handler_fails_the_message_and_failed_retry_brings_it_back(backend: Backend) {
    let first = Host::start(backend, &["fixture-always-reject"]).await;
    let message = first.publish("test", "test.noop", json!({})).await;
    first.drain().await;
    let failed = first.failed().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].error,
        "no handler for kind test.noop: no loaded plugin subscribes to it"
    );
    assert_eq!(failed[0].plugin, "");

    // Deploy a plugin for the kind (a host with it on the same database), then retry.
    let url = first.config.database.url.clone();
    let second = Host::start_with(backend, &["fixture-noop"], |c| c.database.url = url).await;
    assert_eq!(
        second
            .store
            .failed_retry(&FailedFilter::id(failed[0].id), 1)
            .await
            .unwrap(),
        Retried {
            inbox: 1,
            broker: 0
        }
    );
    assert_eq!(
        second
            .store
            .failed_retry(&FailedFilter::id(failed[0].id), 1)
            .await
            .unwrap(),
        Retried::default()
    );
    let report = second.drain().await;
    assert_eq!(report.settled.handled, 1);
    let after = second.failed().await;
    assert_eq!(after[0].status.as_str(), "resolved");
    assert!(after[0].resolved_at.is_some() && after[0].last_retry_at.is_some());
    let ledger = second
        .query_rows(format!(
            "SELECT {} FROM processed",
            second.uuid_text("message_id")
        ))
        .await;
    assert_eq!(ledger[0].get::<String, _>(0), message.id.to_string());
}

conformance!(
    the_same_message_id_twice_is_handled_once,
    retry_until_attempt_n_succeeds_with_growing_delays,
    a_reject_goes_straight_to_the_failed_messages,
    exhaustion_records_every_attempts_error_and_a_panic_is_contained,
    an_infinite_loop_is_cut_by_the_deadline_while_other_messages_flow,
    a_memory_bomb_hits_the_cap_and_costs_only_its_own_message,
    every_message_gets_a_fresh_instance_even_after_a_memory_bomb_in_the_same_slots,
    effects_of_a_retried_attempt_are_discarded_and_committed_once_on_success,
    fan_out_settles_per_plugin_and_a_retrying_plugin_does_not_rerun_the_other,
    the_example_chain_runs_end_to_end_and_records_versions,
    no_handler_fails_the_message_and_failed_retry_brings_it_back,
);
