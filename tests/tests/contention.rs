//! Stateful handlers on hot keys, on every store: messages incrementing one counter from
//! concurrent batches, and from two hosts, end with the exact count at about one handler
//! run per message (stale reads are re-run inside the settle, not sent back); a handler
//! that reads a key only on some values (so a re-run reads a key its first run did not)
//! stays exact; and past the settle's re-run budget the stale results go back for another
//! round and the counts are still exact.

use serde_json::json;
use wharf_host::config::Config;
use wharf_host::envelope::NewMessage;
use wharf_host::store::PluginRuns;
use wharf_host::transport::pump::Report;
use wharf_tests::{Backend, Host, conformance, test_config};

/// `n` increments of the counter `key`.
fn increments(n: usize, key: &str) -> Vec<NewMessage> {
    (0..n)
        .map(|_| {
            NewMessage::new(
                "test",
                "test.count",
                json!({ "key": key }).to_string().into_bytes(),
            )
        })
        .collect()
}

fn batches(config: &mut Config) {
    config.inbox.batch_size = 50;
    config.inbox.batches_in_flight = 2;
}

/// The counter's value of `name:key` (0 when absent).
async fn counter(host: &Host, name: &str, key: &str) -> u64 {
    match host
        .store
        .state_get("counter", &format!("{name}:{key}"))
        .await
        .unwrap()
    {
        Some((value, _)) => serde_json::from_slice(&value).unwrap(),
        None => 0,
    }
}

/// Both counters of `key` are exact after `n` increments.
async fn assert_exact(host: &Host, key: &str, n: u64) {
    assert_eq!(counter(host, "count", key).await, n, "count:{key}");
    assert_eq!(counter(host, "odd", key).await, n / 2, "odd:{key}");
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, n as i64);
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
}

fn runs(reports: &[&Report]) -> PluginRuns {
    reports.iter().map(|r| r.settled.runs()).sum()
}

async fn one_hot_counter_from_concurrent_batches(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-counter"], batches).await;
    host.store.enqueue(&increments(600, "hot")).await.unwrap();
    let report = host.drain().await;
    assert_exact(&host, "hot", 600).await;
    let runs = runs(&[&report]);
    let per_message = runs.runs as f64 / runs.handled as f64;
    eprintln!("{backend:?}: {runs:?}, {per_message:.2} runs per handled message");
    assert_eq!(runs.handled, 600);
    assert!(
        per_message < 2.0,
        "a hot key costs {per_message:.2} runs per message"
    );
}

async fn one_hot_counter_from_two_hosts(backend: Backend) {
    let a = Host::start_with(backend, &["fixture-counter"], batches).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = a.config.database.url.clone();
    config.inbox.hold_claims_up_to_ms = a.config.inbox.hold_claims_up_to_ms;
    batches(&mut config);
    let b = Host::start_on(config, &["fixture-counter"], dir).await;
    a.store.enqueue(&increments(600, "hot")).await.unwrap();
    let (ra, rb) = tokio::join!(a.drain(), b.drain());
    assert_exact(&a, "hot", 600).await;
    let runs = runs(&[&ra, &rb]);
    let per_message = runs.runs as f64 / runs.handled as f64;
    eprintln!(
        "{backend:?}: {runs:?}, {per_message:.2} runs per handled message; handled by a: {}, b: {}",
        ra.settled.handled, rb.settled.handled
    );
    assert_eq!(runs.handled, 600);
    assert!(
        per_message < 2.0,
        "two hosts on a hot key cost {per_message:.2} runs per message"
    );
}

async fn past_the_settle_budget_stale_results_go_back_and_stay_exact(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-counter"], |c| {
        batches(c);
        c.runtime.settle_runs = 1;
    })
    .await;
    host.store.enqueue(&increments(300, "hot")).await.unwrap();
    let report = host.drain().await;
    assert_exact(&host, "hot", 300).await;
    let runs = runs(&[&report]);
    eprintln!("{backend:?}: {runs:?}");
    assert!(
        runs.rescheduled > 0,
        "one re-run per batch cannot resolve every stale read: {runs:?}"
    );
    assert_eq!(runs.handled, 300);
}

conformance!(
    one_hot_counter_from_concurrent_batches,
    one_hot_counter_from_two_hosts,
    past_the_settle_budget_stale_results_go_back_and_stay_exact,
);
