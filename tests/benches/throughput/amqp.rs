//! The AMQP transport against a bare lapin loop on the same broker, in the same run: each
//! drains a queue pre-filled with the same persistent 256 B messages. The bare loop
//! consumes with prefetch 1000 and acks every 50th delivery with `multiple=true`; the
//! ledger loop does the same and, before each ack, commits the batch's dedup ledger rows
//! to PostgreSQL (the durable work a consumer that handles each message once has to do);
//! wharf consumes the same way (one consumer, batches of 50), calls the trivial plugin per
//! message and settles, with the dedup ledger off and on (PostgreSQL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::watch;
use wharf_host::envelope::KEY_HEADER;
use wharf_host::transport::amqp::{ConsumeSpec, KindFrom};
use wharf_tests::broker::supervisor;
use wharf_tests::{Backend, Host, confirming_channel, unique_name};

use super::cpu::{BOTH, CpuCost, RABBITMQ, print_apart};
use super::profile::Profile;

const MESSAGES: usize = 20_000;
const PREFETCH: u16 = 1_000;
const ACK_EVERY: usize = 50;

/// Print msgs/s of the bare loop and of wharf with the ledger off and on, with ratios.
pub async fn versus_bare_loop(sandbox_us: f64) {
    let (connection, channel) = confirming_channel().await;
    let body = payload();

    let queue = fresh_queue(&channel, "bench_bare").await;
    fill(&channel, &queue, &body, None).await;
    let (bare, bare_cpu) =
        CpuCost::of(RABBITMQ, MESSAGES, lapin_loop(&connection, &queue, None)).await;

    let queue = fresh_queue(&channel, "bench_ledger").await;
    let database = amqp_host(&queue, true, false).await;
    let pool = sqlx::PgPool::connect(&database.config.database.url)
        .await
        .unwrap();
    fill(&channel, &queue, &body, None).await;
    let (paid, paid_cpu) =
        CpuCost::of(BOTH, MESSAGES, lapin_loop(&connection, &queue, Some(&pool))).await;

    let mut wharf = Vec::new();
    for ledger in [false, true] {
        let (host, last) = filled_host(&channel, ledger, &body).await;
        wharf.push(CpuCost::of(BOTH, MESSAGES, consume_all(host, last)).await);
    }
    // The same runs again, sampled.
    let mut breakdowns = Vec::new();
    for ledger in [false, true] {
        let (host, last) = filled_host(&channel, ledger, &body).await;
        let profile = Profile::start();
        consume_all(host, last).await;
        breakdowns.push(profile.map(Profile::stop));
    }
    let [(off, off_cpu), (on, on_cpu)] = [&wharf[0], &wharf[1]];
    println!(
        "amqp bare lapin loop, prefetch {PREFETCH}, ack multiple every {ACK_EVERY}, 256 B persistent: {bare:.0} msgs/s"
    );
    println!(
        "amqp lapin loop + a PostgreSQL ledger row per message, committed before each ack: {paid:.0} msgs/s"
    );
    println!(
        "amqp wharf, consume + sandbox call + settle + ack multiple: ledger off {off:.0} msgs/s = {:.2}x of the bare loop (target >= 0.90x); PostgreSQL ledger and exactly-once effects {on:.0} msgs/s = {:.2}x of the loop with the ledger (target >= 0.75x), {:.2}x of the bare loop",
        off / bare,
        on / paid,
        on / bare
    );
    println!(
        "amqp CPU: bare loop {bare_cpu}; with the ledger {paid_cpu}; wharf ledger off {off_cpu}; ledger on {on_cpu} (server = RabbitMQ, plus PostgreSQL with a ledger)"
    );
    print_apart("amqp, ledger off", off_cpu, &bare_cpu, 0.90);
    print_apart("amqp, PostgreSQL ledger", on_cpu, &paid_cpu, 0.75);
    let runs = [
        ("amqp, ledger off", off_cpu),
        ("amqp, PostgreSQL ledger", on_cpu),
    ];
    for ((what, cpu), breakdown) in runs.into_iter().zip(breakdowns) {
        if let Some(breakdown) = breakdown {
            breakdown.print(what, cpu.client, sandbox_us);
        }
    }
}

/// A host consuming a fresh queue filled with `MESSAGES` of `body` and the sentinel, whose
/// id is returned with it.
async fn filled_host(channel: &Channel, ledger: bool, body: &[u8]) -> (Host, uuid::Uuid) {
    let queue = fresh_queue(channel, "bench_wharf").await;
    let host = amqp_host(&queue, ledger, false).await;
    fill(channel, &queue, body, None).await;
    (host, sentinel(channel, &queue).await)
}

/// A JSON body of 256 bytes.
pub(crate) fn payload() -> Vec<u8> {
    let mut body = br#"{"order_id":"o-1"}"#.to_vec();
    body.resize(256, b' ');
    body
}

pub(crate) async fn fresh_queue(channel: &Channel, what: &str) -> String {
    let queue = unique_name(what);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    queue
}

