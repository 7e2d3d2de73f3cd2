//! Bench binary (`cargo bench -p wharf-tests`): the per-message sandbox cost (fresh
//! instance from the `InstancePre` + `handle` with a 1 KiB JSON payload + drop) and
//! end-to-end messages/s through the SQLite inbox with a trivial plugin, each printed with
//! its target or baseline measured in the same run; then the same through the PostgreSQL
//! inbox against a raw claim+delete loop on the same database, and publish -> handled
//! latency on an idle host; (`amqp`) the AMQP transport against a bare lapin
//! consume+ack loop on the same broker; (`kafka`) the Kafka transport against a bare
//! rdkafka consume+commit loop on the same broker (tansu); (`swap`) latency across a plugin deploy; (`fair`)
//! a fast plugin's throughput beside a slow one; (`metrics`) the PostgreSQL inbox and the
//! AMQP consumer with metrics recorded and not; (`contention`) stateful handlers on hot
//! keys beside a stateless plugin, and (`contention-amqp`) over AMQP; (`mariadb`) the
//! MariaDB inbox against a raw claim loop on the same server; (`outbound`) a handler's HTTP
//! call against a plain Rust client's; (`ordering`) ordered plugins against unordered;
//! (`requests`) request-reply over AMQP against a bare RPC server.

mod amqp;
mod contention;
mod cpu;
mod kafka;
mod mariadb;
mod ordering;
mod outbound;
mod plugins;
mod profile;
mod python;
mod recording;
mod requests;
mod sandbox;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;
use uuid::Uuid;
use wharf_host::envelope::NewMessage;
use wharf_host::transport::inbox::InboxConfig;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::{Backend, Host};

use cpu::{CpuCost, POSTGRES, print_apart};
use sandbox::{payload_1k, sandbox_cost};

const INBOX_MESSAGES: usize = 20_000;
const PG_MESSAGES: usize = 20_000;
const PG_BATCH: u32 = 100;
const LATENCY_SAMPLES: usize = 200;

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

/// How a raw PostgreSQL baseline commits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawLoop {
    /// The claim as its own statement.
    Autocommit,
    /// Inside `BEGIN ... COMMIT`, as a consumer that commits its work with the claim would.
    Transaction,
    /// Inside `BEGIN ... COMMIT` with one dedup ledger row per message (`INSERT ... ON
    /// CONFLICT DO NOTHING`): the durable work a consumer that handles each message once
    /// has to do, the baseline that pays wharf's guarantee.
    Ledger,
}

