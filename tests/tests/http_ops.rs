//! Operating queues and plugins over the HTTP API: queue depths (inbox and consumed AMQP
//! queues, a broker that cannot be reached named per queue), one queue's numbers, purge
//! refused without `?confirm=<queue>` and done with it (inbox on each store, AMQP on the
//! broker); plugins served, deploy by upload (validated), history and rollback; the
//! dashboard's page and assets, and who the page's token is.

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wharf_host::envelope::KEY_HEADER;
use wharf_host::transport::amqp::{ConsumeSpec, KindFrom};
use wharf_tests::http::{OPERATE, READ, get, post, serve};
use wharf_tests::{
    Backend, Host, amqp_url, confirming_channel, conformance, plugin_wasm, unique_name,
};

conformance!(
    an_inbox_queue_is_shown_and_purged_only_when_confirmed,
    plugins_are_deployed_by_upload_rolled_back_and_listed,
);

/// A consumed AMQP queue the host has not started consuming.
fn consume(queue: &str) -> ConsumeSpec {
    ConsumeSpec {
        queue: queue.to_owned(),
        prefetch: 10,
        consumers: 1,
        kind_from: KindFrom::Type,
        to_inbox: None,
        key_header: KEY_HEADER.into(),
        ordered: false,
    }
}

async fn an_inbox_queue_is_shown_and_purged_only_when_confirmed(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    let base = serve(&host).await;
    for _ in 0..5 {
        host.publish("test", "test.noop", json!({})).await;
    }
    let (status, queues) = get(&base, "/api/queues", READ).await;
    assert_eq!(status, StatusCode::OK);
    let test = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "test")
        .unwrap();
    assert_eq!(
        (test["message_count"].as_u64(), test["ready"].as_u64()),
        (Some(5), Some(5))
    );
    assert!(
        test["oldest_age_seconds"].as_f64().unwrap() >= 0.0,
        "{test}"
    );
    let (status, mut stats) = get(&base, "/api/queues/test/stats", READ).await;
    assert_eq!(status, StatusCode::OK);
    let mut listed = test.clone();
    for q in [&mut stats, &mut listed] {
        q.as_object_mut().unwrap().remove("oldest_age_seconds");
    }
    assert_eq!(stats, listed, "one queue's numbers are the list's");
    let (status, body) = get(&base, "/api/queues/nope/stats", READ).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    for (path, token, expected, says) in [
        (
            "/api/queues/test/purge",
            OPERATE,
            StatusCode::BAD_REQUEST,
            "?confirm=test",
        ),
        (
            "/api/queues/test/purge?confirm=tes",
            OPERATE,
            StatusCode::BAD_REQUEST,
            "the 5 messages waiting",
        ),
        (
            "/api/queues/test/purge?confirm=test",
            READ,
            StatusCode::FORBIDDEN,
            "read",
        ),
        (
            "/api/queues/nope/purge?confirm=nope",
            OPERATE,
            StatusCode::NOT_FOUND,
            "no queue",
        ),
    ] {
        let (status, body) = post(&base, path, token).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox").await,
        5,
        "nothing purged yet"
    );
    let (status, purged) = post(&base, "/api/queues/test/purge?confirm=test", OPERATE).await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(
        purged,
        json!({ "queue": "test", "source": "inbox", "purged": 5 })
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
    let (_, audit) = get(&base, "/api/audit", READ).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["purge", "purge", "purge", "purge"], "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumed_amqp_queue_is_shown_and_purged() {
    let (_connection, channel) = confirming_channel().await;
    let queue = unique_name("purge");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await
        .unwrap();
    for _ in 0..3 {
        let properties = BasicProperties::default().with_type("test.noop".into());
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"{}",
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let host = Host::start_with(Backend::Sqlite, &["fixture-noop"], |c| {
        c.amqp.url = amqp_url();
        c.amqp.consume = vec![consume(&queue)];
    })
    .await;
    let base = serve(&host).await;
    let path = format!("/api/queues/{queue}/stats");
    let (status, stats) = get(&base, &path, READ).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats,
        json!({ "name": queue, "source": "amqp", "message_count": 3, "consumer_count": 0, "dead_letters": null, "failed": 0, "handled_per_minute": 0 })
    );
    let path = format!("/api/queues/{queue}/purge?confirm={queue}");
    let (status, purged) = post(&base, &path, OPERATE).await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["purged"], 3);
    let (_, stats) = get(&base, &format!("/api/queues/{queue}/stats"), READ).await;
    assert_eq!(stats["message_count"], 0);

    // A broker that cannot be reached: the inbox queues are still listed, each consumed
    // queue says why its numbers are missing.
    let offline = Host::start_with(Backend::Sqlite, &["fixture-noop"], |c| {
        c.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
        c.amqp.consume = vec![consume("orders")];
    })
    .await;
    offline.publish("test", "test.noop", json!({})).await;
    let base = serve(&offline).await;
    let (status, queues) = get(&base, "/api/queues", READ).await;
    assert_eq!(status, StatusCode::OK, "{queues}");
    let queues = queues.as_array().unwrap();
    assert_eq!(queues.len(), 2, "{queues:?}");
    assert_eq!(queues[0]["name"], "test");
    let error = queues[1]["error"].as_str().unwrap();
    assert!(
        error.starts_with("AMQP broker amqp://guest@127.0.0.1:1/%2f unreachable: ")
            && error.contains("refused"),
        "{error}"
    );
}

