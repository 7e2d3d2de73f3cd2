//! Requests to an exchange from a caller on a host, against the real RabbitMQ (PostgreSQL):
//! `POST /api/messages/request` and `wharf request --exchange` put them in the outbox, the
//! relay sends them, and the host consuming the queue they reach answers (the `quote`
//! fixture, `fixture-answer`); hostile bodies and flags are refused naming the problem.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use wharf_tests::Backend;
use wharf_tests::broker::{Broker, supervisor};
use wharf_tests::http::{OPERATE, send, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_to_an_exchange_is_answered_by_the_host_consuming_its_queue() {
    let broker = Broker::start(Backend::Postgres, &["fixture-answer"]).await;
    let base = serve(&broker.host).await;
    let (stop, stopped) = watch::channel(false);
    let supervising = supervisor(&broker.host);
    let running = tokio::spawn(async move { supervising.run(stopped).await });
    let ask = |kind: &str| {
        json!({
            "exchange": broker.exchange, "routing_key": "orders", "kind": kind,
            "message": {"qty": 5}, "timeout_ms": 20_000,
        })
    };
    let path = "/api/messages/request";
    let (status, answer) = send(
        &base,
        Method::POST,
        path,
        Some(OPERATE),
        Some(&ask("quote.ask")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["answer"], json!({ "price": 15 }));
    let (status, answer) = send(
        &base,
        Method::POST,
        path,
        Some(OPERATE),
        Some(&ask("quote.refuse")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("out of stock"),
        "{answer}"
    );
    // Hostile: both a queue and an exchange; an exchange name breaking the rules.
    let both = json!({ "queue": "test", "exchange": "x", "kind": "k", "message": {} });
    let (status, answer) = send(&base, Method::POST, path, Some(OPERATE), Some(&both)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let bad = json!({ "exchange": "a\u{1b}[2Jb", "kind": "k", "message": {} });
    let (status, answer) = send(&base, Method::POST, path, Some(OPERATE), Some(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(broker.host.count("SELECT COUNT(*) FROM replies").await, 2);
}

/// `wharf request <args>` against the database of `host`.
async fn wharf_request(host: &wharf_tests::Host, args: &[&str]) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_wharf-under-test");
    wharf_tests::cli::wharf_on(bin, host, &[&["request"], args].concat()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_request_to_an_exchange_prints_the_answer() {
    let broker = Broker::start(Backend::Postgres, &["fixture-answer"]).await;
    let (stop, stopped) = watch::channel(false);
    let supervising = supervisor(&broker.host);
    let running = tokio::spawn(async move { supervising.run(stopped).await });
    let exchange = broker.exchange.as_str();
    let to = ["--exchange", exchange, "--routing-key", "orders"];
    let mut ask = to.to_vec();
    ask.extend(["--kind", "quote.ask", "--json", r#"{"qty": 2}"#]);
    let answered = wharf_request(&broker.host, &ask).await;
    assert!(answered.status.success(), "{answered:?}");
    let answer: Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert_eq!(answer, json!({ "price": 6 }));
    for (args, says) in [
        (
            &["--queue", "test", "--exchange", exchange][..],
            "cannot be used with",
        ),
        (&["--queue", "test", "--routing-key", "x"][..], "--exchange"),
        (&["--exchange", "bad\u{7}name"][..], "exchange"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--kind", "quote.ask", "--json", "{}"]);
        let refused = wharf_request(&broker.host, &all).await;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains('\u{7}'), "{stderr}");
    }
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(broker.host.count("SELECT COUNT(*) FROM outbox").await, 1);
}
