//! Chaos (its own test binary, so its processes and kills disturb no other test): real
//! `wharf run` processes on PostgreSQL, each killed with SIGKILL at some point while
//! they drain thousands of stateful messages on a few hot keys (a read-modify-write of a
//! counter that also publishes to an exchange), alternating held and leased claims; then
//! a host finishes the rest. A checker compares what the database holds with what the
//! messages asked for and reports lost, duplicated and double-applied effects: it must
//! find none. And ordered keys through two hosts killed mid-batch, from the inbox and from
//! an ordered AMQP queue: not one message out of its key's order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;
use wharf_host::envelope::NewMessage;
use wharf_host::transport::amqp::topology;
use wharf_tests::broker::{keyed, publish_orders, run_until};
use wharf_tests::{
    Host, amqp_url, confirming_channel, fresh_postgres_schema, route_orders, test_config,
    unique_name, victim_command,
};

/// Messages drained.
const MESSAGES: usize = 3_000;
/// Hot keys they count on.
const KEYS: usize = 5;
/// Host processes killed.
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_killed_again_and_again_lose_duplicate_and_double_apply_nothing() {
    let url = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = url.clone();
    config.inbox.lease_ms = 1_500;
    config.runtime.deadline_ms = 1_000;
    let checker = Host::start_on(config, &["fixture-counter"], tempfile::tempdir().unwrap()).await;
    let messages: Vec<NewMessage> = (0..MESSAGES)
        .map(|i| {
            let body = json!({ "key": format!("k{}", i % KEYS), "publish": true });
            NewMessage::new("test", "test.count", body.to_string().into_bytes())
        })
        .collect();
    checker.store.enqueue(&messages).await.unwrap();

    let plugins = checker.config.plugins.dir.clone();
    let mut killed_at = Vec::new();
    for round in 0..KILLS {
        let mut victim = victim_command(
            env!("CARGO_BIN_EXE_wharf-under-test"),
            &url,
            &plugins,
            &dir.path().join("victim-cache"),
            if round % 2 == 1 { "0" } else { "10000" },
        )
        .spawn()
        .expect("start a wharf run process");
        let target = ((round + 1) * MESSAGES / (KILLS + 2)) as i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: no progress to {target} handled"
            );
            assert!(
                victim.try_wait().unwrap().is_none(),
                "round {round}: the host exited"
            );
            if handled(&checker).await >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // A little later, so kills land at different points of a batch.
        tokio::time::sleep(Duration::from_millis(7 * round as u64)).await;
        victim.kill().unwrap();
        victim.wait().unwrap();
        let at = handled(&checker).await;
        assert!(
            at < MESSAGES as i64,
            "round {round}: the host finished before it was killed"
        );
        killed_at.push(at);
    }
    let report = checker.drain().await;
    eprintln!(
        "chaos: {MESSAGES} messages on {KEYS} keys, {KILLS} hosts killed with SIGKILL at {killed_at:?} handled; the last host handled {} more",
        report.settled.handled
    );

    let found = check(&checker, &messages).await;
    eprintln!("chaos: {found:?}");
    assert_eq!(found, Found::default(), "lost or repeated effects");
}

async fn handled(host: &Host) -> i64 {
    host.count("SELECT COUNT(*) FROM processed").await
}

/// What the checker found wrong; all zero when every effect is there exactly once.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    /// Messages with no ledger row, or still in the inbox, or failed.
    lost: usize,
    /// Ledger rows or outbox rows beyond one per message.
    duplicated: usize,
    /// Counter increments beyond (or short of) one per message, per key; `odd`
    /// counters off their count.
    double_applied: usize,
    /// Messages whose outbox row is missing.
    unpublished: usize,
    /// Whether the plugin's state usage row differs from what its state holds.
    usage_off: bool,
}

