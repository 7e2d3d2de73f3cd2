//! Handlers publish to Kafka topics (`wharf:plugin@0.6.0`'s `topic` destination) through
//! the outbox and the Kafka relay's idempotent producer, on every store: each record
//! reaches its topic once, one key's records in the order they were published, with its id and kind in
//! the `message-id` and `kind` headers (the AMQP relay takes none of them); a record for
//! a topic the brokers do not have waits in the failed messages until an operator
//! creates the topic and retries it; a malformed topic is refused at the call.

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::message::{Headers, Message};
use serde_json::json;
use sqlx::Row;
use wharf_host::config::Config;
use wharf_host::store::{FailedFilter, FailedStatus, Transport};
use wharf_tests::kafka::{Kafka, kafka, run_until};
use wharf_tests::{Backend, Host, conformance, unique_name};

conformance!(
    records_a_handler_publishes_reach_their_topic_once_in_key_order,
    a_record_for_a_missing_topic_waits_in_the_failed_messages_until_retried
);

/// Relay the outbox to `kafka`; handle the `produce` inbox queue.
fn relay(kafka: &Kafka, config: &mut Config) {
    config.kafka.brokers = kafka.brokers.clone();
    config.kafka.relay = Some(true);
    config.kafka.batch_size = 50;
    config.inbox.queues = vec!["produce".into()];
    config.validate().expect("the Kafka test config is valid");
}

async fn sent(host: &Host) -> i64 {
    host.count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
        .await
}

/// Each header of `record`, as text.
fn headers(record: &impl Message) -> BTreeMap<String, String> {
    let Some(headers) = record.headers() else {
        return BTreeMap::new();
    };
    (headers.iter())
        .map(|h| {
            let value = String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap();
            (h.key.to_owned(), value)
        })
        .collect()
}

async fn records_a_handler_publishes_reach_their_topic_once_in_key_order(backend: Backend) {
    let kafka = kafka().await;
    let topic = kafka.topic(3).await;
    let host = Host::start_with(backend, &["fixture-producer"], |c| relay(kafka, c)).await;
    for n in 1..=20 {
        for k in 0..10 {
            let produce = json!({"topic": topic, "key": format!("k{k}"), "n": n});
            host.publish("produce", "produce.record", produce).await;
        }
    }
    let unkeyed = json!({"topic": topic, "key": null, "n": 0});
    host.publish("produce", "produce.record", unkeyed).await;
    let report = host.drain().await;
    assert_eq!(report.settled.handled, 201, "{report:?}");
    let amqp = host.store.claim_outbox(Transport::Amqp, 500).await.unwrap();
    assert!(amqp.messages.is_empty(), "the AMQP relay takes no record");
    drop(amqp);
    run_until(&[&host], "the outbox sent", async || {
        sent(&host).await == 201
    })
    .await;

    // The relay keeps the outbox's order (the order the handlers published in) per key.
    let mut outbox: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    let rows = host
        .query_rows(format!(
            "SELECT {}, ordering_key FROM outbox ORDER BY seq",
            host.uuid_text("id")
        ))
        .await;
    for row in &rows {
        let key: Option<String> = row.get(1);
        outbox.entry(key).or_default().push(row.get(0));
    }
    let records = kafka.read(&topic, 201).await;
    let mut produced: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    let mut numbers: BTreeMap<Option<String>, BTreeSet<u64>> = BTreeMap::new();
    for record in &records {
        let headers = headers(record);
        assert_eq!(headers["kind"], "produced");
        assert!(headers.contains_key("source"), "{headers:?}");
        let key = record.key().map(|k| String::from_utf8(k.to_vec()).unwrap());
        let value: serde_json::Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
        assert_eq!(value["key"].as_str(), key.as_deref());
        numbers
            .entry(key.clone())
            .or_default()
            .insert(value["n"].as_u64().unwrap());
        produced
            .entry(key)
            .or_default()
            .push(headers["message-id"].clone());
    }
    assert_eq!(
        produced, outbox,
        "each row produced once, in outbox order per key"
    );
    assert_eq!(numbers.remove(&None), Some(BTreeSet::from([0])));
    for (key, ns) in numbers {
        assert_eq!(ns, (1..=20).collect(), "{key:?}");
    }
}

async fn a_record_for_a_missing_topic_waits_in_the_failed_messages_until_retried(backend: Backend) {
    let kafka = kafka().await;
    let (missing, there) = (unique_name("later"), kafka.topic(1).await);
    let host = Host::start_with(backend, &["fixture-producer"], |c| relay(kafka, c)).await;
    for topic in [&missing, &there] {
        let produce = json!({"topic": topic, "key": "order-7", "n": 1});
        host.publish("produce", "produce.record", produce).await;
    }
    let refused = json!({"topic": "no such\ntopic", "key": "k", "n": 1});
    host.publish("produce", "produce.record", refused).await;
    host.drain().await;
    run_until(&[&host], "one sent, one failed", async || {
        sent(&host).await == 2
    })
    .await;
    let mut failed = host.failed().await;
    failed.sort_by_key(|f| f.source.clone());
    let sources: Vec<_> = (failed.iter())
        .map(|f| (f.source.as_str(), f.plugin.as_str()))
        .collect();
    assert_eq!(
        sources,
        [("inbox:produce", "producer"), ("outbox:kafka", "producer")]
    );
    assert!(
        failed[0].error.contains("topic") && failed[0].error.contains("\\n"),
        "the malformed topic is named, escaped: {}",
        failed[0].error
    );
    assert!(
        failed[1]
            .error
            .contains(&format!("topic {missing} does not exist")),
        "{}",
        failed[1].error
    );
    assert_eq!(kafka.read(&there, 1).await.len(), 1);

    kafka.create(&missing, 1).await;
    let filter = FailedFilter {
        source: Some("outbox:kafka".into()),
        ..FailedFilter::default()
    };
    let retried = host.store.failed_retry(&filter, 10).await.unwrap();
    assert_eq!((retried.inbox, retried.broker), (0, 1));
    let resolved = async || {
        let after = host.failed().await;
        let retried = after.iter().find(|f| f.source == "outbox:kafka");
        retried.is_some_and(|f| f.status == FailedStatus::Resolved)
    };
    run_until(&[&host], "the retried record sent", resolved).await;
    let records = kafka.read(&missing, 1).await;
    assert_eq!(records[0].key(), Some(&b"order-7"[..]));
    assert_eq!(
        headers(&records[0])["message-id"],
        failed[1].message_id.to_string()
    );
}
