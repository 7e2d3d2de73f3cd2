//! Bench binary (`cargo bench -p wharf-tests`): the per-message sandbox cost (fresh
//! instance from the `InstancePre` + `handle` with a 1 KiB JSON payload + drop) and
//! end-to-end messages/s through the SQLite inbox with a trivial plugin, each printed with
//! its target or baseline measured in the same run; then the same through the PostgreSQL
//! inbox against a raw claim+delete loop on the same database, and publish -> handled
//! latency on an idle host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wharf_host::envelope::{Envelope, NewMessage};
use wharf_host::outcome::Outcome;
use wharf_host::runtime::{CallContext, Runtime};
use wharf_host::worker::StopWhen;
use wharf_tests::{Backend, Host, plugin_wasm, test_config};

const SANDBOX_CALLS: u32 = 20_000;
const INBOX_MESSAGES: usize = 20_000;
const PG_MESSAGES: usize = 20_000;
const PG_BATCH: u32 = 100;
const LATENCY_SAMPLES: usize = 200;

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

/// Raw baseline: one `DELETE ... SKIP LOCKED RETURNING` statement (its own commit) per
/// batch of `PG_BATCH`, until the queue is empty. Returns rows/s.
async fn raw_claim_delete(pool: &sqlx::PgPool, queue: &str) -> f64 {
    let started = Instant::now();
    let mut total = 0usize;
    loop {
        let rows = sqlx::query(
            "DELETE FROM inbox WHERE id IN (
                 SELECT id FROM inbox WHERE queue = $1 AND available_at <= wharf_now_ms()
                 ORDER BY available_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, payload",
        )
        .bind(queue)
        .bind(PG_BATCH as i64)
        .fetch_all(pool)
        .await
        .unwrap();
        if rows.is_empty() {
            break;
        }
        total += rows.len();
    }
    assert_eq!(total, PG_MESSAGES);
    total as f64 / started.elapsed().as_secs_f64()
}

fn messages(queue: &str, n: usize, payload: &[u8]) -> Vec<NewMessage> {
    (0..n)
        .map(|_| NewMessage::new(queue, "bench.noop", payload.to_vec()))
        .collect()
}

/// End-to-end msgs/s through the PostgreSQL inbox vs the raw loop on the same database,
/// then publish -> handled latency on an idle host (p50, p99 in ms).
async fn postgres_inbox() -> (f64, f64, f64, f64) {
    let host = Host::start_with(Backend::Postgres, &["fixture-noop"], |c| {
        c.inbox.queues = vec!["bench".into()];
        c.inbox.batch_size = PG_BATCH;
        c.inbox.poll_interval_ms = 1_000;
    })
    .await;
    let pool = sqlx::PgPool::connect(&host.config.database.url)
        .await
        .unwrap();
    let payload = vec![b' '; 256];
    for chunk in messages("bench", PG_MESSAGES, &payload).chunks(1_000) {
        host.store.enqueue(chunk).await.unwrap();
    }
    let raw = raw_claim_delete(&pool, "bench").await;
    for chunk in messages("bench", PG_MESSAGES, &payload).chunks(1_000) {
        host.store.enqueue(chunk).await.unwrap();
    }
    let started = Instant::now();
    let report = host.drain().await;
    let wharf = PG_MESSAGES as f64 / started.elapsed().as_secs_f64();
    assert_eq!(report.settled.handled, PG_MESSAGES as u64);

    let host = Arc::new(host);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let host = host.clone();
        async move { host.worker.run(StopWhen::default(), stopped).await }
    });
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let message = NewMessage::new("bench", "bench.noop", payload.clone());
        let started = Instant::now();
        host.store
            .enqueue(std::slice::from_ref(&message))
            .await
            .unwrap();
        loop {
            let done: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM processed WHERE message_id = $1")
                    .bind(message.id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if done > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies[LATENCY_SAMPLES / 2];
    let p99 = latencies[LATENCY_SAMPLES * 99 / 100];
    (raw, wharf, p50, p99)
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
    if wanted("postgres") {
        let (raw, wharf, p50, p99) = postgres_inbox().await;
        println!(
            "postgres inbox, batch {PG_BATCH}, 256 B: raw claim+delete loop {raw:.0} rows/s; wharf claim + sandbox call + settle {wharf:.0} msgs/s: {:.2}x of raw (target >= 0.80x)",
            wharf / raw
        );
        println!(
            "postgres publish -> handled on an idle host: p50 {p50:.2} ms, p99 {p99:.2} ms (target p50 < 10 ms)"
        );
    }
    if !wanted("sqlite") {
        return;
    }
    let (enqueue, handled) = inbox_throughput().await;
    println!(
        "sqlite inbox: enqueue {enqueue:.0} msgs/s; claim + sandbox call + settle {handled:.0} msgs/s; ratio to the sandbox alone {:.2}x",
        handled / (1e6 / per_call)
    );
}
