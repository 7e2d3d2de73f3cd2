//! `wharf publish --ndjson`: thousands of messages from one process, into an inbox queue
//! (in batches, duplicates counted) and to the broker (confirmed); a bad line refuses the
//! whole input, naming the line, before anything is published. Ordering keys (`--key`, a
//! line's `"key"`) are numbered per key in the inbox and travel to the broker as the
//! `partition_key` header.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::AMQPValue;
use serde_json::json;
use wharf_tests::{amqp_connection, amqp_url, unique_name};

/// `wharf publish <args>` on the SQLite database in `dir`, `input` on stdin.
fn publish(dir: &std::path::Path, args: &[&str], input: &str) -> Output {
    publish_with(dir, &[], args, input)
}

/// [`publish`] with more environment variables.
fn publish_with(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .arg("publish")
        .args(args)
        .envs(env.iter().copied())
        .env(
            "WHARF_DATABASE_URL",
            format!("sqlite://{}", dir.join("w.db").display()),
        )
        .env("WHARF_AMQP_URL", amqp_url())
        .env("WHARF_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn lines(n: usize) -> String {
    (0..n)
        .map(|i| json!({ "message": { "order_id": i } }).to_string() + "\n")
        .collect()
}

async fn inbox_count(dir: &std::path::Path) -> i64 {
    let url = format!("sqlite://{}", dir.join("w.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE queue = 'orders'")
        .fetch_one(&pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn many_messages_go_into_the_inbox_from_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let id = uuid::Uuid::now_v7();
    let mut input = lines(2_000);
    // The same id twice: queued once.
    for _ in 0..2 {
        input += &(json!({ "message": {}, "id": id, "kind": "order.paid" }).to_string() + "\n");
    }
    let args = [
        "--queue",
        "orders",
        "--kind",
        "order.created",
        "--ndjson",
        "-",
    ];
    let out = publish(dir.path(), &args, &input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.trim(),
        "2002 messages published to queue orders (1 already received were not queued again)"
    );
    assert_eq!(inbox_count(dir.path()).await, 2_001);

    // A bad line: nothing of the input is published.
    let mut input = lines(10);
    input += "{\"message\": {}, \"kind\": \"order paid\"}\n";
    let out = publish(dir.path(), &args, &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "line 11 cannot be published; none was: message kind \"order paid\" contains ' '"
        ),
        "{stderr}"
    );
    let out = publish(dir.path(), &args, "{\"message\": 1}\nnot json\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2 is not a message object"),
        "{stderr}"
    );
    assert_eq!(inbox_count(dir.path()).await, 2_001);
}

#[tokio::test]
async fn many_messages_go_to_the_broker_confirmed() {
    let connection = amqp_connection().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = unique_name("q");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--amqp",
        "--exchange",
        "",
        "--routing-key",
        &queue,
        "--kind",
        "order.created",
        "--key",
        "order-7",
        "--ndjson",
        "-",
    ];
    let out = publish(dir.path(), &args, &lines(1_200));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1200 messages published to exchange \"\""
    );
    let depth = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(depth, 1_200);
    let first = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    let key = first
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("partition_key").cloned());
    assert_eq!(
        key,
        Some(AMQPValue::LongString("order-7".into())),
        "the ordering key travels as the partition_key header"
    );
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn keys_from_the_flag_and_the_lines_are_numbered_and_bad_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for (n, key) in [
        (1, None),
        (2, Some("order-2")),
        (3, None),
        (4, Some("order-2")),
    ] {
        let mut line = json!({ "message": { "n": n }, "kind": format!("m{n}") });
        if let Some(key) = key {
            line["key"] = json!(key);
        }
        input += &(line.to_string() + "\n");
    }
    let args = ["--queue", "orders", "--key", "order-1", "--ndjson", "-"];
    let out = publish(dir.path(), &args, &input);
    assert!(out.status.success(), "{out:?}");
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, ordering_key, seq FROM inbox ORDER BY kind")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected = [
        ("m1", "order-1", 1),
        ("m2", "order-2", 1),
        ("m3", "order-1", 2),
        ("m4", "order-2", 2),
    ]
    .map(|(kind, key, seq)| (kind.to_owned(), key.to_owned(), seq));
    assert_eq!(rows, expected);

    for (key, said) in [
        (
            "a\u{1b}[2J",
            "ordering key \"a\\u{1b}[2J\" contains '\\u{1b}'",
        ),
        (
            &"k".repeat(300),
            "is 300 bytes long, over the limit of 255 bytes",
        ),
    ] {
        let out = publish(
            dir.path(),
            &[
                "--queue", "orders", "--kind", "m", "--key", key, "--json", "{}",
            ],
            "",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(stderr.len() < 1_000, "the error is bounded: {stderr}");
    }
    let line = json!({ "message": {}, "kind": "m", "key": "" }).to_string() + "\n";
    let out = publish(dir.path(), &["--queue", "orders", "--ndjson", "-"], &line);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 1 cannot be published; none was: ordering key is empty"),
        "{stderr}"
    );
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 4, "nothing refused was queued");
}

#[tokio::test]
async fn many_records_go_to_a_kafka_topic_with_their_key_and_id() {
    use rdkafka::message::{Headers, Message};
    let kafka = wharf_tests::kafka::kafka().await;
    let topic = kafka.topic(2).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("WHARF_KAFKA_BROKERS", kafka.brokers.as_str())];
    let kind = ["--kind", "order.created"];
    let args = ["--topic", &topic, "--key", "order-7", "--ndjson", "-"];
    let out = publish_with(dir.path(), &env, &[&args[..], &kind].concat(), &lines(300));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("300 messages published to topic {topic}")),
        "{stdout}"
    );
    let records = kafka.read(&topic, 300).await;
    let ids: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| {
            assert_eq!(r.key(), Some(&b"order-7"[..]));
            let headers = r.headers().unwrap();
            let header = |name: &str| {
                let h = headers.iter().find(|h| h.key == name).unwrap();
                String::from_utf8(h.value.unwrap().to_vec()).unwrap()
            };
            assert_eq!(header("kind"), "order.created");
            header("message-id")
        })
        .collect();
    assert_eq!(ids.len(), 300, "each record carries its own id");
    let orders: Vec<u64> = (records.iter())
        .map(|r| serde_json::from_slice::<serde_json::Value>(r.payload().unwrap()).unwrap())
        .map(|v| v["order_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        orders,
        (0..300).collect::<Vec<_>>(),
        "one key: one partition, in order"
    );

    let missing = unique_name("missing");
    for (args, expected) in [
        (
            vec!["--topic", missing.as_str(), "--json", "{}"],
            format!("topic {missing} does not exist"),
        ),
        (
            vec!["--topic", "bad\u{1b}[2Jtopic", "--json", "{}"],
            "topic \"bad\\u{1b}[2Jtopic\"".to_owned(),
        ),
        (
            vec!["--topic", &topic, "--queue", "q", "--json", "{}"],
            "cannot be used with".to_owned(),
        ),
    ] {
        let out = publish_with(dir.path(), &env, &[&args[..], &kind].concat(), "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&expected),
            "{args:?}: {stderr}"
        );
    }
}
