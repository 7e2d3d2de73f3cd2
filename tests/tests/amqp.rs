//! The AMQP transport against the real RabbitMQ (unique queue names per test), on both
//! stores: ack after commit, a redelivery of a committed message handled once, retries
//! through growing delay queues, the dead-letter queue after the last attempt, a message
//! without message_id, a body a JSON handler cannot read or over the payload limit, a
//! kind or headers that break the naming rules (binary headers are skipped), stale
//! state reads resolved in the settle rather than through a delay queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio::sync::watch;
use wharf_host::store::{FailedFilter, Retried};
use wharf_host::transport::amqp::consumer::{ConsumeReport, Consumer};
use wharf_host::transport::amqp::supervisor::{SuperviseReport, Supervisor};
use wharf_host::transport::amqp::topology::{self, BindingSpec, ExchangeSpec, ExchangeType};
use wharf_tests::{Backend, Host, confirming_channel, route_orders, unique_name};

/// A host consuming a fresh queue bound to a fresh direct exchange with key `orders`.
struct Broker {
    host: Arc<Host>,
    connection: lapin::Connection,
    channel: Channel,
    exchange: String,
    queue: String,
}

impl Broker {
    async fn start(backend: Backend, plugins: &[&str]) -> Broker {
        Self::start_with(backend, plugins, |_| {}).await
    }

    /// Like [`Broker::start`], letting the test adjust the config.
    async fn start_with(
        backend: Backend,
        plugins: &[&str],
        adjust: impl FnOnce(&mut wharf_host::config::Config),
    ) -> Broker {
        let exchange = unique_name("ex");
        let queue = unique_name("q");
        let host = Host::start_with(backend, plugins, |c| {
            c.amqp.batch_size = 10;
            route_orders(c, &exchange, &queue);
            adjust(c);
        })
        .await;
        let (connection, channel) = confirming_channel().await;
        let amqp = &host.config.amqp;
        topology::declare(&channel, &amqp.exchanges, &amqp.queues)
            .await
            .unwrap();
        // Declaring twice is a no-op.
        topology::declare(&channel, &amqp.exchanges, &amqp.queues)
            .await
            .unwrap();
        Broker {
            host: Arc::new(host),
            connection,
            channel,
            exchange,
            queue,
        }
    }

    /// Publish to the exchange with routing key `orders`, confirmed.
    async fn publish(&self, kind: &str, id: Option<&str>, body: &[u8]) {
        let mut properties = BasicProperties::default().with_type(kind.into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        self.publish_with(properties, body).await;
    }

    /// Publish with `properties` to the exchange with routing key `orders`, confirmed.
    async fn publish_with(&self, properties: BasicProperties, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                "orders".into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the broker took the message");
    }

    /// Run a consumer until `done` holds (panics after 20 s), then stop it.
    async fn consume_until(&self, what: &str, done: impl AsyncFn(&Host) -> bool) -> ConsumeReport {
        let (stop, stopped) = watch::channel(false);
        let consumer = Consumer::new(
            self.host.config.amqp.consume[0].clone(),
            self.host.config.amqp.clone(),
            self.host.store.clone(),
            self.host.dispatcher.clone(),
        );
        let running = async {
            let mut report = ConsumeReport::default();
            consumer
                .run(&self.connection, stopped, &mut report)
                .await
                .map(|()| report)
        };
        let watching = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(&self.host).await {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.send(true).unwrap();
        };
        let (report, ()) = tokio::join!(running, watching);
        report.expect("the consumer ran without errors")
    }

    /// Run the host's consumers (and relay) as `wharf run` does, with the supervisor,
    /// until `done` holds (panics after 20 s), then stop them.
    async fn supervise_until(
        &self,
        what: &str,
        done: impl AsyncFn(&Broker) -> bool,
    ) -> SuperviseReport {
        self.supervise_until_on(&self.host, what, done).await
    }

    /// [`Broker::supervise_until`] with the consumers of `host`.
    async fn supervise_until_on(
        &self,
        host: &Host,
        what: &str,
        done: impl AsyncFn(&Broker) -> bool,
    ) -> SuperviseReport {
        let (stop, stopped) = watch::channel(false);
        let supervisor = Supervisor::new(
            host.config.amqp.clone(),
            Duration::from_millis(host.config.inbox.poll_interval_ms),
            host.store.clone(),
            host.dispatcher.clone(),
        );
        let running = supervisor.run(stopped);
        let watching = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(self).await {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.send(true).unwrap();
        };
        let (report, ()) = tokio::join!(running, watching);
        report.expect("the consumers ran without errors")
    }

    /// Another host on the same database and broker topology, with other plugins.
    async fn second_host(&self, plugins: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut config = self.host.config.clone();
        config.plugins.dir = dir.path().join("plugins");
        config.plugins.cache_dir = dir.path().join("cache");
        Host::start_on(config, plugins, dir).await
    }

    /// Ready messages in a queue, asked on a connection of its own: the consumers share
    /// the broker's, and lapin may take all of its channels down with a consumer it is
    /// cancelling while its channel closes.
    async fn depth(&self, queue: &str) -> u32 {
        let (_connection, channel) = confirming_channel().await;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
            .message_count()
    }
}

async fn count(host: &Host, sql: &'static str) -> i64 {
    host.count(sql).await
}

wharf_tests::conformance!(
    acks_after_commit_and_a_redelivered_message_runs_once,
    duplicates_delivered_to_two_consumers_at_once_are_settled_once,
    the_outbox_relay_publishes_with_confirms_and_marks_sent,
    failed_retry_republishes_to_the_exchange_and_routing_key_it_came_from,
    the_bridge_moves_deliveries_into_the_inbox_once_each,
    retries_wait_in_growing_delay_queues_then_dead_letter,
    unreadable_messages_go_to_the_failed_messages_and_the_dlq,
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
            count(h, "SELECT COUNT(*) FROM processed").await == 25
        })
        .await;
    assert_eq!(report.acked, 25);
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
            count(h, "SELECT COUNT(*) FROM processed").await == 26
        })
        .await;
    assert_eq!(report.acked, 6);
    assert_eq!(broker.depth(&broker.queue).await, 0);
    let host = &broker.host;
    assert_eq!(count(host, "SELECT COUNT(*) FROM processed").await, 26);
    assert_eq!(count(host, "SELECT COUNT(*) FROM outbox").await, 26);
    assert_eq!(
        count(host, "SELECT COUNT(*) FROM plugin_state WHERE version = 1").await,
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
            count(&b.host, "SELECT COUNT(*) FROM processed").await == 200
                && b.depth(&b.queue).await == 0
        })
        .await;
    assert_eq!(report.consumed.acked, 400, "{report:?}");
    assert_eq!(report.consumed.duplicates, 200, "{report:?}");
    let host = &broker.host;
    assert_eq!(count(host, "SELECT COUNT(*) FROM outbox").await, 200);
    assert_eq!(count(host, "SELECT COUNT(*) FROM plugin_state").await, 200);
    assert_eq!(
        count(host, "SELECT COUNT(*) FROM plugin_state WHERE version = 1").await,
        200
    );
    assert_eq!(count(host, "SELECT COUNT(*) FROM failed_messages").await, 0);
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
            count(
                &b.host,
                "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL",
            )
            .await
                == 30
        })
        .await;
    let host = &broker.host;
    assert_eq!(count(host, "SELECT COUNT(*) FROM outbox").await, 30);
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

