//! Failed messages in numbers over the HTTP API and the CLI, on each store: pages by
//! keyset with the total a filter selects, every filter (plugin, kind, error text, status,
//! time), bulk retry and delete by ids or filter capped per call, and clear 400s for
//! filters and selections that cannot be used; a retry and a delete of one message exclude
//! each other (one after the other, and twelve operators at once), and a purge returns
//! the retried messages of its queue to failed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_host::envelope::NewMessage;
use wharf_tests::http::{self, OPERATE, READ, call, send, serve};
use wharf_tests::{Backend, conformance};

conformance!(
    failed_messages_are_paged_filtered_and_handled_in_bulk,
    a_failed_message_is_retried_or_deleted_never_both,
    a_purge_returns_the_retried_messages_of_its_queue_to_failed,
);

/// Rejected by their plugin.
const REJECTED: usize = 130;
/// Of a kind no plugin handles.
const UNHANDLED: usize = 5;

/// `GET path` as a reader, expecting 200.
async fn get(base: &str, path: &str) -> Value {
    let (status, body) = http::get(base, path, READ).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// `POST path` with `body` as the operator.
async fn post(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    send(base, Method::POST, path, Some(OPERATE), Some(&body)).await
}

/// The error of a 400 answer to `GET path`.
async fn refused(base: &str, path: &str) -> String {
    let (status, body) = http::get(base, path, READ).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    body["error"].as_str().unwrap().to_owned()
}

async fn failed_messages_are_paged_filtered_and_handled_in_bulk(backend: Backend) {
    let host = wharf_tests::Host::start(backend, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    let mut messages: Vec<NewMessage> = (0..REJECTED)
        .map(|i| NewMessage::new("test", "test.reject", json!({ "n": i }).to_string().into()))
        .collect();
    messages
        .extend((0..UNHANDLED).map(|_| NewMessage::new("test", "nobody.handles", b"{}".to_vec())));
    host.store.enqueue(&messages).await.unwrap();
    host.drain().await;

    // Pages of 50 by keyset: every failed message once, newest first, the total on each.
    let mut ids = Vec::new();
    let mut path = "/api/messages/failed?limit=50".to_owned();
    loop {
        let page = get(&base, &path).await;
        assert_eq!(page["total"], REJECTED + UNHANDLED, "{page}");
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap()),
        );
        match page["next"].as_i64() {
            Some(next) => path = format!("/api/messages/failed?limit=50&before={next}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), REJECTED + UNHANDLED);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, each once"
    );

    // Filters: error text ignoring case, kind, plugin ("" for no handler), status, time;
    // LIKE's wildcards are text.
    let total = async |query: &str| {
        get(&base, &format!("/api/messages/failed?{query}")).await["total"]
            .as_u64()
            .unwrap() as usize
    };
    assert_eq!(total("error=NO%20HANDLER%20for").await, UNHANDLED);
    assert_eq!(total("kind=test.reject").await, REJECTED);
    assert_eq!(total("plugin=").await, UNHANDLED);
    assert_eq!(total("plugin=always-reject&kind=nobody.handles").await, 0);
    assert_eq!(total("status=failed").await, REJECTED + UNHANDLED);
    assert_eq!(total("error=%25").await, 0);
    assert_eq!(
        total("since=2000-01-01&until=2999-01-01T00:00:00Z").await,
        REJECTED + UNHANDLED
    );
    assert_eq!(total("since=2999-01-01").await, 0);
    assert!(
        refused(&base, "/api/messages/failed?plugins=x")
            .await
            .contains("unknown query parameter \"plugins\"")
    );
    assert!(
        refused(&base, "/api/messages/failed?status=gone")
            .await
            .contains("not one of pending")
    );
    assert!(
        refused(&base, "/api/messages/failed?since=yesterday")
            .await
            .contains("RFC 3339")
    );
    assert!(
        refused(&base, "/api/messages/failed?limit=0")
            .await
            .contains("from 1 to 1000")
    );

    // Bulk retry by filter, capped per call: `more` until none is left.
    let reject = json!({ "filter": { "kind": "test.reject" }, "limit": 100 });
    let (status, first) = post(&base, "/api/messages/retry", reject.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["retried"].as_u64(), first["more"].as_bool()),
        (Some(100), Some(true))
    );
    let (_, second) = post(&base, "/api/messages/retry", reject).await;
    assert_eq!(
        (second["retried"].as_u64(), second["more"].as_bool()),
        (Some(30), Some(false))
    );
    assert_eq!(total("status=retrying").await, REJECTED);
    host.drain().await;
    assert_eq!(
        total("status=failed&kind=test.reject").await,
        REJECTED,
        "rejected again"
    );

    // Bulk delete by ids (three rejected ones, the oldest), then everything that is left
    // with "all".
    let three = &ids[ids.len() - 3..];
    let (status, deleted) = post(&base, "/api/messages/delete", json!({ "ids": three })).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["deleted"], 3);
    for (body, expected) in [
        (json!({}), "name the failed messages to delete"),
        (
            json!({ "ids": (0..1001).collect::<Vec<_>>() }),
            "1001 ids given, at most 1000",
        ),
        (
            json!({ "filter": { "colour": "red" } }),
            "does not select failed messages",
        ),
        (
            json!({ "all": true, "limit": 0 }),
            "limit 0 must be from 1 to 1000",
        ),
    ] {
        let (status, answer) = post(&base, "/api/messages/delete", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{body}: {answer}"
        );
    }
    let (status, read_only) = send(
        &base,
        Method::POST,
        "/api/messages/delete",
        Some(READ),
        Some(&json!({ "all": true })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{read_only}");
    assert_eq!(total("").await, REJECTED + UNHANDLED - 3);

    // The CLI selects the same way.
    let wharf = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
            .arg("failed")
            .args(args)
            .env("WHARF_DATABASE_URL", &host.config.database.url)
            .env("WHARF_LOG", "warn")
            .output()
            .unwrap()
    };
    let listed = wharf(&["list", "--error", "no handler", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let page: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(page["total"], UNHANDLED);
    let everything = wharf(&["delete"]);
    assert!(!everything.status.success());
    assert!(
        String::from_utf8_lossy(&everything.stderr).contains("name the failed messages to delete"),
        "{everything:?}"
    );
    let unhandled = wharf(&["delete", "--kind", "nobody.handles"]);
    assert!(unhandled.status.success(), "{unhandled:?}");
    assert!(
        String::from_utf8_lossy(&unhandled.stdout)
            .contains(&format!("deleted {UNHANDLED} failed messages"))
    );

    let (status, rest) = post(&base, "/api/messages/delete", json!({ "all": true })).await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["deleted"], REJECTED - 3);
    assert_eq!(total("").await, 0);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM attempt_errors").await,
        0,
        "their history is gone too"
    );
}

/// Failed messages of `n` rejected messages, as `host` recorded them.
async fn rejected(host: &wharf_tests::Host, n: usize) -> Vec<i64> {
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| NewMessage::new("test", "test.reject", json!({ "n": i }).to_string().into()))
        .collect();
    host.store.enqueue(&messages).await.unwrap();
    host.drain().await;
    let rows = host
        .rows("SELECT id FROM failed_messages ORDER BY id")
        .await;
    rows.iter().map(|r| sqlx::Row::get(r, 0)).collect()
}

