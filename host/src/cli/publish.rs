//! `wharf publish`: put messages into an inbox queue, or (`--amqp`) publish them to an
//! exchange of the AMQP broker with publisher confirms, or (`--topic`) produce them to a
//! Kafka topic with the idempotent producer: one (`--json`, `--file`) or many,
//! one per line (`--ndjson`, see `ndjson`), in batches with a progress line. Every
//! message is checked (JSON, size, names) before the first one goes out.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use uuid::Uuid;

use super::ndjson::{self, Message};
use crate::config::Config;
use crate::effects::Destination;
use crate::envelope::{KEY_HEADER, NewMessage};
use crate::names;
use crate::transport::amqp::connection::display_url;
use crate::transport::amqp::publish::{Outgoing, Published, answer, confirming_channel, send};
use crate::transport::kafka::{self, produce};

/// Messages inserted into the inbox per transaction, or awaiting broker confirms at once.
const BATCH: usize = 500;
/// How often a long publish prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Options of `wharf publish`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("body").required(true).args(["json", "file", "ndjson"]))]
pub struct PublishArgs {
    /// Inbox queue.
    #[arg(long, required_unless_present_any = ["amqp", "topic"], conflicts_with_all = ["amqp", "topic"])]
    queue: Option<String>,
    /// Produce to this Kafka topic (`kafka.brokers`) instead of the inbox; --key is the
    /// record's key.
    #[arg(long, conflicts_with = "amqp")]
    topic: Option<String>,
    /// Publish to the AMQP broker (`amqp.url`) instead of the inbox.
    #[arg(long, requires = "exchange")]
    amqp: bool,
    /// With --amqp: the exchange ("" is the default exchange, where the routing key
    /// names a queue).
    #[arg(long, requires = "amqp")]
    exchange: Option<String>,
    /// With --amqp: the routing key.
    #[arg(long, requires = "amqp", default_value = "")]
    routing_key: String,
    /// Message kind, e.g. order.created (with --ndjson: of the lines that give none).
    #[arg(long, required_unless_present = "ndjson")]
    kind: Option<String>,
    /// Message id (a UUID); a new UUID v7 when omitted. Publishing an id twice is a no-op.
    #[arg(long, conflicts_with = "ndjson")]
    id: Option<Uuid>,
    /// Ordering key: the messages of one key are handled in publish order by plugins that
    /// ask for it (with --ndjson: of the lines that give none; with --amqp: the
    /// `partition_key` header; with --topic: the record's key).
    #[arg(long)]
    key: Option<String>,
    /// A header, repeatable (with --ndjson: added to every line's).
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The payload as inline JSON.
    #[arg(long)]
    json: Option<String>,
    /// Read the payload (JSON) from a file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Publish many: one message per line of this file ("-": stdin), each
    /// `{"message": <payload>, "id"?: "<uuid>", "kind"?: "...", "headers"?: {...}}`.
    #[arg(long, value_name = "FILE|-")]
    ndjson: Option<PathBuf>,
}

pub(super) fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("header {s:?} must look like key=value")),
    }
}

