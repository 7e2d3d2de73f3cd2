//! `wharf publish`: put a message into an inbox queue, or (`--amqp`) publish it to an
//! exchange of the AMQP broker with a publisher confirm.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use uuid::Uuid;

use crate::config::Config;
use crate::effects::Destination;
use crate::envelope::NewMessage;
use crate::names;
use crate::transport::amqp::publish::{Outgoing, Published, answer, confirming_channel, send};
use crate::transport::amqp::supervisor::display_url;

/// Options of `wharf publish`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("body").required(true).args(["json", "file"]))]
pub struct PublishArgs {
    /// Inbox queue.
    #[arg(long, required_unless_present = "amqp", conflicts_with = "amqp")]
    queue: Option<String>,
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
    /// Message kind, e.g. order.created.
    #[arg(long)]
    kind: String,
    /// Message id (a UUID); a new UUID v7 when omitted. Publishing an id twice is a no-op.
    #[arg(long)]
    id: Option<Uuid>,
    /// A header, repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The payload as inline JSON.
    #[arg(long)]
    json: Option<String>,
    /// Read the payload (JSON) from a file.
    #[arg(long)]
    file: Option<PathBuf>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("header {s:?} must look like key=value")),
    }
}

pub async fn publish(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    let payload = match (&args.json, &args.file) {
        (Some(json), _) => json.clone().into_bytes(),
        (None, Some(file)) => std::fs::read(file)
            .with_context(|| format!("cannot read payload file {}", file.display()))?,
        (None, None) => unreachable!("clap requires --json or --file"),
    };
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&payload) {
        bail!("payload is not valid JSON: {e}");
    }
    if payload.len() > config.inbox.max_payload_bytes {
        bail!(
            "payload of {} bytes exceeds inbox.max_payload_bytes ({})",
            payload.len(),
            config.inbox.max_payload_bytes
        );
    }
    let id = args.id.unwrap_or_else(Uuid::now_v7);
    let headers = args.headers.into_iter().collect();
    let destination = match (&args.queue, &args.exchange) {
        (Some(queue), _) => Destination::Queue(queue.clone()),
        (None, Some(exchange)) => Destination::Exchange {
            exchange: exchange.clone(),
            routing_key: args.routing_key.clone(),
        },
        (None, None) => unreachable!("clap requires --queue or --amqp --exchange"),
    };
    if let Err(invalid) = names::publish(&destination, &args.kind, &headers) {
        bail!("{invalid}; see \"Limits and quotas\" in the README for what is allowed");
    }
    match (args.queue, args.exchange) {
        (Some(queue), _) => to_inbox(&config, queue, args.kind, id, headers, payload).await,
        (None, Some(exchange)) => {
            let message = Outgoing {
                id,
                exchange: &exchange,
                routing_key: &args.routing_key,
                kind: &args.kind,
                headers: &headers,
                payload: &payload,
            };
            to_broker(&config, message).await
        }
        (None, None) => unreachable!("clap requires --queue or --amqp --exchange"),
    }
}

async fn to_inbox(
    config: &Config,
    queue: String,
    kind: String,
    id: Uuid,
    headers: std::collections::BTreeMap<String, String>,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let mut message = NewMessage::new(&queue, &kind, payload);
    message.id = id;
    message.headers = headers;
    let store = super::open_store(config).await?;
    if store.enqueue(std::slice::from_ref(&message)).await? == 1 {
        println!("{}", message.id);
    } else {
        println!(
            "{} (duplicate: already received, not queued again)",
            message.id
        );
    }
    Ok(())
}

async fn to_broker(config: &Config, message: Outgoing<'_>) -> anyhow::Result<()> {
    let url = display_url(&config.amqp.url);
    let connection = lapin::Connection::connect(&config.amqp.url, Default::default())
        .await
        .with_context(|| format!("cannot connect to the AMQP broker at {url}; is it running? (amqp.url / WHARF_AMQP_URL)"))?;
    let channel = confirming_channel(&connection).await?;
    let confirm = send(&channel, message).await?;
    let published = answer(confirm).await.map_err(|e| {
        anyhow::anyhow!(
            "the broker refused the message ({e}); declare exchange {:?} ([[amqp.exchanges]]) or check its name",
            message.exchange
        )
    })?;
    let _ = connection.close(200, "published".into()).await;
    match published {
        Published::Stored => {
            println!("{}", message.id);
            Ok(())
        }
        Published::Unroutable => bail!(
            "exchange {:?} routed the message to no queue (routing key {:?}): nothing is bound for it, so the broker dropped it",
            message.exchange,
            message.routing_key
        ),
        Published::Refused => bail!("the broker could not store the message (nack); try again"),
    }
}
