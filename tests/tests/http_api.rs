//! The admin HTTP API with a real HTTP client against a served host, on each store: open
//! health probes (readiness 503 naming what fails), the auth matrix (no token, unknown,
//! read, operate x each route), failed messages listed, shown, retried and deleted, and
//! JSON errors for bad paths and ids.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wharf_tests::http::{OPERATE, READ, call, get, post, serve};
use wharf_tests::{Backend, Host, conformance};

conformance!(failed_messages_are_listed_shown_retried_and_deleted_over_http);

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
        json!({"database": "ok", "broker": "not used", "kafka": "not used", "plugins": "ok"}),
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
