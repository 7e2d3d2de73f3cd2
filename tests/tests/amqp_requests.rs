//! Requests over AMQP against the real RabbitMQ, as clients of RabbitMQ's RPC tutorial
//! make them (`reply_to` + `correlation_id`), answered by the `quote` fixture
//! (`fixture-answer`) on every store: answers on a named reply queue and by Direct Reply-To
//! (a request with only a correlation id), a rejection's reason answered at once, handled
//! without an answer, an answer of a failed attempt never sent, a duplicate request
//! answered once. On PostgreSQL: a request whose `expiration` passes while it waits out a
//! retry is not handled; a host that committed an answer and stopped before its relay sent
//! it leaves it for another host's relay, which sends it once; an answer whose reply queue
//! is gone is counted unroutable. Requests to an exchange from the API and the CLI are in
//! `exchange_requests.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;
use wharf_host::retry::RetryPolicy;
use wharf_tests::broker::Broker;
use wharf_tests::{Backend, conformance, wait_for};

conformance!(an_rpc_client_gets_its_answers_on_a_reply_queue_and_by_direct_reply_to);

/// One answer as an RPC client sees it.
#[derive(Debug, Clone)]
struct Answer {
    correlation_id: String,
    message_id: String,
    kind: String,
    status: String,
    body: Value,
}

/// The answers a consumer of a reply queue received, in order.
#[derive(Clone, Default)]
struct Answers(Arc<Mutex<Vec<Answer>>>);

impl Answers {
    /// Collect what `channel` delivers from `queue` (no acks, as Direct Reply-To needs).
    async fn collect(channel: &Channel, queue: &str) -> Self {
        let answers = Self::default();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let collected = answers.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let p = &delivery.properties;
                let text = |v: &Option<lapin::types::ShortString>| {
                    v.as_ref()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default()
                };
                let status = (p.headers().as_ref())
                    .and_then(|h| match h.inner().get("reply-status") {
                        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                        _ => None,
                    })
                    .unwrap_or_default();
                collected.0.lock().unwrap().push(Answer {
                    correlation_id: text(p.correlation_id()),
                    message_id: text(p.message_id()),
                    kind: text(p.kind()),
                    status,
                    body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
                });
            }
        });
        answers
    }

    fn all(&self) -> Vec<Answer> {
        self.0.lock().unwrap().clone()
    }

    /// The answers with `correlation_id`.
    fn to(&self, correlation_id: &str) -> Vec<Answer> {
        let all = self.all();
        all.into_iter()
            .filter(|a| a.correlation_id == correlation_id)
            .collect()
    }
}

/// A request of `kind` with `body`, answered at `reply_to` with `correlation_id`; with
/// `message_id` when given (RabbitMQ's tutorial sets none).
fn request(
    kind: &str,
    reply_to: &str,
    correlation_id: &str,
    message_id: Option<&str>,
) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_type(kind.into())
        .with_reply_to(reply_to.into())
        .with_correlation_id(correlation_id.into());
    match message_id {
        Some(id) => properties.with_message_id(id.into()),
        None => properties,
    }
}

/// An exclusive, server-named reply queue on `channel`, as the tutorial's client declares.
async fn reply_queue(channel: &Channel) -> String {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue.name().as_str().to_owned()
}

async fn an_rpc_client_gets_its_answers_on_a_reply_queue_and_by_direct_reply_to(backend: Backend) {
    let broker = Broker::start(backend, &["fixture-answer"]).await;
    let client = broker.connection.create_channel().await.unwrap();
    let replies = reply_queue(&client).await;
    let answers = Answers::collect(&client, &replies).await;
    let ask = Uuid::now_v7().to_string();
    let body = |qty: u64| json!({ "qty": qty }).to_string().into_bytes();
    broker
        .publish_all([
            (request("quote.ask", &replies, "c-ask", Some(&ask)), body(4)),
            (request("quote.refuse", &replies, "c-refuse", None), body(1)),
            (request("quote.silent", &replies, "c-silent", None), body(1)),
            (request("quote.flaky", &replies, "c-flaky", None), body(1)),
            // The first request again (its message id), asked by a confused client.
            (request("quote.ask", &replies, "c-dup", Some(&ask)), body(5)),
        ])
        .await;
    // Direct Reply-To: consume the pseudo-queue, then publish on the same channel.
    let direct = broker.connection.create_channel().await.unwrap();
    let direct_answers = Answers::collect(&direct, "amq.rabbitmq.reply-to").await;
    direct
        .basic_publish(
            broker.exchange.as_str().into(),
            "orders".into(),
            BasicPublishOptions::default(),
            &body(2),
            request("quote.ask", "amq.rabbitmq.reply-to", "c-direct", None),
        )
        .await
        .unwrap();
    broker
        .supervise_until("every request answered", async |_| {
            answers.all().len() >= 4 && !direct_answers.all().is_empty()
        })
        .await;

    let [asked] = &answers.to("c-ask")[..] else {
        panic!("one answer to c-ask: {:?}", answers.all());
    };
    assert_eq!(asked.body, json!({ "price": 12 }));
    assert_eq!(
        (asked.status.as_str(), asked.kind.as_str()),
        ("answered", "quote.ask.reply")
    );
    let asked_id = Uuid::parse_str(&ask).unwrap();
    assert_eq!(
        asked.message_id,
        wharf_host::reply::id(asked_id).to_string()
    );
    let [refused] = &answers.to("c-refuse")[..] else {
        panic!("one answer to c-refuse: {:?}", answers.all());
    };
    assert_eq!(refused.status, "rejected");
    let error = refused.body["error"].as_str().unwrap();
    assert!(error.contains("out of stock"), "{error}");
    let [silent] = &answers.to("c-silent")[..] else {
        panic!("one answer to c-silent: {:?}", answers.all());
    };
    assert_eq!(
        (silent.status.as_str(), &silent.body),
        ("handled", &Value::Null)
    );
    let [flaky] = &answers.to("c-flaky")[..] else {
        panic!("one answer to c-flaky: {:?}", answers.all());
    };
    assert_eq!(
        flaky.body,
        json!({ "attempt": 2 }),
        "the retried attempt's answer only"
    );
    let [direct] = &direct_answers.all()[..] else {
        panic!("one answer by Direct Reply-To: {:?}", direct_answers.all());
    };
    assert_eq!(
        (direct.correlation_id.as_str(), &direct.body),
        ("c-direct", &json!({ "price": 6 }))
    );

    let host = &broker.host;
    assert!(
        answers.to("c-dup").is_empty(),
        "a duplicate is not answered again"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM outbox").await, 5);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        0
    );
    assert_eq!(answers.all().len(), 4, "{:?}", answers.all());
}

