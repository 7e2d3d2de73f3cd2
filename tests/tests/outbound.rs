//! Which services a handler may call (`wasi:http`): the example `send-email` posts each
//! mail to a stand-in mail API on loopback. A host is reached only when granted, its
//! resolved address is checked (a name pointing at loopback is refused unless a grant
//! names it), a redirect is checked like the first request, HTTPS is verified against the
//! system's roots, and grants that cannot be read stop the host at start.

use wharf_host::config::Config;
use wharf_host::plugins::PluginConfig;
use wharf_tests::Backend;
use wharf_tests::mail_api::MailApi;
use wharf_tests::outbound::{host, host_granting, refusal, send};

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
