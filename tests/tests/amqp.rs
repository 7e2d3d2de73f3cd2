//! The AMQP transport against the real RabbitMQ (unique queue names per test), on every
//! store: ack after commit, a redelivery or duplicate of a committed message settled once
//! (also by two consumers at once), the outbox relay with confirms, the bridge into the
//! inbox (numbering ordering keys in delivery order), a message handled from a queue and
//! then enqueued into the inbox settled once, stale state reads resolved in the settle
//! rather than through a delay queue. The failure paths are in `amqp_failures.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use wharf_host::envelope::NewMessage;
use wharf_host::transport::amqp::topology::{BindingSpec, ExchangeSpec, ExchangeType};
use wharf_tests::broker::Broker;
use wharf_tests::{Backend, unique_name};

wharf_tests::conformance!(
    acks_after_commit_and_a_redelivered_message_runs_once,
    duplicates_delivered_to_two_consumers_at_once_are_settled_once,
    the_outbox_relay_publishes_with_confirms_and_marks_sent,
    the_bridge_moves_deliveries_into_the_inbox_once_each,
    a_message_handled_from_a_queue_then_enqueued_into_the_inbox_runs_its_effects_once,
    a_hot_counter_from_two_consumers_settles_in_place_not_through_delay_queues,
);

async fn acks_after_commit_and_a_redelivered_message_runs_once(backend: Backend) {
    let broker = Broker::start(backend, &["fixture-once"]).await;
    let ids: Vec<String> = (0..25).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &ids {
        broker.publish("test.once", Some(id), b"{}").await;
    }
    let report = broker
        .consume_until("25 handled", async |h| {
            h.count("SELECT COUNT(*) FROM processed").await == 25
        })
        .await;
    assert_eq!(report.messages, 25);
    assert_eq!(broker.depth(&broker.queue).await, 0, "everything acked");

    // The same messages again, as a publisher's duplicates, then a new one: the
    // duplicates are acked and nothing of theirs is written (their first delivery skips
    // the lookup before dispatch; the settle drops them); the queue is FIFO, so once the
    // new one is handled every duplicate before it was settled too.
    for id in &ids[..5] {
        broker.publish("test.once", Some(id), b"{}").await;
    }
    broker
        .publish("test.once", Some(&uuid::Uuid::now_v7().to_string()), b"{}")
        .await;
    let report = broker
        .consume_until("the new message handled", async |h| {
            h.count("SELECT COUNT(*) FROM processed").await == 26
        })
        .await;
    assert_eq!(report.messages, 6);
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let host = &broker.host;
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 26);
    assert_eq!(host.count("SELECT COUNT(*) FROM outbox").await, 26);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE version = 1")
            .await,
        26
    );
}

async fn duplicates_delivered_to_two_consumers_at_once_are_settled_once(backend: Backend) {
    let broker = Broker::start_with(backend, &["fixture-once"], |c| {
        c.amqp.consume[0].consumers = 2;
        c.amqp.consume[0].prefetch = 10;
    })
    .await;
    // Every message twice in a row: the broker hands the copies to different consumers,
    // which run the handler and settle them at the same time.
    let ids: Vec<String> = (0..200).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &ids {
        broker.publish("test.once", Some(id), b"{}").await;
        broker.publish("test.once", Some(id), b"{}").await;
    }
    let report = broker
        .supervise_until("200 handled and the queue empty", async |b| {
            b.host.count("SELECT COUNT(*) FROM processed").await == 200
                && b.depth(&b.queue).await == 0
        })
        .await;
    assert_eq!(report.consumed.messages, 400, "{report:?}");
    assert_eq!(report.consumed.settled.duplicates, 200, "{report:?}");
    let host = &broker.host;
    assert_eq!(host.count("SELECT COUNT(*) FROM outbox").await, 200);
    assert_eq!(host.count("SELECT COUNT(*) FROM plugin_state").await, 200);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE version = 1")
            .await,
        200
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
}

