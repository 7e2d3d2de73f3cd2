//! `ordering`: ordered plugins on the PostgreSQL inbox, each beside the same plugin
//! unordered on the same messages in the same run. 20,000 messages over 10,000 keys and
//! over 100 keys through the noop fixture, ordered against unordered (target >= 0.8x);
//! 1 key, ordered (serial: messages/s and the time per message); the other keys' rate
//! while 1% of the keys are held by a dead letter, against none held (`sequence-a`,
//! target >= 0.9x); what numbering keys costs an enqueue; and one AMQP consumer (ledger on,
//! PostgreSQL) draining 20,000 keyed messages, ordered against unordered (target >= 0.8x).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use wharf_host::config::Config;
use wharf_host::envelope::NewMessage;
use wharf_host::plugins::PluginConfig;
use wharf_host::transport::pump::StopWhen;
use wharf_tests::{Backend, Host, confirming_channel};

use super::amqp;
use super::cpu::{self, CpuCost};

const MESSAGES: usize = 20_000;

/// `[plugin.<name>] ordered = true`.
fn ordered(name: &str) -> impl Fn(&mut Config) {
    let name = name.to_owned();
    move |c| {
        c.inbox.queues = vec!["bench".into()];
        c.inbox.poll_interval_ms = 1_000;
        let plugin = PluginConfig {
            ordered: Some(true),
            ..PluginConfig::default()
        };
        c.plugin.insert(name.clone(), plugin);
    }
}

fn unordered(c: &mut Config) {
    c.inbox.queues = vec!["bench".into()];
    c.inbox.poll_interval_ms = 1_000;
}

/// `MESSAGES` noop messages over `keys` keys, a key's messages in order, keys interleaved.
fn noops(keys: usize) -> Vec<NewMessage> {
    (0..MESSAGES)
        .map(|n| {
            NewMessage::new("bench", "bench.noop", b"{}".to_vec())
                .with_key(&format!("key-{}", n % keys))
        })
        .collect()
}

/// Enqueue `messages` in chunks; the seconds it took.
async fn enqueue(host: &Host, messages: &[NewMessage]) -> f64 {
    let started = Instant::now();
    for chunk in messages.chunks(1_000) {
        host.store.enqueue(chunk).await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

/// Messages/s of draining `messages` on a fresh host configured by `tune`, and the CPU
/// it cost this process and PostgreSQL.
async fn rate(tune: impl Fn(&mut Config), messages: &[NewMessage]) -> (f64, CpuCost) {
    let host = Host::start_with(Backend::Postgres, &["fixture-noop"], tune).await;
    enqueue(&host, messages).await;
    let started = Instant::now();
    let (_, cost) = CpuCost::of(cpu::POSTGRES, messages.len(), host.drain()).await;
    (
        messages.len() as f64 / started.elapsed().as_secs_f64(),
        cost,
    )
}

/// Run `host`'s worker until `plugin` handled `count` messages; the seconds it took.
async fn handled(host: &Host, plugin: &'static str, count: i64) -> f64 {
    let (stop, rx) = watch::channel(false);
    let worker = host.worker.clone();
    let started = Instant::now();
    let running = tokio::spawn(async move { worker.run(StopWhen::default(), rx).await });
    loop {
        let done = host
            .query_rows(format!(
                "SELECT COUNT(*) FROM processed WHERE plugin = '{plugin}'"
            ))
            .await;
        if sqlx::Row::get::<i64, _>(&done[0], 0) >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed().as_secs_f64();
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    took
}

/// 10,000 keys of two `sequence-a` messages each; the first message of every `held`-th
/// key is rejected (its key held, its second message waiting). Messages/s of the others.
async fn held_rate(held: Option<usize>) -> f64 {
    let host = Host::start_with(
        Backend::Postgres,
        &["fixture-sequence-a"],
        ordered("sequence-a"),
    )
    .await;
    let keys = MESSAGES / 2;
    let mut messages = Vec::with_capacity(MESSAGES);
    let mut rejected = 0;
    for n in 1..=2u64 {
        for k in 0..keys {
            let mut step = json!({"key": format!("key-{k}"), "n": n});
            if n == 1 && held.is_some_and(|every| k % every == 0) {
                step["reject"] = json!(["sequence-a"]);
                rejected += 1;
            }
            let body = step.to_string().into_bytes();
            messages.push(NewMessage::new("bench", "test.seq", body).with_key(&format!("key-{k}")));
        }
    }
    enqueue(&host, &messages).await;
    let others = (MESSAGES - 2 * rejected) as i64;
    let took = handled(&host, "sequence-a", others).await;
    others as f64 / took
}

/// Msgs/s of one AMQP consumer draining `MESSAGES` noop messages over `keys` keys,
/// `ordered` or not.
async fn amqp_rate(channel: &lapin::Channel, keys: usize, ordered: bool) -> f64 {
    let queue = amqp::fresh_queue(channel, "bench_ordering").await;
    let host = amqp::amqp_host(&queue, true, ordered).await;
    amqp::fill(channel, &queue, &amqp::payload(), Some(keys)).await;
    let last = amqp::sentinel(channel, &queue).await;
    amqp::consume_all(host, last).await
}

pub async fn scenarios() {
    println!("ordering: PostgreSQL inbox, 1 host, {MESSAGES} messages per run");
    for keys in [10_000, 100] {
        let messages = noops(keys);
        let (free, free_cost) = rate(unordered, &messages).await;
        let (kept, kept_cost) = rate(ordered("noop"), &messages).await;
        println!(
            "ordering {keys} keys: ordered {kept:.0} msgs/s, unordered {free:.0} msgs/s: {:.2}x (target >= 0.8x); ordered {kept_cost}, unordered {free_cost}",
            kept / free
        );
    }
    let one: Vec<NewMessage> = noops(1).into_iter().take(2_000).collect();
    let (serial, _) = rate(ordered("noop"), &one).await;
    println!(
        "ordering 1 key: {serial:.0} msgs/s ordered, {:.3} ms per message (a batch at a time, in order: the first run in dispatch, the rest inside the settle)",
        1e3 / serial
    );
    let none_held = held_rate(None).await;
    let some_held = held_rate(Some(100)).await;
    println!(
        "ordering, 1% of 10,000 keys held by a dead letter: the others at {some_held:.0} msgs/s, none held {none_held:.0} msgs/s: {:.2}x (target >= 0.9x)",
        some_held / none_held
    );
    let host = Host::start_with(Backend::Postgres, &["fixture-noop"], unordered).await;
    let plain: Vec<NewMessage> = (0..MESSAGES)
        .map(|_| NewMessage::new("bench", "bench.noop", b"{}".to_vec()))
        .collect();
    let without = enqueue(&host, &plain).await;
    let with = enqueue(&host, &noops(10_000)).await;
    println!(
        "ordering, enqueue in chunks of 1,000: keyed {:.0} msgs/s, without keys {:.0} msgs/s: {:.2}x",
        MESSAGES as f64 / with,
        MESSAGES as f64 / without,
        without / with
    );
    let (connection, channel) = confirming_channel().await;
    for keys in [10_000, 100] {
        let free = amqp_rate(&channel, keys, false).await;
        let kept = amqp_rate(&channel, keys, true).await;
        println!(
            "ordering AMQP {keys} keys (one consumer, ledger on): ordered {kept:.0} msgs/s, unordered {free:.0} msgs/s: {:.2}x (target >= 0.8x)",
            kept / free
        );
    }
    connection.close(200, "done".into()).await.unwrap();
}
