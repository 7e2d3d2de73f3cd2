//! Bench binary (`cargo bench -p wharf-tests`): the per-message sandbox cost (fresh
//! instance from the `InstancePre` + `handle` with a 1 KiB JSON payload + drop) and
//! end-to-end messages/s through the SQLite inbox with a trivial plugin, each printed with
//! its target or baseline measured in the same run.

use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;
use wharf_host::envelope::{Envelope, NewMessage};
use wharf_host::outcome::Outcome;
use wharf_host::runtime::{CallContext, Runtime};
use wharf_tests::{Backend, Host, plugin_wasm, test_config};

const SANDBOX_CALLS: u32 = 20_000;
const INBOX_MESSAGES: usize = 20_000;

fn payload_1k() -> Vec<u8> {
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

async fn sandbox_cost() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let runtime = Runtime::new(&config.runtime, config.plugins.cache_dir).unwrap();
    let plugin = runtime.load(&plugin_wasm("fixture-noop")).await.unwrap();
    let envelope = Envelope {
        id: Uuid::now_v7(),
        queue: "bench".into(),
        kind: "bench.noop".into(),
        headers: Default::default(),
        payload: payload_1k(),
        attempts: 0,
        lock_token: Uuid::nil(),
        settled_plugins: Default::default(),
    };
    let context = CallContext {
        plugin: Arc::from("noop"),
        message_id: envelope.id,
        config: Arc::default(),
        store: None,
        max_payload_bytes: 1 << 20,
    };
    for _ in 0..1_000 {
        runtime.call(&plugin, &envelope, 1, context.clone()).await;
    }
    let started = Instant::now();
    for _ in 0..SANDBOX_CALLS {
        let outcome = runtime.call(&plugin, &envelope, 1, context.clone()).await;
        assert!(matches!(outcome, Outcome::Ok(_)), "{outcome:?}");
    }
    started.elapsed().as_secs_f64() * 1e6 / SANDBOX_CALLS as f64
}

async fn inbox_throughput() -> (f64, f64) {
    let host = Host::start_with(Backend::Sqlite, &["fixture-noop"], |c| {
        c.inbox.queues = vec!["bench".into()];
        c.inbox.batch_size = 256;
    })
    .await;
    let payload = payload_1k();
    let messages: Vec<NewMessage> = (0..INBOX_MESSAGES)
        .map(|_| NewMessage::new("bench", "bench.noop", payload.clone()))
        .collect();
    let started = Instant::now();
    for chunk in messages.chunks(1_000) {
        host.store.enqueue(chunk).await.unwrap();
    }
    let enqueue_rate = INBOX_MESSAGES as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = host.drain().await;
    let rate = INBOX_MESSAGES as f64 / started.elapsed().as_secs_f64();
    assert_eq!(report.settled.handled, INBOX_MESSAGES as u64);
    (enqueue_rate, rate)
}

/// `cargo bench -p wharf-tests [-- sandbox]`: a filter argument runs only the benches whose
/// name contains it (cargo's own `--bench` flag is ignored).
#[tokio::main]
async fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let per_call = sandbox_cost().await;
    println!(
        "sandbox: fresh instance + handle(1 KiB JSON) + drop: {per_call:.1} us/message (target <= 20 us: {:.2}x of target)",
        per_call / 20.0
    );
    if !wanted("inbox") {
        return;
    }
    let (enqueue, handled) = inbox_throughput().await;
    println!(
        "sqlite inbox: enqueue {enqueue:.0} msgs/s; claim + sandbox call + settle {handled:.0} msgs/s; ratio to the sandbox alone {:.2}x",
        handled / (1e6 / per_call)
    );
}
