//! Recovery of the AMQP consumers (the supervisor `wharf run` uses) when the broker
//! restarts mid-run: `rabbitmqctl stop_app` / `start_app` on the real RabbitMQ while
//! messages flow. Nothing may be lost and nothing handled twice; the HTTP API's readiness
//! names the broker while it is down, and is ready again once the consumers are back. A test binary of its own,
//! so the restart cannot disturb the other AMQP tests (cargo runs test binaries one after
//! another).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use wharf_host::transport::amqp::supervisor::Supervisor;
use wharf_tests::broker;
use wharf_tests::http::{call, serve_with};
use wharf_tests::{Backend, Host, amqp_connection, route_orders, unique_name, wait_for};

const MESSAGES: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing_and_handles_nothing_twice() {
    let exchange = unique_name("ex");
    let queue = unique_name("q");
    let host = Host::start_with(Backend::Postgres, &["fixture-once"], |c| {
        route_orders(c, &exchange, &queue);
        c.amqp.consume[0].consumers = 2;
    })
    .await;
    // Sweeps what earlier test processes left on the broker.
    drop(amqp_connection().await);
    let supervisor = Supervisor::new(
        host.config.amqp.clone(),
        Duration::from_millis(host.config.inbox.poll_interval_ms),
        host.store.clone(),
        host.dispatcher.clone(),
    );
    let api = serve_with(&host, Some(supervisor.link())).await;
    let (stop, stopped) = watch::channel(false);
    let consuming = tokio::spawn(async move { supervisor.run(stopped).await });
    let host = Arc::new(host);
    wait_for("the topology", Duration::from_secs(20), async || {
        broker::queue_depth(&queue).await.is_some()
    })
    .await;

    let ids: Vec<String> = (0..MESSAGES)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let publishing = tokio::spawn(publish_all(exchange.clone(), ids));
    wait_for("a third handled", Duration::from_secs(60), async || {
        processed(&host).await >= MESSAGES as i64 / 3
    })
    .await;
    let handled_before = processed(&host).await;
    assert_eq!(ready(&api).await, (StatusCode::OK, json!([])));
    {
        let _down = BrokerDown::stop_app();
        wait_for(
            "readiness to name the broker",
            Duration::from_secs(20),
            async || ready(&api).await == (StatusCode::SERVICE_UNAVAILABLE, json!(["broker"])),
        )
        .await;
    }
    wait_for(
        "readiness to come back",
        Duration::from_secs(60),
        async || ready(&api).await.0 == StatusCode::OK,
    )
    .await;
    let publish_retries = publishing.await.unwrap();
    wait_for(
        "every message handled",
        Duration::from_secs(120),
        async || processed(&host).await == MESSAGES as i64,
    )
    .await;
    // Redeliveries and republished copies still in the queue are duplicates: wait for the
    // queue to empty, then stop the consumers.
    wait_for("the queue to drain", Duration::from_secs(60), async || {
        broker::queue_depth(&queue).await == Some(0)
    })
    .await;
    stop.send(true).unwrap();
    let report = consuming
        .await
        .unwrap()
        .expect("the supervisor recovered instead of failing");

    assert!(
        handled_before < MESSAGES as i64,
        "the broker restarted while messages were still coming ({handled_before} handled before)"
    );
    assert!(
        report.restarts >= 2,
        "both consumers started again after the restart: {report:?}"
    );
    assert!(
        report.consumed.messages >= MESSAGES as u64,
        "every delivery acked: {report:?}"
    );
    assert_eq!(processed(&host).await, MESSAGES as i64, "nothing lost");
    // fixture-once writes state key = message id (version 1 on the first write) and
    // publishes one outbox row per message: a second committed run would show.
    assert_eq!(
        host.count("SELECT COUNT(*) FROM outbox").await,
        MESSAGES as i64
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE version = 1")
            .await,
        MESSAGES as i64
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state").await,
        MESSAGES as i64,
        "nothing handled twice"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
    eprintln!(
        "restart mid-run: {handled_before} handled before, the publisher retried {publish_retries} times, consumers {report:?}"
    );
}

/// Publish every id (type `test.once`, persistent) in confirmed batches of 100, at a
/// pace that keeps messages coming across the restart. A batch that fails (the broker
/// went away) is published again, whole, once the broker is back: the copies are
/// duplicates the host must catch. Returns how many times a batch failed.
async fn publish_all(exchange: String, ids: Vec<String>) -> usize {
    let mut failures = 0;
    let mut link = None;
    for batch in ids.chunks(100) {
        loop {
            if link.is_none() {
                link = publisher(&exchange).await;
            }
            if let Some((_, channel)) = &link
                && publish_batch(channel, &exchange, batch).await
            {
                break;
            }
            link = None;
            failures += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    failures
}

/// A confirming channel on a new connection, or None while the broker is down or the
/// exchange is not there.
async fn publisher(exchange: &str) -> Option<(lapin::Connection, Channel)> {
    let url = wharf_tests::amqp_url();
    let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .ok()?;
    let channel = connection.create_channel().await.ok()?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()?;
    Some((connection, channel))
}

/// Publish a batch and wait for its confirms; false if any failed.
async fn publish_batch(channel: &Channel, exchange: &str, ids: &[String]) -> bool {
    let mut confirms = Vec::with_capacity(ids.len());
    for id in ids {
        let properties = BasicProperties::default()
            .with_type("test.once".into())
            .with_message_id(id.as_str().into())
            .with_delivery_mode(2);
        match channel
            .basic_publish(
                exchange.into(),
                "orders".into(),
                BasicPublishOptions::default(),
                b"{}",
                properties,
            )
            .await
        {
            Ok(confirm) => confirms.push(confirm),
            Err(_) => return false,
        }
    }
    for confirm in confirms {
        match confirm.await {
            Ok(c) if c.is_ack() => {}
            _ => return false,
        }
    }
    true
}

async fn processed(host: &Host) -> i64 {
    host.count("SELECT COUNT(*) FROM processed").await
}

/// The readiness probe's status and failing checks.
async fn ready(base: &str) -> (StatusCode, Value) {
    let (status, body) = call(base, Method::GET, "/api/health/ready", None).await;
    (status, body["failing"].clone())
}

/// The broker's application stopped (`rabbitmqctl stop_app`) until this is dropped, even
/// when the test panics, so later tests find it running.
struct BrokerDown;

impl BrokerDown {
    fn stop_app() -> BrokerDown {
        rabbitmqctl(&["stop_app"]);
        BrokerDown
    }
}

impl Drop for BrokerDown {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

/// Run `rabbitmqctl` (it takes seconds: off the async worker threads).
fn rabbitmqctl(args: &[&str]) {
    let status = tokio::task::block_in_place(|| {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
    })
    .unwrap_or_else(|e| {
        panic!("rabbitmqctl {args:?}: {e}; the restart test needs rabbitmqctl of the test broker")
    });
    assert!(status.success(), "rabbitmqctl {args:?} failed: {status}");
}
