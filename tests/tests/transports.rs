//! The transport conformance suite: what every transport promises, written once and run
//! over the inbox and AMQP on every store: a message sent twice is handled once; a retry
//! waits its growing delays and is handled; a reject goes straight to the failed
//! messages; a handler that keeps trapping exhausts its retries with every attempt's
//! error recorded, while its neighbour is handled; a retried attempt's effects are
//! discarded and the successful one's committed once. (A host killed mid-batch: `chaos`
//! for the inbox, `amqp_recovery` for AMQP.)

use serde_json::json;
use sqlx::Row;
use uuid::Uuid;
use wharf_tests::transports::{Through, Transport};
use wharf_tests::{Backend, transport_conformance};

transport_conformance!(
    a_message_sent_twice_is_handled_once,
    a_retry_waits_its_growing_delays_then_is_handled,
    a_reject_goes_straight_to_the_failed_messages,
    exhaustion_records_every_attempts_error_and_a_panic_is_contained,
    effects_of_a_retried_attempt_are_discarded_and_committed_once_on_success,
);

/// Until `n` (message, plugin) pairs are in the ledger and nothing waits at the source.
async fn processed(through: &Through, n: i64) -> bool {
    through.host().count("SELECT COUNT(*) FROM processed").await == n
        && through.waiting().await == 0
}

async fn a_message_sent_twice_is_handled_once(transport: Transport, backend: Backend) {
    let through = Through::start(transport, backend, &["fixture-noop"]).await;
    let id = Uuid::now_v7();
    through.send(id, "test.noop", json!({})).await;
    through.send(id, "test.noop", json!({})).await;
    let report = through
        .run_until("handled", async |t| processed(t, 1).await)
        .await;
    assert_eq!(report.settled.handled, 1, "{report:?}");
    // A duplicate arriving after the message was handled is not handled again.
    through.send(id, "test.noop", json!({})).await;
    let report = through
        .run_until("the late duplicate", async |t| t.waiting().await == 0)
        .await;
    assert_eq!(report.settled.handled, 0, "{report:?}");
    let host = through.host();
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
}

async fn a_retry_waits_its_growing_delays_then_is_handled(transport: Transport, backend: Backend) {
    let through = Through::start(transport, backend, &["fixture-flaky"]).await;
    through
        .send(Uuid::now_v7(), "test.flaky", json!({"succeed_on": 4}))
        .await;
    let report = through
        .run_until("handled on attempt 4", async |t| processed(t, 1).await)
        .await;
    assert_eq!(
        (report.settled.retried, report.settled.handled),
        (3, 1),
        "{report:?}"
    );
    let host = through.host();
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

async fn a_reject_goes_straight_to_the_failed_messages(transport: Transport, backend: Backend) {
    let through = Through::start(transport, backend, &["fixture-always-reject"]).await;
    let id = Uuid::now_v7();
    through.send(id, "test.reject", json!({"n": 1})).await;
    let report = through
        .run_until("failed", async |t| {
            t.host().count("SELECT COUNT(*) FROM failed_messages").await == 1
                && t.waiting().await == 0
        })
        .await;
    assert_eq!(
        (report.settled.dead, report.settled.retried),
        (1, 0),
        "{report:?}"
    );
    let host = through.host();
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.message_id, id);
    assert_eq!(
        (f.plugin.as_str(), f.plugin_version.as_str()),
        ("always-reject", "1.0.0")
    );
    assert_eq!(f.error, format!("rejected: order {id} can never be valid"));
    assert_eq!(
        (f.attempts, f.status.as_str(), f.source.as_str()),
        (1, "failed", through.source().as_str())
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

async fn exhaustion_records_every_attempts_error_and_a_panic_is_contained(
    transport: Transport,
    backend: Backend,
) {
    let through = Through::start_with(
        transport,
        backend,
        &["fixture-panic", "fixture-noop"],
        |c| c.retry.max_retries = 2,
    )
    .await;
    through.send(Uuid::now_v7(), "test.panic", json!({})).await;
    through.send(Uuid::now_v7(), "test.noop", json!({})).await;
    let report = through
        .run_until("one dead, one handled", async |t| {
            t.host().count("SELECT COUNT(*) FROM failed_messages").await == 1
                && processed(t, 1).await
        })
        .await;
    assert_eq!(
        (
            report.settled.retried,
            report.settled.dead,
            report.settled.handled
        ),
        (2, 1, 1),
        "{report:?}"
    );
    let host = through.host();
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

async fn effects_of_a_retried_attempt_are_discarded_and_committed_once_on_success(
    transport: Transport,
    backend: Backend,
) {
    let through = Through::start(transport, backend, &["fixture-effects-then-retry"]).await;
    through
        .send(Uuid::now_v7(), "test.effects", json!({}))
        .await;
    let report = through
        .run_until("handled on attempt 2", async |t| processed(t, 1).await)
        .await;
    assert_eq!(
        (report.settled.retried, report.settled.handled),
        (1, 1),
        "{report:?}"
    );
    let host = through.host();
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