pub async fn publish(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    let headers: BTreeMap<String, String> = args.headers.iter().cloned().collect();
    let single = |payload: Vec<u8>| Message {
        line: None,
        id: args.id.unwrap_or_else(Uuid::now_v7),
        kind: args.kind.clone().unwrap_or_default(),
        headers: headers.clone(),
        payload,
        key: args.key.clone(),
    };
    let defaults = ndjson::Defaults {
        kind: args.kind.as_deref(),
        key: args.key.as_deref(),
        headers: &headers,
    };
    let mut messages = match (&args.json, &args.file, &args.ndjson) {
        (Some(json), _, _) => vec![single(json.clone().into_bytes())],
        (_, Some(file), _) => {
            vec![single(std::fs::read(file).with_context(|| {
                format!("cannot read payload file {}", file.display())
            })?)]
        }
        (_, _, Some(path)) if path.as_os_str() == "-" => {
            ndjson::read(std::io::stdin().lock(), &defaults)?
        }
        (_, _, Some(path)) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            ndjson::read(BufReader::new(file), &defaults)?
        }
        (None, None, None) => unreachable!("clap requires --json, --file or --ndjson"),
    };
    let destination = match (&args.queue, &args.exchange, &args.topic) {
        (Some(queue), _, _) => Destination::Queue(queue.clone()),
        (None, Some(exchange), _) => Destination::Exchange {
            exchange: exchange.clone(),
            routing_key: args.routing_key.clone(),
        },
        (None, None, Some(topic)) => Destination::Topic(topic.clone()),
        (None, None, None) => unreachable!("clap requires --queue, --amqp --exchange or --topic"),
    };
    for message in &mut messages {
        if let (Destination::Exchange { .. }, Some(key)) = (&destination, &message.key) {
            message.headers.insert(KEY_HEADER.to_owned(), key.clone());
        }
        let checked = check(message, &destination, config.inbox.max_payload_bytes);
        if let Some(line) = message.line {
            checked.with_context(|| format!("line {line} cannot be published; none was"))?;
        } else {
            checked?;
        }
    }
    match &destination {
        Destination::Queue(queue) => to_inbox(&config, queue, messages).await,
        Destination::Exchange {
            exchange,
            routing_key,
        } => to_broker(&config, exchange, routing_key, messages).await,
        Destination::Topic(topic) => to_kafka(&config, topic, messages).await,
    }
}

/// What `wharf publish` refuses: a body that is not JSON or over the payload limit, names
/// that break the rules.
fn check(
    message: &Message,
    destination: &Destination,
    max_payload_bytes: usize,
) -> anyhow::Result<()> {
    check_payload(&message.payload, max_payload_bytes)?;
    let key = message.key.as_deref();
    if let Err(invalid) = names::publish(destination, &message.kind, &message.headers, key) {
        bail!("{invalid}; see \"Limits and quotas\" in the README for what is allowed");
    }
    Ok(())
}

/// What `wharf publish` and `wharf request` refuse of a payload: not JSON, or over the
/// payload limit.
pub(super) fn check_payload(payload: &[u8], max_payload_bytes: usize) -> anyhow::Result<()> {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(payload) {
        bail!("payload is not valid JSON: {e}");
    }
    if payload.len() > max_payload_bytes {
        bail!(
            "payload of {} bytes exceeds inbox.max_payload_bytes ({max_payload_bytes})",
            payload.len(),
        );
    }
    Ok(())
}

/// Prints how far a publish of many messages got, at most every [`PROGRESS_EVERY`].
struct Progress {
    total: usize,
    last: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            last: Instant::now(),
        }
    }

    fn done(&mut self, done: usize) {
        if self.total > 1 && self.last.elapsed() >= PROGRESS_EVERY {
            eprintln!("published {done} of {} messages", self.total);
            self.last = Instant::now();
        }
    }
}

async fn to_inbox(config: &Config, queue: &str, messages: Vec<Message>) -> anyhow::Result<()> {
    let store = crate::server::open_store(config).await?;
    let total = messages.len();
    let mut progress = Progress::new(total);
    let (mut done, mut queued) = (0, 0);
    let mut rows = messages.into_iter().map(|m| NewMessage {
        id: m.id,
        queue: queue.to_owned(),
        kind: m.kind,
        headers: m.headers,
        payload: m.payload,
        key: m.key,
        attempts: 0,
        delay: Duration::ZERO,
    });
    loop {
        let batch: Vec<NewMessage> = rows.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        queued += store.enqueue(&batch).await.with_context(|| {
            format!("publishing stopped after {done} of {total} messages (a message published twice is queued once: rerun with ids to resume)")
        })?;
        done += batch.len();
        progress.done(done);
        if total == 1 {
            let id = batch[0].id;
            match queued {
                1 => println!("{id}"),
                _ => println!("{id} (duplicate: already received, not queued again)"),
            }
            return Ok(());
        }
    }
    let duplicates = total - queued as usize;
    println!(
        "{total} messages published to queue {queue}{}",
        match duplicates {
            0 => String::new(),
            n => format!(" ({n} already received were not queued again)"),
        }
    );
    Ok(())
}

