//! Requests and their answers, on every store, through `POST /api/messages/request`
//! against a running host: a handler's answer (200), a rejection's reason (422), handled
//! without an answer, an answer of a failed attempt never sent, a request repeated with
//! its id answered once, and no answer in time (504) with the request expiring unhandled.
//! The `quote` fixture (`fixture-answer`) answers `quote.ask` with `{"price": 3 * qty}`
//! and checks the host refuses a second answer. Then hostile callers (SQLite): bad
//! timeouts, reserved headers, wrong types, oversize, no token, two callers racing with one
//! id, and a caller that gives up early.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;
use wharf_host::transport::pump::{Report, StopWhen};
use wharf_tests::http::{OPERATE, READ, send, serve};
use wharf_tests::{Backend, Host, conformance};

conformance!(
    a_request_gets_its_handler_s_answer,
    a_rejected_request_answers_why_at_once,
    a_request_handled_without_an_answer_says_so,
    the_answer_of_a_failed_attempt_is_never_sent,
    a_request_repeated_with_its_id_is_handled_and_answered_once,
    a_request_no_host_takes_in_time_times_out_and_expires_unhandled
);

/// A host serving the `quote` fixture over HTTP, its worker running.
struct Serving {
    host: Host,
    base: String,
    stop: watch::Sender<bool>,
    worker: JoinHandle<Report>,
}

impl Serving {
    async fn start(backend: Backend) -> Self {
        let host = Host::start(backend, &["fixture-answer"]).await;
        let base = serve(&host).await;
        let (stop, rx) = watch::channel(false);
        let worker = host.worker.clone();
        let worker =
            tokio::spawn(async move { worker.run(StopWhen::default(), rx).await.unwrap() });
        Self {
            host,
            base,
            stop,
            worker,
        }
    }

    async fn stop(self) -> Host {
        self.stop.send(true).unwrap();
        self.worker.await.unwrap();
        self.host
    }
}

/// `POST /api/messages/request` of `body` as the operator.
async fn request(base: &str, body: Value) -> (StatusCode, Value) {
    send(
        base,
        Method::POST,
        "/api/messages/request",
        Some(OPERATE),
        Some(&body),
    )
    .await
}

fn ask(kind: &str, message: Value) -> Value {
    json!({ "queue": "test", "kind": kind, "message": message, "timeout_ms": 20_000 })
}

