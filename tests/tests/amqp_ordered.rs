//! Ordered consumption of an AMQP queue (`[[amqp.consume]] ordered`, the queue declared
//! with one active consumer), on every store: two hosts consume it and each key's messages
//! reach `sequence-a` (which asks for order, and rejects a message that does not follow the
//! last one it handled of its key) in publish order, through retries, which move the key
//! into the inbox; without it, the same messages come out of order; a dead letter holds
//! its key in the inbox until an operator skips it, and the key's later deliveries wait
//! behind it there.

use std::collections::BTreeMap;

use serde_json::json;
use sqlx::Row;
use wharf_host::config::Config;
use wharf_tests::broker::{Broker, keyed, run_until};
use wharf_tests::{Backend, Host, conformance};

conformance!(
    two_hosts_consume_each_key_in_publish_order_through_retries,
    without_ordered_consumption_keys_come_out_of_order,
    a_dead_letter_holds_its_key_in_the_inbox_until_skipped
);

/// The queue consumed in order, by one consumer at a time.
fn ordered(config: &mut Config) {
    let queue = config.amqp.consume[0].queue.clone();
    config.amqp.consume[0].ordered = true;
    config.amqp.queues[0].single_active_consumer = true;
    config.inbox.queues.push(queue);
    config
        .validate()
        .expect("an ordered consumer's config is valid");
}

/// Publish `steps` (payloads of `test.seq`), each with its `key` in the key header.
async fn publish(broker: &Broker, steps: &[serde_json::Value]) {
    let messages = steps.iter().map(|step| {
        let key = step["key"].as_str().unwrap();
        (keyed("test.seq", key), step.to_string().into_bytes())
    });
    broker.publish_all(messages).await;
}

/// The last `n` sequence-a handled per key.
async fn last(host: &Host) -> BTreeMap<String, u64> {
    wharf_tests::sequence::last(host, "sequence-a").await
}

/// `keys` keys of `per_key` messages each, interleaved; every tenth asks sequence-a for a
/// retry.
fn interleaved(keys: usize, per_key: u64) -> Vec<serde_json::Value> {
    let mut steps = Vec::new();
    for n in 1..=per_key {
        for k in 0..keys {
            let mut step = json!({"key": format!("order-{k}"), "n": n});
            if (n as usize * keys + k) % 10 == 3 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            steps.push(step);
        }
    }
    steps
}

async fn two_hosts_consume_each_key_in_publish_order_through_retries(backend: Backend) {
    let broker = Broker::start_with(backend, &["fixture-sequence-a"], ordered).await;
    let other = broker.second_host(&["fixture-sequence-a"]).await;
    publish(&broker, &interleaved(12, 25)).await;
    let host = &broker.host;
    let expected: BTreeMap<String, u64> = (0..12).map(|k| (format!("order-{k}"), 25)).collect();
    run_until(
        &[host, &other],
        "every key at its last message",
        async || last(host).await == expected || !host.failed().await.is_empty(),
    )
    .await;
    let failed: Vec<String> = host.failed().await.into_iter().map(|f| f.error).collect();
    assert_eq!(failed, Vec::<String>::new(), "nothing out of order");
    assert_eq!(last(host).await, expected);
    let queue = &broker.queue;
    let moved = host
        .query_rows(format!(
            "SELECT COUNT(*) FROM received WHERE queue = '{queue}'"
        ))
        .await[0]
        .get::<i64, _>(0);
    assert!(
        moved >= 30,
        "the retried keys went through the inbox: {moved}"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
    assert_eq!(broker.depth(queue).await, 0);
}

async fn without_ordered_consumption_keys_come_out_of_order(backend: Backend) {
    // Two consumers on one queue, retries through the delay queues.
    let broker = Broker::start_with(backend, &["fixture-sequence-a"], |c| {
        c.amqp.consume[0].consumers = 2;
    })
    .await;
    publish(&broker, &interleaved(3, 20)).await;
    let host = &broker.host;
    run_until(&[host], "a message out of order", async || {
        (host.failed().await.iter()).any(|f| f.error.contains("out of order"))
    })
    .await;
}

async fn a_dead_letter_holds_its_key_in_the_inbox_until_skipped(backend: Backend) {
    let broker = Broker::start_with(backend, &["fixture-sequence-a"], ordered).await;
    let host = &broker.host;
    // k's second message is rejected: the key moves into the inbox, where the message
    // dead-letters and holds the key; k's later deliveries wait behind it there. j goes on.
    let mut steps = vec![json!({"key": "k", "n": 1})];
    steps.push(json!({"key": "k", "n": 2, "reject": ["sequence-a"]}));
    steps.push(json!({"key": "k", "n": 3, "after": 1}));
    steps.extend((1..=3).map(|n| json!({"key": "j", "n": n})));
    publish(&broker, &steps).await;
    run_until(
        &[host],
        "k held with its later message behind it",
        async || {
            let held = host.store.held_keys(10).await.unwrap();
            held.len() == 1 && held[0].waiting == 1 && last(host).await.get("j") == Some(&3)
        },
    )
    .await;
    // Later deliveries of k join it in the inbox.
    publish(&broker, &[json!({"key": "k", "n": 4})]).await;
    run_until(&[host], "k's next delivery behind it", async || {
        host.store.held_keys(10).await.unwrap()[0].waiting == 2
    })
    .await;
    let held = &host.store.held_keys(10).await.unwrap()[0];
    assert_eq!(
        (held.key.as_str(), held.plugin.as_str()),
        ("k", "sequence-a")
    );
    assert_eq!(last(host).await.get("k"), Some(&1), "k waits");
    assert!(
        host.store
            .skip_held_key(&broker.queue, "k", "sequence-a")
            .await
            .unwrap()
    );
    run_until(&[host], "k goes on without its message", async || {
        last(host).await.get("k") == Some(&4)
    })
    .await;
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].error.contains("rejected as the message asked"));
}
