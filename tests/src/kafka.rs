//! The Kafka broker the Kafka tests run against: `tansu` (a Kafka-protocol broker; Apache
//! Kafka itself cannot be installed here), started once per test process on a free
//! loopback port with in-memory storage and stopped when the process ends; a fresh topic
//! per test; records produced and read back with rdkafka; hosts consuming a topic run
//! until a condition holds.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::OnceCell;
use wharf_host::config::Config;
use wharf_host::transport::kafka::TopicSpec;
use wharf_host::transport::kafka::supervisor::Supervisor;

use crate::{Host, unique_name};

/// The process's broker.
pub struct Kafka {
    /// Its bootstrap address, `127.0.0.1:<port>`.
    pub brokers: String,
    /// The shell that stops the broker when this process ends (its stdin closes).
    _keeper: Child,
}

/// The broker of this test process, started on first use. Panics, saying how to install
/// it, when `tansu` is missing: the Kafka tests never pass without a broker.
pub async fn kafka() -> &'static Kafka {
    static KAFKA: OnceCell<Kafka> = OnceCell::const_new();
    KAFKA.get_or_init(start).await
}

impl Kafka {
    /// A broker of the caller's own (to stop it: drop it), for a test of what a host does
    /// when its brokers go away.
    pub async fn own() -> Kafka {
        start().await
    }
}

async fn start() -> Kafka {
    let tansu = which_tansu();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("wharf-tansu-{}.log", std::process::id()));
    // The broker lives as long as the shell's stdin: this process holds its other end.
    let script = format!(
        "{tansu} broker --listener-url {url} --advertised-listener-url {url} --storage-engine memory://tansu/ >{log} 2>&1 & pid=$!; cat >/dev/null; kill $pid",
        log = log.display()
    );
    let keeper = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh starts");
    let brokers = format!("127.0.0.1:{port}");
    crate::wait_for("tansu to listen", Duration::from_secs(20), async || {
        tokio::net::TcpStream::connect(&brokers).await.is_ok()
    })
    .await;
    Kafka {
        brokers,
        _keeper: keeper,
    }
}

/// Where `tansu` is: on the PATH or in cargo's bin directory, installed there with cargo
/// when missing (a fresh machine: about 10 minutes on 2 cores, once).
fn which_tansu() -> String {
    let cargo_bin = std::env::var("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin/tansu"))
        .expect("HOME or CARGO_HOME is set");
    if cargo_bin.exists() {
        return cargo_bin.display().to_string();
    }
    let found = Command::new("sh").args(["-c", "command -v tansu"]).output();
    if let Ok(out) = found
        && out.status.success()
    {
        return String::from_utf8(out.stdout).unwrap().trim().to_owned();
    }
    eprintln!(
        "tansu (the Kafka-protocol broker the Kafka tests run against) is missing; installing it: {INSTALL} (about 10 minutes on 2 cores, once)"
    );
    let installed = Command::new("sh").args(["-c", INSTALL]).status();
    assert!(
        installed.is_ok_and(|s| s.success()) && cargo_bin.exists(),
        "could not install tansu; install it yourself: {INSTALL}"
    );
    cargo_bin.display().to_string()
}

/// How tansu is installed: its default features have no storage engine.
const INSTALL: &str = "cargo install --locked tansu --version 0.6.0 --features dynostore";

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its value.
    pub value: Vec<u8>,
}

impl Record {
    /// A record of `kind` (the `kind` header) with `key` and a JSON value.
    pub fn keyed(kind: &str, key: &str, value: &serde_json::Value) -> Record {
        Record {
            key: Some(key.as_bytes().to_vec()),
            headers: vec![("kind".into(), kind.as_bytes().to_vec())],
            value: value.to_string().into_bytes(),
        }
    }
}

impl Kafka {
    /// A fresh topic of `partitions`.
    pub async fn topic(&self, partitions: i32) -> String {
        let topic = unique_name("topic");
        self.create(&topic, partitions).await;
        topic
    }

