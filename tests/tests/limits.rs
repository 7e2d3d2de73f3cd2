//! Per-plugin limits and fair scheduling: a manifest's limits apply within the host's and
//! `[plugin.<name>]` settings win over them; a slow plugin uses at most its share of the
//! call slots, and on a queue of its own it does not hold up another plugin's messages
//! even when they arrive interleaved; a plugin's state quota stops the message that would
//! take it over, and its usage stays exact. (What one call may do: `hostile.rs`.)

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;
use wharf_host::envelope::NewMessage;
use wharf_host::plugins::PluginConfig;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::{Backend, Host, conformance};

conformance!(
    a_slow_plugin_uses_its_share_and_does_not_hold_up_a_fast_one,
    a_state_quota_dead_letters_the_message_that_would_go_over_it,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_limits_apply_and_operator_config_wins() {
    // The versioned fixture's manifest asks for a 150 ms deadline (the host allows 300).
    let host = Host::start(Backend::Sqlite, &["fixture-versioned-v1"]).await;
    host.publish("test", "test.versioned", json!({ "sleep_ms": 200 }))
        .await;
    let (_, running) = tokio::sync::watch::channel(false);
    let once = StopWhen {
        limit: Some(1),
        ..StopWhen::default()
    };
    host.worker.run(once, running).await.unwrap();
    let errors = host
        .rows("SELECT error FROM attempt_errors ORDER BY id LIMIT 1")
        .await;
    let error: String = errors[0].get(0);
    assert!(error.contains("deadline of 150 ms exceeded"), "{error}");

    let host = Host::start_with(
        Backend::Sqlite,
        &["fixture-versioned-v1", "fixture-memory-bomb"],
        |c| {
            let plugin = |f: fn(&mut PluginConfig)| {
                let mut p = PluginConfig::default();
                f(&mut p);
                p
            };
            c.plugin
                .insert("versioned".into(), plugin(|p| p.deadline_ms = Some(280)));
            c.plugin.insert(
                "memory-bomb".into(),
                plugin(|p| p.memory_limit_mib = Some(8)),
            );
        },
    )
    .await;
    host.publish("test", "test.versioned", json!({ "sleep_ms": 200 }))
        .await;
    host.publish("test", "test.alloc", json!({})).await;
    host.drain().await;
    assert_eq!(
        host.count("SELECT COUNT(*) FROM processed WHERE plugin = 'versioned'")
            .await,
        1,
        "the operator's 280 ms deadline wins over the manifest's 150"
    );
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.contains("memory limit of 8 MiB exceeded"),
        "{}",
        failed[0].error
    );
}

async fn a_slow_plugin_uses_its_share_and_does_not_hold_up_a_fast_one(backend: Backend) {
    const FAST: usize = 2_000;
    const SLOW: usize = 80;
    let host = Host::start_with(backend, &["fixture-versioned-v1", "fixture-noop"], |c| {
        c.inbox.queues = vec!["fast".into(), "slow".into()];
    })
    .await;
    let fast = || -> Vec<NewMessage> {
        (0..FAST)
            .map(|_| NewMessage::new("fast", "test.noop", b"{}".to_vec()))
            .collect()
    };
    let host = &host;
    let handled = |plugin: &'static str| async move {
        let sql = match plugin {
            "noop" => "SELECT COUNT(*) FROM processed WHERE plugin = 'noop'",
            _ => "SELECT COUNT(*) FROM processed WHERE plugin = 'versioned'",
        };
        host.count(sql).await as usize
    };

    // Alone.
    let started = Instant::now();
    host.store.enqueue(&fast()).await.unwrap();
    host.drain().await;
    let solo = started.elapsed();

    // Interleaved with slow messages (120 ms each, at most 2 at once: ~4.8 s of work; the
    // first slow batch of 64 settles after ~3.8 s, so a loaded machine's stall of a second
    // or two does not read as the fast ones waiting for it).
    let slow = || {
        NewMessage::new(
            "slow",
            "test.versioned",
            json!({ "sleep_ms": 120 }).to_string().into_bytes(),
        )
    };
    let mut mixed_in: Vec<NewMessage> = Vec::new();
    for chunk in fast().chunks(FAST / SLOW * 2) {
        mixed_in.extend([slow(), slow()]);
        mixed_in.extend_from_slice(chunk);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let work = host.worker.run(Default::default(), stopped);
    let script = async {
        let started = Instant::now();
        host.store.enqueue(&mixed_in).await.unwrap();
        let mut most_slow_calls = 0;
        while handled("noop").await < 2 * FAST {
            most_slow_calls = most_slow_calls.max(host.dispatcher.in_flight("versioned"));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mixed = started.elapsed();
        let slow_done = handled("versioned").await;
        while handled("versioned").await < SLOW {
            most_slow_calls = most_slow_calls.max(host.dispatcher.in_flight("versioned"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        (mixed, slow_done, most_slow_calls)
    };
    let (report, (mixed, slow_done, most_slow_calls)) = tokio::join!(work, script);
    report.unwrap();
    eprintln!(
        "{backend:?}: {FAST} fast messages alone {solo:?}, beside the slow backlog {mixed:?} ({:.2}x); slow handled by then: {slow_done}/{SLOW}",
        solo.as_secs_f64() / mixed.as_secs_f64()
    );
    assert!(
        slow_done < SLOW / 2,
        "the fast messages waited for the slow backlog: {slow_done}/{SLOW} slow ones were done first"
    );
    assert_eq!(most_slow_calls, 2, "the manifest's max_concurrency");
    assert_eq!(host.count("SELECT COUNT(*) FROM failed_messages").await, 0);
}

async fn a_state_quota_dead_letters_the_message_that_would_go_over_it(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-hostile"], |c| {
        let hostile = c.plugin.entry("hostile".into()).or_default();
        hostile.max_state_keys = Some(50);
        hostile.max_state_bytes = Some(150_000);
    })
    .await;
    let flood = |n: u32| json!({ "n": n });
    let huge = |bytes: u32| json!({ "bytes": bytes });
    let messages: Vec<NewMessage> = [
        ("hostile.key-flood", flood(30)),
        ("hostile.key-flood", flood(60)),
        ("hostile.key-flood", flood(40)),
        ("hostile.huge-value", huge(100_000)),
        ("hostile.huge-value", huge(200_000)),
    ]
    .into_iter()
    .map(|(kind, body)| NewMessage::new("test", kind, body.to_string().into_bytes()))
    .collect();
    // Whatever order a batch holds the floods in, the second one goes over. The values
    // go one at a time: within a batch only the last write of a key is committed, and
    // the quota is on what is committed.
    for some in [&messages[..3], &messages[3..4], &messages[4..]] {
        host.store.enqueue(some).await.unwrap();
        host.drain().await;
    }

    let failed = host.failed().await;
    let error_of = |i: usize| {
        failed
            .iter()
            .find(|f| f.message_id == messages[i].id)
            .map(|f| f.error.clone())
            .unwrap_or_else(|| panic!("message {i} did not fail: {failed:#?}"))
    };
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(
        error_of(1).starts_with("state quota exceeded: plugin hostile would hold 60 keys of state, over its max_state_keys of 50; delete state it no longer needs, or raise [plugin.hostile] max_state_keys (at most [runtime] max_state_keys)"),
        "{}",
        error_of(1)
    );
    assert!(
        error_of(4).contains("over its max_state_bytes of 150000"),
        "{}",
        error_of(4)
    );
    let (held, usage) = host.state_usage().await;
    assert_eq!(usage, held, "the usage row is what the state holds");
}