async fn to_broker(
    config: &Config,
    exchange: &str,
    routing_key: &str,
    messages: Vec<Message>,
) -> anyhow::Result<()> {
    let url = display_url(&config.amqp.url);
    let connection = lapin::Connection::connect(&config.amqp.url, Default::default())
        .await
        .with_context(|| format!("cannot connect to the AMQP broker at {url}; is it running? (amqp.url / WHARF_AMQP_URL)"))?;
    let channel = confirming_channel(&connection).await?;
    let refused_by_broker = |e: lapin::Error| {
        anyhow::anyhow!(
            "the broker refused the messages ({e}); declare exchange {exchange:?} ([[amqp.exchanges]]) or check its name"
        )
    };
    let total = messages.len();
    let mut progress = Progress::new(total);
    let (mut done, mut unroutable, mut refused) = (Vec::new(), 0, 0);
    for batch in messages.chunks(BATCH) {
        let mut confirms = Vec::with_capacity(batch.len());
        for m in batch {
            let message = Outgoing {
                id: m.id,
                exchange,
                routing_key,
                kind: &m.kind,
                headers: &m.headers,
                payload: &m.payload,
            };
            confirms.push((
                m.id,
                send(&channel, message).await.map_err(refused_by_broker)?,
            ));
        }
        for (id, confirm) in confirms {
            match answer(confirm).await.map_err(refused_by_broker)? {
                Published::Stored => done.push(id),
                Published::Unroutable => unroutable += 1,
                Published::Refused => refused += 1,
            }
        }
        progress.done(done.len() + unroutable + refused);
    }
    let _ = connection.close(200, "published".into()).await;
    if unroutable > 0 {
        bail!(
            "exchange {exchange:?} routed {unroutable} of {total} messages to no queue (routing key {routing_key:?}): nothing is bound for it, so the broker dropped them"
        );
    }
    if refused > 0 {
        bail!(
            "the broker could not store {refused} of {total} messages (nack); publish them again (their ids make it safe)"
        );
    }
    match done.as_slice() {
        [id] => println!("{id}"),
        _ => println!("{total} messages published to exchange {exchange:?}"),
    }
    Ok(())
}

async fn to_kafka(config: &Config, topic: &str, messages: Vec<Message>) -> anyhow::Result<()> {
    let brokers = &config.kafka.brokers;
    let producer = kafka::client::producer(&config.kafka, &Default::default(), &Default::default())
        .with_context(|| format!("cannot make a Kafka producer for {brokers} ([kafka])"))?;
    let unreachable = || {
        format!("cannot reach the Kafka brokers at {brokers}; are they running? (kafka.brokers)")
    };
    if !(produce::topic_exists(&producer, topic).await).with_context(unreachable)? {
        bail!("{}", produce::missing_topic(topic, brokers));
    }
    let total = messages.len();
    let mut progress = Progress::new(total);
    let mut done = 0;
    for batch in messages.chunks(BATCH) {
        let mut deliveries = Vec::with_capacity(batch.len());
        for m in batch {
            let outgoing = produce::Outgoing {
                id: m.id,
                topic,
                key: m.key.as_deref(),
                kind: &m.kind,
                headers: &m.headers,
                payload: &m.payload,
            };
            let queued = producer.send_result(outgoing.record());
            deliveries.push(queued.map_err(|(e, _)| e).with_context(unreachable)?);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => done += 1,
                Ok(Err((e, _))) => bail!(
                    "the Kafka brokers refused a message after {done} of {total} ({e}); publish them again (their ids make it safe)"
                ),
                Err(_) => bail!("the Kafka producer stopped after {done} of {total} messages"),
            }
        }
        progress.done(done);
    }
    match messages.as_slice() {
        [m] => println!("{}", m.id),
        _ => println!("{total} messages published to topic {topic}"),
    }
    Ok(())
}