    /// Create `topic` with `partitions`.
    pub async fn create(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        let created = admin
            .create_topics([&new], &AdminOptions::new())
            .await
            .unwrap();
        for result in created {
            result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    fn client(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.brokers);
        client
    }

    /// An idempotent producer, one record per record batch: tansu numbers the offsets of
    /// a partition by batch, not by record, so a consumer that resumes from a committed
    /// offset inside a batch of several records lands past records it never read (Kafka
    /// numbers records, and wharf commits record offsets).
    pub fn producer(&self) -> FutureProducer {
        (self.client())
            .set("enable.idempotence", "true")
            .set("batch.num.messages", "1")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    /// Produce `records` to `topic` (all at once), waiting until the broker took each.
    pub async fn produce(&self, topic: &str, records: impl IntoIterator<Item = Record>) {
        let producer = self.producer();
        let sends = records.into_iter().map(|r| {
            let producer = &producer;
            async move {
                let mut headers = OwnedHeaders::new();
                for (key, value) in &r.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
                let mut out = FutureRecord::<[u8], [u8]>::to(topic)
                    .payload(&r.value)
                    .headers(headers);
                if let Some(key) = &r.key {
                    out = out.key(key);
                }
                producer
                    .send(out, Duration::from_secs(10))
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for sent in futures::future::join_all(sends).await {
            sent.expect("the broker took the record");
        }
    }

    /// The first `n` records of `topic`, read from the start of each partition; panics
    /// when they do not come within 10 s, or when more come within a second after them.
    /// (tansu's high watermarks count record batches, not records: they cannot say how
    /// many there are.)
    pub async fn read(&self, topic: &str, n: usize) -> Vec<OwnedMessage> {
        let reader: StreamConsumer = (self.client())
            .set("group.id", unique_name("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = reader
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        reader.assign(&assignment).unwrap();
        let mut records = Vec::new();
        while records.len() < n {
            let record = tokio::time::timeout(Duration::from_secs(10), reader.recv())
                .await
                .unwrap_or_else(|_| panic!("{n} records of {topic} within 10 s: {}", records.len()))
                .unwrap();
            records.push(record.detach());
        }
        let more = tokio::time::timeout(Duration::from_secs(1), reader.recv()).await;
        assert!(more.is_err(), "more than {n} records in {topic}");
        records
    }
}

/// Consume `topic` of `kafka` (with defaults, adjusted by `spec`).
pub fn consume(kafka: &Kafka, config: &mut Config, topic: &str, spec: impl FnOnce(&mut TopicSpec)) {
    config.kafka.brokers = kafka.brokers.clone();
    config.kafka.group = unique_name("group");
    config.kafka.batch_size = 50;
    let mut consumed = TopicSpec {
        topic: topic.to_owned(),
        dead_letter_topic: None,
        id_header: "message-id".into(),
        kind_header: "kind".into(),
        require_key: false,
        start: Default::default(),
    };
    spec(&mut consumed);
    config.kafka.consume = vec![consumed];
    config.inbox.queues.push(topic.to_owned());
    config.validate().expect("the Kafka test config is valid");
}

/// Run the Kafka supervisors and inbox workers of `hosts` until `done`.
pub async fn run_until(hosts: &[&Host], what: &str, done: impl AsyncFn() -> bool) {
    let limit = Duration::from_secs(60);
    crate::running::run_until(hosts, (what, limit), done, |host, shutdown| {
        let supervisor = supervisor(host);
        tokio::spawn(async move { supervisor.run(shutdown).await })
    })
    .await
}

/// The Kafka supervisor of `host`.
pub fn supervisor(host: &Host) -> Supervisor {
    Supervisor::new(
        host.config.kafka.clone(),
        host.store.clone(),
        host.dispatcher.clone(),
        std::time::Duration::from_millis(host.config.inbox.poll_interval_ms),
    )
}
