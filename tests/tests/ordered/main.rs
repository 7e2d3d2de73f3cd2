//! Ordered plugins on every store: the messages of one key are handled one at a time, in
//! publish order, through retries and by two hosts at once; different keys run in parallel;
//! with fan-out, a plugin failing holds its own order only; a dead letter holds its key
//! (until the failed message is retried, or the key is skipped) or, by policy, lets the
//! key go on. The `sequence-a` / `sequence-b` fixtures reject any message that does not
//! follow the last one they handled of its key, so a key out of order dead-letters.
//! `sequence-a`'s manifest asks for order (the operator's config overrides it), and it
//! sees each message's key and publishes with it (world 0.4.0). On MariaDB/MySQL, a parked
//! message another transaction holds locked is still woken when its key moves on (`locked`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqlx::Row;
use wharf_host::config::Config;
use wharf_host::envelope::{DeadLetterKey, NewMessage};
use wharf_host::plugins::PluginConfig;
use wharf_host::store::FailedFilter;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::sequence::last;
use wharf_tests::{Backend, Host, conformance, wait_for};

mod locked;

conformance!(
    two_hosts_handle_each_key_in_publish_order_through_retries,
    without_ordering_the_fixture_sees_keys_out_of_order,
    a_manifest_asks_for_order_and_a_handler_publishes_with_its_key,
    a_plugin_failing_holds_only_its_own_order,
    a_dead_letter_holds_its_key_until_the_message_is_retried,
    a_held_key_skipped_goes_on_without_its_message,
    a_skip_policy_lets_the_key_go_on
);

const PLUGINS: &[&str] = &["fixture-sequence-a", "fixture-sequence-b"];

/// Config marking `plugins` ordered, each with its dead-letter policy.
fn ordered(plugins: &[(&str, DeadLetterKey)]) -> impl FnOnce(&mut Config) {
    let plugins: Vec<(String, DeadLetterKey)> =
        plugins.iter().map(|(p, d)| (p.to_string(), *d)).collect();
    move |config| {
        for (name, dead_letter_key) in plugins {
            config.plugin.insert(
                name,
                PluginConfig {
                    ordered: Some(true),
                    dead_letter_key,
                    ..PluginConfig::default()
                },
            );
        }
    }
}

/// `steps` (payloads of `test.seq`), each published with its `key` as ordering key, in
/// one enqueue.
async fn publish(host: &Host, steps: &[serde_json::Value]) -> Vec<NewMessage> {
    let messages: Vec<NewMessage> = steps
        .iter()
        .map(|s| {
            let key = s["key"].as_str().unwrap();
            NewMessage::new("test", "test.seq", s.to_string().into_bytes()).with_key(key)
        })
        .collect();
    host.store.enqueue(&messages).await.unwrap();
    messages
}

/// Failed messages as (plugin, error).
async fn failures(host: &Host) -> Vec<(String, String)> {
    host.failed()
        .await
        .into_iter()
        .map(|f| (f.plugin, f.error))
        .collect()
}

