//! Claims, on both stores: a settle whose lease token is no longer current is refused
//! (fencing), a handler that outlives its lease keeps its claim (leased or held in a
//! transaction) by heartbeat, a held claim keeps other hosts off and is lost as a whole,
//! the same id given twice in one publish inserts one row, and a settle PostgreSQL chose
//! as a deadlock victim runs again.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use wharf_host::dispatch::Delays;
use wharf_host::effects::{Destination, Effects, Publish};
use wharf_host::envelope::{Envelope, NewMessage};
use wharf_host::outcome::Verdict;
use wharf_host::settle;
use wharf_host::store::{ClaimMode, Hold, KeyOrder, SettleSummary, Settlement, StoreError};
use wharf_tests::{Backend, Host, conformance, noop_settlement, test_config, wait_for};

/// A successful result that publishes `tag` to the `out` queue and writes it to state.
fn handled(message: &Envelope, tag: &str) -> Settlement {
    let mut effects = Effects::default();
    effects.publishes.push(Publish {
        id: Uuid::now_v7(),
        destination: Destination::Queue("out".into()),
        kind: "test.out".into(),
        headers: Default::default(),
        payload: tag.as_bytes().to_vec(),
        key: None,
    });
    effects
        .writes
        .insert("last".into(), Some(tag.as_bytes().to_vec()));
    noop_settlement(message, Verdict::Handled(effects))
}

/// Settle `batch`, held by `hold`, through the host's dispatcher.
async fn settle(
    host: &Host,
    hold: Hold,
    batch: &mut [Settlement],
) -> Result<SettleSummary, StoreError> {
    settle::claimed(
        &*host.store,
        hold,
        batch,
        &host.dispatcher,
        Delays::Jittered,
    )
    .await
}

async fn a_late_settle_with_a_superseded_lease_token_is_refused(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    host.publish("test", "test.noop", json!({})).await;
    let queues = ["test".to_owned()];
    let slow = host
        .store
        .claim(
            &queues,
            10,
            ClaimMode::Lease,
            KeyOrder::Ignore,
            Duration::from_millis(1),
        )
        .await
        .unwrap()
        .messages;
    assert_eq!(slow.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fast = host
        .store
        .claim(
            &queues,
            10,
            ClaimMode::Lease,
            KeyOrder::Ignore,
            Duration::from_secs(30),
        )
        .await
        .unwrap()
        .messages;
    assert_eq!(fast.len(), 1, "the expired lease lets another worker claim");
    assert_ne!(slow[0].lock_token, fast[0].lock_token);

    let late = settle(&host, Hold::Lease, &mut [handled(&slow[0], "slow")])
        .await
        .unwrap();
    assert_eq!((late.fenced, late.handled), (1, 0));
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 0);
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'out'")
            .await,
        0
    );
    assert_eq!(host.store.state_get("noop", "last").await.unwrap(), None);

    let current = settle(&host, Hold::Lease, &mut [handled(&fast[0], "fast")])
        .await
        .unwrap();
    assert_eq!((current.fenced, current.handled), (0, 1));
    let again = settle(&host, Hold::Lease, &mut [handled(&slow[0], "slow")])
        .await
        .unwrap();
    assert_eq!((again.fenced, again.handled), (1, 0));
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
    let (last, version) = host.store.state_get("noop", "last").await.unwrap().unwrap();
    assert_eq!((last.as_slice(), version), (&b"fast"[..], 1));
}

