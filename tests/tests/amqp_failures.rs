//! The AMQP transport's failure paths against the real RabbitMQ, on every store: retries
//! through growing delay queues, the dead-letter queue after the last attempt, an
//! operator's retry republished where the message first went, and messages that cannot be
//! handled (no message_id, a body a JSON handler cannot read or over the payload limit, a
//! kind or headers that break the naming rules) moved to the failed messages and the DLQ;
//! an outbox message to an exchange the broker does not have moved to the failed messages
//! while the relay goes on with the others (retried once the exchange exists); a 4 MiB
//! reject reason cut, and the dead-letter copy in the DLQ with it.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use wharf_host::store::{FailedFilter, Retried};
use wharf_tests::Backend;
use wharf_tests::broker::Broker;

wharf_tests::conformance!(
    failed_retry_republishes_to_the_exchange_and_routing_key_it_came_from,
    retries_wait_in_growing_delay_queues_then_dead_letter,
    unreadable_messages_go_to_the_failed_messages_and_the_dlq,
    an_outbox_message_to_a_missing_exchange_fails_alone_and_is_retried_once_it_exists,
    a_huge_reject_reason_is_cut_and_the_dead_letter_copy_arrives,
);

async fn failed_retry_republishes_to_the_exchange_and_routing_key_it_came_from(backend: Backend) {
    let broker = Broker::start(backend, &["fixture-once"]).await;
    let id = uuid::Uuid::now_v7();
    broker
        .publish("test.noop", Some(&id.to_string()), b"{}")
        .await;
    broker
        .consume_until("no handler", async |h| {
            h.count("SELECT COUNT(*) FROM failed_messages").await == 1
        })
        .await;
    // A host with a plugin for test.noop, on the same database and broker.
    let second = broker.second_host(&["fixture-noop"]).await;
    let failed = second.failed().await;
    assert_eq!(
        second
            .store
            .failed_retry(&FailedFilter::id(failed[0].id), 1)
            .await
            .unwrap(),
        Retried {
            inbox: 0,
            broker: 1
        }
    );
    assert_eq!(second.count("SELECT COUNT(*) FROM inbox").await, 0);
    let report = broker
        .supervise_until_on(&second, "handled after the retry", async |_| {
            second.count("SELECT COUNT(*) FROM processed").await == 1
        })
        .await;
    assert_eq!(report.relayed.sent, 1, "{report:?}");
    assert_eq!(report.consumed.messages, 1, "{report:?}");
    let handled: Vec<String> = second
        .query_rows(format!(
            "SELECT {} || ' ' || plugin FROM processed",
            second.uuid_text("message_id")
        ))
        .await
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    assert_eq!(
        handled,
        [format!("{id} noop")],
        "the same message id came back"
    );
    let after = second.failed().await;
    assert_eq!(after[0].status.as_str(), "resolved");
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

async fn retries_wait_in_growing_delay_queues_then_dead_letter(backend: Backend) {
    // flaky retries after 10, 20, 40, 80 ms and gives up after the 5th attempt.
    let broker = Broker::start(backend, &["fixture-flaky"]).await;
    let ok = uuid::Uuid::now_v7();
    let hopeless = uuid::Uuid::now_v7();
    broker
        .publish("test.flaky", Some(&ok.to_string()), br#"{"succeed_on": 3}"#)
        .await;
    broker
        .publish(
            "test.flaky",
            Some(&hopeless.to_string()),
            br#"{"succeed_on": 9}"#,
        )
        .await;
    let report = broker
        .consume_until("one handled, one dead", async |h| {
            h.count("SELECT COUNT(*) FROM processed").await == 1
                && h.count("SELECT COUNT(*) FROM failed_messages").await == 1
        })
        .await;
    assert_eq!(report.settled.retried, 2 + 4);
    assert_eq!(report.settled.dead, 1);
    let host = &broker.host;
    let delays: Vec<i64> = host
        .rows("SELECT delay_ms FROM attempt_errors WHERE delay_ms IS NOT NULL ORDER BY delay_ms")
        .await
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    assert_eq!(delays, [10, 10, 20, 20, 40, 80], "delays grow per attempt");
    for delay in [10, 20, 40, 80] {
        let queue = format!("{}.retry.{delay}", broker.queue);
        assert_eq!(
            broker.depth(&queue).await,
            0,
            "{queue} exists and is drained"
        );
    }
    assert_eq!(broker.depth(&format!("{}.dlq", broker.queue)).await, 1);
    let failed = host
        .rows("SELECT attempts, source, source_exchange, source_routing_key, error FROM failed_messages")
        .await;
    let get = |i| sqlx::Row::get::<String, _>(&failed[0], i);
    assert_eq!(sqlx::Row::get::<i64, _>(&failed[0], 0), 5);
    assert_eq!(get(1), format!("amqp:{}", broker.queue));
    assert_eq!(get(2), broker.exchange);
    assert_eq!(get(3), "orders");
    assert!(get(4).contains("not yet: attempt 5"), "{}", get(4));
    // The one that succeeded published its result once, on its third attempt.
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'results'")
            .await,
        1
    );
}

async fn unreadable_messages_go_to_the_failed_messages_and_the_dlq(backend: Backend) {
    let broker = Broker::start_with(backend, &["fixture-once"], |c| {
        c.inbox.max_payload_bytes = 1024;
    })
    .await;
    broker.publish("test.once", None, b"{}").await;
    broker
        .publish("test.once", Some("order-1001"), b"not json")
        .await;
    let oversized = format!("{{\"pad\": \"{}\"}}", "x".repeat(2048));
    broker
        .publish("test.once", Some("order-1002"), oversized.as_bytes())
        .await;
    broker
        .publish("order created", Some("order-1003"), b"{}")
        .await;
    let mut many = FieldTable::default();
    for i in 0..150 {
        many.insert(format!("h{i}").into(), AMQPValue::LongString("v".into()));
    }
    let properties = BasicProperties::default()
        .with_type("test.once".into())
        .with_message_id("order-1004".into())
        .with_headers(many);
    broker.publish_with(properties, b"{}").await;
    // A binary header is not text: the handler does not see it, and the message is handled.
    let mut binary = FieldTable::default();
    binary.insert(
        "trace-bin".into(),
        AMQPValue::LongString(b"\x00\x01\xff"[..].into()),
    );
    binary.insert("tenant".into(), AMQPValue::LongString("acme".into()));
    let properties = BasicProperties::default()
        .with_type("test.once".into())
        .with_message_id("order-1005".into())
        .with_headers(binary);
    broker.publish_with(properties, b"{}").await;
    broker
        .consume_until("five failed, one handled", async |h| {
            h.count("SELECT COUNT(*) FROM failed_messages").await == 5
                && h.count("SELECT COUNT(*) FROM processed").await == 1
        })
        .await;
    let errors: Vec<String> = broker
        .host
        .rows("SELECT error FROM failed_messages ORDER BY error")
        .await
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    let has = |what: &dyn Fn(&str) -> bool| errors.iter().any(|e| what(e));
    assert!(has(&|e| e.starts_with("missing message_id")), "{errors:?}");
    assert!(
        has(&|e| e.contains("expected") || e.contains("JSON")),
        "{errors:?}"
    );
    assert!(
        has(&|e| e.starts_with("payload of")
            && e.contains("exceeds the limit of 1024 bytes")
            && e.contains("inbox.max_payload_bytes")),
        "{errors:?}"
    );
    assert!(
        has(&|e| e.starts_with("message kind \"order created\" contains ' '")),
        "{errors:?}"
    );
    assert!(
        has(&|e| e.starts_with("150 headers, over the limit of 100")),
        "{errors:?}"
    );
    assert_eq!(broker.depth(&format!("{}.dlq", broker.queue)).await, 5);
    assert_eq!(broker.depth(&broker.queue).await, 0);
}

async fn an_outbox_message_to_a_missing_exchange_fails_alone_and_is_retried_once_it_exists(
    backend: Backend,
) {
    let broker = Broker::start_with(backend, &[], |c| c.amqp.relay = Some(true)).await;
    let host = &broker.host;
    let missing = wharf_tests::unique_name("missing-exchange");
    // A queue of the test's (the host consumes its own): key `elsewhere` of the test's
    // exchange, and of the missing one once it exists.
    let elsewhere = wharf_tests::unique_name("elsewhere");
    let bind = async |exchange: &str| {
        broker
            .channel
            .queue_bind(
                elsewhere.as_str().into(),
                exchange.into(),
                "elsewhere".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    };
    broker
        .channel
        .queue_declare(
            elsewhere.as_str().into(),
            lapin::options::QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    bind(&broker.exchange).await;
    let (lost, behind) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let headers = Default::default();
    for (id, exchange) in [(lost, missing.as_str()), (behind, broker.exchange.as_str())] {
        host.store
            .outbox_add(
                id,
                wharf_host::store::Route::Exchange {
                    exchange,
                    routing_key: "elsewhere",
                },
                "test.noop",
                &headers,
                b"{}",
            )
            .await
            .unwrap();
    }
    broker
        .supervise_until("both settled", async |b| {
            b.host
                .count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
                .await
                == 2
        })
        .await;
    assert_eq!(
        broker.depth(&elsewhere).await,
        1,
        "the one behind it was relayed"
    );
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let f = &failed[0];
    assert_eq!((f.message_id, f.source.as_str()), (lost, "outbox"));
    assert!(
        f.error
            .contains(&format!("the broker has no exchange \"{missing}\""))
            && f.error.contains("NOT_FOUND")
            && f.error.contains("declare it in [[amqp.exchanges]]"),
        "{}",
        f.error
    );
    let (_, history) = host.store.failed_get(f.id).await.unwrap().unwrap();
    assert_eq!(history.len(), 1, "the failed publish is its attempt");

    // Once the exchange exists, a retry relays it and resolves the failed message.
    broker
        .channel
        .exchange_declare(
            missing.as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    bind(&missing).await;
    let retried = host
        .store
        .failed_retry(&FailedFilter::id(f.id), 1)
        .await
        .unwrap();
    assert_eq!(
        retried,
        Retried {
            inbox: 0,
            broker: 1
        }
    );
    broker
        .supervise_until("relayed and resolved", async |b| {
            b.host
                .count("SELECT COUNT(*) FROM failed_messages WHERE status = 'resolved'")
                .await
                == 1
        })
        .await;
    assert_eq!(broker.depth(&elsewhere).await, 2);
}

async fn a_huge_reject_reason_is_cut_and_the_dead_letter_copy_arrives(backend: Backend) {
    let broker = Broker::start(backend, &["fixture-hostile"]).await;
    let body = serde_json::json!({ "bytes": 4 << 20 }).to_string();
    let properties = BasicProperties::default()
        .with_message_id(uuid::Uuid::now_v7().to_string().into())
        .with_type("hostile.huge-reason".into());
    broker.publish_with(properties, body.as_bytes()).await;
    let dlq = format!("{}.dlq", broker.queue);
    broker
        .supervise_until("the dead-letter copy in the DLQ", async |_| {
            wharf_tests::broker::queue_depth(&dlq).await == Some(1)
        })
        .await;
    let failed = broker.host.failed().await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.len() <= 4096 + "rejected: ".len()
            && failed[0]
                .error
                .ends_with(&format!(" of {} bytes]", 4 << 20)),
        "{} bytes",
        failed[0].error.len()
    );
}
