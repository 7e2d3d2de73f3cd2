//! Held keys over the HTTP API: listed with the message holding each and how many wait
//! behind it; skipped by an operator (a reader may not), once: two operators racing get one
//! skip and one 404; bad bodies (not JSON, wrong types, unknown fields, an oversize or
//! control-character key, a plugin name outside its rule) and bad limits are a 400 naming
//! the problem; every skip, refused or not, is audited; `wharf_held_keys` counts them.
//! `wharf keys held` and `wharf keys skip` do the same from the command line.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_host::transport::pump::StopWhen;
use wharf_tests::held::holding;
use wharf_tests::http::{OPERATE, READ, get, send, serve};
use wharf_tests::{Backend, Host, conformance, wait_for};

conformance!(held_keys_are_listed_and_skipped_once);

async fn skip(base: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    send(
        base,
        Method::POST,
        "/api/keys/held/skip",
        Some(token),
        Some(body),
    )
    .await
}

async fn held_keys_are_listed_and_skipped_once(backend: Backend) {
    let (host, messages) = holding(backend, "k").await;
    let base = serve(&host).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = host.worker.clone();
    let running = tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    wait_for("the key held", Duration::from_secs(20), async || {
        let (_, held) = get(&base, "/api/keys/held", READ).await;
        held["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;

    let (status, held) = get(&base, "/api/keys/held?limit=5", READ).await;
    assert_eq!(status, StatusCode::OK);
    let item = &held["items"][0];
    assert_eq!(
        (
            &item["queue"],
            &item["key"],
            &item["plugin"],
            &item["seq"],
            &item["waiting"]
        ),
        (
            &json!("test"),
            &json!("k"),
            &json!("sequence-a"),
            &json!(2),
            &json!(1)
        ),
        "{held}"
    );
    assert_eq!(item["message_id"], json!(messages[1].id.to_string()));
    let scrape = reqwest::get(format!("{base}/metrics")).await.unwrap();
    let text = scrape.text().await.unwrap();
    assert!(
        text.contains("wharf_held_keys{plugin=\"sequence-a\"} 1"),
        "{text}"
    );
    for limit in ["0", "1001", "ten", "%00"] {
        let (status, body) = get(&base, &format!("/api/keys/held?limit={limit}"), READ).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{limit}: {body}");
        assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    }

    let good = json!({"queue": "test", "key": "k", "plugin": "sequence-a"});
    let (status, _) = skip(&base, READ, &good).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let long_key = "k".repeat(256);
    for (body, says) in [
        (json!("skip it"), "not a skip"),
        (
            json!({"queue": "test", "key": 5, "plugin": "sequence-a"}),
            "not a skip",
        ),
        (json!({"queue": "test", "key": "k"}), "plugin"),
        (
            json!({"queue": "test", "key": "k", "plugin": "sequence-a", "all": true}),
            "unknown field",
        ),
        (
            json!({"queue": "test", "key": long_key, "plugin": "sequence-a"}),
            "over the limit of 255",
        ),
        (
            json!({"queue": "test", "key": "k\u{1b}[2J", "plugin": "sequence-a"}),
            "ordering key",
        ),
        (
            json!({"queue": "te st", "key": "k", "plugin": "sequence-a"}),
            "queue name",
        ),
        (
            json!({"queue": "test", "key": "k", "plugin": "sequence a"}),
            "plugin name",
        ),
    ] {
        let (status, answer) = skip(&base, OPERATE, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{body}: {error}");
        assert!(!error.contains('\u{1b}'), "escaped: {error}");
    }
    let (status, answer) = skip(
        &base,
        OPERATE,
        &json!({"queue": "test", "key": "k", "plugin": "other"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("GET /api/keys/held")
    );

    // Two operators at once: one skips, the other finds nothing left to skip.
    let (first, second) = tokio::join!(skip(&base, OPERATE, &good), skip(&base, OPERATE, &good));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::NOT_FOUND],
        "{first:?} {second:?}"
    );
    wait_for(
        "the key's next message handled",
        Duration::from_secs(20),
        async || host.count("SELECT COUNT(*) FROM inbox").await == 0,
    )
    .await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    let (_, held) = get(&base, "/api/keys/held", READ).await;
    assert_eq!(held["items"], json!([]));
    let (_, audit) = get(&base, "/api/audit", READ).await;
    let skips: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "skip key")
        .collect();
    assert_eq!(skips.len(), 11, "every skip an operator tried: {audit}");
    assert!(
        skips
            .iter()
            .any(|e| e["result"].as_str().unwrap().starts_with("ok:"))
    );
}

/// `wharf keys <args>` on `host`'s database: exit status, stdout, stderr.
fn keys(host: &Host, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .arg("keys")
        .args(args)
        .env("WHARF_DATABASE_URL", &host.config.database.url)
        .env("WHARF_LOG", "warn")
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_skips_held_keys() {
    let (host, messages) = holding(Backend::Sqlite, "k").await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = host.worker.clone();
    let running = tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    wait_for("the key held", Duration::from_secs(20), async || {
        host.store.held_keys(10).await.unwrap().len() == 1
    })
    .await;
    let (ok, table, _) = keys(&host, &["held"]);
    assert!(ok);
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.contains("sequence-a") && row.contains(&messages[1].id.to_string()),
        "{table}"
    );
    let (ok, json, _) = keys(&host, &["held", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["waiting"], json!(1), "{listed}");
    let (ok, _, error) = keys(
        &host,
        &[
            "skip",
            "--queue",
            "test",
            "--key",
            "k\u{7}",
            "--plugin",
            "sequence-a",
        ],
    );
    assert!(!ok && error.contains("ordering key"), "{error}");
    assert!(!error.contains('\u{7}'), "escaped: {error}");
    let (ok, _, error) = keys(
        &host,
        &[
            "skip",
            "--queue",
            "test",
            "--key",
            "other",
            "--plugin",
            "sequence-a",
        ],
    );
    assert!(!ok && error.contains("not held"), "{error}");
    let (ok, _, error) = keys(
        &host,
        &["skip", "--queue", "test", "--key", "k", "--plugin", "a b"],
    );
    assert!(!ok && error.contains("plugin name"), "{error}");
    let (ok, said, error) = keys(
        &host,
        &[
            "skip",
            "--queue",
            "test",
            "--key",
            "k",
            "--plugin",
            "sequence-a",
        ],
    );
    assert!(ok, "{error}");
    assert!(said.contains("goes on"), "{said}");
    wait_for(
        "the key's next message handled",
        Duration::from_secs(20),
        async || host.count("SELECT COUNT(*) FROM inbox").await == 0,
    )
    .await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    let audit = host.store.audit_list(10).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "skip key" && e.who == "cli")
            .count(),
        2,
        "a skip tried on the store, done or not: {audit:?}"
    );
}
