//! Claims and leases, on both stores: a settle whose lease token is no longer current is
//! refused (fencing), a handler that outlives its lease keeps it by heartbeat, and the
//! same id given twice in one publish inserts one row.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use wharf_host::effects::{Destination, Effects, Publish};
use wharf_host::envelope::{Envelope, NewMessage};
use wharf_host::outcome::Verdict;
use wharf_host::store::{PluginResult, PluginVersion, Settlement};
use wharf_tests::{Backend, Host, conformance, test_config};

/// A successful result that publishes `tag` to the `out` queue and writes it to state.
fn handled(message: &Envelope, tag: &str) -> Settlement {
    let mut effects = Effects::default();
    effects.publishes.push(Publish {
        id: Uuid::now_v7(),
        destination: Destination::Queue("out".into()),
        kind: "test.out".into(),
        headers: Default::default(),
        payload: tag.as_bytes().to_vec(),
    });
    effects
        .writes
        .insert("last".into(), Some(tag.as_bytes().to_vec()));
    Settlement {
        message: message.clone(),
        results: vec![PluginResult {
            plugin: PluginVersion {
                name: "noop".into(),
                version: "1.0.0".into(),
                sha256: "0".repeat(64),
            },
            attempt: 1,
            verdict: Verdict::Handled(effects),
        }],
        no_handler: false,
    }
}

async fn a_late_settle_with_a_superseded_lease_token_is_refused(backend: Backend) {
    let host = Host::start(backend, &["fixture-noop"]).await;
    host.publish("test", "test.noop", json!({})).await;
    let queues = ["test".to_owned()];
    let slow = host
        .store
        .claim(&queues, 10, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(slow.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fast = host
        .store
        .claim(&queues, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fast.len(), 1, "the expired lease lets another worker claim");
    assert_ne!(slow[0].lock_token, fast[0].lock_token);

    let late = host
        .store
        .settle(&[handled(&slow[0], "slow")])
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

    let current = host
        .store
        .settle(&[handled(&fast[0], "fast")])
        .await
        .unwrap();
    assert_eq!((current.fenced, current.handled), (0, 1));
    let again = host
        .store
        .settle(&[handled(&slow[0], "slow")])
        .await
        .unwrap();
    assert_eq!((again.fenced, again.handled), (1, 0));
    assert_eq!(host.count("SELECT COUNT(*) FROM processed").await, 1);
    let (last, version) = host.store.state_get("noop", "last").await.unwrap().unwrap();
    assert_eq!((last.as_slice(), version), (&b"fast"[..], 1));
}

async fn a_handler_outliving_its_lease_keeps_it_by_heartbeat(backend: Backend) {
    // The lease is 150 ms; the handler spins for 600 ms.
    let host = Host::start_with(backend, &["fixture-once"], |c| {
        c.inbox.lease_ms = 150;
        c.runtime.deadline_ms = 2_000;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = host.config.database.url.clone();
    let rival = Host::start_on(config, &["fixture-once"], dir).await;
    host.publish("test", "test.once", json!({"spin_ms": 600}))
        .await;

    let queues = ["test".to_owned()];
    let (report, stolen) = tokio::join!(host.drain(), async {
        // Meanwhile another host keeps trying to claim it.
        let mut stolen = Vec::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stolen.extend(
                rival
                    .store
                    .claim(&queues, 10, Duration::from_secs(30))
                    .await
                    .unwrap(),
            );
        }
        stolen
    });
    assert!(stolen.is_empty(), "the lease was taken over: {stolen:?}");
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

conformance!(
    a_late_settle_with_a_superseded_lease_token_is_refused,
    a_handler_outliving_its_lease_keeps_it_by_heartbeat,
    the_same_id_twice_in_one_publish_inserts_one_row,
);
