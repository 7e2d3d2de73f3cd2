//! Handlers that call other services (`wasi:http`): the example `send-email` posts each
//! mail to a stand-in mail API on loopback. A host is reached only when granted, its
//! resolved address is checked (a name pointing at loopback is refused unless a grant
//! names it), a redirect is checked like the first request, a slow service is cut at the
//! call's deadline and the retry carries the same idempotency key, a response over its
//! limit fails the read, a call's requests and a plugin's requests in flight are bounded,
//! HTTPS is verified against the system's roots, the host's proxy settings are not used,
//! and a host killed mid-request leaves the message to another, which calls with the same
//! key. The Python SDK's client goes the same way.

use std::time::Duration;

use serde_json::json;
use wharf_host::config::Config;
use wharf_host::plugins::PluginConfig;
use wharf_host::retry::RetryPolicy;
use wharf_tests::mail_api::MailApi;
use wharf_tests::{Backend, Host};

/// A host serving `send-email` with `mail_api` and `[plugin.send-email]` as `adjust`
/// leaves it, each failure dead-lettered after `retries` retries.
async fn host(
    backend: Backend,
    mail_api: &str,
    retries: u32,
    adjust: impl FnOnce(&mut PluginConfig),
) -> Host {
    let mut plugin = PluginConfig::default();
    plugin.config.insert("mail_api".into(), mail_api.into());
    plugin.retry = Some(RetryPolicy {
        max_retries: retries,
        base_delay_ms: 1,
        multiplier: 1.0,
        max_delay_ms: 1,
        jitter: 0.0,
    });
    adjust(&mut plugin);
    Host::start_with(backend, &["send-email"], |c| {
        c.plugin.insert("send-email".into(), plugin);
    })
    .await
}

async fn send(host: &Host, n: usize) {
    for i in 0..n {
        let mail = json!({"to": format!("user{i}@example.com"), "subject": "Hi"});
        host.publish("test", "email.requested", mail).await;
    }
    host.drain().await;
}