/// Compare the database with what `messages` asked for.
async fn check(host: &Host, messages: &[NewMessage]) -> Found {
    let mut found = Found::default();
    let ids = |sql: &'static str| async move {
        let mut by_id: BTreeMap<String, i64> = BTreeMap::new();
        for row in host.rows(sql).await {
            *by_id.entry(row.get::<String, _>(0)).or_default() += 1;
        }
        by_id
    };
    let ledger = ids("SELECT CAST(message_id AS TEXT) FROM processed").await;
    let outbox = ids("SELECT CAST(source_message_id AS TEXT) FROM outbox").await;
    for message in messages {
        let id = message.id.to_string();
        match ledger.get(&id) {
            None => found.lost += 1,
            Some(n) => found.duplicated += (*n - 1) as usize,
        }
        match outbox.get(&id) {
            None => found.unpublished += 1,
            Some(n) => found.duplicated += (*n - 1) as usize,
        }
    }
    found.lost += (host.count("SELECT COUNT(*) FROM inbox").await
        + host.count("SELECT COUNT(*) FROM failed_messages").await) as usize;
    let counters: BTreeMap<String, i64> = host
        .rows("SELECT key, convert_from(value, 'UTF8') FROM plugin_state")
        .await
        .iter()
        .map(|r| (r.get(0), r.get::<String, _>(1).parse().unwrap()))
        .collect();
    let per_key = MESSAGES / KEYS;
    for k in 0..KEYS {
        let count = counters.get(&format!("count:k{k}")).copied().unwrap_or(0);
        let odd = counters.get(&format!("odd:k{k}")).copied().unwrap_or(0);
        found.double_applied += count.abs_diff(per_key as i64) as usize;
        found.double_applied += odd.abs_diff(count / 2) as usize;
    }
    let (held, recorded) = host.state_usage().await;
    found.usage_off = held != recorded;
    found
}

/// Ordered messages on each of a few keys.
const ORDERED_KEYS: usize = 6;
/// Messages per key.
const PER_KEY: usize = 150;

/// Two `wharf run` processes on PostgreSQL take the same ordered keys at once, one held and
/// one leased, each killed with SIGKILL mid-batch and replaced, while a tenth of the
/// messages ask for a retry; then a host finishes the rest. `sequence-a` rejects any
/// message of a key that does not follow the last it handled: not one may be rejected,
/// and every key ends at its last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_killed_mid_batch_keep_each_key_in_order() {
    let url = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = url.clone();
    config.inbox.lease_ms = 1_500;
    config.runtime.deadline_ms = 1_000;
    let ordered = wharf_host::plugins::PluginConfig {
        ordered: Some(true),
        ..Default::default()
    };
    config.plugin.insert("sequence-a".into(), ordered);
    let checker = Host::start_on(
        config,
        &["fixture-sequence-a"],
        tempfile::tempdir().unwrap(),
    )
    .await;
    let toml = dir.path().join("ordered.toml");
    std::fs::write(&toml, "[plugin.sequence-a]\nordered = true\n").unwrap();
    let messages: Vec<NewMessage> = (ordered_steps().into_iter())
        .map(|(key, body)| NewMessage::new("test", "test.seq", body).with_key(&key))
        .collect();
    checker.store.enqueue(&messages).await.unwrap();
    let total = messages.len() as i64;
    let killed_at = kill_twice_midway(&checker, &url, dir.path(), &toml, total).await;
    checker.drain().await;
    eprintln!(
        "ordered chaos: {total} messages on {ORDERED_KEYS} keys, two hosts killed twice at {killed_at:?} handled"
    );
    let failed: Vec<String> = checker
        .failed()
        .await
        .into_iter()
        .map(|f| f.error)
        .collect();
    assert_eq!(failed, Vec::<String>::new(), "nothing out of order");
    every_key_at_its_last(&checker).await;
    assert_eq!(handled(&checker).await, total, "each handled once");
}

/// The steps of the ordered chaos tests: `PER_KEY` messages on each of `ORDERED_KEYS`
/// keys, interleaved, a tenth asking for a retry, as (key, payload).
fn ordered_steps() -> Vec<(String, Vec<u8>)> {
    let mut steps = Vec::new();
    for n in 1..=PER_KEY {
        for k in 0..ORDERED_KEYS {
            let mut step = json!({"key": format!("k{k}"), "n": n});
            if (n + k) % 10 == 3 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            steps.push((format!("k{k}"), step.to_string().into_bytes()));
        }
    }
    steps
}

