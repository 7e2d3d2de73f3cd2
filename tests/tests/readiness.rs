//! Readiness follows the database: a PostgreSQL host whose server becomes unreachable
//! (through a proxy this test stops, so the server other tests use keeps running) answers
//! 503 naming the database, and 200 again once it is back. (The broker's turn is in
//! `amqp_recovery`, where the real RabbitMQ is stopped.) A leased batch whose settle
//! failed while the database was away is freed by its host when it returns, not left
//! locked for the rest of its lease.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_tests::http::{READ, call, get, serve};
use wharf_tests::proxy::Proxy;
use wharf_tests::{Backend, Host, wait_for};

/// The readiness probe's status and answer.
async fn ready(base: &str) -> (StatusCode, Value) {
    call(base, Method::GET, "/api/health/ready", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_while_postgresql_is_unreachable() {
    let mut proxy = Proxy::start("127.0.0.1:5432").await;
    let through = format!("127.0.0.1:{}", proxy.port());
    let host = Host::start_with(Backend::Postgres, &["fixture-noop"], |c| {
        assert!(
            c.database.url.contains("127.0.0.1:5432"),
            "{}",
            c.database.url
        );
        c.database.url = c.database.url.replace("127.0.0.1:5432", &through);
    })
    .await;
    let base = serve(&host).await;
    assert_eq!(ready(&base).await.0, StatusCode::OK);

    proxy.stop();
    wait_for("readiness to fail", Duration::from_secs(20), async || {
        ready(&base).await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, body) = ready(&base).await;
    assert_eq!(body["failing"], json!(["database"]), "{body}");
    let why = body["checks"]["database"].as_str().unwrap();
    assert!(why.starts_with("the database"), "{why}");
    let (status, body) = get(&base, "/api/messages/failed", READ).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a call that needs it: {body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the database failed"),
        "{body}"
    );
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(
        metrics.status(),
        200,
        "/metrics answers without the database"
    );
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("wharf_database_up 0")
    );

    proxy.resume().await;
    wait_for(
        "readiness to come back",
        Duration::from_secs(30),
        async || ready(&base).await.0 == StatusCode::OK,
    )
    .await;
    let (status, _) = get(&base, "/api/messages/failed", READ).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_batch_whose_settle_failed_is_freed_when_the_database_returns() {
    let mut proxy = Proxy::start("127.0.0.1:5432").await;
    let through = format!("127.0.0.1:{}", proxy.port());
    let host = Host::start_with(Backend::PostgresLeased, &["fixture-once"], |c| {
        c.database.url = c.database.url.replace("127.0.0.1:5432", &through);
        c.inbox.lease_ms = 120_000;
        c.runtime.deadline_ms = 5_000;
    })
    .await;
    for _ in 0..5 {
        host.publish("test", "test.once", json!({ "spin_ms": 1500 }))
            .await;
    }
    let queues = ["test".to_owned()];
    let batch = host.worker.run_batch(&queues, 10);
    let cut = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.stop();
    };
    let (settled, ()) = tokio::join!(batch, cut);
    assert!(settled.is_err(), "the settle failed: {settled:?}");
    proxy.resume().await;
    // Well within the 120 s lease: the host frees what it knows it holds.
    let started = std::time::Instant::now();
    let mut handled = 0;
    while handled < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the batch stayed locked for its lease"
        );
        if let Ok((_, summary)) = host.worker.run_batch(&queues, 10).await {
            handled += summary.handled;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 5);
}