async fn plugins_are_deployed_by_upload_rolled_back_and_listed(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop", "fixture-world-0-2"]).await;
    let base = serve(&host).await;
    let upload = async |token: &str, body: Vec<u8>| -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/plugins"))
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    };
    let v1 = std::fs::read(plugin_wasm("fixture-versioned-v1")).unwrap();
    let v2 = std::fs::read(plugin_wasm("fixture-versioned-v2")).unwrap();

    let (status, body) = upload(READ, v1.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = upload(OPERATE, b"not a component".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("not deployed: "),
        "{body}"
    );
    let (status, body) = upload(OPERATE, Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--data-binary"),
        "{body}"
    );

    let (status, first) = upload(OPERATE, v1.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        (
            first["new"].as_bool(),
            first["deployed"]["version"].as_str()
        ),
        (Some(true), Some("1.0.0"))
    );
    assert_eq!(first["deployed"]["deployed_by"], "ops (HTTP API)");
    let (status, again) = upload(OPERATE, v1).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["new"], false);
    assert_eq!(again["not_granted"], json!([]));
    let (status, _) = upload(OPERATE, v2).await;
    assert_eq!(status, StatusCode::CREATED);
    // send-email asks for https://api.mail.example, which this host does not grant.
    let (status, email) = upload(OPERATE, std::fs::read(plugin_wasm("send-email")).unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{email}");
    assert_eq!(email["not_granted"], json!(["https://api.mail.example"]));

    let (status, history) = get(&base, "/api/plugins/versioned/history", READ).await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2.0.0", "1.0.0"]);
    let (status, rolled) = post(&base, "/api/plugins/versioned/rollback", OPERATE).await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(
        (
            rolled["rolled_back"]["version"].as_str(),
            rolled["active"]["version"].as_str()
        ),
        (Some("2.0.0"), Some("1.0.0"))
    );
    let (status, body) = post(&base, "/api/plugins/versioned/rollback", OPERATE).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post(&base, "/api/plugins/nope/rollback", OPERATE).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get(&base, "/api/plugins/nope/history", READ).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, plugins) = get(&base, "/api/plugins", READ).await;
    assert_eq!(status, StatusCode::OK);
    let served: Vec<(&str, &str, &Value)> = (plugins["served"].as_array().unwrap().iter())
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["world"].as_str().unwrap(),
                &p["asks_hosts"],
            )
        })
        .collect();
    assert_eq!(
        served,
        [
            ("noop", "0.4.0", &json!([])),
            ("world-0-2", "0.2.0", &json!([]))
        ],
        "{plugins}"
    );
    let registry: Vec<(&str, &str)> = plugins["registry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["plugin"].as_str().unwrap(),
                d["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(registry, [("send-email", "0.1.0"), ("versioned", "1.0.0")]);
}

/// The dashboard's page and assets are open, served with a policy that allows no inline
/// code or framing; `/api/whoami` tells the page what the token may do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_and_told_who_calls() {
    let host = Host::start(Backend::Sqlite, &["fixture-noop"]).await;
    let base = serve(&host).await;
    for (path, content_type, contains) in [
        (
            "/",
            "text/html",
            r#"<script src="/dashboard/app.js" defer></script>"#,
        ),
        ("/dashboard/app.js", "text/javascript", "/api/whoami"),
        ("/dashboard/flow.js", "text/javascript", "/api/flow"),
        (
            "/dashboard/app.css",
            "text/css",
            "@media (max-width: 640px)",
        ),
    ] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert!(
            header("content-security-policy").contains("default-src 'self'"),
            "{path}"
        );
        assert!(response.text().await.unwrap().contains(contains), "{path}");
    }
    for (token, name, scope) in [(READ, "viewer", "read"), (OPERATE, "ops", "operate")] {
        let (status, me) = get(&base, "/api/whoami", token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me, json!({ "name": name, "scope": scope }));
    }
}
