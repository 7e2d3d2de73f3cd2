//! Request-reply over AMQP against a bare RPC loop on the same broker, in the same run:
//! the same clients (RabbitMQ's RPC tutorial over Direct Reply-To: each requester on its
//! own channel, one request in flight, a persistent request with `reply_to` and
//! `correlation_id`) ask a bare lapin server (consume, publish the answer to `reply_to`,
//! ack), the same server committing a PostgreSQL ledger row before it answers, and a
//! wharf host (consume, the `quote` fixture answers, the answer committed with
//! the ledger row in PostgreSQL, sent by the outbox relay with a confirm, ack), with 1
//! and 16 requesters: round-trip p50/p99 and requests/s.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::watch;
use wharf_host::transport::amqp::{ConsumeSpec, KindFrom};
use wharf_tests::broker::supervisor;
use wharf_tests::{Backend, Host, confirming_channel};

use super::amqp::fresh_queue;

/// Round trips each run makes in all.
const REQUESTS: usize = 2_000;
/// Requests of each run not counted: connections and plans warm up.
const WARM_UP: usize = 50;

/// Print p50/p99 and requests/s of the bare loop and of wharf, with 1 and 16 requesters.
pub async fn versus_bare_rpc() {
    let (connection, channel) = confirming_channel().await;
    let wharf_queue = fresh_queue(&channel, "bench_rpc_wharf").await;
    let host = std::sync::Arc::new(rpc_host(&wharf_queue).await);
    let pool = sqlx::PgPool::connect(&host.config.database.url)
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    let mut bare_queues = Vec::new();
    for ledger in [None, Some(pool)] {
        let queue = fresh_queue(&channel, "bench_rpc_bare").await;
        let server_channel = connection.create_channel().await.unwrap();
        let serving = bare_server(server_channel, queue.clone(), stopped.clone(), ledger);
        servers.push(tokio::spawn(serving));
        bare_queues.push(queue);
    }
    let supervising = supervisor(&host);
    let serving = tokio::spawn(async move { supervising.run(stopped).await });
    for requesters in [1, 16] {
        let bare = ask(&connection, &bare_queues[0], requesters).await;
        let ledger = ask(&connection, &bare_queues[1], requesters).await;
        let wharf = ask(&connection, &wharf_queue, requesters).await;
        println!(
            "request-reply over AMQP, {requesters} requester(s), {REQUESTS} round trips: bare lapin RPC server p50 {:.2} ms, p99 {:.2} ms, {:.0} requests/s; the same committing a PostgreSQL ledger row before it answers p50 {:.2} ms, p99 {:.2} ms, {:.0} requests/s",
            bare.p50, bare.p99, bare.rate, ledger.p50, ledger.p99, ledger.rate,
        );
        println!(
            "request-reply over AMQP, {requesters} requester(s): wharf (ledger + answer committed, relayed with a confirm) p50 {:.2} ms = {:.2}x of the bare server (target <= 2x), {:.2}x of the one with a ledger; p99 {:.2} ms; {:.0} requests/s = {:.2}x of the bare server (target >= 0.5x), {:.2}x of the one with a ledger",
            wharf.p50,
            wharf.p50 / bare.p50,
            wharf.p50 / ledger.p50,
            wharf.p99,
            wharf.rate,
            wharf.rate / bare.rate,
            wharf.rate / ledger.rate,
        );
    }
    stop.send(true).unwrap();
    for server in servers {
        server.await.unwrap();
    }
    serving.await.unwrap().expect("the host ran without errors");
}

/// What one run of requesters measured.
struct Run {
    p50: f64,
    p99: f64,
    rate: f64,
}

/// `requesters` clients asking `queue` until [`REQUESTS`] round trips are done.
async fn ask(connection: &Connection, queue: &str, requesters: usize) -> Run {
    let each = REQUESTS / requesters;
    let started = Instant::now();
    let skip = (WARM_UP / requesters).max(1);
    let clients = (0..requesters).map(|n| client(connection, queue, n, (each, skip)));
    let mut latencies: Vec<Duration> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    Run {
        p50: at(0.50),
        p99: at(0.99),
        rate,
    }
}

/// Requester `n`: `count` requests one after the other over Direct Reply-To; the round
/// trip of each after the first `skip`.
async fn client(
    connection: &Connection,
    queue: &str,
    n: usize,
    (count, skip): (usize, usize),
) -> Vec<Duration> {
    let channel = connection.create_channel().await.unwrap();
    let mut answers = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let correlation = format!("{n}-{i}-{}", uuid::Uuid::now_v7());
        let properties = BasicProperties::default()
            .with_type("quote.ask".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(correlation.as_str().into())
            .with_delivery_mode(2);
        let sent = Instant::now();
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                br#"{"qty": 2}"#,
                properties,
            )
            .await
            .unwrap();
        loop {
            let answer = answers.next().await.unwrap().unwrap();
            let to = answer.properties.correlation_id().as_ref().unwrap();
            if to.as_str() == correlation {
                break;
            }
        }
        if i >= skip {
            latencies.push(sent.elapsed());
        }
    }
    latencies
}

/// The tutorial's server: answer each request on its `reply_to` with its correlation id,
/// then ack it; with a `ledger`, first commit a ledger row for it there (the least a
/// server that answers each request once has to do).
async fn bare_server(
    channel: Channel,
    queue: String,
    mut stop: watch::Receiver<bool>,
    ledger: Option<sqlx::PgPool>,
) {
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut requests = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    loop {
        let request = tokio::select! {
            next = requests.next() => next.unwrap().unwrap(),
            _ = stop.changed() => return,
        };
        if let Some(pool) = &ledger {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at)
                 VALUES ($1, 'raw', '1', repeat('0', 64), wharf_now_ms())",
            )
            .bind(uuid::Uuid::now_v7())
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        let p = &request.properties;
        let properties =
            BasicProperties::default().with_correlation_id(p.correlation_id().clone().unwrap());
        channel
            .basic_publish(
                "".into(),
                p.reply_to().clone().unwrap(),
                BasicPublishOptions::default(),
                br#"{"price": 6}"#,
                properties,
            )
            .await
            .unwrap();
        channel
            .basic_ack(request.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
    }
}

/// A PostgreSQL host answering `queue` with the `quote` fixture, ledger and relay on.
async fn rpc_host(queue: &str) -> Host {
    Host::start_with(Backend::Postgres, &["fixture-answer"], |c| {
        c.amqp.url = wharf_tests::amqp_url();
        c.amqp.ledger = true;
        c.amqp.batch_size = 50;
        c.amqp.relay = Some(true);
        c.runtime.concurrency = 16;
        c.amqp.consume = vec![ConsumeSpec {
            queue: queue.to_owned(),
            prefetch: 100,
            consumers: 1,
            kind_from: KindFrom::Type,
            to_inbox: None,
            key_header: wharf_host::envelope::KEY_HEADER.into(),
            ordered: false,
        }];
    })
    .await
}