async fn failed_retry_republishes_to_the_exchange_and_routing_key_it_came_from(backend: Backend) {
    let broker = Broker::start(backend, &["fixture-once"]).await;
    let id = uuid::Uuid::now_v7();
    broker
        .publish("test.noop", Some(&id.to_string()), b"{}")
        .await;
    broker
        .consume_until("no handler", async |h| {
            count(h, "SELECT COUNT(*) FROM failed_messages").await == 1
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
    assert_eq!(count(&second, "SELECT COUNT(*) FROM inbox").await, 0);
    let report = broker
        .supervise_until_on(&second, "handled after the retry", async |_| {
            count(&second, "SELECT COUNT(*) FROM processed").await == 1
        })
        .await;
    assert_eq!(report.relayed.sent, 1, "{report:?}");
    assert_eq!(report.consumed.acked, 1, "{report:?}");
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

async fn the_bridge_moves_deliveries_into_the_inbox_once_each(backend: Backend) {
    let broker = Broker::start_with(backend, &["fixture-once"], |c| {
        c.amqp.consume[0].to_inbox = Some("bridged".into());
        c.inbox.queues = vec!["bridged".into()];
    })
    .await;
    let ids: Vec<String> = (0..20).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for id in &ids {
        broker.publish("test.once", Some(id), b"{}").await;
    }
    // Five of them again, as after a lost ack; and one without message_id.
    for id in &ids[..5] {
        broker.publish("test.once", Some(id), b"{}").await;
    }
    broker.publish("test.once", None, b"{}").await;
    let report = broker
        .supervise_until("everything bridged and acked", async |b| {
            count(&b.host, "SELECT COUNT(*) FROM inbox").await == 20
                && count(&b.host, "SELECT COUNT(*) FROM failed_messages").await == 1
                && b.depth(&b.queue).await == 0
        })
        .await;
    assert_eq!(report.consumed.acked, 26, "{report:?}");
    assert_eq!(report.consumed.duplicates, 5, "{report:?}");
    assert_eq!(report.consumed.dead, 1, "{report:?}");
    let host = &broker.host;
    assert_eq!(
        count(host, "SELECT COUNT(*) FROM processed").await,
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
    assert_eq!(count(host, "SELECT COUNT(*) FROM processed").await, 20);
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
            count(h, "SELECT COUNT(*) FROM processed").await == 1
                && count(h, "SELECT COUNT(*) FROM failed_messages").await == 1
        })
        .await;
    assert_eq!(report.retried, 2 + 4);
    assert_eq!(report.dead, 1);
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
        count(host, "SELECT COUNT(*) FROM inbox WHERE queue = 'results'").await,
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
            count(h, "SELECT COUNT(*) FROM failed_messages").await == 5
                && count(h, "SELECT COUNT(*) FROM processed").await == 1
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

async fn a_hot_counter_from_two_consumers_settles_in_place_not_through_delay_queues(
    backend: Backend,
) {
    let broker = Broker::start_with(backend, &["fixture-counter"], |c| {
        c.amqp.consume[0].consumers = 2;
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
            count(&b.host, "SELECT COUNT(*) FROM processed").await == 300
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
    let runs: wharf_host::store::PluginRuns = report.consumed.plugins.values().copied().sum();
    eprintln!(
        "{backend:?}: {runs:?}, {} retried through a delay queue",
        report.consumed.retried
    );
    assert_eq!(runs.handled, 300);
    assert!(
        runs.runs < 2 * runs.handled,
        "a hot key costs {runs:?} on AMQP"
    );
    assert!(
        report.consumed.retried <= 30,
        "stale reads are resolved in the settle, not republished: {} went through a delay queue",
        report.consumed.retried
    );
    assert_eq!(
        count(&broker.host, "SELECT COUNT(*) FROM failed_messages").await,
        0
    );
}
