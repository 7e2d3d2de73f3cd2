//! The admin API against a hostile client, over raw TCP where a well-behaved client
//! library would not go: a request that never finishes its headers is cut off after
//! `http.header_timeout_ms` and does not hold up SIGTERM beyond `http.shutdown_grace_ms`; a
//! declared body over `http.max_body_bytes` is refused before it arrives, one that stalls
//! after `http.body_timeout_ms`; every error is JSON (a wrong method, an unreadable path,
//! hyper's own 400, 414 and 431); a filter too long for the database is a 400 naming the
//! limit; a lowercase `bearer` is a bearer; a `GET` with a body gets its whole answer; a
//! page of large failed messages carries their sizes, not their payloads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_tests::http::{BODY_LIMIT, OPERATE, READ, call, get, send, serve};
use wharf_tests::{Backend, Host};

/// `request` written as it is to `base`'s server; the raw answer, read until the server
/// closes the connection or `wait` has passed.
fn raw(base: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    // A server that answers before the whole request is written may close the socket:
    // the answer is what counts.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and JSON body of a raw answer; panics when the body is not JSON.
fn parsed(answer: &str) -> (u16, Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {answer:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_even_those_the_routes_never_see() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let (status, body) = call(&base, Method::PUT, "/api/queues", Some(READ)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        body["error"],
        "PUT is not allowed on /api/queues; it takes GET,HEAD"
    );
    let (status, body) = get(&base, "/api/messages/failed/%FF", READ).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("UTF-8"), "{body}");

    let wait = Duration::from_secs(10);
    let long_header = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(600 << 10)
    );
    let (status, body) = parsed(&raw(&base, long_header.as_bytes(), wait));
    assert_eq!(
        (status, body["error"].as_str()),
        (431, Some("the request's headers are too large"))
    );
    let long_uri = format!(
        "GET /api/health?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "u".repeat(70_000)
    );
    let (status, body) = parsed(&raw(&base, long_uri.as_bytes(), wait));
    assert!(matches!(status, 414 | 431), "{status} {body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("the request's"),
        "{body}"
    );
    let (status, body) = parsed(&raw(&base, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", wait));
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not valid HTTP/1.1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_arrives() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    let request = format!(
        "POST /api/plugins HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATE}\r\nContent-Length: {}\r\n\r\n",
        BODY_LIMIT * 10
    );
    let started = Instant::now();
    // No byte of the body is sent: the answer comes anyway, at once.
    let (status, body) = parsed(&raw(&base, request.as_bytes(), Duration::from_secs(10)));
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&format!(
            "declared as {} bytes, more than http.max_body_bytes = {BODY_LIMIT}",
            BODY_LIMIT * 10
        )),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered without the body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_longer_than_anything_they_could_match_are_a_400_naming_the_limit() {
    let host = Host::start(Backend::Sqlite, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    host.publish("test", "test.reject", json!({})).await;
    host.drain().await;
    // 25,001 `%` are 75,003 bytes in a URL, more than a URL may be: in a query, 1,025.
    for (error, in_query) in [
        ("e".repeat(50_000), "e".repeat(50_000)),
        ("%".repeat(25_001), "%25".repeat(1_025)),
    ] {
        let (status, body) = get(
            &base,
            &format!("/api/messages/failed?error={in_query}"),
            READ,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("at most 1024; shorten it"),
            "{body}"
        );
        for path in ["/api/messages/retry", "/api/messages/delete"] {
            let filter = json!({ "filter": { "error": error } });
            let (status, body) =
                send(&base, Method::POST, path, Some(OPERATE), Some(&filter)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("the error filter is"),
                "{body}"
            );
        }
    }
    let (_, page) = get(&base, "/api/messages/failed", READ).await;
    assert_eq!(page["total"], 1, "nothing was retried or deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let status = reqwest::Client::new()
            .get(format!("{base}/api/queues"))
            .header("Authorization", format!("{scheme} {READ}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    let status = reqwest::Client::new()
        .get(format!("{base}/api/queues"))
        .header("Authorization", format!("Basic {READ}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_gets_its_whole_answer() {
    let host = Host::start(Backend::Sqlite, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    let payload = json!({ "blob": "b".repeat(900 << 10) });
    host.publish("test", "test.reject", payload).await;
    host.drain().await;
    let (_, page) = get(&base, "/api/messages/failed", READ).await;
    let id = page["items"][0]["id"].as_i64().unwrap();
    let body = vec![b'x'; 2 << 20];
    for attempt in 0..20 {
        let response = reqwest::Client::new()
            .get(format!("{base}/api/messages/failed/{id}"))
            .bearer_auth(READ)
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the answer was cut: {e}"));
        assert_eq!(answer["message"]["id"], id);
    }
}

/// `wharf serve` on a free port with `env`, logging warnings; and its base URL once up.
async fn wharf_serve(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .arg("serve")
        .env(
            "WHARF_DATABASE_URL",
            format!("sqlite://{}", dir.join("w.db").display()),
        )
        .env("WHARF_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("WHARF_HTTP_TOKENS", format!("ops:operate:{OPERATE}"))
        .env("WHARF_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/api/health")).await.is_err() {
        assert!(Instant::now() < deadline, "wharf serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_and_does_not_hold_up_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (mut host, base) = wharf_serve(
        dir.path(),
        &[
            ("WHARF_HTTP_HEADER_TIMEOUT_MS", "300"),
            ("WHARF_HTTP_BODY_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    // Headers that never end: the connection is closed after the header timeout.
    let started = Instant::now();
    let answer = raw(
        &base,
        b"GET /api/health HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(20),
    );
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the half-sent request was cut off ({:?})",
        started.elapsed()
    );
    // A body that stops half-way: the route answers with the body timeout.
    let request = format!(
        "POST /api/messages/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATE}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"queue\":"
    );
    let (status, body) = parsed(&raw(&base, request.as_bytes(), Duration::from_secs(20)));
    assert!(matches!(status, 400 | 408), "{status} {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive within http.body_timeout_ms = 300 ms"),
        "{body}"
    );
    stop(&mut host);

    // A client that stalls mid-headers while the host stops: it waits the grace, no more.
    let (mut host, base) = wharf_serve(
        dir.path(),
        &[
            ("WHARF_HTTP_HEADER_TIMEOUT_MS", "600000"),
            ("WHARF_HTTP_SHUTDOWN_GRACE_MS", "500"),
        ],
    )
    .await;
    let mut stalled = TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stalled
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    stop(&mut host);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "SIGTERM took {:?} with a stalled client",
        started.elapsed()
    );
}

/// SIGTERM `host` and wait for it to exit cleanly.
fn stop(host: &mut Child) {
    let pid = host.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = host.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_failed_messages_carries_their_sizes_not_their_payloads() {
    let host = Host::start(Backend::Sqlite, &["fixture-always-reject"]).await;
    let base = serve(&host).await;
    for i in 0..30 {
        host.publish(
            "test",
            "test.reject",
            json!({ "i": i, "blob": "b".repeat(500 << 10) }),
        )
        .await;
    }
    host.drain().await;
    let response = reqwest::Client::new()
        .get(format!("{base}/api/messages/failed?limit=1000"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(
        text.len() < 64 << 10,
        "a page of 30 is {} bytes",
        text.len()
    );
    let page: Value = serde_json::from_str(&text).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    for item in items {
        assert!(item.get("payload").is_none(), "{item}");
        assert!(
            item["payload_bytes"].as_u64().unwrap() > 500 << 10,
            "{item}"
        );
    }
    let id = items[0]["id"].as_i64().unwrap();
    let (_, detail) = get(&base, &format!("/api/messages/failed/{id}"), READ).await;
    assert!(
        detail["message"]["payload"].as_str().unwrap().len() > 500 << 10,
        "one message's detail has its payload"
    );
}
