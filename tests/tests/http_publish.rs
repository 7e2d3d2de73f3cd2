//! `POST /api/messages/publish` with a real HTTP client against a served host, on each
//! store: into an inbox queue (a repeated id queued once) or to an exchange or a Kafka
//! topic through the outbox, ordering keys numbered in the inbox, carried as the
//! `partition_key` header or kept as the record's key,
//! refusals naming the rule, the payload limit, and every publish in the audit trail.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_tests::http::{OPERATE, READ, get, send, serve};
use wharf_tests::{Backend, Host, conformance};

conformance!(messages_are_published_into_a_queue_or_the_outbox_over_http);

/// `POST /api/messages/publish` with `body` as the operator.
async fn publish(base: &str, body: Value) -> (StatusCode, Value) {
    let path = "/api/messages/publish";
    send(base, Method::POST, path, Some(OPERATE), Some(&body)).await
}

async fn messages_are_published_into_a_queue_or_the_outbox_over_http(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let id = uuid::Uuid::now_v7();
    let to_queue = json!({ "queue": "test", "kind": "test.noop", "message": { "n": 1 }, "id": id });
    let (status, answer) = publish(&base, to_queue.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({ "id": id, "queue": "test", "queued": true }));
    let (_, again) = publish(&base, to_queue).await;
    assert_eq!(again["queued"], false, "a repeated id is queued once");
    host.drain().await;
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);

    // The seed's shape: exchange, routing key, message; the kind is the routing key.
    let (status, answer) = publish(
        &base,
        json!({ "exchange": "orders", "routing_key": "order.created", "message": { "n": 2 } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["queued"], true);
    let rows = host.rows("SELECT kind, exchange FROM outbox").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(sqlx::Row::get::<String, _>(&rows[0], 0), "order.created");

    // An ordering key: numbered per key in the inbox; to an exchange, a header.
    for n in 1..=2 {
        let keyed =
            json!({ "queue": "held", "kind": "k", "key": "order 7", "message": { "n": n } });
        let (status, answer) = publish(&base, keyed).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let rows = host
        .rows("SELECT ordering_key, seq FROM inbox WHERE queue = 'held' ORDER BY seq")
        .await;
    let numbered: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (sqlx::Row::get(r, 0), sqlx::Row::get(r, 1)))
        .collect();
    assert_eq!(numbered, [("order 7".into(), 1), ("order 7".into(), 2)]);
    let (status, answer) = publish(
        &base,
        json!({ "exchange": "orders", "routing_key": "order.paid", "key": "order 7", "message": {} }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rows = host
        .query_rows(format!(
            "SELECT {} FROM outbox WHERE kind = 'order.paid'",
            host.json_text("headers")
        ))
        .await;
    let headers: Value = serde_json::from_str(&sqlx::Row::get::<String, _>(&rows[0], 0)).unwrap();
    assert_eq!(headers["partition_key"], "order 7");

    // To a Kafka topic: a row for the Kafka relay, with the record's key.
    let id = uuid::Uuid::now_v7();
    let (status, answer) = publish(
        &base,
        json!({ "topic": "orders", "key": "order 7", "kind": "order.paid", "message": {}, "id": id }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer,
        json!({ "id": id, "topic": "orders", "queued": true })
    );
    let rows = host
        .rows("SELECT transport, exchange, ordering_key FROM outbox WHERE ordering_key IS NOT NULL")
        .await;
    let row = |i| sqlx::Row::get::<String, _>(&rows[0], i);
    assert_eq!(
        (row(0), row(1), row(2)),
        ("kafka".into(), "orders".into(), "order 7".into())
    );

    let refused = [
        (
            json!({ "topic": "orders", "message": {} }),
            "a message for a topic needs a \"kind\"",
        ),
        (
            json!({ "topic": "orders", "queue": "test", "kind": "k", "message": {} }),
            "one of them",
        ),
        (
            json!({ "topic": "no such\ntopic", "kind": "k", "message": {} }),
            "topic \"no such\\ntopic\"",
        ),
        (
            json!({ "topic": "t".repeat(300), "kind": "k", "message": {} }),
            "over the limit of 249 bytes",
        ),
        (
            json!({ "topic": "..", "kind": "k", "message": {} }),
            "reserved",
        ),
        (
            json!({ "topic": ["orders"], "kind": "k", "message": {} }),
            "not a publish request",
        ),
        (
            json!({ "queue": "test", "message": {} }),
            "needs a \"kind\"",
        ),
        (
            json!({ "queue": "test", "kind": "bad kind", "message": {} }),
            "message kind \"bad kind\" contains ' '",
        ),
        (
            json!({ "queue": "test", "exchange": "x", "kind": "k", "message": {} }),
            "one of them",
        ),
        (
            json!({ "queue": "test", "kind": "k", "mesage": {} }),
            "not a publish request",
        ),
        (
            json!({ "queue": "test", "kind": "k", "key": "", "message": {} }),
            "ordering key is empty",
        ),
        (
            json!({ "queue": "test", "kind": "k", "key": "a\u{7}b", "message": {} }),
            "ordering key \"a\\u{7}b\" contains '\\u{7}'",
        ),
        (
            json!({ "queue": "test", "kind": "k", "key": "k".repeat(10_000), "message": {} }),
            "is 10000 bytes long, over the limit of 255 bytes",
        ),
        (
            json!({ "queue": "test", "kind": "k", "key": 42, "message": {} }),
            "not a publish request",
        ),
    ];
    for (body, expected) in refused {
        let (status, answer) = publish(&base, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(expected), "{body}: {error}");
    }
    let big = "x".repeat(host.config.inbox.max_payload_bytes);
    let (status, answer) = publish(
        &base,
        json!({ "queue": "test", "kind": "k", "message": big }),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("exceeds inbox.max_payload_bytes")
    );
    let response = reqwest::Client::new()
        .post(format!("{base}/api/messages/publish"))
        .bearer_auth(OPERATE)
        .body("not json at all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("not a publish request")
    );

    let (_, audit) = get(&base, "/api/audit?limit=1000", READ).await;
    let publishes = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "publish")
        .count();
    assert_eq!(
        publishes, 23,
        "every publish, refused or not, is in the audit trail"
    );
}
