//! The MariaDB inbox beside a raw claim loop on the same server, same shape as the
//! PostgreSQL bench: a batch of `PG_BATCH` taken with `SELECT ... FOR UPDATE SKIP LOCKED`
//! and deleted in one transaction, until the queue is empty; then wharf (claim, sandbox
//! call, ledger, settle) on the same rows; CPU per 1,000 messages of both; publish ->
//! handled on an idle host (which polls).

use std::time::Instant;

use sqlx::{MySql, MySqlPool, QueryBuilder, Row};
use uuid::Uuid;
use wharf_tests::Backend;

use super::cpu::CpuCost;
use super::{PG_BATCH, PG_MESSAGES, fill, postgres_host, publish_to_handled, wharf_drain_filled};

/// The MariaDB server's processes.
const MARIADB: &[&str] = &["mariadbd"];

/// Raw baseline: claim a batch with `SELECT ... FOR UPDATE SKIP LOCKED`, delete it by id
/// (and, with `ledger`, record each id in the dedup ledger as handled, the row a
/// consumer that handles each message once has to write), commit; until the queue is
/// empty. Rows/s.
async fn raw_claim_delete(pool: &MySqlPool, ledger: bool) -> f64 {
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
        if ledger {
            let mut handled = QueryBuilder::<MySql>::new(
                "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at) ",
            );
            handled.push_values(&rows, |mut row, r| {
                row.push_bind(r.get::<Uuid, _>("id"))
                    .push_bind("raw")
                    .push_bind("1")
                    .push_bind("0".repeat(64))
                    .push_bind(0);
            });
            handled.build().execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        total += rows.len();
    }
    assert_eq!(total, PG_MESSAGES);
    total as f64 / started.elapsed().as_secs_f64()
}

/// The MariaDB numbers: the raw loop and both claim designs on the same server, then
/// latency on an idle host.
pub async fn inbox() {
    let payload = vec![b' '; 256];
    let held = postgres_host(Backend::MySql).await;
    let leased = postgres_host(Backend::MySqlLeased).await;
    let pool = MySqlPool::connect(&held.config.database.url).await.unwrap();
    fill(&held, &payload).await;
    let (raw, raw_cpu) = CpuCost::of(MARIADB, PG_MESSAGES, raw_claim_delete(&pool, false)).await;
    fill(&held, &payload).await;
    let (ledger, ledger_cpu) =
        CpuCost::of(MARIADB, PG_MESSAGES, raw_claim_delete(&pool, true)).await;
    fill(&held, &payload).await;
    let (held_rate, held_cpu) = CpuCost::of(MARIADB, PG_MESSAGES, wharf_drain_filled(&held)).await;
    fill(&leased, &payload).await;
    let (leased_rate, leased_cpu) =
        CpuCost::of(MARIADB, PG_MESSAGES, wharf_drain_filled(&leased)).await;
    println!(
        "mariadb raw loop, batch {PG_BATCH}, 256 B: SELECT ... FOR UPDATE SKIP LOCKED + DELETE in a transaction {raw:.0} rows/s"
    );
    println!(
        "mariadb raw loop + a dedup ledger row per message (INSERT INTO processed in the same transaction): {ledger:.0} rows/s"
    );
    println!(
        "mariadb inbox, claim + sandbox call + ledger + settle: held transaction {held_rate:.0} msgs/s = {:.2}x of the raw loop (target >= 0.50x), {:.2}x of the raw loop with the ledger; leased {leased_rate:.0} msgs/s = {:.2}x",
        held_rate / raw,
        held_rate / ledger,
        leased_rate / raw
    );
    println!(
        "mariadb CPU: raw loop {raw_cpu}; with the ledger {ledger_cpu}; wharf held {held_cpu}; wharf leased {leased_cpu}"
    );
    let (p50, p99) = publish_to_handled(held, &payload).await;
    println!(
        "mariadb publish -> handled on an idle host (it polls every 50 ms): p50 {p50:.2} ms, p99 {p99:.2} ms"
    );
}
