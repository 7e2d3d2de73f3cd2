//! The admin HTTP API with a real HTTP client against a served host, on each store: open
//! health probes (readiness 503 naming what fails), the auth matrix (no token, unknown,
//! read, operate x each route), failed messages listed, shown, retried and deleted, and
//! JSON errors for bad paths and ids.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_tests::http::{OPERATE, READ, call, get, post, send, serve};
use wharf_tests::{Backend, Host, conformance};

conformance!(
    failed_messages_are_listed_shown_retried_and_deleted_over_http,
    messages_are_published_into_a_queue_or_the_outbox_over_http,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_readiness_names_what_fails() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let (status, body) = call(&base, Method::GET, "/api/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "wharf");
    assert_eq!(body["host"], "test-host");
    let (status, body) = call(&base, Method::GET, "/api/health/ready", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "broker": "not used", "plugins": "ok"}),
        "a host with no broker does not use one"
    );

    let empty = Host::start(Backend::Sqlite, &[]).await;
    let base = serve(&empty).await;
    let (status, body) = call(&base, Method::GET, "/api/health/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"], json!(["plugins"]));
    assert_eq!(body["checks"]["plugins"], "no plugins loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_answers_by_the_callers_scope() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let routes = [
        (Method::GET, "/api/queues", false),
        (Method::GET, "/api/messages/failed", false),
        (Method::GET, "/api/messages/failed/1", false),
        (Method::POST, "/api/messages/retry/1", true),
        (Method::DELETE, "/api/messages/failed/1", true),
        (Method::POST, "/api/messages/publish", true),
        (Method::GET, "/api/audit", false),
        (Method::GET, "/api/flow", false),
        (Method::POST, "/api/messages/retry", true),
        (Method::POST, "/api/messages/delete", true),
        (Method::GET, "/api/queues/test/stats", false),
        (Method::POST, "/api/queues/test/purge", true),
        (Method::GET, "/api/plugins", false),
        (Method::POST, "/api/plugins", true),
        (Method::POST, "/api/plugins/noop/rollback", true),
        (Method::GET, "/api/plugins/noop/history", false),
        (Method::GET, "/api/whoami", false),
    ];
    for (method, path, mutates) in routes {
        let status = async |token| call(&base, method.clone(), path, token).await.0;
        assert_eq!(
            status(None).await,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(
            status(Some("not-a-token")).await,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let (read, operate) = (status(Some(READ)).await, status(Some(OPERATE)).await);
        // A caller who may make the call gets past the door (row 1 does not exist, the
        // publish, bulk and deploy calls have no body: they are told so).
        let allowed = |s: StatusCode| s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN;
        if mutates {
            assert_eq!(read, StatusCode::FORBIDDEN, "{method} {path}");
        } else {
            assert!(allowed(read), "{method} {path}: {read}");
        }
        assert!(allowed(operate), "{method} {path}: {operate}");
    }
    let (status, body) = get(&base, "/api/messages/failed/abc", READ).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("is not a number"),
        "{body}"
    );
    let (status, body) = get(&base, "/api/nothing", READ).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("no such endpoint"),
        "{body}"
    );
}