async fn a_failed_message_is_retried_or_deleted_never_both(backend: Backend) {
    let host = wharf_tests::Host::start(backend, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    let ids = rejected(&host, 60).await;

    // One after the other: the retried one cannot be deleted, and says why.
    let (status, _) = post(&base, &format!("/api/messages/retry/{}", ids[0]), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/api/messages/failed/{}", ids[0]);
    let (status, body) = call(&base, Method::DELETE, &path, Some(OPERATE)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("status retrying"),
        "{body}"
    );
    let (status, body) = post(&base, &format!("/api/messages/retry/{}", ids[0]), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Six operators retrying and six deleting the others at once: each message either.
    let rest: Vec<i64> = ids[1..].to_vec();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (base, rest) = (base.clone(), rest.clone());
        calls.spawn(async move {
            let path = if i % 2 == 0 {
                "/api/messages/retry"
            } else {
                "/api/messages/delete"
            };
            let (status, body) = post(&base, path, json!({ "ids": rest })).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            (i % 2 == 0, body)
        });
    }
    let (mut retried, mut deleted) = (0, 0);
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            (true, body) => retried += body["retried"].as_u64().unwrap(),
            (false, body) => deleted += body["deleted"].as_u64().unwrap(),
        }
    }
    assert_eq!(
        retried + deleted,
        rest.len() as u64,
        "{retried} retried, {deleted} deleted"
    );
    let retrying = host
        .count("SELECT COUNT(*) FROM failed_messages WHERE status = 'retrying'")
        .await;
    assert_eq!(
        retrying as u64,
        retried + 1,
        "every retried one is still there, retrying"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM failed_messages").await as u64,
        retried + 1,
        "the deleted ones are gone, and no retried one was deleted"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox").await as u64,
        retried + 1,
        "each retried message is back in its queue once"
    );
}

async fn a_purge_returns_the_retried_messages_of_its_queue_to_failed(backend: Backend) {
    let host = wharf_tests::Host::start(backend, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    let ids = rejected(&host, 20).await;
    let (status, body) = post(&base, "/api/messages/retry", json!({ "all": true })).await;
    assert_eq!(
        (status, body["retried"].as_u64()),
        (StatusCode::OK, Some(20)),
        "{body}"
    );
    let (status, body) = http::post(&base, "/api/queues/test/purge?confirm=test", OPERATE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        host.count("SELECT COUNT(*) FROM failed_messages WHERE status = 'failed'")
            .await,
        20,
        "purged before they ran again: failed, not retrying forever"
    );
    let (status, body) = post(&base, "/api/messages/retry", json!({ "ids": ids })).await;
    assert_eq!(
        (status, body["retried"].as_u64()),
        (StatusCode::OK, Some(20)),
        "{body}"
    );
}
