//! The Kafka transport against a bare rdkafka loop on the same broker (tansu), in the same
//! run: each drains a topic of one partition pre-filled with the same 256 B records over
//! 100 keys. The bare loop consumes in a fresh group and commits the offset after every
//! `BATCH` records (asynchronously, as wharf does); the ledger loop does the same and,
//! before each commit, commits the batch's dedup ledger rows to PostgreSQL (the durable
//! work a consumer that handles each record once has to do); wharf consumes the same way
//! (batches of `BATCH`; the noop plugin does not ask for order, so batches overlap), calls
//! the trivial plugin per record and settles, with the dedup ledger off and on
//! (PostgreSQL), and a profiled run of each shows where the host's CPU goes. Each is timed
//! from its first record to its last, leaving out joining the group (seconds, whatever
//! the topic holds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tokio::sync::watch;
use uuid::Uuid;
use wharf_tests::kafka::{Kafka, Record, consume, kafka, supervisor};
use wharf_tests::{Backend, Host, unique_name};

use super::amqp::commit_ledger_rows;
use super::cpu::{CpuCost, print_apart};
use super::profile::Profile;

const RECORDS: usize = 20_000;
const KEYS: usize = 100;
const BATCH: usize = 100;

/// The broker's processes, and PostgreSQL's.
const TANSU: &[&str] = &["tansu"];
const TANSU_AND_POSTGRES: &[&str] = &["tansu", "postgres"];

/// Print records/s of the bare loop and of wharf with the ledger off and on, with ratios,
/// and where wharf's host CPU goes (a profiled run of each, beside the sandbox bench's
/// `sandbox_us`).
pub async fn versus_bare_loop(sandbox_us: f64) {
    let kafka = kafka().await;
    let ledger = kafka_host(kafka, "unused", true).await;
    let pool = sqlx::PgPool::connect(&ledger.config.database.url)
        .await
        .unwrap();

    let topic = kafka.topic(1).await;
    fill(kafka, &topic).await;
    let (bare, bare_cpu) = CpuCost::of(TANSU, RECORDS, bare_loop(kafka, &topic, None)).await;
    let topic = kafka.topic(1).await;
    fill(kafka, &topic).await;
    let (paid, paid_cpu) = CpuCost::of(
        TANSU_AND_POSTGRES,
        RECORDS,
        bare_loop(kafka, &topic, Some(&pool)),
    )
    .await;
    let mut wharf = Vec::new();
    for ledger in [false, true] {
        let (host, first, last) = filled_host(kafka, ledger).await;
        let servers = if ledger { TANSU_AND_POSTGRES } else { TANSU };
        wharf.push(CpuCost::of(servers, RECORDS, consume_all(host, first, last)).await);
    }
    let mut breakdowns = Vec::new();
    for ledger in [false, true] {
        let (host, first, last) = filled_host(kafka, ledger).await;
        let profile = Profile::start();
        consume_all(host, first, last).await;
        breakdowns.push(profile.map(Profile::stop));
    }
    let [(off, off_cpu), (on, on_cpu)] = [&wharf[0], &wharf[1]];
    println!(
        "kafka bare rdkafka loop, {KEYS} keys, commit every {BATCH}, 256 B: {bare:.0} records/s"
    );
    println!(
        "kafka rdkafka loop + a PostgreSQL ledger row per record, committed before each offset commit: {paid:.0} records/s"
    );
    println!(
        "kafka wharf, consume + sandbox call + settle + commit: ledger off {off:.0} records/s = {:.2}x of the bare loop (target >= 0.80x); PostgreSQL ledger and exactly-once effects {on:.0} records/s = {:.2}x of the loop with the ledger (target >= 0.75x), {:.2}x of the bare loop",
        off / bare,
        on / paid,
        on / bare
    );
    println!(
        "kafka CPU: bare loop {bare_cpu}; with the ledger {paid_cpu}; wharf ledger off {off_cpu}; ledger on {on_cpu} (server = tansu, plus PostgreSQL with a ledger)"
    );
    print_apart("kafka, ledger off", off_cpu, &bare_cpu, 0.80);
    print_apart("kafka, PostgreSQL ledger", on_cpu, &paid_cpu, 0.75);
    let runs = [
        ("kafka, ledger off", off_cpu),
        ("kafka, PostgreSQL ledger", on_cpu),
    ];
    for ((what, cpu), breakdown) in runs.into_iter().zip(breakdowns) {
        if let Some(breakdown) = breakdown {
            breakdown.print(what, cpu.client, sandbox_us);
        }
    }
}