async fn the_outbox_relay_publishes_with_confirms_and_marks_sent(backend: Backend) {
    // fixture-once publishes {"id": <message id>} to the `audit` exchange, key once.done.
    let audit = unique_name("audit");
    let broker = Broker::start_with(backend, &["fixture-once"], |c| {
        c.amqp.relay = Some(true);
        c.amqp.exchanges.push(ExchangeSpec {
            name: "audit".into(),
            kind: ExchangeType::Topic,
            durable: true,
        });
        let mut queue = c.amqp.queues[0].clone();
        queue.name = audit.clone();
        queue.bindings = vec![BindingSpec {
            exchange: "audit".into(),
            routing_key: "once.#".into(),
            headers: Default::default(),
        }];
        c.amqp.queues.push(queue);
    })
    .await;
    let ids: Vec<String> = (0..30).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &ids {
        broker.publish("test.once", Some(id), b"{}").await;
    }
    broker
        .supervise_until("30 handled and relayed", async |b| {
            b.host
                .count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
                .await
                == 30
        })
        .await;
    let host = &broker.host;
    assert_eq!(host.count("SELECT COUNT(*) FROM outbox").await, 30);
    let outbox: HashSet<String> = host
        .query_rows(format!("SELECT {} FROM outbox", host.uuid_text("id")))
        .await
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    // Other tests' relays publish to `audit` too: look for ours among what arrived.
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !outbox.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "relayed messages missing from {audit}"
        );
        let Some(delivery) = broker
            .channel
            .basic_get(audit.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let properties = &delivery.delivery.properties;
        let id = properties
            .message_id()
            .as_ref()
            .expect("message_id kept")
            .to_string();
        if outbox.contains(&id) {
            assert_eq!(properties.kind().as_ref().unwrap().as_str(), "once.done");
            assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
            let body: serde_json::Value = serde_json::from_slice(&delivery.delivery.data).unwrap();
            assert!(ids.contains(&body["id"].as_str().unwrap().to_owned()));
            assert!(seen.insert(id), "each outbox message relayed once");
        }
    }
}

async fn the_bridge_moves_deliveries_into_the_inbox_once_each(backend: Backend) {
    let broker = Broker::start_with(backend, &["fixture-once"], |c| {
        c.amqp.consume[0].to_inbox = Some("bridged".into());
        c.inbox.queues = vec!["bridged".into()];
    })
    .await;
    let ids: Vec<String> = (0..20).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    // The first ten carry an ordering key, alternating between two.
    let key_of = |i: usize| (i < 10).then(|| ["order-a", "order-b"][i % 2]);
    let keyed = |i: usize, id: &str| {
        let mut properties = BasicProperties::default()
            .with_type("test.once".into())
            .with_message_id(id.into());
        if let Some(key) = key_of(i) {
            let mut headers = FieldTable::default();
            headers.insert("partition_key".into(), AMQPValue::LongString(key.into()));
            properties = properties.with_headers(headers);
        }
        properties
    };
    for (i, id) in ids.iter().enumerate() {
        broker.publish_with(keyed(i, id), b"{}").await;
    }
    // Five of them again, as after a lost ack; one without message_id; one whose key is
    // over the limit.
    for (i, id) in ids[..5].iter().enumerate() {
        broker.publish_with(keyed(i, id), b"{}").await;
    }
    broker.publish("test.once", None, b"{}").await;
    let mut headers = FieldTable::default();
    headers.insert(
        "partition_key".into(),
        AMQPValue::LongString("k".repeat(300).into()),
    );
    let oversize = BasicProperties::default()
        .with_type("test.once".into())
        .with_message_id(uuid::Uuid::now_v7().to_string().into())
        .with_headers(headers);
    broker.publish_with(oversize, b"{}").await;
    let report = broker
        .supervise_until("everything bridged and acked", async |b| {
            b.host.count("SELECT COUNT(*) FROM inbox").await == 20
                && b.host.count("SELECT COUNT(*) FROM failed_messages").await == 2
                && b.depth(&b.queue).await == 0
        })
        .await;
    assert_eq!(report.consumed.messages, 27, "{report:?}");
    assert_eq!(report.consumed.settled.duplicates, 5, "{report:?}");
    assert_eq!(report.consumed.settled.dead, 2, "{report:?}");
    let refused: Vec<String> = broker
        .host
        .rows("SELECT error FROM failed_messages")
        .await
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    assert!(
        refused
            .iter()
            .any(|e| e.contains("ordering key") && e.contains("over the limit of 255 bytes")),
        "{refused:?}"
    );
    // Numbered per key in delivery order; the repeated ones took no number.
    let numbered: BTreeMap<String, (String, i64)> = broker
        .host
        .query_rows(format!(
            "SELECT {}, ordering_key, seq FROM inbox WHERE ordering_key IS NOT NULL",
            broker.host.uuid_text("id")
        ))
        .await
        .iter()
        .map(|r| {
            let (id, key, seq) = (
                sqlx::Row::get(r, 0),
                sqlx::Row::get(r, 1),
                sqlx::Row::get(r, 2),
            );
            (id, (key, seq))
        })
        .collect();
    let expected: BTreeMap<String, (String, i64)> = (0..10)
        .map(|i| {
            (
                ids[i].clone(),
                (key_of(i).unwrap().to_owned(), i as i64 / 2 + 1),
            )
        })
        .collect();
    assert_eq!(numbered, expected);
    let host = &broker.host;
    assert_eq!(
        host.count("SELECT COUNT(*) FROM processed").await,
        0,
        "the bridge handles nothing itself"
    );
    let bridged: HashSet<String> = host
        .query_rows(format!(
            "SELECT {} FROM inbox WHERE queue = 'bridged' AND kind = 'test.once'",
            host.uuid_text("id")
        ))
        .await
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    assert_eq!(bridged, ids.iter().cloned().collect::<HashSet<_>>());
    // The inbox worker takes it from there.
    let drained = host.drain().await;
    assert_eq!(drained.settled.handled, 20);
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 20);
}

