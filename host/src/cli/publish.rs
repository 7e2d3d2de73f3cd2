//! `wharf publish`: put a message into an inbox queue.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use uuid::Uuid;

use crate::config::Config;
use crate::envelope::NewMessage;

/// Options of `wharf publish`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("body").required(true).args(["json", "file"]))]
pub struct PublishArgs {
    /// Inbox queue.
    #[arg(long)]
    queue: String,
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
    if args.kind.is_empty() || args.queue.is_empty() {
        bail!("--queue and --kind must not be empty");
    }
    let mut message = NewMessage::new(&args.queue, &args.kind, payload);
    if let Some(id) = args.id {
        message.id = id;
    }
    message.headers = args.headers.into_iter().collect();
    let store = super::open_store(&config).await?;
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
