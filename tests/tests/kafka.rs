//! The Kafka transport against a real Kafka-protocol broker (tansu), on every store: two
//! hosts in one group consume a keyed topic of three partitions and each key's records
//! reach `sequence-a` (which asks for order and rejects a record that does not follow the
//! last one of its key) in offset order, through retries (which move the key into the
//! inbox queue of the topic's name, a retried record with its attempts counted), each
//! once; poison records go to the failed messages with the rule they break and to the
//! dead-letter topic, from the consumer's batch and from the inbox. The API shows the group's lag by partition; readiness follows the
//! brokers.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;
use wharf_host::store::FailedFilter;
use wharf_tests::http::{OPERATE, READ, get, send, serve_links};
use wharf_tests::kafka::{Kafka, Record, consume, kafka, run_until, supervisor};
use wharf_tests::{Backend, Host, conformance, wait_for};

conformance!(
    two_hosts_handle_each_record_once_in_key_order_through_retries,
    a_retried_record_keeps_its_attempts_in_the_inbox,
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

/// Outbox rows the relay has not sent.
const UNSENT: &str = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL";

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

/// A record that asks for a retry on its first attempt moves into the inbox with that
/// attempt counted: the inbox runs it as attempt 2 (it succeeds), not as a first attempt
/// again (which would fail once more).
async fn a_retried_record_keeps_its_attempts_in_the_inbox(backend: Backend) {
    let kafka = kafka().await;
    let topic = kafka.topic(1).await;
    let host = Host::start_with(backend, &["fixture-sequence-a"], |c| {
        consume(kafka, c, &topic, |_| {})
    })
    .await;
    let records: Vec<Record> = (1..=4)
        .map(|n| {
            let mut step = json!({"key": "k", "n": n});
            if n == 2 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            Record::keyed("test.seq", "k", &step)
        })
        .collect();
    kafka.produce(&topic, records).await;
    let expected = BTreeMap::from([("k".to_owned(), 4)]);
    run_until(&[&host], "the key at its last record", async || {
        last(&host).await == expected || !host.failed().await.is_empty()
    })
    .await;
    let failed: Vec<String> = host.failed().await.into_iter().map(|f| f.error).collect();
    assert_eq!(failed, Vec::<String>::new());
    assert_eq!(last(&host).await, expected);
    let errors = "SELECT COUNT(*) FROM attempt_errors WHERE plugin = 'sequence-a'";
    let first = "SELECT COUNT(*) FROM attempt_errors WHERE plugin = 'sequence-a' AND attempt = 1";
    assert_eq!(
        (host.count(errors).await, host.count(first).await),
        (1, 1),
        "one failed attempt, the first: the inbox ran the record as its second"
    );
    let moved: i64 = host
        .query_rows(format!(
            "SELECT COUNT(*) FROM received WHERE queue = '{topic}'"
        ))
        .await[0]
        .get(0);
    assert!(moved >= 1, "the retried record went through the inbox");
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
        "the good records handled, the poison failed and relayed to the dead-letter topic",
        async || {
            last(&host).await.get("k") == Some(&2)
                && host.failed().await.len() == poison.len()
                && host.count(UNSENT).await == 0
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
    // Each poison record in the dead-letter topic, once: the refused ones from the
    // consumer's batch, the rejected one from the inbox queue it was moved to.
    let dead = kafka.read(&format!("{topic}.dlq"), poison.len()).await;
    let mut from_the_inbox = 0;
    for record in &dead {
        let headers = record.headers().expect("a dead letter has headers");
        let header = |name: &str| {
            (headers.iter())
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("x-original-topic").as_deref(), Some(topic.as_str()));
        assert_eq!(header("x-original-partition").as_deref(), Some("0"));
        assert!(header("x-original-offset").is_some());
        assert!(header("x-original-message-id").is_some());
        assert!(header("x-wharf-error").is_some_and(|e| !e.is_empty()));
        assert_eq!(header("x-wharf-dead-letter-topic"), None);
        assert!(record.payload().is_some());
        if record.payload() == Some(&b"{not json"[..]) {
            from_the_inbox += 1;
            assert_eq!(record.key(), Some(&b"other"[..]));
        }
    }
    assert_eq!(from_the_inbox, 1, "the record rejected in the inbox");
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
}

/// `/api/queues` shows a consumed topic's lag, by partition, as the brokers count it for
/// the group (before and after the host commits); a topic is not purged; readiness and
/// the lag say so when the brokers go away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_the_lag_by_partition_and_readiness_follows_the_brokers() {
    let kafka = Kafka::own().await;
    let topic = kafka.topic(2).await;
    let host = Host::start_with(Backend::Sqlite, &["fixture-sequence-a"], |c| {
        consume(&kafka, c, &topic, |_| {})
    })
    .await;
    let records = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
        .map(|(key, n)| Record::keyed("test.seq", key, &json!({"key": key, "n": n})));
    kafka.produce(&topic, records).await;
    let supervisor = supervisor(&host);
    let base = serve_links(&host, None, Some(supervisor.view())).await;
    let row = async || {
        let (status, queues) = get(&base, "/api/queues", READ).await;
        assert_eq!(status, StatusCode::OK, "{queues}");
        let found = (queues.as_array().unwrap().iter())
            .find(|q| q["source"] == "kafka" && q["name"] == topic.as_str())
            .cloned();
        found.unwrap_or_else(|| panic!("the topic in {queues}"))
    };
    let before = row().await;
    assert_eq!(before["lag"], 5, "{before}");
    assert_eq!(before["message_count"], 5, "{before}");
    assert_eq!(before["dead_letter_topic"], format!("{topic}.dlq"));
    let partitions = before["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2, "{before}");
    assert!(partitions.iter().all(|p| p["committed"] == -1), "{before}");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { supervisor.run(shutdown).await });
    let expected = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 2)]);
    wait_for(
        "both keys handled and committed",
        Duration::from_secs(30),
        async || last(&host).await == expected && row().await["lag"] == 0,
    )
    .await;
    let after = row().await;
    let partitions = after["partitions"].as_array().unwrap();
    let high: i64 = partitions.iter().map(|p| p["high"].as_i64().unwrap()).sum();
    assert_eq!(high, 5, "{after}");
    for p in partitions {
        let empty = p["high"] == 0 && p["committed"] == -1;
        assert!(
            empty || p["committed"] == p["high"],
            "every record committed: {after}"
        );
    }
    let (status, one) = get(
        &base,
        &format!("/api/queues/{topic}/stats?source=kafka"),
        READ,
    )
    .await;
    assert_eq!((status, &one["lag"]), (StatusCode::OK, &json!(0)), "{one}");
    let (status, ready) = get(&base, "/api/health/ready", READ).await;
    assert_eq!(
        (status, &ready["checks"]["kafka"]),
        (StatusCode::OK, &json!("ok")),
        "{ready}"
    );
    // Hostile and unsupported: a source that is none of the three, a topic purge.
    let (status, answer) = get(&base, "/api/queues/x/stats?source=%1b%5B2J", READ).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(!answer.to_string().contains('\u{1b}'), "{answer}");
    let purge = format!("/api/queues/{topic}/purge?confirm={topic}&source=kafka");
    let (status, answer) = send(&base, Method::POST, &purge, Some(OPERATE), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("is a Kafka topic"), "{answer}");
    let (status, answer) = send(&base, Method::POST, &purge, Some(READ), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    // The brokers go away: readiness fails naming them, the lag says why it is missing.
    let brokers = kafka.brokers.clone();
    drop(kafka);
    wait_for("readiness to fail", Duration::from_secs(30), async || {
        get(&base, "/api/health/ready", READ).await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, ready) = get(&base, "/api/health/ready", READ).await;
    let why = ready["checks"]["kafka"].as_str().unwrap_or_default();
    assert!(
        why.contains(&brokers) && why.contains("kafka.brokers"),
        "{ready}"
    );
    let gone = row().await;
    assert!(
        gone["error"].as_str().is_some_and(|e| e.contains(&brokers)),
        "{gone}"
    );
    let _ = stop.send(true);
    running.abort();
}