async fn a_request_gets_its_handler_s_answer(backend: Backend) {
    let serving = Serving::start(backend).await;
    let (status, answer) = request(&serving.base, ask("quote.ask", json!({"qty": 4}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "answered");
    assert_eq!(answer["answer"], json!({"price": 12}));
    assert_eq!(answer["headers"]["content-type"], "application/json");
    let host = serving.stop().await;
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
    assert!(host.failed().await.is_empty());
    // Retention deletes answers with the ledger.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cleaned = host.store.cleanup(Duration::ZERO).await.unwrap();
    assert_eq!(cleaned.replies, 1, "{cleaned:?}");
    assert_eq!(host.count("SELECT COUNT(*) FROM replies").await, 0);
}

async fn a_rejected_request_answers_why_at_once(backend: Backend) {
    let serving = Serving::start(backend).await;
    let (status, answer) = request(&serving.base, ask("quote.refuse", json!({}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["status"], "rejected");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("out of stock") && error.contains("failed messages"),
        "{error}"
    );
    let host = serving.stop().await;
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].message_id.to_string(), answer["id"]);
}

async fn a_request_handled_without_an_answer_says_so(backend: Backend) {
    let serving = Serving::start(backend).await;
    let (status, answer) = request(&serving.base, ask("quote.silent", json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "handled");
    assert_eq!(answer["answer"], Value::Null);
    serving.stop().await;
}

async fn the_answer_of_a_failed_attempt_is_never_sent(backend: Backend) {
    let serving = Serving::start(backend).await;
    let (status, answer) = request(&serving.base, ask("quote.flaky", json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["answer"], json!({"attempt": 2}), "{answer}");
    let host = serving.stop().await;
    assert_eq!(host.count("SELECT COUNT(*) FROM replies").await, 1);
}

async fn a_request_repeated_with_its_id_is_handled_and_answered_once(backend: Backend) {
    let serving = Serving::start(backend).await;
    let id = Uuid::now_v7();
    let mut body = ask("quote.ask", json!({"qty": 2}));
    body["id"] = json!(id);
    let first = request(&serving.base, body.clone()).await;
    let again = request(&serving.base, body).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(first, again, "the first answer, again");
    let host = serving.stop().await;
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
    assert_eq!(host.count("SELECT COUNT(*) FROM replies").await, 1);
}

async fn a_request_no_host_takes_in_time_times_out_and_expires_unhandled(backend: Backend) {
    let host = Host::start(backend, &["fixture-answer"]).await;
    let base = serve(&host).await;
    let mut body = ask("quote.ask", json!({"qty": 1}));
    body["timeout_ms"] = json!(200);
    let (status, answer) = request(&base, body).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    let id = answer["error"]
        .as_str()
        .and_then(|e| e.split_whitespace().nth(4))
        .unwrap()
        .to_owned();
    assert!(
        id.parse::<Uuid>().is_ok(),
        "the error names the request: {answer}"
    );
    // A host that takes it now, past its deadline, does not handle it.
    let report = host.drain().await;
    assert_eq!(report.settled.handled, 0, "{report:?}");
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 0);
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].message_id.to_string(), id);
    assert!(failed[0].error.contains("expired"), "{}", failed[0].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_request_cannot_be_answered() {
    let host = Host::start(Backend::Sqlite, &["fixture-answer"]).await;
    host.publish("test", "quote.ask", json!({"qty": 1})).await;
    let report = host.drain().await;
    assert_eq!(report.settled.dead, 1, "{report:?}");
    let failed = host.failed().await;
    assert!(
        failed[0].error.contains("not a request"),
        "{}",
        failed[0].error
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM replies").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_naming_the_problem() {
    let host = Host::start(Backend::Sqlite, &["fixture-answer"]).await;
    let base = serve(&host).await;
    let long = "x".repeat(host.config.inbox.max_payload_bytes);
    let mut reserved = ask("quote.ask", json!({}));
    reserved["headers"] = json!({"reply-to": "orders"});
    let mut expires = ask("quote.ask", json!({}));
    expires["headers"] = json!({"expires-at": "1"});
    for (body, status, says) in [
        (
            json!({"queue": "test", "kind": "quote.ask", "message": {}, "timeout_ms": 0}),
            StatusCode::BAD_REQUEST,
            "timeout_ms 0 is out of range",
        ),
        (
            json!({"queue": "test", "kind": "quote.ask", "message": {}, "timeout_ms": 60_001}),
            StatusCode::BAD_REQUEST,
            "http.max_request_timeout_ms",
        ),
        (
            json!({"queue": "test", "kind": "quote.ask", "message": {}, "timeout_ms": "5s"}),
            StatusCode::BAD_REQUEST,
            "not a request",
        ),
        (
            json!({"queue": "test", "kind": "quote.ask", "message": {}, "wait": 5}),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            json!({"queue": "test", "message": {}}),
            StatusCode::BAD_REQUEST,
            "needs a \"kind\"",
        ),
        (
            reserved,
            StatusCode::BAD_REQUEST,
            "header reply-to is the host's",
        ),
        (
            expires,
            StatusCode::BAD_REQUEST,
            "header expires-at is the host's",
        ),
        (
            json!({"queue": "test", "kind": "quote\u{1b}[2J", "message": {}}),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        (
            json!({"queue": "no such queue!", "kind": "quote.ask", "message": {}}),
            StatusCode::BAD_REQUEST,
            "queue",
        ),
        (
            json!({"queue": "test", "kind": "quote.ask", "message": long}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "inbox.max_payload_bytes",
        ),
    ] {
        let (got, answer) = request(&base, body).await;
        assert_eq!(got, status, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{error}");
        assert!(!error.contains('\u{1b}'), "{error}");
    }
    let body = ask("quote.ask", json!({"qty": 1}));
    let path = "/api/messages/request";
    let (status, _) = send(&base, Method::POST, path, None, Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&base, Method::POST, path, Some(READ), Some(&body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox").await,
        0,
        "none got in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callers_racing_with_one_id_get_one_answer_of_one_run() {
    let serving = Serving::start(Backend::Sqlite).await;
    let mut body = ask("quote.ask", json!({"qty": 5}));
    body["id"] = json!(Uuid::now_v7());
    let (a, b) = tokio::join!(
        request(&serving.base, body.clone()),
        request(&serving.base, body)
    );
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    assert_eq!(a, b);
    assert_eq!(a.1["answer"], json!({"price": 15}));
    let host = serving.stop().await;
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_early_gets_the_answer_by_asking_again() {
    let host = Host::start(Backend::Sqlite, &["fixture-answer"]).await;
    let base = serve(&host).await;
    let id = Uuid::now_v7();
    let mut body = ask("quote.ask", json!({"qty": 7}));
    body["id"] = json!(id);
    // The caller hangs up while no host handles anything.
    let gave_up = reqwest::Client::new()
        .post(format!("{base}/api/messages/request"))
        .bearer_auth(OPERATE)
        .json(&body)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
    host.drain().await;
    let (status, answer) = request(&base, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["answer"], json!({"price": 21}));
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
}

/// `wharf request <args>` against the database of `host`.
async fn wharf_request(host: &Host, args: &[&str]) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_wharf-under-test");
    wharf_tests::cli::wharf_on(bin, host, &[&["request"], args].concat()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_request_prints_the_answer_or_says_why_there_is_none() {
    let serving = Serving::start(Backend::Sqlite).await;
    let ask = [
        "--queue",
        "test",
        "--kind",
        "quote.ask",
        "--json",
        r#"{"qty": 3}"#,
    ];
    let answered = wharf_request(&serving.host, &ask).await;
    let stdout = String::from_utf8_lossy(&answered.stdout);
    assert!(answered.status.success(), "{answered:?}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer, json!({"price": 9}));
    let refused = ["--queue", "test", "--kind", "quote.refuse", "--json", "{}"];
    let refused = wharf_request(&serving.host, &refused).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("out of stock") && stderr.contains("wharf failed show"),
        "{stderr}"
    );
    let host = serving.stop().await;
    let late = [
        "--queue",
        "test",
        "--kind",
        "quote.ask",
        "--json",
        "{}",
        "--timeout",
        "200ms",
    ];
    let late = wharf_request(&host, &late).await;
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success());
    assert!(stderr.contains("no answer to request"), "{stderr}");
    for (args, says) in [
        (&["--json", "nope"][..], "not valid JSON"),
        (
            &["--json", "{}", "--header", "reply-to=orders"][..],
            "reply-to is the host's",
        ),
        (
            &["--json", "{}", "--timeout", "0s"][..],
            "--timeout must be between",
        ),
        (&["--json", "{}", "--key", ""][..], "key"),
    ] {
        let mut all = vec!["--queue", "test", "--kind", "quote.ask"];
        all.extend_from_slice(args);
        let refused = wharf_request(&host, &all).await;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox").await,
        1,
        "only the late request is there"
    );
}