/// Raw baseline: claim and delete a batch of `PG_BATCH` with one `DELETE ... SKIP LOCKED
/// RETURNING` until the queue is empty, committed as `how` says. Rows/s.
async fn raw_claim_delete(pool: &sqlx::PgPool, queue: &str, how: RawLoop) -> f64 {
    const CLAIM: &str = "DELETE FROM inbox WHERE id IN (
                 SELECT id FROM inbox WHERE queue = $1 AND available_at <= wharf_now_ms()
                 ORDER BY available_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING id, payload";
    const LEDGER: &str =
        "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at)
         SELECT id, 'raw', '1', repeat('0', 64), wharf_now_ms() FROM UNNEST($1::uuid[]) AS id
         ON CONFLICT DO NOTHING";
    let started = Instant::now();
    let mut total = 0usize;
    loop {
        let claim = sqlx::query(CLAIM).bind(queue).bind(PG_BATCH as i64);
        let rows = if how == RawLoop::Autocommit {
            claim.fetch_all(pool).await.unwrap()
        } else {
            let mut tx = pool.begin().await.unwrap();
            let rows = claim.fetch_all(&mut *tx).await.unwrap();
            if how == RawLoop::Ledger && !rows.is_empty() {
                let ids: Vec<Uuid> = rows.iter().map(|r| r.get("id")).collect();
                sqlx::query(LEDGER)
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            rows
        };
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

async fn postgres_host(backend: Backend) -> Host {
    host_with_lanes(backend, InboxConfig::default().batches_in_flight).await
}

/// A bench host whose inbox runs `lanes` claim -> handle -> settle loops at once.
async fn host_with_lanes(backend: Backend, lanes: usize) -> Host {
    Host::start_with(backend, &["fixture-noop"], |c| {
        c.inbox.queues = vec!["bench".into()];
        c.inbox.batch_size = PG_BATCH;
        c.inbox.poll_interval_ms = 1_000;
        c.inbox.batches_in_flight = lanes;
    })
    .await
}

async fn fill(host: &Host, payload: &[u8]) {
    for chunk in messages("bench", PG_MESSAGES, payload).chunks(1_000) {
        host.store.enqueue(chunk).await.unwrap();
    }
}

/// Msgs/s through a PostgreSQL host's inbox: claim, call the trivial plugin, settle.
async fn wharf_drain(host: &Host, payload: &[u8]) -> f64 {
    fill(host, payload).await;
    wharf_drain_filled(host).await
}

/// [`wharf_drain`] of an inbox already filled.
async fn wharf_drain_filled(host: &Host) -> f64 {
    let started = Instant::now();
    let report = host.drain().await;
    assert_eq!(report.settled.handled, PG_MESSAGES as u64);
    PG_MESSAGES as f64 / started.elapsed().as_secs_f64()
}

/// Publish -> handled (committed) on an idle host, one message at a time, watched
/// through the store's ledger lookup; p50, p99 in ms.
async fn publish_to_handled(host: Host, payload: &[u8]) -> (f64, f64) {
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
        while host
            .store
            .settled_plugins(&[message.id])
            .await
            .unwrap()
            .is_empty()
        {
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

/// The PostgreSQL numbers: raw loops and both claim designs on the same server, then
/// latency on an idle host.
async fn postgres_inbox(sandbox_us: f64) {
    let payload = vec![b' '; 256];
    let held = postgres_host(Backend::Postgres).await;
    let leased = postgres_host(Backend::PostgresLeased).await;
    let pool = sqlx::PgPool::connect(&held.config.database.url)
        .await
        .unwrap();
    fill(&held, &payload).await;
    let raw_autocommit = raw_claim_delete(&pool, "bench", RawLoop::Autocommit).await;
    fill(&held, &payload).await;
    let (raw, raw_cpu) = CpuCost::of(
        POSTGRES,
        PG_MESSAGES,
        raw_claim_delete(&pool, "bench", RawLoop::Transaction),
    )
    .await;
    fill(&held, &payload).await;
    let (ledger, ledger_cpu) = CpuCost::of(
        POSTGRES,
        PG_MESSAGES,
        raw_claim_delete(&pool, "bench", RawLoop::Ledger),
    )
    .await;
    fill(&held, &payload).await;
    let (held_rate, held_cpu) = CpuCost::of(POSTGRES, PG_MESSAGES, wharf_drain_filled(&held)).await;
    let leased_rate = wharf_drain(&leased, &payload).await;
    let default_lanes = InboxConfig::default().batches_in_flight;
    let mut by_lanes = vec![format!("{default_lanes} (default): {held_rate:.0}")];
    for lanes in [1, 4] {
        let host = host_with_lanes(Backend::Postgres, lanes).await;
        by_lanes.push(format!(
            "{lanes}: {:.0}",
            wharf_drain(&host, &payload).await
        ));
    }
    fill(&held, &payload).await;
    let profile = profile::Profile::start();
    wharf_drain_filled(&held).await;
    let breakdown = profile.map(profile::Profile::stop);
    println!(
        "postgres raw loop, batch {PG_BATCH}, 256 B: DELETE ... SKIP LOCKED RETURNING {raw_autocommit:.0} rows/s as its own statement, {raw:.0} rows/s inside BEGIN/COMMIT"
    );
    println!(
        "postgres raw loop + a dedup ledger row per message (INSERT ... ON CONFLICT DO NOTHING in the same transaction): {ledger:.0} rows/s"
    );
    println!(
        "postgres inbox, claim + sandbox call + ledger + settle: held transaction {held_rate:.0} msgs/s = {:.2}x of the loop with the ledger (target >= 0.75x), {:.2}x of the raw loop in a transaction, {:.2}x of autocommit; leased {leased_rate:.0} msgs/s = {:.2}x of the loop with the ledger",
        held_rate / ledger,
        held_rate / raw,
        held_rate / raw_autocommit,
        leased_rate / ledger
    );
    println!(
        "postgres held by lanes (inbox.batches_in_flight): {} msgs/s",
        by_lanes.join(", ")
    );
    println!(
        "postgres CPU: raw loop in a transaction {raw_cpu}; with the ledger {ledger_cpu}; wharf held {held_cpu}"
    );
    print_apart("postgres inbox", &held_cpu, &ledger_cpu, 0.75);
    if let Some(breakdown) = breakdown {
        breakdown.print("postgres inbox, held", held_cpu.client, sandbox_us);
    }
    let (p50, p99) = publish_to_handled(held, &payload).await;
    println!(
        "postgres publish -> handled on an idle host: p50 {p50:.2} ms, p99 {p99:.2} ms (target p50 < 10 ms)"
    );
}

/// `cargo bench -p wharf-tests [-- sandbox|postgres|mariadb|amqp|kafka|swap|fair|metrics|contention|contention-amqp|ordering|outbound|python|sqlite]`: a filter argument runs only the benches whose
/// name contains it (cargo's own `--bench` flag is ignored).
#[tokio::main]
async fn main() {
    // Logging as `wharf run` sets it up, so its cost is counted as a user pays it.
    wharf_host::cli::init_tracing();
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let per_call = sandbox_cost().await;
    println!(
        "sandbox: fresh instance + handle(1 KiB JSON) + drop: {per_call:.1} us/message (target <= 20 us: {:.2}x of target)",
        per_call / 20.0
    );
    if wanted("postgres") {
        postgres_inbox(per_call).await;
    }
    if wanted("mariadb") {
        mariadb::inbox().await;
    }
    if wanted("amqp") {
        amqp::versus_bare_loop(per_call).await;
    }
    if wanted("kafka") {
        kafka::versus_bare_loop(per_call).await;
    }
    if wanted("swap") {
        plugins::swap().await;
    }
    if wanted("fair") {
        plugins::fair().await;
    }
    if wanted("metrics") {
        recording::on_off().await;
    }
    if wanted("contention") {
        contention::scenarios().await;
    }
    if wanted("contention-amqp") {
        contention::amqp().await;
    }
    if wanted("ordering") {
        ordering::scenarios().await;
    }
    if wanted("outbound") {
        outbound::versus_plain_client().await;
    }
    if wanted("requests") {
        requests::versus_bare_rpc().await;
    }
    if wanted("python") {
        python::costs(per_call).await;
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