/// More rows than one statement binds (SQLite takes 32,766 values, MariaDB 65,535): a
/// batch of handlers that publish 100 messages each to a queue and to an exchange.
async fn a_settle_writes_more_rows_than_one_statement_binds(backend: Backend) {
    const MESSAGES: usize = 85;
    const EACH: usize = 100;
    let host = Host::start(backend, &["fixture-noop"]).await;
    for _ in 0..MESSAGES {
        host.publish("test", "test.noop", json!({})).await;
    }
    let queues = ["test".to_owned()];
    let claim = host
        .store
        .claim(
            &queues,
            MESSAGES as u32,
            ClaimMode::Lease,
            KeyOrder::Ignore,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(claim.messages.len(), MESSAGES);
    let mut batch: Vec<Settlement> = claim
        .messages
        .iter()
        .map(|message| {
            let mut settlement = handled(message, "fanout");
            let Verdict::Handled(effects) = &mut settlement.results[0].verdict else {
                unreachable!("handled() builds a handled result")
            };
            effects.publishes.clear();
            for destination in [
                Destination::Queue("out".into()),
                Destination::Exchange {
                    exchange: "events".into(),
                    routing_key: "out".into(),
                },
            ] {
                for _ in 0..EACH {
                    effects.publishes.push(Publish {
                        id: Uuid::now_v7(),
                        destination: destination.clone(),
                        kind: "test.out".into(),
                        headers: [("n".to_owned(), "1".to_owned())].into(),
                        payload: b"{}".to_vec(),
                        key: None,
                    });
                }
            }
            settlement
        })
        .collect();
    let settled = settle(&host, claim.hold, &mut batch).await.unwrap();
    assert_eq!(settled.handled, MESSAGES as u64);
    let out = host
        .count("SELECT COUNT(*) FROM inbox WHERE queue = 'out'")
        .await;
    assert_eq!(out as usize, MESSAGES * EACH);
    let relayed = host.count("SELECT COUNT(*) FROM outbox").await;
    assert_eq!(relayed as usize, MESSAGES * EACH);
}

async fn a_handler_outliving_its_lease_keeps_it_by_heartbeat(backend: Backend) {
    heartbeat_keeps_the_claim(backend, 10_000).await
}

async fn a_leased_handler_outliving_its_lease_keeps_it_by_heartbeat(backend: Backend) {
    heartbeat_keeps_the_claim(backend, 0).await
}

/// The lease is 450 ms; the handler spins for 1.5 s, its claim held in a transaction
/// (on PostgreSQL) when `hold_claims_up_to_ms` allows, and then handed over to a lease;
/// else leased from the start. The heartbeat renews every 150 ms, so a renewal may be
/// late by 300 ms (two cores shared by the whole test binary) before a rival could claim.
async fn heartbeat_keeps_the_claim(backend: Backend, hold_claims_up_to_ms: u64) {
    let host = Host::start_with(backend, &["fixture-once"], |c| {
        c.inbox.lease_ms = 450;
        c.runtime.deadline_ms = 5_000;
        c.inbox.hold_claims_up_to_ms = hold_claims_up_to_ms;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = host.config.database.url.clone();
    let rival = Host::start_on(config, &["fixture-once"], dir).await;
    host.publish("test", "test.once", json!({"spin_ms": 1_500}))
        .await;

    let queues = ["test".to_owned()];
    let (report, (stolen, leased_seen)) = tokio::join!(host.drain(), async {
        // Meanwhile another host keeps trying to claim it.
        let mut stolen = Vec::new();
        let mut leased_seen = false;
        for _ in 0..90 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stolen.extend(
                rival
                    .store
                    .claim(
                        &queues,
                        10,
                        ClaimMode::Lease,
                        KeyOrder::Ignore,
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap()
                    .messages,
            );
            leased_seen |= host
                .count("SELECT COUNT(*) FROM inbox WHERE locked_until IS NOT NULL")
                .await
                > 0;
        }
        (stolen, leased_seen)
    });
    assert!(stolen.is_empty(), "the lease was taken over: {stolen:?}");
    // A claim held in a transaction is handed over to a lease once the batch has run
    // for 200 ms, so the leased row shows on every backend.
    assert!(leased_seen, "the claim was never visible as a lease");
    assert_eq!((report.settled.handled, report.settled.fenced), (1, 0));
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
}

async fn the_same_id_twice_in_one_publish_inserts_one_row(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    let message = NewMessage::new("test", "test.noop", b"{}".to_vec());
    let inserted = host
        .store
        .enqueue(&[message.clone(), message.clone()])
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(host.drain().await.settled.handled, 1);
}

/// A claim held in a transaction: other hosts skip its messages, and when its host is
/// gone (here: the claim is dropped, which rolls back like a dead connection) they are
/// claimable at once, with no lease to wait out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_claim_keeps_others_off_and_returns_its_messages_at_once_when_dropped() {
    held_claim_dropped(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_mariadb_claim_keeps_others_off_and_returns_its_messages_at_once_when_dropped() {
    held_claim_dropped(Backend::MySql).await
}

async fn held_claim_dropped(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    host.publish("test", "test.noop", json!({})).await;
    let queues = ["test".to_owned()];
    let held = host
        .store
        .claim(
            &queues,
            10,
            ClaimMode::Transaction,
            KeyOrder::Ignore,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(held.messages.len(), 1);
    assert!(matches!(held.hold, Hold::Transaction(_)));
    let rival = host
        .store
        .claim(
            &queues,
            10,
            ClaimMode::Lease,
            KeyOrder::Ignore,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(
        rival.messages.is_empty(),
        "a held message was claimed twice"
    );
    drop(held);
    // sqlx rolls a dropped transaction back in the background: wait for that, far less
    // than the 30 s lease a leased claim would have made the rival wait out.
    wait_for(
        "the dropped claim's message",
        Duration::from_secs(2),
        async || {
            let rival = host
                .store
                .claim(
                    &queues,
                    10,
                    ClaimMode::Lease,
                    KeyOrder::Ignore,
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
            rival.messages.len() == 1
        },
    )
    .await;
}

/// A held claim that is not renewed is ended by the server after its lease: the settle
/// reports the claim lost, writes nothing, and the message is claimable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_claim_not_renewed_is_lost_and_its_settle_writes_nothing() {
    held_claim_not_renewed(Backend::Postgres, Duration::from_millis(100)).await
}

/// MariaDB counts an idle transaction's timeout in whole seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_mariadb_claim_not_renewed_is_lost_and_its_settle_writes_nothing() {
    held_claim_not_renewed(Backend::MySql, Duration::from_secs(1)).await
}

async fn held_claim_not_renewed(backend: Backend, lease: Duration) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    host.publish("test", "test.noop", json!({})).await;
    let queues = ["test".to_owned()];
    let claim = host
        .store
        .claim(&queues, 10, ClaimMode::Transaction, KeyOrder::Ignore, lease)
        .await
        .unwrap();
    tokio::time::sleep(lease * 4).await;
    let settled = settle(
        &host,
        claim.hold,
        &mut [handled(&claim.messages[0], "late")],
    )
    .await;
    assert!(
        matches!(settled, Err(StoreError::ClaimLost(_))),
        "{settled:?}"
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 0);
    assert_eq!(host.store.state_get("noop", "last").await.unwrap(), None);
    assert_eq!(host.drain().await.settled.handled, 1);
}

conformance!(
    a_leased_handler_outliving_its_lease_keeps_it_by_heartbeat,
    a_late_settle_with_a_superseded_lease_token_is_refused,
    a_handler_outliving_its_lease_keeps_it_by_heartbeat,
    the_same_id_twice_in_one_publish_inserts_one_row,
    a_settle_writes_more_rows_than_one_statement_binds,
);

/// A settle the database rolled back to break a deadlock runs again, a bounded number of
/// times; another error does not make it run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_postgresql_chose_as_a_deadlock_victim_runs_again() {
    let host = Host::start(Backend::Postgres, &[]).await;
    let db = &host.db;
    sqlx::query("CREATE TABLE probe (id int PRIMARY KEY)")
        .execute(db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO probe VALUES (1), (2)")
        .execute(db)
        .await
        .unwrap();
    let lock = |id: i32| sqlx::AssertSqlSafe(format!("UPDATE probe SET id = id WHERE id = {id}"));
    let (mut a, mut b) = (db.begin().await.unwrap(), db.begin().await.unwrap());
    sqlx::query(lock(1)).execute(&mut *a).await.unwrap();
    sqlx::query(lock(2)).execute(&mut *b).await.unwrap();
    let (crossed_a, crossed_b) = tokio::join!(
        sqlx::query(lock(2)).execute(&mut *a),
        sqlx::query(lock(1)).execute(&mut *b),
    );
    let victim = StoreError::from(crossed_a.err().or(crossed_b.err()).expect("a deadlock"));
    assert!(host.store.settle_again(&victim, 1), "{victim}");
    assert!(!host.store.settle_again(&victim, 6), "bounded");
    drop((a, b));
    let duplicate = sqlx::query("INSERT INTO probe VALUES (1)")
        .execute(db)
        .await
        .unwrap_err();
    let duplicate = StoreError::from(duplicate);
    assert!(
        duplicate.to_string().contains("duplicate key"),
        "{duplicate}"
    );
    assert!(!host.store.settle_again(&duplicate, 1));
}
