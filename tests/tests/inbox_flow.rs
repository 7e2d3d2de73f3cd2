//! End-to-end flows through the inbox with real plugins, on every store: deadlines and
//! memory caps, fresh instances, fan-out, the example chain, `failed retry`, a run until
//! idle that waits for its other lanes. What every
//! transport promises (dedup, retry, reject, exhaustion, exactly-once effects) is in
//! `transports.rs`.

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use wharf_host::store::{FailedFilter, Retried};
use wharf_tests::{Backend, Host, conformance};

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

/// A run until idle stops a lane whose queue is empty only once no other lane holds a
/// batch: here the `jobs` lane's handler publishes to `results`, whose lane came up empty
/// at the start (and on MariaDB a held claim of one queue can lock the first row of the
/// next one until it commits). The idle lane takes again once the other's batch is done,
/// not a poll interval (a minute here) later.
async fn a_run_until_idle_leaves_nothing_due_that_another_lane_made(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-flaky"], |c| {
        c.inbox.queues = vec!["jobs".into(), "results".into()];
        c.inbox.poll_interval_ms = 60_000;
    })
    .await;
    host.publish("jobs", "test.flaky", json!({ "succeed_on": 1 }))
        .await;
    let report = tokio::time::timeout(Duration::from_secs(30), host.run_until_idle())
        .await
        .expect("the idle lane took again once the other lane's batch was done");
    assert_eq!(
        report.messages, 2,
        "the published test.done was taken in the same run: {report:?}"
    );
    let left: Vec<_> = host.store.queue_stats().await.unwrap();
    assert!(
        left.iter()
            .all(|q| q.pending + q.in_flight + q.scheduled == 0),
        "{left:?}"
    );
    let failed = host.failed().await;
    assert_eq!(
        (failed.len(), failed[0].kind.as_str()),
        (1, "test.done"),
        "nothing subscribes to test.done: it was taken, and failed"
    );
}

conformance!(
    an_infinite_loop_is_cut_by_the_deadline_while_other_messages_flow,
    a_memory_bomb_hits_the_cap_and_costs_only_its_own_message,
    every_message_gets_a_fresh_instance_even_after_a_memory_bomb_in_the_same_slots,
    fan_out_settles_per_plugin_and_a_retrying_plugin_does_not_rerun_the_other,
    the_example_chain_runs_end_to_end_and_records_versions,
    no_handler_fails_the_message_and_failed_retry_brings_it_back,
    a_run_until_idle_leaves_nothing_due_that_another_lane_made,
);