/// Two `wharf run` processes consume an ordered AMQP queue (one active consumer at a
/// time; the retried keys move into the inbox, which both drain), each killed with
/// SIGKILL mid-batch and replaced, twice; then a host finishes the rest. Not one message
/// may be out of its key's order, and each is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_killed_mid_batch_keep_each_key_of_an_amqp_queue_in_order() {
    let url = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let (exchange, queue) = (unique_name("ex"), unique_name("q"));
    let mut config = test_config(dir.path());
    config.database.url = url.clone();
    config.inbox.queues = vec![queue.clone()];
    route_orders(&mut config, &exchange, &queue);
    config.amqp.consume[0].ordered = true;
    config.amqp.queues[0].single_active_consumer = true;
    let checker = Host::start_on(
        config,
        &["fixture-sequence-a"],
        tempfile::tempdir().unwrap(),
    )
    .await;
    let (connection, channel) = confirming_channel().await;
    let amqp = &checker.config.amqp;
    topology::declare(&channel, &amqp.exchanges, &amqp.queues)
        .await
        .unwrap();
    let toml = dir.path().join("ordered.toml");
    std::fs::write(
        &toml,
        format!(
            "[inbox]\nqueues = [\"{queue}\"]\n\n[amqp]\nurl = \"{}\"\nbatch_size = 20\n\n[[amqp.exchanges]]\nname = \"{exchange}\"\n\n[[amqp.queues]]\nname = \"{queue}\"\nsingle_active_consumer = true\nbindings = [{{ exchange = \"{exchange}\", routing_key = \"orders\" }}]\n\n[[amqp.consume]]\nqueue = \"{queue}\"\nordered = true\n",
            amqp_url()
        ),
    )
    .unwrap();
    let steps = ordered_steps();
    let total = steps.len() as i64;
    let messages = (steps.into_iter()).map(|(key, body)| (keyed("test.seq", &key), body));
    publish_orders(&channel, &exchange, messages).await;
    let killed_at = kill_twice_midway(&checker, &url, dir.path(), &toml, total).await;
    run_until(&[&checker], "every message handled", async || {
        handled(&checker).await >= total || !checker.failed().await.is_empty()
    })
    .await;
    let _ = connection.close(200, "done".into()).await;
    eprintln!(
        "ordered AMQP chaos: {total} messages on {ORDERED_KEYS} keys, two hosts killed twice at {killed_at:?} handled"
    );
    let failed: Vec<String> = (checker.failed().await.into_iter())
        .map(|f| f.error)
        .collect();
    assert_eq!(failed, Vec::<String>::new(), "nothing out of order");
    let moved = checker
        .query_rows(format!(
            "SELECT COUNT(*) FROM received WHERE queue = '{queue}'"
        ))
        .await[0]
        .get::<i64, _>(0);
    assert!(moved > 0, "retried keys went through the inbox");
    every_key_at_its_last(&checker).await;
    assert_eq!(handled(&checker).await, total, "each handled once");
}

/// Two `wharf run` processes with `config` (one holding its claims, one leasing them),
/// killed with SIGKILL once `checker` sees a third of `total` handled, then two more killed
/// at two thirds. Returns how many were handled at each kill.
async fn kill_twice_midway(
    checker: &Host,
    url: &str,
    dir: &std::path::Path,
    config: &std::path::Path,
    total: i64,
) -> Vec<i64> {
    let spawn = |held: &str, cache: &str| {
        let mut command = victim_command(
            env!("CARGO_BIN_EXE_wharf-under-test"),
            url,
            &checker.config.plugins.dir,
            &dir.join(cache),
            held,
        );
        command.arg("--config").arg(config);
        command.spawn().expect("start a wharf run process")
    };
    let mut killed_at = Vec::new();
    for round in 0..2 {
        let mut hosts = [spawn("10000", "cache-a"), spawn("0", "cache-b")];
        let target = (round as i64 + 1) * total / 3;
        let deadline = Instant::now() + Duration::from_secs(60);
        while handled(checker).await < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: no progress to {target}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for host in &mut hosts {
            host.kill().unwrap();
            host.wait().unwrap();
        }
        killed_at.push(handled(checker).await);
    }
    killed_at
}

/// `sequence-a` handled every key up to its last message.
async fn every_key_at_its_last(checker: &Host) {
    let last = wharf_tests::sequence::last(checker, "sequence-a").await;
    let expected: BTreeMap<String, u64> = (0..ORDERED_KEYS)
        .map(|k| (format!("k{k}"), PER_KEY as u64))
        .collect();
    assert_eq!(last, expected);
}
