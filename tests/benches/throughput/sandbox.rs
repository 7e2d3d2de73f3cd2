//! The per-message sandbox cost: a fresh instance from the `InstancePre`, `handle` with a
//! 1 KiB JSON payload, and its drop, measured on the trivial plugin (the machine's phase,
//! printed first) or any plugin (`call_cost`).

use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;
use wharf_host::envelope::Envelope;
use wharf_host::outcome::Outcome;
use wharf_host::runtime::{CallContext, Plugin, Runtime, StateReader};
use wharf_tests::{plugin_wasm, test_config};

const SANDBOX_CALLS: u32 = 20_000;

/// A 1 KiB order as JSON.
pub(crate) fn payload_1k() -> Vec<u8> {
    let items: Vec<_> = (0..14)
        .map(|i| serde_json::json!({"sku": format!("SKU-{i:05}"), "quantity": i}))
        .collect();
    let mut body =
        serde_json::json!({"order_id": "o-1", "customer_email": "a@example.com", "items": items})
            .to_string()
            .into_bytes();
    body.resize(1024, b' ');
    body
}

/// Microseconds per call of the trivial plugin.
pub(crate) async fn sandbox_cost() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let runtime = config.sandbox().unwrap();
    let plugin = runtime.load(&plugin_wasm("fixture-noop")).await.unwrap();
    let state = Arc::new(wharf_host::runtime::NoState);
    call_cost(
        &runtime,
        &plugin,
        ("bench.noop", None),
        payload_1k(),
        state,
        SANDBOX_CALLS,
    )
    .await
}

/// Microseconds per call of `plugin` on a `kind` message of `payload` (with ordering key
/// `key`), reading `state`: a fresh instance, the call and its drop, after a warm-up.
pub(crate) async fn call_cost(
    runtime: &Runtime,
    plugin: &Plugin,
    (kind, key): (&str, Option<&str>),
    payload: Vec<u8>,
    state: Arc<dyn StateReader>,
    calls: u32,
) -> f64 {
    let envelope = Envelope {
        id: Uuid::now_v7(),
        queue: "bench".into(),
        kind: kind.into(),
        headers: Default::default(),
        payload,
        attempts: 0,
        lock_token: Uuid::nil(),
        settled_plugins: Default::default(),
        origin: Default::default(),
        due_at: None,
        key: key.map(str::to_owned),
        seq: None,
        turn: None,
    };
    let context = CallContext {
        plugin: Arc::from(plugin.name()),
        message_id: envelope.id,
        config: Arc::default(),
        state,
        trace: wharf_host::trace::TraceContext::for_call(&envelope.headers),
        request: false,
    };
    for _ in 0..calls / 20 {
        runtime.call(plugin, &envelope, 1, context.clone()).await;
    }
    let started = Instant::now();
    for _ in 0..calls {
        let outcome = runtime.call(plugin, &envelope, 1, context.clone()).await;
        assert!(matches!(outcome, Outcome::Ok(_)), "{outcome:?}");
    }
    started.elapsed().as_secs_f64() * 1e6 / calls as f64
}