/// A host consuming a fresh topic of one partition filled with `RECORDS` between two
/// markers, whose ids are returned with it.
async fn filled_host(kafka: &Kafka, ledger: bool) -> (Host, Uuid, Uuid) {
    let topic = kafka.topic(1).await;
    let first = marker(kafka, &topic).await;
    fill(kafka, &topic).await;
    let last = marker(kafka, &topic).await;
    (kafka_host(kafka, &topic, ledger).await, first, last)
}

/// Produce `RECORDS` `bench.noop` records of 256 B over `KEYS` keys to `topic`.
async fn fill(kafka: &Kafka, topic: &str) {
    let body = super::amqp::payload();
    let records = (0..RECORDS).map(|n| {
        let mut record = Record::keyed(
            "bench.noop",
            &format!("key-{}", n % KEYS),
            &serde_json::Value::Null,
        );
        record.value = body.clone();
        record
    });
    kafka.produce(topic, records).await;
}

/// A record that shows when it is handled: `test.once` writes state, so it reaches the
/// database even with the ledger off. The first one starts wharf's clock; once the last
/// one is handled, so is everything before it (one partition, the batches settled in
/// order). Returns its message id.
async fn marker(kafka: &Kafka, topic: &str) -> Uuid {
    let id = Uuid::now_v7();
    let mut record = Record::keyed("test.once", "sentinel", &serde_json::json!({}));
    record
        .headers
        .push(("message-id".into(), id.to_string().into_bytes()));
    kafka.produce(topic, [record]).await;
    id
}

/// Consume `RECORDS` in a fresh group and commit every `BATCH`th offset asynchronously;
/// with a `ledger`, first record the batch's ids in the dedup ledger there (`INSERT ... ON
/// CONFLICT DO NOTHING`) and commit. Records/s.
async fn bare_loop(kafka: &Kafka, topic: &str, ledger: Option<&sqlx::PgPool>) -> f64 {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", unique_name("bare"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut started = None;
    let mut ids = Vec::with_capacity(BATCH);
    for n in 1..=RECORDS {
        let record = consumer.recv().await.unwrap();
        started.get_or_insert_with(Instant::now);
        if ledger.is_some() {
            let (partition, offset) = (record.partition(), record.offset());
            ids.push(wharf_host::transport::kafka::record::derived_id(
                topic, partition, offset,
            ));
        }
        if n % BATCH == 0 || n == RECORDS {
            if let Some(pool) = ledger {
                commit_ledger_rows(pool, &mut ids).await;
            }
            consumer.commit_message(&record, CommitMode::Async).unwrap();
        }
    }
    RECORDS as f64 / started.expect("records came").elapsed().as_secs_f64()
}

/// A PostgreSQL host consuming `topic` in batches of `BATCH`, the relay off.
async fn kafka_host(kafka: &Kafka, topic: &str, ledger: bool) -> Host {
    Host::start_with(Backend::Postgres, &["fixture-noop", "fixture-once"], |c| {
        consume(kafka, c, topic, |_| {});
        c.kafka.batch_size = BATCH;
        c.kafka.ledger = ledger;
        c.kafka.relay = Some(false);
        c.runtime.concurrency = 16;
    })
    .await
}

/// Run the host's Kafka consumer from the marker `first` handled to the marker `last`
/// handled (each looked up by its id: a primary-key probe). Records/s.
async fn consume_all(host: Host, first: Uuid, last: Uuid) -> f64 {
    let host = Arc::new(host);
    let (stop, stopped) = watch::channel(false);
    let supervisor = supervisor(&host);
    let running = supervisor.run(stopped);
    let handled = async |id: Uuid| loop {
        let found = format!("SELECT COUNT(*) FROM processed WHERE message_id = '{id}'");
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(found))
            .fetch_one(&host.db)
            .await
            .unwrap();
        if rows > 0 {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let watching = async {
        let started = handled(first).await;
        let elapsed = handled(last).await - started;
        stop.send(true).unwrap();
        elapsed
    };
    let (report, elapsed) = tokio::join!(running, watching);
    let report = report.expect("the consumer ran without errors");
    assert_eq!(report.consumed.messages, RECORDS as u64 + 2, "{report:?}");
    RECORDS as f64 / elapsed.as_secs_f64()
}