/// The one failed message's error.
async fn refusal(host: &Host) -> String {
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    failed[0].error.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_host_gets_each_mail_once_with_its_message_key() {
    wharf_host::metrics::prometheus();
    let api = MailApi::start();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let before = api.received().len();
        let host = host(backend, &format!("{}/send", api.url), 0, |p| {
            p.allowed_hosts = vec![api.url.clone()];
        })
        .await;
        send(&host, 3).await;
        assert!(host.failed().await.is_empty(), "{:?}", host.failed().await);
        let received = &api.received()[before..];
        assert_eq!(received.len(), 3, "{received:?}");
        for r in received {
            assert_eq!(r.key.len(), 32, "a 128-bit hex key: {r:?}");
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["subject"], "Hi");
        }
        let keys: std::collections::BTreeSet<_> = received.iter().map(|r| &r.key).collect();
        assert_eq!(keys.len(), 3, "one key per message");
    }
    let metrics = wharf_host::metrics::prometheus().render();
    let counted =
        r#"wharf_outbound_requests_total{plugin="send-email",host="127.0.0.1",status="200"} 6"#;
    assert!(metrics.contains(counted), "{metrics}");
    assert!(metrics.contains("wharf_outbound_request_duration_seconds_bucket{plugin=\"send-email\",host=\"127.0.0.1\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_granted_is_refused_naming_the_rule() {
    let api = MailApi::start();
    let url = format!("{}/send", api.url);
    let host = host(Backend::Sqlite, &url, 0, |_| {}).await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(
        error.contains("may call no host")
            && error.contains("[plugin.send-email] allowed_hosts = [\"http://127.0.0.1:"),
        "{error}"
    );

    let host = host_granting(&url, &["https://api.example.com", "http://*.test:*"]).await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(
        error.contains(
            "not in [plugin.send-email] allowed_hosts (https://api.example.com, http://*.test:*)"
        ),
        "{error}"
    );
    assert!(api.received().is_empty(), "{:?}", api.received());
}

async fn host_granting(mail_api: &str, grants: &[&str]) -> Host {
    let grants = grants.iter().map(|g| g.to_string()).collect();
    host(Backend::Sqlite, mail_api, 0, |p| p.allowed_hosts = grants).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_unless_a_grant_names_it() {
    let api = MailApi::start();
    let url = format!("http://localhost:{}/send", api.port);
    let host = host_granting(&url, &[&format!("http://*:{}", api.port)]).await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(
        error.contains("localhost resolves to") && error.contains("a loopback address"),
        "{error}"
    );
    let audit = format!("(requests: POST http://localhost:{} refused in ", api.port);
    assert!(error.contains(&audit), "{error}");
    assert!(api.received().is_empty());

    let host = host_granting(&url, &[&format!("http://localhost:{}", api.port)]).await;
    send(&host, 1).await;
    assert!(host.failed().await.is_empty());
    assert_eq!(api.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_checked_like_the_first_request() {
    let api = MailApi::start();
    let to = format!("http://localhost:{}/send", api.port);
    let url = format!("{}/redirect?to={to}", api.url);
    let host = host_granting(&url, &[&api.url]).await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(error.contains("refused http://localhost:"), "{error}");
    let paths: Vec<_> = api.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [format!("/redirect?to={to}")],
        "the redirect's target was not called"
    );
}

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

#[test]
fn grants_and_limits_that_cannot_be_used_are_refused_at_start() {
    let with = |f: fn(&mut PluginConfig)| {
        let mut config = Config::default();
        let mut plugin = PluginConfig::default();
        f(&mut plugin);
        config.plugin.insert("send-email".into(), plugin);
        config.validate().unwrap_err().to_string()
    };
    type Set = fn(&mut PluginConfig);
    let cases: [(Set, &str); 6] = [
        (
            |p| p.allowed_hosts = vec!["api.example.com".into()],
            "allowed_hosts entry \"api.example.com\": needs a scheme",
        ),
        (
            |p| p.allowed_hosts = vec!["https://x\n2026-01-01 ERROR forged".into()],
            "space or a control character",
        ),
        (
            |p| p.allowed_hosts = vec!["https://a.test".into(); 65],
            "allowed_hosts has 65 entries, more than 64",
        ),
        (
            |p| p.http_connect_timeout_ms = Some(0),
            "http_connect_timeout_ms must be greater than 0",
        ),
        (
            |p| p.max_http_requests = Some(1_000),
            "max_http_requests 1000 is above runtime.max_http_requests (10)",
        ),
        (
            |p| p.max_http_response_bytes = Some(1 << 40),
            "above runtime.max_http_response_bytes",
        ),
    ];
    for (set, says) in cases {
        let error = with(set);
        assert!(error.contains(says), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_calls_a_granted_service_once_per_message() {
    let api = MailApi::start();
    let host = wharf_tests::python::host(Backend::Sqlite, "notify-webhook", |c| {
        c.runtime.deadline_ms = 2_000;
        let plugin = PluginConfig {
            allowed_hosts: vec![api.url.clone()],
            config: [("webhook_url".into(), format!("{}/send", api.url))].into(),
            ..PluginConfig::default()
        };
        c.plugin.insert("notify-webhook".into(), plugin);
    })
    .await;
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
    let host = wharf_tests::python::host(Backend::Sqlite, "notify-webhook", |c| {
        c.runtime.deadline_ms = 2_000;
        let mut plugin = PluginConfig::default();
        (plugin.config).insert("webhook_url".into(), format!("{}/send", api.url));
        plugin.retry = Some(RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        });
        c.plugin.insert("notify-webhook".into(), plugin);
    })
    .await;
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

async fn handled(host: &Host) -> i64 {
    host.count("SELECT COUNT(*) FROM processed WHERE plugin = 'send-email'")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_against_the_system_roots() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_rustls::rustls::{ServerConfig, crypto, pki_types::PrivatePkcs8KeyDer};

    // A loopback HTTPS server whose certificate (for localhost) no system root signed.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, s) = (accepted.clone(), served.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            if acceptor.accept(tcp).await.is_ok() {
                s.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let origin = format!("https://localhost:{port}");
    let host = host_granting(&format!("{origin}/send"), &[&origin]).await;
    send(&host, 1).await;
    let error = refusal(&host).await;
    assert!(
        error.contains(&format!("TLS with {origin} failed"))
            && error.contains("invalid peer certificate"),
        "{error}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the host did connect");
    assert_eq!(
        served.load(Ordering::SeqCst),
        0,
        "and refused the certificate"
    );
}