/// Publish `MESSAGES` persistent `bench.noop` messages to `queue`, confirmed; over
/// `keys` ordering keys, if given (the n-th message's key is `key-<n % keys>`).
pub(crate) async fn fill(channel: &Channel, queue: &str, body: &[u8], keys: Option<usize>) {
    for chunk in 0..MESSAGES / 1_000 {
        let mut confirms = Vec::with_capacity(1_000);
        for i in 0..1_000 {
            let mut properties = BasicProperties::default()
                .with_message_id(uuid::Uuid::now_v7().to_string().into())
                .with_type("bench.noop".into())
                .with_delivery_mode(2);
            if let Some(keys) = keys {
                let key = format!("key-{}", (chunk * 1_000 + i) % keys);
                let mut headers = FieldTable::default();
                headers.insert(KEY_HEADER.into(), AMQPValue::LongString(key.into()));
                properties = properties.with_headers(headers);
            }
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body,
                        properties,
                    )
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
}

/// The last message: `test.once` writes state, so it reaches the database even with the
/// ledger off; once it is handled, so is everything before it (one consumer, FIFO).
/// Returns its id.
pub(crate) async fn sentinel(channel: &Channel, queue: &str) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let properties = BasicProperties::default()
        .with_message_id(id.to_string().into())
        .with_type("test.once".into())
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"{}",
            properties,
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
    id
}

/// Consume `MESSAGES` and ack every `ACK_EVERY`th with `multiple=true`; with a `ledger`,
/// first record the batch's message ids in the dedup ledger there (`INSERT ... ON
/// CONFLICT DO NOTHING`) and commit. Msgs/s.
async fn lapin_loop(connection: &Connection, queue: &str, ledger: Option<&sqlx::PgPool>) -> f64 {
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(ACK_EVERY);
    for n in 1..=MESSAGES {
        let delivery = deliveries.next().await.unwrap().unwrap();
        if ledger.is_some() {
            let id = delivery.properties.message_id().as_ref().unwrap();
            ids.push(uuid::Uuid::parse_str(id.as_str()).unwrap());
        }
        if n % ACK_EVERY == 0 || n == MESSAGES {
            if let Some(pool) = ledger {
                commit_ledger_rows(pool, &mut ids).await;
            }
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    }
    let rate = MESSAGES as f64 / started.elapsed().as_secs_f64();
    channel.close(200, "done".into()).await.unwrap();
    rate
}

/// Commit the dedup ledger rows of `ids` (`INSERT ... ON CONFLICT DO NOTHING`), as a
/// consumer that handles each message once must before it acks, and forget them.
pub(crate) async fn commit_ledger_rows(pool: &sqlx::PgPool, ids: &mut Vec<uuid::Uuid>) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO processed (message_id, plugin, plugin_version, plugin_sha256, handled_at)
         SELECT id, 'raw', '1', repeat('0', 64), wharf_now_ms() FROM UNNEST($1::uuid[]) AS id
         ON CONFLICT DO NOTHING",
    )
    .bind(&*ids)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    ids.clear();
}

/// A PostgreSQL host consuming `queue` with one consumer, prefetch 1000, batches of 50;
/// `ordered`, keeping the order of keys for the noop plugin.
pub(crate) async fn amqp_host(queue: &str, ledger: bool, ordered: bool) -> Host {
    Host::start_with(Backend::Postgres, &["fixture-noop", "fixture-once"], |c| {
        c.amqp.url = wharf_tests::amqp_url();
        c.amqp.ledger = ledger;
        c.amqp.batch_size = ACK_EVERY;
        c.amqp.relay = Some(false);
        c.runtime.concurrency = 16;
        c.amqp.consume = vec![ConsumeSpec {
            queue: queue.to_owned(),
            prefetch: PREFETCH,
            consumers: 1,
            kind_from: KindFrom::Type,
            to_inbox: None,
            key_header: KEY_HEADER.into(),
            ordered,
        }];
        if ordered {
            c.inbox.queues.push(queue.to_owned());
            let noop = c.plugin.entry("noop".into()).or_default();
            noop.ordered = Some(true);
        }
    })
    .await
}

/// Run the host's consumers (as `wharf run` does) until the sentinel `last` is handled
/// (looked up by its id: a primary-key probe, so the watching costs the database next to
/// nothing). Msgs/s.
pub(crate) async fn consume_all(host: Host, last: uuid::Uuid) -> f64 {
    let host = Arc::new(host);
    let (stop, stopped) = watch::channel(false);
    let supervisor = supervisor(&host);
    let handled = format!("SELECT COUNT(*) FROM processed WHERE message_id = '{last}'");
    let started = Instant::now();
    let running = supervisor.run(stopped);
    let watching = async {
        loop {
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(handled.clone()))
                .fetch_one(&host.db)
                .await
                .unwrap();
            if rows > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        stop.send(true).unwrap();
        elapsed
    };
    let (report, elapsed) = tokio::join!(running, watching);
    let report = report.expect("the consumer ran without errors");
    assert_eq!(report.consumed.messages, MESSAGES as u64 + 1, "{report:?}");
    MESSAGES as f64 / elapsed.as_secs_f64()
}
