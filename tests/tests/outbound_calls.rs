//! What a handler's calls to other services may do, and how they are retried: a slow
//! service is cut at the call's deadline and each retry carries the message's one
//! idempotency key, as does the message a killed host leaves to another (whose proxy
//! settings are not used); a response over its limit fails the read; a call's requests
//! and a plugin's requests in flight are bounded; the Python SDK's client goes the same
//! way, and one built against the world without HTTP says what to build it against.

use std::time::Duration;

use serde_json::json;
use wharf_host::plugins::PluginConfig;
use wharf_host::retry::RetryPolicy;
use wharf_tests::mail_api::MailApi;
use wharf_tests::outbound::{handled, host, refusal, send};
use wharf_tests::{Backend, Host};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_service_is_cut_at_the_deadline_and_retried_with_the_same_key() {
    let api = MailApi::start();
    let url = format!("{}/slow", api.url);
    let host = host(Backend::Sqlite, &url, 2, |p| {
        p.allowed_hosts = vec![api.url.clone()];
    })
    .await;
    send(&host, 2).await;
    let failed = host.failed().await;
    assert_eq!(failed.len(), 2);
    let error = &failed[0].error;
    assert!(error.contains("deadline"), "{error}");
    let origin = format!("(requests: POST {} timeout in ", api.url);
    assert!(
        error.contains(&origin),
        "the attempt says what its request did: {error}"
    );
    let received = api.received();
    assert_eq!(
        received.len(),
        6,
        "three attempts of two messages: {received:?}"
    );
    assert_eq!(
        api.keys().len(),
        2,
        "each message's attempts carry its one key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_its_limit_fails_the_read() {
    let api = MailApi::start();
    let host = host(Backend::Sqlite, &format!("{}/big", api.url), 0, |p| {
        p.allowed_hosts = vec![api.url.clone()];
        p.max_http_response_bytes = Some(1 << 20);
    })
    .await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(
        error.contains(
            "the response is longer than [plugin.send-email] max_http_response_bytes (1048576 bytes)"
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_makes_at_most_its_requests() {
    let api = MailApi::start();
    // Three redirects in a row: the call may make two requests.
    let hop = |to: String| format!("{}/redirect?to={to}", api.url);
    let url = hop(hop(hop(format!("{}/send", api.url))));
    let host = host(Backend::Sqlite, &url, 0, |p| {
        p.allowed_hosts = vec![api.url.clone()];
        p.max_http_requests = Some(2);
    })
    .await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(
        error.contains("the call has made its 2 requests ([plugin.send-email] max_http_requests)"),
        "{error}"
    );
    assert_eq!(api.received().len(), 2);
    assert_eq!(
        api.connections(),
        1,
        "the second request reused the first's connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_has_at_most_its_requests_in_flight_over_its_calls() {
    for (in_flight, most) in [(1, 1..=1), (4, 2..=4)] {
        let api = MailApi::start();
        let plugin = PluginConfig {
            allowed_hosts: vec![api.url.clone()],
            config: [("mail_api".into(), format!("{}/wait", api.url))].into(),
            max_concurrency: Some(4),
            max_http_concurrency: Some(in_flight),
            ..PluginConfig::default()
        };
        let host = Host::start_with(Backend::Sqlite, &["send-email"], |c| {
            c.runtime.deadline_ms = 5_000;
            c.plugin.insert("send-email".into(), plugin);
        })
        .await;
        send(&host, 8).await;
        assert!(host.failed().await.is_empty(), "{:?}", host.failed().await);
        assert_eq!(api.received().len(), 8);
        let seen = api.most_waiting();
        assert!(
            most.contains(&seen),
            "max_http_concurrency {in_flight}: {seen} at once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_request_runs_the_message_again_with_the_same_key() {
    let (api, proxy) = (MailApi::start(), MailApi::start());
    let url = wharf_tests::fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = wharf_tests::test_config(dir.path());
    config.database.url = url.clone();
    let checker = Host::start_on(config, &["send-email"], tempfile::tempdir().unwrap()).await;
    let mail = json!({"to": "ada@example.com", "subject": "Hi"});
    checker.publish("test", "email.requested", mail).await;
    let file = dir.path().join("wharf.toml");
    let toml = format!(
        "[plugin.send-email]\nallowed_hosts = [\"{0}\"]\nconfig = {{ mail_api = \"{0}/slow-once\" }}\n",
        api.url
    );
    std::fs::write(&file, toml).unwrap();
    let victim = |hold: &str| {
        wharf_tests::victim_command(
            env!("CARGO_BIN_EXE_wharf-under-test"),
            &url,
            &checker.config.plugins.dir,
            &dir.path().join("victim-cache"),
            hold,
        )
        .arg("--config")
        .arg(&file)
        // The host's proxy settings are not the plugin's: requests go straight out.
        .env("HTTP_PROXY", &proxy.url)
        .env("http_proxy", &proxy.url)
        .env("ALL_PROXY", &proxy.url)
        .spawn()
        .unwrap()
    };
    // Killed while its request waits for the service's answer.
    let mut first = victim("10000");
    wharf_tests::wait_for("the first request", Duration::from_secs(60), async || {
        !api.received().is_empty()
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(handled(&checker).await, 0, "killed before it could settle");

    let mut second = victim("10000");
    wharf_tests::wait_for("the message handled", Duration::from_secs(60), async || {
        handled(&checker).await == 1
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let received = api.received();
    assert_eq!(received.len(), 2, "the call was made again: {received:?}");
    assert_eq!(api.keys().len(), 1, "with the same key: {received:?}");
    assert!(checker.failed().await.is_empty());
    assert!(proxy.received().is_empty(), "{:?}", proxy.received());
}

/// A host serving the Python `notify-webhook` built against `world`, posting to `api`
/// (granted when `granted`), with no retries unless it may call.
async fn notify_webhook(api: &MailApi, world: &str, granted: bool) -> Host {
    Host::start_with(Backend::Sqlite, &[], |c| {
        wharf_tests::python::serve_of_world(c, "notify-webhook", world);
        c.runtime.deadline_ms = 2_000;
        let mut plugin = PluginConfig::default();
        (plugin.config).insert("webhook_url".into(), format!("{}/send", api.url));
        if granted {
            plugin.allowed_hosts = vec![api.url.clone()];
        }
        if !granted || world != "plugin-http" {
            plugin.retry = Some(RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            });
        }
        c.plugin.insert("notify-webhook".into(), plugin);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_calls_a_granted_service_once_per_message() {
    let api = MailApi::start();
    let host = notify_webhook(&api, "plugin-http", true).await;
    let plugins = host.catalog.current();
    let plugin = plugins
        .iter()
        .find(|p| p.name() == "notify-webhook")
        .unwrap();
    assert_eq!(plugin.world(), "0.6.0");
    assert_eq!(plugin.not_granted, ["https://hooks.partner.example"]);
    for order in ["o-1", "o-2"] {
        let shipped = json!({"order": order, "carrier": "ups"});
        host.publish("test", "order.shipped", shipped).await;
    }
    host.drain().await;
    assert!(host.failed().await.is_empty(), "{:?}", host.failed().await);
    let received = api.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(api.keys().len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["carrier"], "ups");

    // Not granted: the refusal reaches the handler, which retries, and its dead letter says why.
    let host = notify_webhook(&api, "plugin-http", false).await;
    host.publish("test", "order.shipped", json!({"order": "o-3"}))
        .await;
    host.drain().await;
    let error = refusal(&host).await;
    assert!(
        error.contains("HTTP request failed: refused http://127.0.0.1:")
            && error.contains("may call no host"),
        "{error}"
    );
    assert_eq!(api.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_built_without_http_says_which_world_has_it() {
    let api = MailApi::start();
    let host = notify_webhook(&api, "plugin", true).await;
    host.publish("test", "order.shipped", json!({"order": "o-4"}))
        .await;
    host.drain().await;
    let error = refusal(&host).await;
    assert!(
        error.contains("built against the plugin world, which has no HTTP")
            && error.contains("componentize-py -w plugin-http"),
        "{error}"
    );
    assert!(api.received().is_empty());
}
