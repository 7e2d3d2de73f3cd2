//! Ordering keys on every store: the inbox numbers the messages of one (queue, key) 1, 2,
//! ... in enqueue order, within a call and across calls; a duplicate id takes no number;
//! messages without a key and other queues are apart; two producers of one key at once
//! get distinct numbers, each in its own order; a claim hands the key and number on, and
//! a message put back for another attempt keeps them (a claim held in a transaction
//! deletes the rows and inserts them again).

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_host::dispatch::Delays;
use wharf_host::envelope::NewMessage;
use wharf_host::outcome::Verdict;
use wharf_host::settle;
use wharf_host::store::{ClaimMode, KeyOrder, Settlement};
use wharf_tests::{Backend, Host, conformance, noop_settlement};

conformance!(
    keys_are_numbered_in_enqueue_order,
    two_producers_of_one_key_get_distinct_numbers,
    a_retried_message_keeps_its_key_and_number
);

fn keyed(queue: &str, kind: &str, key: Option<&str>) -> NewMessage {
    let message = NewMessage::new(queue, kind, b"{}".to_vec());
    match key {
        Some(key) => message.with_key(key),
        None => message,
    }
}

/// Ordering key and number of every inbox row, by kind.
async fn numbers(host: &Host) -> BTreeMap<String, (Option<String>, Option<i64>)> {
    let rows: Vec<(String, Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT kind, ordering_key, seq FROM inbox")
            .fetch_all(&host.db)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(kind, key, seq)| (kind, (key, seq)))
        .collect()
}

async fn keys_are_numbered_in_enqueue_order(backend: Backend) {
    let host = Host::start(backend, &[]).await;
    let first = keyed("q1", "m1", Some("a"));
    let third = keyed("q1", "m3", Some("a"));
    let batch = vec![
        first.clone(),
        keyed("q1", "m2", Some("b")),
        third.clone(),
        keyed("q1", "m4", None),
        NewMessage {
            kind: "m1-again".into(),
            ..first.clone()
        },
        keyed("q1", "m5", Some("a")),
        keyed("q2", "m6", Some("a")),
    ];
    assert_eq!(host.store.enqueue(&batch).await.unwrap(), 6);
    let again = vec![
        keyed("q1", "m7", Some("a")),
        NewMessage {
            kind: "m3-again".into(),
            ..third
        },
        keyed("q1", "m8", Some("b")),
        keyed("q1", "m9", Some("order 42 · eu")),
    ];
    assert_eq!(host.store.enqueue(&again).await.unwrap(), 3);
    let some = |key: &str, seq: i64| (Some(key.to_owned()), Some(seq));
    let expected: BTreeMap<String, (Option<String>, Option<i64>)> = [
        ("m1", some("a", 1)),
        ("m2", some("b", 1)),
        ("m3", some("a", 2)),
        ("m4", (None, None)),
        ("m5", some("a", 3)),
        ("m6", some("a", 1)),
        ("m7", some("a", 4)),
        ("m8", some("b", 2)),
        ("m9", some("order 42 · eu", 1)),
    ]
    .into_iter()
    .map(|(kind, numbered)| (kind.to_owned(), numbered))
    .collect();
    assert_eq!(numbers(&host).await, expected);
}

async fn two_producers_of_one_key_get_distinct_numbers(backend: Backend) {
    let host = Host::start(backend, &[]).await;
    let producer = |name: &'static str| {
        let store = host.store.clone();
        async move {
            for round in 0..5 {
                let batch: Vec<NewMessage> = (0..10)
                    .map(|i| keyed("q", &format!("{name}-{:02}", round * 10 + i), Some("k")))
                    .collect();
                store.enqueue(&batch).await.unwrap();
            }
        }
    };
    tokio::join!(producer("p"), producer("r"));
    let numbers = numbers(&host).await;
    let mut seqs: Vec<i64> = numbers.values().map(|(_, seq)| seq.unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>(), "each number once");
    for name in ["p", "r"] {
        let own: Vec<i64> = numbers
            .iter()
            .filter(|(kind, _)| kind.starts_with(name))
            .map(|(_, (_, seq))| seq.unwrap())
            .collect();
        assert!(
            own.is_sorted(),
            "producer {name}'s messages numbered in its order: {own:?}"
        );
    }
}

async fn a_retried_message_keeps_its_key_and_number(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    let batch = [
        keyed("test", "test.noop", Some("order-1")),
        keyed("test", "test.noop", Some("order-1")),
        keyed("test", "test.noop", None),
    ];
    host.store.enqueue(&batch).await.unwrap();
    let claim = host
        .store
        .claim(
            &["test".to_owned()],
            10,
            ClaimMode::Transaction,
            KeyOrder::Ignore,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let mut claimed: Vec<(Option<String>, Option<i64>)> = claim
        .messages
        .iter()
        .map(|m| (m.key.clone(), m.seq))
        .collect();
    claimed.sort();
    let some = |seq| (Some("order-1".to_owned()), Some(seq));
    assert_eq!(claimed, [(None, None), some(1), some(2)]);
    let mut retried: Vec<Settlement> = claim
        .messages
        .iter()
        .map(|message| {
            let retry = Verdict::Retry {
                error: "not yet".into(),
                delay: Duration::from_secs(60),
            };
            noop_settlement(message, retry)
        })
        .collect();
    settle::claimed(
        &*host.store,
        claim.hold,
        &mut retried,
        &host.dispatcher,
        Delays::Jittered,
    )
    .await
    .unwrap();
    let rows: Vec<(Option<String>, Option<i64>, i64)> =
        sqlx::query_as("SELECT ordering_key, seq, attempts FROM inbox ORDER BY seq")
            .fetch_all(&host.db)
            .await
            .unwrap();
    let mut kept: Vec<_> = rows.into_iter().collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            (None, None, 1),
            (some(1).0, Some(1), 1),
            (some(2).0, Some(2), 1)
        ]
    );
}
