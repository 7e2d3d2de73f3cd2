//! A host's admin HTTP API served on a free loopback port for a test, and a client for it.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use wharf_host::http::config::{HttpConfig, Token};
use wharf_host::http::{self, Api, Tokens};
use wharf_host::transport::amqp::connection::BrokerLink;
use wharf_host::transport::kafka::KafkaView;

use crate::Host;

/// The read-scope token of [`serve`]d hosts (named `viewer`).
pub const READ: &str = "viewer-0123456789abcdef";
/// The operate-scope token of [`serve`]d hosts (named `ops`).
pub const OPERATE: &str = "ops-0123456789abcdef012";
/// `http.max_body_bytes` of [`serve`]d hosts.
pub const BODY_LIMIT: usize = 4 << 20;

/// `host` served on a free loopback port with the [`READ`] and [`OPERATE`] tokens; its
/// base URL.
pub async fn serve(host: &Host) -> String {
    serve_with(host, None).await
}

/// [`serve`], with the link to the broker of `host`'s consumers (readiness checks it).
pub async fn serve_with(host: &Host, broker: Option<BrokerLink>) -> String {
    serve_links(host, broker, None).await
}

/// [`serve`], with the links to the AMQP broker and the Kafka brokers of `host`'s
/// consumers (readiness checks them).
pub async fn serve_links(
    host: &Host,
    broker: Option<BrokerLink>,
    kafka: Option<KafkaView>,
) -> String {
    let config = HttpConfig {
        tokens: vec![
            Token::parse(&format!("viewer:read:{READ}")).unwrap(),
            Token::parse(&format!("ops:operate:{OPERATE}")).unwrap(),
        ],
        max_body_bytes: BODY_LIMIT,
        ..HttpConfig::default()
    };
    let api = Api {
        host: "test-host".into(),
        store: host.store.clone(),
        plugins: host.catalog.clone(),
        runtime: host.runtime.clone(),
        broker,
        kafka,
        amqp: host.config.amqp.clone(),
        kafka_config: host.config.kafka.clone(),
        max_payload_bytes: host.config.inbox.max_payload_bytes,
        max_request_timeout: std::time::Duration::from_millis(config.max_request_timeout_ms),
        tokens: Tokens::from_config(&config).unwrap(),
        handles: true,
    };
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (_running, shutdown) = tokio::sync::watch::channel(false);
        http::serve(listener, Arc::new(api), &config, shutdown).await
    });
    base
}

/// `method path` with `token` (if any) and a JSON `body` (if any): the status and the
/// JSON answer (panics when the answer is not JSON).
pub async fn send(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or_else(|e| {
        panic!("{path}: the answer is not JSON: {e}");
    });
    (status, body)
}

/// `GET path` as `token`.
pub async fn get(base: &str, path: &str, token: &str) -> (StatusCode, Value) {
    send(base, Method::GET, path, Some(token), None).await
}

/// `POST path` as `token`, no body.
pub async fn post(base: &str, path: &str, token: &str) -> (StatusCode, Value) {
    send(base, Method::POST, path, Some(token), None).await
}

/// `method path` with `token` (if any), no body.
pub async fn call(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    send(base, method, path, token, None).await
}
