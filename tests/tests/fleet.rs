//! Several hosts on one PostgreSQL or MariaDB database: the work is shared, each message
//! is handled once, and a host killed with SIGKILL in the middle of a batch loses nothing
//! and duplicates no effect (ledger row, outbox row, state write); nor does a host whose
//! database connections are cut while it works.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wharf_host::envelope::NewMessage;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::{
    Backend, Host, fresh_mysql_database, fresh_postgres_schema, mysql_url, plugin_wasm,
    postgres_url, test_config, victim_command,
};

fn once_messages(n: usize, spin_ms: u64) -> Vec<NewMessage> {
    (0..n)
        .map(|_| {
            NewMessage::new(
                "test",
                "test.once",
                json!({ "spin_ms": spin_ms }).to_string().into_bytes(),
            )
        })
        .collect()
}

/// Every message of `n` handled exactly once, each effect committed exactly once.
async fn assert_each_effect_once(host: &Host, n: i64) {
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, n);
    assert_eq!(
        host.count("SELECT COUNT(DISTINCT source_message_id) FROM outbox")
            .await,
        n
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM outbox").await, n);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state WHERE version = 1")
            .await,
        n
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM plugin_state").await, n);
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_10000_messages_and_handle_each_exactly_once() {
    two_hosts_share(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mariadb_hosts_share_10000_messages_and_handle_each_exactly_once() {
    two_hosts_share(Backend::MySql).await
}

async fn two_hosts_share(backend: Backend) {
    let started = Instant::now();
    let a = Host::start_with(backend, &["fixture-once"], |c| c.inbox.batch_size = 100).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = a.config.database.url.clone();
    config.inbox.batch_size = 100;
    let b = Host::start_on(config, &["fixture-once"], dir).await;

    for chunk in once_messages(10_000, 0).chunks(1_000) {
        assert_eq!(a.store.enqueue(chunk).await.unwrap(), 1_000);
    }
    let (ra, rb) = tokio::join!(a.drain(), b.drain());
    assert_eq!(ra.settled.handled + rb.settled.handled, 10_000);
    assert!(
        ra.settled.handled > 0 && rb.settled.handled > 0,
        "both hosts take work: {} and {}",
        ra.settled.handled,
        rb.settled.handled
    );
    assert_eq!(ra.settled.fenced + rb.settled.fenced, 0);
    assert_each_effect_once(&a, 10_000).await;
    eprintln!(
        "{backend:?}: two hosts, 10,000 messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_batch_loses_nothing_and_duplicates_no_effect() {
    killed_mid_batch(Backend::Postgres, "10000").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leasing_host_killed_mid_batch_loses_nothing_and_duplicates_no_effect() {
    killed_mid_batch(Backend::PostgresLeased, "0").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_host_killed_mid_batch_loses_nothing_and_duplicates_no_effect() {
    killed_mid_batch(Backend::MySql, "10000").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leasing_mariadb_host_killed_mid_batch_loses_nothing_and_duplicates_no_effect() {
    killed_mid_batch(Backend::MySqlLeased, "0").await
}

/// Messages claimed by another host on PostgreSQL: leased, or held in its open
/// transaction (their rows are locked).
const CLAIMED_ELSEWHERE: &str = "SELECT (SELECT COUNT(*) FROM inbox)
     - (SELECT COUNT(*) FROM (SELECT id FROM inbox WHERE locked_until IS NULL
                              FOR KEY SHARE SKIP LOCKED) free)";

/// Messages claimed by another host on MariaDB: leased, or held in its open transaction
/// (the rows its transactions on this database lock; claims are all they lock while
/// the handlers run).
const CLAIMED_ELSEWHERE_MYSQL: &str = "SELECT
       (SELECT COUNT(*) FROM inbox WHERE locked_until IS NOT NULL)
     + (SELECT CAST(COALESCE(SUM(t.trx_rows_locked), 0) AS SIGNED)
        FROM information_schema.INNODB_TRX t
        JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
        WHERE p.DB = DATABASE())";

/// Kill -9 a real `wharf run` on `backend` holding a claimed batch, with claims held in a
/// transaction or leased (`hold_claims_up_to_ms` 10000 or 0 against a 1000 ms deadline).
async fn killed_mid_batch(backend: Backend, hold_claims_up_to_ms: &str) {
    const MESSAGES: usize = 400;
    let (url, claimed_elsewhere) = match backend {
        Backend::MySql | Backend::MySqlLeased => {
            (fresh_mysql_database().await, CLAIMED_ELSEWHERE_MYSQL)
        }
        _ => (fresh_postgres_schema().await, CLAIMED_ELSEWHERE),
    };
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let wasm = plugin_wasm("fixture-once");
    std::fs::copy(&wasm, plugins.join(wasm.file_name().unwrap())).unwrap();

    // The victim: a real `wharf run` process with a short lease.
    let mut victim = victim_command(
        env!("CARGO_BIN_EXE_wharf-under-test"),
        &url,
        &plugins,
        &dir.path().join("victim-cache"),
        hold_claims_up_to_ms,
    )
    .spawn()
    .expect("start a wharf run process");

    let mut config = test_config(dir.path());
    config.database.url = url;
    config.inbox.lease_ms = 1_500;
    config.runtime.deadline_ms = 1_000;
    let survivor = Host::start_on(config, &["fixture-once"], tempfile::tempdir().unwrap()).await;
    survivor
        .store
        .enqueue(&once_messages(MESSAGES, 5))
        .await
        .unwrap();

    // Kill it once it has settled some batches and holds a claimed one: freeze it, look,
    // and let it go on if it happens to hold nothing at that instant.
    let pid = victim.id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the victim host made no progress"
        );
        assert!(
            victim.try_wait().unwrap().is_none(),
            "the victim host exited early"
        );
        if survivor.count("SELECT COUNT(*) FROM processed").await >= 100 {
            signal("-STOP");
            // A statement the victim sent just before it froze (a COMMIT) may still be
            // running on the server: let it finish so the claims counted stay put.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let claimed = survivor.count(claimed_elsewhere).await;
            if claimed > 0 {
                break;
            }
            signal("-CONT");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let orphaned = survivor.count(claimed_elsewhere).await;
    assert!(orphaned > 0, "the victim holds a claimed batch");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let handled_by_victim = survivor.count("SELECT COUNT(*) FROM processed").await;

    let report = survivor.drain().await;
    assert_eq!(
        report.settled.handled as i64,
        MESSAGES as i64 - handled_by_victim
    );
    assert_each_effect_once(&survivor, MESSAGES as i64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_lose_nothing_and_duplicate_no_effect() {
    connections_cut(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_of_a_leasing_host_lose_nothing_and_duplicate_no_effect() {
    connections_cut(Backend::PostgresLeased).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_of_a_mariadb_host_lose_nothing_and_duplicate_no_effect() {
    connections_cut(Backend::MySql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_of_a_leasing_mariadb_host_lose_nothing_and_duplicate_no_effect() {
    connections_cut(Backend::MySqlLeased).await
}

/// Terminate every connection to the database of `host` (its own, and the test's
/// inspection pool's, which reconnects); how many.
async fn cut_connections(host: &Host) -> i64 {
    let url = &host.config.database.url;
    if url.starts_with("mysql:") {
        let admin = sqlx::MySqlPool::connect(&mysql_url()).await.unwrap();
        let database = url.rsplit('/').next().unwrap();
        let ids: Vec<u64> = sqlx::query_scalar(
            "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist WHERE db = ?",
        )
        .bind(database)
        .fetch_all(&admin)
        .await
        .unwrap();
        for id in &ids {
            // A connection may close by itself meanwhile.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                .execute(&admin)
                .await;
        }
        return ids.len() as i64;
    }
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&host.db)
        .await
        .unwrap();
    let admin = sqlx::PgPool::connect(&postgres_url()).await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = $1",
    )
    .bind(&schema)
    .fetch_one(&admin)
    .await
    .unwrap()
}

/// Terminate every connection of a working host (pool, held claims, listener) again and
/// again, as a database restart or a failover would: the host rides it out, and every
/// message is still handled once with each effect committed once.
async fn connections_cut(backend: Backend) {
    const MESSAGES: i64 = 2_000;
    let host = Arc::new(
        Host::start_with(backend, &["fixture-once"], |c| {
            c.inbox.batch_size = 20;
            c.inbox.lease_ms = 300;
        })
        .await,
    );
    for chunk in once_messages(MESSAGES as usize, 0).chunks(1_000) {
        host.store.enqueue(chunk).await.unwrap();
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = tokio::spawn({
        let host = host.clone();
        async move { host.worker.run(StopWhen::default(), stopped).await }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cuts = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "not drained within 60 s: {} of {MESSAGES} handled",
            host.count("SELECT COUNT(*) FROM processed").await
        );
        if running.is_finished() {
            panic!("the worker stopped: {:?}", (&mut running).await);
        }
        let handled = host.count("SELECT COUNT(*) FROM processed").await;
        if handled == MESSAGES {
            break;
        }
        if handled >= (cuts + 1) * MESSAGES / 5 && cuts < 4 {
            let cut = cut_connections(&host).await;
            assert!(cut > 0, "the host has connections to cut");
            cuts += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(cuts, 4);
    stop.send(true).unwrap();
    running
        .await
        .unwrap()
        .expect("the worker rode out the cut connections");
    assert_each_effect_once(&host, MESSAGES).await;
}
