//! The MariaDB inbox beside a raw claim loop on the same server, same shape as the
//! PostgreSQL bench: a batch of `PG_BATCH` taken with `SELECT ... FOR UPDATE SKIP LOCKED`
//! and deleted in one transaction, until the queue is empty; then wharf (claim, sandbox
//! call, ledger, settle) on the same rows; CPU per 1,000 messages of both; publish ->
//! handled on an idle host (which polls).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{MySql, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;
use wharf_host::envelope::NewMessage;
use wharf_host::transport::inbox::StopWhen;
use wharf_tests::{Backend, Host};

use super::{
    CpuCost, LATENCY_SAMPLES, PG_BATCH, PG_MESSAGES, fill, postgres_host, wharf_drain_filled,
};

/// The MariaDB server's processes.
const MARIADB: &[&str] = &["mariadbd"];

/// Raw baseline: claim a batch with `SELECT ... FOR UPDATE SKIP LOCKED`, delete it by id,
/// commit; until the queue is empty. Rows/s.
async fn raw_claim_delete(pool: &MySqlPool) -> f64 {
    let started = Instant::now();
    let mut total = 0usize;
    loop {
        let mut tx = pool.begin().await.unwrap();
        let rows = sqlx::query(
            "SELECT id, payload FROM inbox
             WHERE queue = ? AND available_at <= CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)
             ORDER BY available_at LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind("bench")
        .bind(i64::from(PG_BATCH))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        if rows.is_empty() {
            break;
        }
        let mut delete = QueryBuilder::<MySql>::new("DELETE FROM inbox WHERE id IN (");
        let mut ids = delete.separated(", ");
        for row in &rows {
            ids.push_bind(row.get::<Uuid, _>("id"));
        }
        delete.push(")");
        delete.build().execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        total += rows.len();
    }
    assert_eq!(total, PG_MESSAGES);
    total as f64 / started.elapsed().as_secs_f64()
}

/// Publish -> handled (committed) on an idle host, one message at a time; p50, p99 in ms.
async fn publish_to_handled(host: Host, pool: &MySqlPool, payload: &[u8]) -> (f64, f64) {
    let host = Arc::new(host);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let host = host.clone();
        async move { host.worker.run(StopWhen::default(), stopped).await }
    });
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let message = NewMessage::new("bench", "bench.noop", payload.to_vec());
        let started = Instant::now();
        host.store
            .enqueue(std::slice::from_ref(&message))
            .await
            .unwrap();
        loop {
            let done: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM processed WHERE message_id = ?")
                    .bind(message.id)
                    .fetch_one(pool)
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
    (
        latencies[LATENCY_SAMPLES / 2],
        latencies[LATENCY_SAMPLES * 99 / 100],
    )
}

/// The MariaDB numbers.
pub async fn inbox() {
    let payload = vec![b' '; 256];
    let host = postgres_host(Backend::MySql).await;
    let pool = MySqlPool::connect(&host.config.database.url).await.unwrap();
    fill(&host, &payload).await;
    let (raw, raw_cpu) = CpuCost::of(MARIADB, PG_MESSAGES, raw_claim_delete(&pool)).await;
    fill(&host, &payload).await;
    let (wharf, wharf_cpu) = CpuCost::of(MARIADB, PG_MESSAGES, wharf_drain_filled(&host)).await;
    println!(
        "mariadb raw loop, batch {PG_BATCH}, 256 B: SELECT ... FOR UPDATE SKIP LOCKED + DELETE in a transaction {raw:.0} rows/s"
    );
    println!(
        "mariadb inbox, claim + sandbox call + ledger + settle: {wharf:.0} msgs/s = {:.2}x of the raw loop (target >= 0.50x)",
        wharf / raw
    );
    println!("mariadb CPU: raw loop {raw_cpu}; wharf {wharf_cpu}");
    let (p50, p99) = publish_to_handled(host, &pool, &payload).await;
    println!(
        "mariadb publish -> handled on an idle host (it polls every 50 ms): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
}