async fn failed_messages_are_listed_shown_retried_and_deleted_over_http(backend: Backend) {
    let host = Host::start(backend, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    host.publish("test", "test.reject", json!({})).await;
    host.drain().await;

    let (status, list) = get(&base, "/api/messages/failed", READ).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 1);
    let id = list["items"][0]["id"].as_i64().unwrap();
    let path = format!("/api/messages/failed/{id}");
    let (status, one) = get(&base, &path, READ).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["message"]["kind"], "test.reject");
    assert_eq!(one["attempts"].as_array().unwrap().len(), 1, "{one}");

    let retry = format!("/api/messages/retry/{id}");
    let (status, retried) = post(&base, &retry, OPERATE).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["retried"], 1);
    let (_, test) = get(&base, "/api/queues/test/stats", READ).await;
    assert_eq!(test["message_count"], 1, "{test}");
    host.drain().await;

    let (status, _) = call(&base, Method::DELETE, &path, Some(OPERATE)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&base, &path, READ).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("no failed message"),
        "{body}"
    );
    let (status, _) = call(&base, Method::DELETE, &path, Some(OPERATE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Each call that changed something, or tried to, by the token's name, newest first.
    let (status, audit) = get(&base, "/api/audit", READ).await;
    assert_eq!(status, StatusCode::OK);
    let trail: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |f: &str| e[f].as_str().unwrap().to_owned();
            (field("who"), field("action"), field("result"))
        })
        .collect();
    assert_eq!(trail.len(), 3, "{audit}");
    assert_eq!(trail[0].1, "delete");
    assert!(
        trail[0].2.starts_with("404: no failed message"),
        "{trail:?}"
    );
    assert_eq!(
        (trail[1].1.as_str(), trail[1].2.as_str()),
        ("delete", "ok: {\"deleted\":1}")
    );
    assert_eq!(trail[2].1, "retry");
    assert!(trail.iter().all(|(who, _, _)| who == "ops"));
    let (status, body) = get(&base, "/api/audit?limit=0", READ).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .args(["audit", "--json"])
        .env("WHARF_DATABASE_URL", &host.config.database.url)
        .env("WHARF_LOG", "warn")
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    let listed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(listed, audit["items"], "wharf audit lists the same trail");
}

/// `wharf run` and `wharf serve` (the API alone) with `WHARF_HTTP_LISTEN` and
/// `WHARF_HTTP_TOKENS`: they serve, and stop serving when SIGTERM stops them; beyond
/// loopback without a token they do not start, nor does `serve` without an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_run_and_serve_serve_the_api_until_they_stop() {
    let dir = tempfile::tempdir().unwrap();
    let wharf = |command: &str, listen: &str, tokens: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
            .arg(command)
            .env(
                "WHARF_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("w.db").display()),
            )
            .env("WHARF_PLUGINS_DIR", dir.path().join("plugins"))
            .env("WHARF_HTTP_LISTEN", listen)
            .env("WHARF_HTTP_TOKENS", tokens)
            .env("WHARF_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for command in ["run", "serve"] {
        let refused = wharf(command, "0.0.0.0:0", "").wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(
            stderr.contains("refusing to serve the HTTP API on 0.0.0.0:0 without tokens"),
            "{command}: {stderr}"
        );
    }
    let unset = std::process::Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .arg("serve")
        .env("WHARF_DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert!(!unset.status.success());
    assert!(
        String::from_utf8_lossy(&unset.stderr)
            .contains("wharf serve needs an address to listen on"),
        "{unset:?}"
    );

    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    for command in ["run", "serve"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut host = wharf(
            command,
            &format!("127.0.0.1:{port}"),
            &format!("viewer:read:{READ},ops:operate:{OPERATE}"),
        );
        let base = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while reqwest::get(format!("{base}/api/health")).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{command}: the API did not come up"
            );
            assert!(host.try_wait().unwrap().is_none(), "wharf {command} exited");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (status, _) = get(&base, "/api/queues", READ).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{command}: the tokens of WHARF_HTTP_TOKENS are accepted"
        );
        let (status, _) = call(&base, Method::DELETE, "/api/messages/failed/1", Some(READ)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // With no plugin in the directory, a host that handles messages is not ready; the
        // API alone is.
        let (status, ready) = call(&base, Method::GET, "/api/health/ready", None).await;
        let expected = match command {
            "run" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        };
        assert_eq!(status, expected, "{command}: {ready}");

        let pid = host.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let stopped = host.wait().unwrap();
        assert!(
            stopped.success(),
            "wharf {command} stops cleanly on SIGTERM: {stopped:?}"
        );
        assert!(
            reqwest::get(format!("{base}/api/health")).await.is_err(),
            "{command}: no longer serving"
        );
    }
}

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

    let refused = [
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
        publishes, 16,
        "every publish, refused or not, is in the audit trail"
    );
}