/// Run `host`'s worker until `done` (bounded).
async fn run_until(host: &Host, what: &str, done: impl AsyncFn() -> bool) {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = host.worker.clone();
    let running = tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    wait_for(what, Duration::from_secs(20), done).await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn two_hosts_handle_each_key_in_publish_order_through_retries(backend: Backend) {
    let order = ordered(&[("sequence-a", DeadLetterKey::Hold)]);
    let plugins = &["fixture-sequence-a"];
    // Small batches: a host that took a batch of every key would leave the other host
    // only messages waiting for that batch (seen on SQLite: one host did everything).
    let host = Host::start_with(backend, plugins, |c| {
        order(c);
        c.inbox.batch_size = 4;
    })
    .await;
    let other = {
        let dir = tempfile::tempdir().unwrap();
        let mut config = host.config.clone();
        config.plugins.dir = dir.path().join("plugins");
        config.plugins.cache_dir = dir.path().join("cache");
        Host::start_on(config, plugins, dir).await
    };
    // 12 keys, 25 messages each, interleaved; every tenth asks sequence-a for a retry.
    let mut steps = Vec::new();
    for n in 1..=25u64 {
        for k in 0..12 {
            let mut step = json!({"key": format!("order-{k}"), "n": n});
            if (n * 12 + k) % 10 == 3 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            steps.push(step);
        }
    }
    // The second host waits for work before any arrives, so both take part.
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = other.worker.clone();
    let second = tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    publish(&host, &steps).await;
    let report = host.drain().await;
    stop.send(true).unwrap();
    let second = second.await.unwrap().unwrap();
    let expected: BTreeMap<String, u64> = (0..12).map(|k| (format!("order-{k}"), 25)).collect();
    assert_eq!(failures(&host).await, vec![], "nothing out of order");
    assert_eq!(last(&host, "sequence-a").await, expected);
    assert!(report.settled.retried + second.settled.retried >= 30);
    assert!(
        report.messages > 0 && second.messages > 0,
        "both hosts took part: {} and {}",
        report.messages,
        second.messages
    );
    let left = host.count("SELECT COUNT(*) FROM inbox").await;
    assert_eq!(left, 0);
}

async fn without_ordering_the_fixture_sees_keys_out_of_order(backend: Backend) {
    // The operator's `ordered = false` overrides the manifest's ask.
    let unordered = |config: &mut Config| {
        let plugin = config.plugin.entry("sequence-a".into()).or_default();
        plugin.ordered = Some(false);
    };
    let host = Host::start_with(backend, &["fixture-sequence-a"], unordered).await;
    let steps: Vec<_> = (1..=20u64)
        .map(|n| {
            let mut step = json!({"key": "k", "n": n});
            if n % 5 == 1 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            step
        })
        .collect();
    publish(&host, &steps).await;
    host.drain().await;
    let out_of_order = failures(&host)
        .await
        .into_iter()
        .filter(|(_, e)| e.contains("out of order"))
        .count();
    assert!(out_of_order > 0, "the check this file relies on can fail");
}

async fn a_manifest_asks_for_order_and_a_handler_publishes_with_its_key(backend: Backend) {
    // No config: sequence-a's manifest asks for order. Each message it handles it
    // forwards with its own key; every third fails once first.
    let host = Host::start(backend, &["fixture-sequence-a"]).await;
    let mut steps = Vec::new();
    for n in 1..=10u64 {
        for k in ["order-1", "order-2"] {
            let mut step = json!({"key": k, "n": n, "forward": true});
            if n % 3 == 0 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            steps.push(step);
        }
    }
    publish(&host, &steps).await;
    host.drain().await;
    assert_eq!(failures(&host).await, vec![], "nothing out of order");
    let rows = host
        .rows("SELECT ordering_key, seq, payload FROM inbox WHERE queue = 'forwarded'")
        .await;
    let mut forwarded: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for row in &rows {
        let payload: serde_json::Value = serde_json::from_slice(&row.get::<Vec<u8>, _>(2)).unwrap();
        let key: String = row.get(0);
        assert_eq!(
            payload["key"],
            json!(key),
            "the handler saw the key it carries"
        );
        let n = payload["n"].as_u64().unwrap();
        forwarded.entry(key).or_default().push((row.get(1), n));
    }
    for (key, mut numbered) in forwarded.clone() {
        numbered.sort();
        let expected: Vec<(i64, u64)> = (1..=10).map(|n| (n as i64, n as u64)).collect();
        assert_eq!(numbered, expected, "{key}: numbered in the order published");
    }
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
}

async fn a_plugin_failing_holds_only_its_own_order(backend: Backend) {
    let order = ordered(&[
        ("sequence-a", DeadLetterKey::Hold),
        ("sequence-b", DeadLetterKey::Hold),
    ]);
    let host = Host::start_with(backend, PLUGINS, order).await;
    // sequence-a fails the second message of k for a while (a long retry would do the
    // same; a rejection until a time is quicker to wait out): b goes on with k's later
    // messages meanwhile, and a handles them only after.
    let until = now_ms() + 1_500;
    let mut steps = vec![json!({"key": "k", "n": 1})];
    steps.push(json!({"key": "k", "n": 2, "reject": ["sequence-a"], "until_ms": until}));
    steps.extend((3..=6).map(|n| json!({"key": "k", "n": n})));
    steps.extend((1..=3).map(|n| json!({"key": "j", "n": n})));
    publish(&host, &steps).await;
    run_until(&host, "sequence-b handles every message", async || {
        let b = last(&host, "sequence-b").await;
        b.get("k") == Some(&6) && b.get("j") == Some(&3)
    })
    .await;
    let a = last(&host, "sequence-a").await;
    assert_eq!((a.get("k"), a.get("j")), (Some(&1), Some(&3)), "{a:?}");
    let held = host.store.held_keys(10).await.unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (
            held[0].key.as_str(),
            held[0].plugin.as_str(),
            held[0].seq,
            held[0].waiting
        ),
        ("k", "sequence-a", 2, 4)
    );
    let parked = host
        .count("SELECT COUNT(*) FROM inbox WHERE parked = TRUE")
        .await;
    assert!(parked >= 1, "k's later messages wait parked");
    assert!(failures(&host).await.iter().all(|(p, _)| p == "sequence-a"));
}

