//! The Kafka transport against a real Kafka-protocol broker (tansu), on every store: two
//! hosts in one group consume a keyed topic of three partitions and each key's records
//! reach `sequence-a` (which asks for order and rejects a record that does not follow the
//! last one of its key) in offset order, through retries (which move the key into the
//! inbox queue of the topic's name), each once; poison records go to the failed messages
//! with the rule they break and to the dead-letter topic.

use std::collections::BTreeMap;

use rdkafka::message::{Headers, Message};
use serde_json::json;
use sqlx::Row;
use wharf_host::store::FailedFilter;
use wharf_tests::kafka::{Record, consume, kafka, run_until};
use wharf_tests::{Backend, Host, conformance};

conformance!(
    two_hosts_handle_each_record_once_in_key_order_through_retries,
    poison_records_go_to_the_failed_messages_and_the_dead_letter_topic
);

/// `keys` keys of `per_key` records each, interleaved; every tenth asks sequence-a for a
/// retry.
fn interleaved(keys: usize, per_key: u64) -> Vec<Record> {
    let mut records = Vec::new();
    for n in 1..=per_key {
        for k in 0..keys {
            let key = format!("order-{k}");
            let mut step = json!({"key": key, "n": n});
            if (n as usize * keys + k) % 10 == 3 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            records.push(Record::keyed("test.seq", &key, &step));
        }
    }
    records
}

async fn last(host: &Host) -> BTreeMap<String, u64> {
    wharf_tests::sequence::last(host, "sequence-a").await
}

async fn two_hosts_handle_each_record_once_in_key_order_through_retries(backend: Backend) {
    let kafka = kafka().await;
    let topic = kafka.topic(3).await;
    let host = Host::start_with(backend, &["fixture-sequence-a"], |c| {
        consume(kafka, c, &topic, |_| {})
    })
    .await;
    let other = host.second(&["fixture-sequence-a"]).await;
    kafka.produce(&topic, interleaved(12, 25)).await;
    let expected: BTreeMap<String, u64> = (0..12).map(|k| (format!("order-{k}"), 25)).collect();
    run_until(
        &[&host, &other],
        "every key at its last record",
        async || last(&host).await == expected || !host.failed().await.is_empty(),
    )
    .await;
    let failed: Vec<String> = host.failed().await.into_iter().map(|f| f.error).collect();
    assert_eq!(failed, Vec::<String>::new(), "nothing out of order");
    assert_eq!(last(&host).await, expected);
    let handled = host
        .count("SELECT COUNT(*) FROM processed WHERE plugin = 'sequence-a'")
        .await;
    assert_eq!(handled, 300, "each record handled once");
    let moved: i64 = host
        .query_rows(format!(
            "SELECT COUNT(*) FROM received WHERE queue = '{topic}'"
        ))
        .await[0]
        .get(0);
    assert!(
        moved >= 30,
        "the retried keys went through the inbox: {moved}"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
}

async fn poison_records_go_to_the_failed_messages_and_the_dead_letter_topic(backend: Backend) {
    let kafka = kafka().await;
    let topic = kafka.topic(1).await;
    let host = Host::start_with(backend, &["fixture-sequence-a"], |c| {
        // Under the broker's own limit (1 MB by default).
        c.inbox.max_payload_bytes = 64 << 10;
        consume(kafka, c, &topic, |t| t.require_key = true)
    })
    .await;
    let fine = |n: u64| Record::keyed("test.seq", "k", &json!({"key": "k", "n": n}));
    let mut no_key = fine(9);
    no_key.key = None;
    let mut binary_header = fine(9);
    binary_header
        .headers
        .push(("trace".into(), vec![0xff, 0xfe]));
    let mut oversize = fine(9);
    oversize.value = vec![b' '; host.config.inbox.max_payload_bytes + 1];
    let refused = [no_key, binary_header, oversize];
    // Rejected by the handler (an ordered plugin: in the inbox, where it holds its key).
    let mut not_json = Record::keyed("test.seq", "other", &json!({}));
    not_json.value = b"{not json".to_vec();
    let mut poison = refused.to_vec();
    poison.push(not_json);
    let mut records = vec![fine(1)];
    records.extend(poison.iter().cloned());
    records.push(fine(2));
    kafka.produce(&topic, records).await;
    run_until(
        &[&host],
        "the good records handled, the poison failed",
        async || {
            last(&host).await.get("k") == Some(&2) && host.failed().await.len() == poison.len()
        },
    )
    .await;
    let mut errors: Vec<String> = host.failed().await.into_iter().map(|f| f.error).collect();
    errors.sort();
    for words in [
        "has no key",
        "header \"trace\" is not UTF-8",
        "exceeds the limit",
        "payload of test.seq message",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(words)),
            "{words}: {errors:#?}"
        );
    }
    // An operator's retry puts the consumer's dead letters into the topic's inbox queue.
    let filter = FailedFilter {
        source: Some(format!("kafka:{topic}")),
        ..FailedFilter::default()
    };
    let retried = host.store.failed_retry(&filter, 100).await.unwrap();
    assert_eq!((retried.inbox, retried.broker), (refused.len() as u64, 0));
    let back: i64 = host
        .query_rows(format!(
            "SELECT COUNT(*) FROM inbox WHERE queue = '{topic}'"
        ))
        .await[0]
        .get(0);
    assert_eq!(back, refused.len() as i64);
    // Each refused record in the dead-letter topic, once.
    let dead = kafka.read(&format!("{topic}.dlq"), refused.len()).await;
    for record in &dead {
        let headers = record.headers().expect("a dead letter has headers");
        let header = |name: &str| {
            (headers.iter())
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("x-original-topic").as_deref(), Some(topic.as_str()));
        assert!(header("x-wharf-error").is_some_and(|e| !e.is_empty()));
        assert!(record.payload().is_some());
    }
}
