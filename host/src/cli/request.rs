//! `wharf request`: put a request into an inbox queue (or, through the outbox, to an
//! exchange) and wait for its answer (see
//! `crate::requester`), printing it: a handler's answer on stdout (JSON pretty-printed,
//! anything else with its control characters escaped), why it was not handled as an
//! error, or that none came in time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use uuid::Uuid;

use crate::config::Config;
use crate::effects::Destination;
use crate::requester;
use crate::store::{self, Answer};
use crate::text;

/// Options of `wharf request`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("to").required(true).args(["queue", "exchange"]))]
pub struct RequestArgs {
    /// Inbox queue.
    #[arg(long)]
    queue: Option<String>,
    /// An AMQP exchange instead of an inbox queue: the request goes through the outbox
    /// (a host's relay sends it), and a host consuming it answers.
    #[arg(long)]
    exchange: Option<String>,
    /// With --exchange: the routing key (empty when omitted).
    #[arg(long, conflicts_with = "queue")]
    routing_key: Option<String>,
    /// Request kind, e.g. quote.requested.
    #[arg(long)]
    kind: String,
    /// The payload as inline JSON.
    #[arg(long)]
    json: String,
    /// Request id (a UUID); a new UUID v7 when omitted. Asking again with an id already
    /// asked gets the first answer, and the request is not handled twice.
    #[arg(long)]
    id: Option<Uuid>,
    /// Ordering key.
    #[arg(long)]
    key: Option<String>,
    /// A header, repeatable.
    #[arg(long = "header", value_name = "KEY=VALUE", value_parser = super::publish::parse_header)]
    headers: Vec<(String, String)>,
    /// How long to wait for the answer (`500ms`, `30s`); a host that takes the request
    /// later does not handle it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub async fn request(config: Config, args: RequestArgs) -> anyhow::Result<()> {
    if args.timeout.is_zero() || args.timeout > Duration::from_secs(3600) {
        bail!("--timeout must be between 1ms and 1h");
    }
    let payload = args.json.into_bytes();
    super::publish::check_payload(&payload, config.inbox.max_payload_bytes)?;
    let id = args.id.unwrap_or_else(Uuid::now_v7);
    let headers: BTreeMap<String, String> = args.headers.into_iter().collect();
    let (destination, to) = match (args.queue, args.exchange) {
        (Some(queue), _) => (Destination::Queue(queue.clone()), format!("queue {queue}")),
        (None, Some(exchange)) => {
            let routing_key = args.routing_key.unwrap_or_default();
            let to = format!("exchange {exchange:?} (routing key {routing_key:?})");
            let destination = Destination::Exchange {
                exchange,
                routing_key,
            };
            (destination, to)
        }
        (None, None) => unreachable!("clap requires --queue or --exchange"),
    };
    let message = requester::message(
        id,
        (destination, args.kind),
        headers,
        payload,
        args.key,
        args.timeout,
    )
    .context("the request cannot be sent")?;
    let store = crate::server::open_store(&config).await?;
    store::put(&*store, &message).await?;
    eprintln!(
        "request {id} sent to {}; waiting up to {} for its answer",
        text::escape_controls(&to),
        humantime::format_duration(args.timeout)
    );
    match requester::answer(&*store, id, args.timeout).await? {
        Some(Answer::Answered { payload, .. }) => {
            match serde_json::from_slice::<serde_json::Value>(&payload) {
                Ok(json) => println!("{}", serde_json::to_string_pretty(&json)?),
                Err(_) => println!(
                    "{}",
                    text::escape_controls(&String::from_utf8_lossy(&payload))
                ),
            }
            Ok(())
        }
        Some(Answer::Handled) => {
            eprintln!("request {id} was handled; no handler answered it");
            Ok(())
        }
        Some(Answer::Rejected { error }) => bail!(
            "request {id} was not handled: {}; see it with `wharf failed show {id}`",
            text::escape_controls(&error)
        ),
        None => bail!(
            "no answer to request {id} within {}; it expires unhandled if no host takes it in time. Ask again with --id {id} to get its answer if it comes",
            humantime::format_duration(args.timeout)
        ),
    }
}