/// The inbox has no dedup row of a message handled from a queue, and a claim looks up the
/// ledger only for messages put back: the settle meets the ledger's key, writes nothing
/// and marks the message seen; the next claim looks it up, and nothing runs twice.
async fn a_message_handled_from_a_queue_then_enqueued_into_the_inbox_runs_its_effects_once(
    backend: Backend,
) {
    let broker = Broker::start(backend, &["fixture-counter"]).await;
    let id = uuid::Uuid::now_v7();
    let body = br#"{"key": "k", "publish": true}"#;
    broker
        .publish("test.count", Some(&id.to_string()), body)
        .await;
    broker
        .consume_until("handled from the queue", async |h| {
            h.count("SELECT COUNT(*) FROM processed").await == 1
        })
        .await;
    let host = &broker.host;
    let mut message = NewMessage::new("test", "test.count", body.to_vec());
    message.id = id;
    let fresh = NewMessage::new("test", "test.count", br#"{"key": "j"}"#.to_vec());
    assert_eq!(
        host.store.enqueue(&[message, fresh]).await.unwrap(),
        2,
        "the inbox has no dedup row of either"
    );

    // Bounded: were the batch not marked seen, it would come back for ever.
    let drained = tokio::time::timeout(Duration::from_secs(30), host.drain())
        .await
        .expect("the batch that met the ledger's key was looked up at its next claim");
    assert_eq!(drained.settled.handled, 1, "only the new one: {drained:?}");
    assert!(
        drained.settled.fenced >= 1,
        "the first settle wrote nothing: {drained:?}"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 2);
    assert_eq!(host.count("SELECT COUNT(*) FROM outbox").await, 1);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE version = 1")
            .await,
        2,
        "count:k and count:j, each written once"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM plugin_state").await, 2);
}

async fn a_hot_counter_from_two_consumers_settles_in_place_not_through_delay_queues(
    backend: Backend,
) {
    let broker = Broker::start_with(backend, &["fixture-counter"], |c| {
        c.amqp.consume[0].consumers = 2;
        c.amqp.batch_size = 50;
    })
    .await;
    for _ in 0..300 {
        let id = uuid::Uuid::now_v7().to_string();
        broker
            .publish("test.count", Some(&id), br#"{"key": "hot"}"#)
            .await;
    }
    let report = broker
        .supervise_until("300 handled and the queue empty", async |b| {
            b.host.count("SELECT COUNT(*) FROM processed").await == 300
                && b.depth(&b.queue).await == 0
        })
        .await;
    let value = async |key: &str| -> u64 {
        let (value, _) = broker
            .host
            .store
            .state_get("counter", key)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&value).unwrap()
    };
    assert_eq!(value("count:hot").await, 300);
    assert_eq!(value("odd:hot").await, 150);
    let runs: wharf_host::store::PluginRuns =
        report.consumed.settled.plugins.values().copied().sum();
    eprintln!(
        "{backend:?}: {runs:?}, {} retried through a delay queue",
        report.consumed.settled.retried
    );
    assert_eq!(runs.handled, 300);
    // Each consumer's first batch runs its first 8 messages before the plugin is known
    // to contend (16 runs ahead at most); everything after runs once, in the settle.
    assert!(
        runs.runs * 5 <= runs.handled * 6,
        "a hot key costs {runs:?} on AMQP (at most 1.2 runs per message)"
    );
    // Republished, every stale read of a batch would go through a delay queue (49 of
    // each 50). What may: on MariaDB, where state keys are locked in the order of their
    // hashed slots, the two consumers' first settles can each hold a key the other's
    // runs newly touch (their first looks wrote different keys), and the one refused
    // sends the rest of its batch round once (49 messages).
    assert!(
        report.consumed.settled.retried <= 2 * 49,
        "stale reads are resolved in the settle, not republished: {} went through a delay queue",
        report.consumed.settled.retried
    );
    assert_eq!(
        broker
            .host
            .count("SELECT COUNT(*) FROM failed_messages")
            .await,
        0
    );
}
