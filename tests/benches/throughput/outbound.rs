//! What a handler's HTTP call costs (`outbound`): `send-email` posting one mail per message
//! to a loopback service, against a plain Rust client (reqwest) posting the same body to the
//! same server in the same run, with its connections pooled (as the host pools a plugin's) and,
//! for scale, with a new one per request; p50 and p99 per call, and `send-email` without the
//! call (sandbox, JSON, a log line).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wharf_host::envelope::Envelope;
use wharf_host::outcome::Outcome;
use wharf_host::plugins::PluginConfig;
use wharf_host::runtime::{CallContext, NoState};
use wharf_tests::mail_api::MailApi;
use wharf_tests::{plugin_wasm, test_config};

/// Calls measured per way, after a tenth as many to warm up.
const CALLS: usize = 2_000;

pub async fn versus_plain_client() {
    let api = MailApi::start();
    let url = format!("{}/send", api.url);
    let body = serde_json::json!({"to": "ada@example.com", "subject": "Your order"});

    let with_call = handler_calls(&api.url, Some(&url)).await;
    let connections = api.connections();
    let without_call = handler_calls(&api.url, None).await;
    let pooled = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let pooled = client_calls(&pooled, &url, &body).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let fresh = client_calls(&fresh, &url, &body).await;

    let (p50, p99) = with_call;
    println!(
        "outbound: send-email posting one mail to loopback: p50 {p50:.0} us, p99 {p99:.0} us per message ({connections} connections for {} requests)",
        CALLS + CALLS / 10
    );
    println!(
        "outbound: reqwest, pooled connection: p50 {:.0} us, p99 {:.0} us; send-email {:.2}x at p50 (target <= 2x)",
        pooled.0,
        pooled.1,
        p50 / pooled.0
    );
    println!(
        "outbound: reqwest, a new connection per request: p50 {:.0} us, p99 {:.0} us; send-email {:.2}x at p50",
        fresh.0,
        fresh.1,
        p50 / fresh.0
    );
    println!(
        "outbound: send-email without the call (sandbox, JSON, a log line): p50 {:.0} us, p99 {:.0} us",
        without_call.0, without_call.1
    );
}

/// (p50, p99) in microseconds of `send-email` calls, posting to `mail_api` if given.
async fn handler_calls(origin: &str, mail_api: Option<&str>) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.runtime.deadline_ms = 5_000;
    let plugin = PluginConfig {
        allowed_hosts: vec![origin.to_owned()],
        ..PluginConfig::default()
    };
    config.plugin.insert("send-email".into(), plugin);
    let runtime = config.sandbox().unwrap();
    let plugin = runtime.load(&plugin_wasm("send-email")).await.unwrap();
    let payload = serde_json::json!({"to": "ada@example.com", "subject": "Your order"});
    let envelope = Envelope {
        id: Uuid::now_v7(),
        queue: "bench".into(),
        kind: "email.requested".into(),
        headers: Default::default(),
        payload: payload.to_string().into_bytes(),
        attempts: 0,
        lock_token: Uuid::nil(),
        settled_plugins: Default::default(),
        origin: Default::default(),
        due_at: None,
        key: None,
        seq: None,
        turn: None,
    };
    let values: BTreeMap<String, String> = (mail_api.iter())
        .map(|url| ("mail_api".to_owned(), url.to_string()))
        .collect();
    let context = CallContext {
        plugin: Arc::from(plugin.name()),
        message_id: envelope.id,
        config: Arc::new(values),
        state: Arc::new(NoState),
        trace: wharf_host::trace::TraceContext::for_call(&envelope.headers),
        request: false,
    };
    let mut took = Vec::with_capacity(CALLS);
    for i in 0..CALLS + CALLS / 10 {
        let started = Instant::now();
        let outcome = runtime.call(&plugin, &envelope, 1, context.clone()).await;
        assert!(matches!(outcome, Outcome::Ok(_)), "{outcome:?}");
        if i >= CALLS / 10 {
            took.push(started.elapsed());
        }
    }
    percentiles(took)
}

/// (p50, p99) in microseconds of `client` posting `body` to `url`.
async fn client_calls(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> (f64, f64) {
    let mut took = Vec::with_capacity(CALLS);
    for i in 0..CALLS + CALLS / 10 {
        let started = Instant::now();
        let response = client
            .post(url)
            .header("idempotency-key", "0123456789abcdef0123456789abcdef")
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        if i >= CALLS / 10 {
            took.push(started.elapsed());
        }
    }
    percentiles(took)
}

fn percentiles(mut took: Vec<Duration>) -> (f64, f64) {
    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}