/// `[plugin.quote]` retrying once after `delay_ms`.
fn slow_retry(c: &mut wharf_host::config::Config, delay_ms: u64) {
    let quote = wharf_host::plugins::PluginConfig {
        retry: Some(RetryPolicy {
            max_retries: 1,
            base_delay_ms: delay_ms,
            multiplier: 1.0,
            max_delay_ms: delay_ms,
            jitter: 0.0,
        }),
        ..Default::default()
    };
    c.plugin.insert("quote".into(), quote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expires_while_it_waits_out_a_retry_is_not_handled() {
    // The retry waits 600 ms in a delay queue; the request expires after 200. Left on the
    // message, the expiration would send it back from the delay queue early (and without
    // it, as RabbitMQ drops it when dead-lettering): the deadline travels as a header.
    let broker = Broker::start_with(Backend::Postgres, &["fixture-answer"], |c| {
        slow_retry(c, 600)
    })
    .await;
    let client = broker.connection.create_channel().await.unwrap();
    let replies = reply_queue(&client).await;
    let answers = Answers::collect(&client, &replies).await;
    let properties = request("quote.flaky", &replies, "c-late", None).with_expiration("200".into());
    broker.publish_with(properties, br#"{"qty": 1}"#).await;
    broker
        .supervise_until("the request answered", async |_| !answers.all().is_empty())
        .await;
    let [late] = &answers.to("c-late")[..] else {
        panic!("one answer: {:?}", answers.all());
    };
    assert_eq!(late.status, "rejected");
    let error = late.body["error"].as_str().unwrap();
    assert!(error.starts_with("expired: "), "{error}");
    let failed = broker.host.failed().await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.starts_with("expired: "),
        "{}",
        failed[0].error
    );
    assert_eq!(broker.host.count("SELECT COUNT(*) FROM processed").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_committed_by_a_host_that_stopped_before_sending_it_is_sent_once() {
    // The first host consumes without a relay: it commits the answer in the outbox and
    // stops, as a host killed between its commit and the relay's publish leaves it.
    let broker = Broker::start_with(Backend::Postgres, &["fixture-answer"], |c| {
        c.amqp.relay = Some(false);
    })
    .await;
    let client = broker.connection.create_channel().await.unwrap();
    let replies = reply_queue(&client).await;
    let answers = Answers::collect(&client, &replies).await;
    let id = Uuid::now_v7().to_string();
    let properties = request("quote.ask", &replies, "c-kill", Some(&id));
    broker.publish_with(properties, br#"{"qty": 7}"#).await;
    broker
        .supervise_until("the answer committed", async |b| {
            b.host.count("SELECT COUNT(*) FROM processed").await == 1
        })
        .await;
    assert_eq!(
        broker
            .host
            .count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .await,
        1
    );
    // The same request redelivered (the broker never saw an ack of a killed host's
    // last batch): the ledger answers it handled, nothing is written again.
    broker
        .publish_with(
            request("quote.ask", &replies, "c-kill", Some(&id)),
            br#"{"qty": 7}"#,
        )
        .await;
    let relaying = broker.second_host(&["fixture-answer"]).await;
    let mut config = relaying.config.clone();
    config.amqp.relay = Some(true);
    let (stop, stopped) = watch::channel(false);
    let relay = wharf_host::transport::amqp::supervisor::Supervisor::new(
        config.amqp,
        Duration::from_millis(config.inbox.poll_interval_ms),
        relaying.store.clone(),
        relaying.dispatcher.clone(),
    );
    let running = tokio::spawn(async move { relay.run(stopped).await });
    wait_for("the answer sent", Duration::from_secs(20), async || {
        !answers.all().is_empty() && broker.depth(&broker.queue).await == 0
    })
    .await;
    // Time for a second send to show, had there been one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    let [sent] = &answers.all()[..] else {
        panic!("one answer: {:?}", answers.all());
    };
    assert_eq!(sent.body, json!({ "price": 21 }));
    assert_eq!(broker.host.count("SELECT COUNT(*) FROM outbox").await, 1);
    assert_eq!(broker.host.count("SELECT COUNT(*) FROM processed").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_requester_left_is_counted_unroutable_not_retried() {
    let broker = Broker::start(Backend::Postgres, &["fixture-answer"]).await;
    let gone = wharf_tests::unique_name("gone");
    let properties = request("quote.ask", &gone, "c-gone", None);
    broker.publish_with(properties, br#"{"qty": 1}"#).await;
    let report = broker
        .supervise_until("the answer relayed", async |b| {
            b.host
                .count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL")
                .await
                == 1
        })
        .await;
    assert_eq!(report.relayed.unroutable, 1, "{report:?}");
    assert_eq!(broker.host.count("SELECT COUNT(*) FROM processed").await, 1);
}
