//! Kafka chaos (its own test binary, so its processes and kills disturb no other test):
//! real `wharf run` processes on PostgreSQL consume one keyed topic of three partitions
//! as a group while a few records of each key ask for a retry (their keys move into the
//! inbox). One host is killed with SIGKILL a third of the way, a new one joins, another
//! leaves with SIGTERM at two thirds: every record is handled once, and not one out of its
//! key's order.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;
use wharf_tests::kafka::{Record, kafka};
use wharf_tests::{Host, fresh_postgres_schema, test_config, unique_name, victim_command};

/// The hosts' Kafka session timeout.
const SESSION: Duration = Duration::from_secs(6);
/// Keys, and records per key.
const KEYS: u64 = 100;
const PER_KEY: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_killed_joining_and_leaving_handle_each_record_once_in_key_order() {
    let kafka = kafka().await;
    let topic = kafka.topic(3).await;
    let url = fresh_postgres_schema().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.database.url = url.clone();
    let checker = Host::start_on(
        config,
        &["fixture-sequence-a"],
        tempfile::tempdir().unwrap(),
    )
    .await;
    let toml = dir.path().join("kafka.toml");
    std::fs::write(
        &toml,
        format!(
            "[inbox]\nqueues = [\"{topic}\"]\n\n[kafka]\nbrokers = \"{brokers}\"\ngroup = \"{group}\"\nbatch_size = 100\n\n[kafka.client]\n\"session.timeout.ms\" = \"{session}\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n[[kafka.consume]]\ntopic = \"{topic}\"\nrequire_key = true\n",
            brokers = kafka.brokers,
            group = unique_name("group"),
            session = SESSION.as_millis(),
        ),
    )
    .unwrap();
    let total = (KEYS * PER_KEY) as i64;
    let spawn = |held: &str, cache: &str| {
        let mut command = victim_command(
            env!("CARGO_BIN_EXE_wharf-under-test"),
            &url,
            &checker.config.plugins.dir,
            &dir.path().join(cache),
            held,
        );
        command.arg("--config").arg(&toml);
        Victim(command.spawn().expect("start a wharf run process"))
    };
    let mut a = spawn("0", "cache-a");
    let mut b = spawn("10000", "cache-b");
    kafka.produce(&topic, records()).await;

    progress_to(&checker, total / 3).await;
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    let killed_at = handled(&checker).await;
    // tansu 0.6.0 notices a dead member's session ending on another member's heartbeat
    // and then answers the rebalance with the old assignment: the dead member's
    // partitions go to nobody until the group changes again. So the next host joins once
    // the session (6 s) is over: its join hands them out (Apache Kafka needs no wait).
    tokio::time::sleep(SESSION + Duration::from_secs(1)).await;
    let c = spawn("0", "cache-c");

    progress_to(&checker, 2 * total / 3).await;
    let term = Command::new("kill")
        .args(["-TERM", &b.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let left_at = handled(&checker).await;
    let stopped = b.0.wait().unwrap();
    assert!(
        stopped.success(),
        "a host asked to stop leaves cleanly: {stopped}"
    );

    progress_to(&checker, total).await;
    drop(c);
    eprintln!(
        "Kafka chaos: {total} records on {KEYS} keys, a host killed at {killed_at} handled, one left at {left_at}"
    );
    let failed: Vec<String> = (checker.failed().await.into_iter())
        .map(|f| f.error)
        .collect();
    assert_eq!(failed, Vec::<String>::new(), "nothing out of order");
    let last = wharf_tests::sequence::last(&checker, "sequence-a").await;
    let expected: BTreeMap<String, u64> = (0..KEYS).map(|k| (key(k), PER_KEY)).collect();
    assert_eq!(last, expected, "every key at its last record");
    assert_eq!(handled(&checker).await, total, "each record handled once");
    assert_eq!(checker.count("SELECT COUNT(*) FROM inbox").await, 0);
}

/// A `wharf run` process, killed when dropped (also when the test fails).
struct Victim(Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn key(k: u64) -> String {
    format!("k{k}")
}

/// `PER_KEY` records on each of `KEYS` keys, interleaved; about one in a hundred asks for
/// a retry.
fn records() -> Vec<Record> {
    let mut records = Vec::new();
    for n in 1..=PER_KEY {
        for k in 0..KEYS {
            let mut step = json!({"key": key(k), "n": n});
            if (n * KEYS + k) % 97 == 5 {
                step["retry_once"] = json!(["sequence-a"]);
            }
            records.push(Record::keyed("test.seq", &key(k), &step));
        }
    }
    records
}

async fn handled(host: &Host) -> i64 {
    host.count("SELECT COUNT(*) FROM processed").await
}

/// Wait until `checker` sees `target` records handled (or one failed), for at most 2
/// minutes.
async fn progress_to(checker: &Host, target: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = handled(checker).await;
        if done >= target || !checker.failed().await.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            let waiting = checker.count("SELECT COUNT(*) FROM inbox").await;
            panic!("no progress to {target} in 2 minutes: {done} handled, {waiting} in the inbox");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
