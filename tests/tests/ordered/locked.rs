//! A parked message whose row something else holds locked when its key moves on, on
//! MariaDB/MySQL (a claim's scan locks the row that ends it, often the first parked one):
//! the settle moving the key on waits for the lock and wakes it, rather than leaving it
//! parked for `PARK_AT_MOST` (found by the Kafka tests: two hosts, a key stalled 5 min).

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use wharf_host::envelope::DeadLetterKey;
use wharf_host::store::FailedFilter;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::sequence::last;
use wharf_tests::{Backend, Host, wait_for};

use super::{now_ms, ordered, publish, run_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    a_locked_parked_message_is_woken(Backend::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_leased() {
    a_locked_parked_message_is_woken(Backend::MySqlLeased).await
}

/// Statements of the host on this database running for a second or more: waiting for a
/// lock (a short settle's statements take milliseconds).
const WAITING: &str = "SELECT COUNT(*) FROM information_schema.PROCESSLIST
     WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND COMMAND <> 'Sleep' AND TIME >= 1";

async fn a_locked_parked_message_is_woken(backend: Backend) {
    let order = ordered(&[("sequence-a", DeadLetterKey::Hold)]);
    let host = Host::start_with(backend, &["fixture-sequence-a"], order).await;
    // k's first message is rejected until `until` and holds the key: the others park.
    let until = now_ms() + 1_000;
    let mut steps = vec![json!({"key": "k", "n": 1, "reject": ["sequence-a"], "until_ms": until})];
    steps.extend((2..=3).map(|n| json!({"key": "k", "n": n})));
    publish(&host, &steps).await;
    let parked = "SELECT COUNT(*) FROM inbox WHERE parked";
    run_until(&host, "k's later messages parked", async || {
        host.count(parked).await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()))).await;
    let failed = host.failed().await;
    let retried = (host.store)
        .failed_retry(&FailedFilter::id(failed[0].id), 1)
        .await
        .unwrap();
    assert_eq!(retried.inbox, 1);
    // The parked rows locked by another transaction, as a claim's scan does.
    let mut lock = host.db.begin().await.unwrap();
    let ids: Vec<String> = sqlx::query("SELECT HEX(id) FROM inbox WHERE parked ORDER BY seq")
        .fetch_all(&mut *lock)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // One row each, by its primary key: a statement over a list may scan (and lock) the
    // whole small table.
    let mut locked = Vec::new();
    for id in ids {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq FROM inbox WHERE id = UNHEX('{id}') FOR UPDATE"
        )))
        .fetch_one(&mut *lock)
        .await
        .unwrap();
        locked.push(row);
    }
    let seqs: Vec<i64> = locked.iter().map(|r| r.get::<i64, _>(0)).collect();
    assert_eq!(seqs, vec![2, 3], "the parked messages locked");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = host.worker.clone();
    let running = tokio::spawn(async move { worker.run(StopWhen::default(), stopped).await });
    // Until the first message's settle either committed past the lock or waits for it.
    wait_for(
        "the first message's settle",
        Duration::from_secs(20),
        async || {
            last(&host, "sequence-a").await.get("k") == Some(&1) || host.count(WAITING).await > 0
        },
    )
    .await;
    lock.rollback().await.unwrap();
    wait_for(
        "every message of k handled, well before PARK_AT_MOST",
        Duration::from_secs(20),
        async || last(&host, "sequence-a").await.get("k") == Some(&3),
    )
    .await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
}