async fn a_dead_letter_holds_its_key_until_the_message_is_retried(backend: Backend) {
    let order = ordered(&[("sequence-a", DeadLetterKey::Hold)]);
    let host = Host::start_with(backend, &["fixture-sequence-a"], order).await;
    let until = now_ms() + 1_000;
    let mut steps = vec![json!({"key": "k", "n": 1})];
    steps.push(json!({"key": "k", "n": 2, "reject": ["sequence-a"], "until_ms": until}));
    steps.extend((3..=5).map(|n| json!({"key": "k", "n": n})));
    steps.extend((1..=3).map(|n| json!({"key": "j", "n": n})));
    publish(&host, &steps).await;
    run_until(
        &host,
        "the key is held with three messages behind it",
        async || {
            let held = host.store.held_keys(10).await.unwrap();
            held.len() == 1
                && held[0].waiting == 3
                && last(&host, "sequence-a").await.get("j") == Some(&3)
        },
    )
    .await;
    assert_eq!(last(&host, "sequence-a").await.get("k"), Some(&1));
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()))).await;
    let retried = host
        .store
        .failed_retry(&FailedFilter::id(failed[0].id), 1)
        .await
        .unwrap();
    assert_eq!(retried.inbox, 1);
    host.drain().await;
    assert_eq!(last(&host, "sequence-a").await.get("k"), Some(&5));
    assert_eq!(host.store.held_keys(10).await.unwrap(), vec![]);
}

/// Four messages of key `k`, the second rejected by `sequence-a`, the third following
/// the first.
fn second_rejected() -> Vec<serde_json::Value> {
    vec![
        json!({"key": "k", "n": 1}),
        json!({"key": "k", "n": 2, "reject": ["sequence-a"]}),
        json!({"key": "k", "n": 3, "after": 1}),
        json!({"key": "k", "n": 4}),
    ]
}

async fn a_held_key_skipped_goes_on_without_its_message(backend: Backend) {
    let order = ordered(&[("sequence-a", DeadLetterKey::Hold)]);
    let host = Host::start_with(backend, &["fixture-sequence-a"], order).await;
    publish(&host, &second_rejected()).await;
    run_until(&host, "the key is held", async || {
        let held = host.store.held_keys(10).await.unwrap();
        held.len() == 1 && held[0].waiting == 2
    })
    .await;
    let store = &host.store;
    assert!(
        !store
            .skip_held_key("test", "k", "sequence-b")
            .await
            .unwrap()
    );
    assert!(
        !store
            .skip_held_key("test", "other", "sequence-a")
            .await
            .unwrap()
    );
    assert!(
        store
            .skip_held_key("test", "k", "sequence-a")
            .await
            .unwrap()
    );
    assert!(
        !store
            .skip_held_key("test", "k", "sequence-a")
            .await
            .unwrap(),
        "once"
    );
    host.drain().await;
    assert_eq!(last(&host, "sequence-a").await.get("k"), Some(&4));
    assert_eq!(
        failures(&host).await.len(),
        1,
        "the skipped message stays failed"
    );
}

async fn a_skip_policy_lets_the_key_go_on(backend: Backend) {
    let order = ordered(&[("sequence-a", DeadLetterKey::Skip)]);
    let host = Host::start_with(backend, &["fixture-sequence-a"], order).await;
    publish(&host, &second_rejected()).await;
    host.drain().await;
    assert_eq!(last(&host, "sequence-a").await.get("k"), Some(&4));
    assert_eq!(host.store.held_keys(10).await.unwrap(), vec![]);
    let failed = failures(&host).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
}
