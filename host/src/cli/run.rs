//! `wharf run` and `wharf demo`: their options, handed to [`crate::server::run`].

use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::config::Config;
use crate::envelope::NewMessage;
use crate::server::{self, Cleanup};
use crate::transport::pump::StopWhen;

/// Options of `wharf run` (Messenger-style stop options).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Exit after N messages.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<u64>,
    /// Exit once no message is due.
    #[arg(long)]
    until_idle: bool,
    /// Retention: while running, delete finished rows older than this (`7d`), as `wharf
    /// cleanup --older-than` does; at start and then every `--cleanup-every`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    cleanup_older_than: Option<Duration>,
    /// How often the cleanup runs.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h", requires = "cleanup_older_than")]
    cleanup_every: Duration,
}

pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let stop = StopWhen {
        limit: args.limit,
        time_limit: args.time_limit.map(Duration::from_secs),
        until_idle: args.until_idle,
    };
    let cleanup = args.cleanup_older_than.map(|older_than| Cleanup {
        older_than,
        every: args.cleanup_every,
    });
    server::run(config, stop, cleanup).await
}

pub async fn demo(config: Config) -> anyhow::Result<()> {
    let store = server::open_store(&config).await?;
    let orders = [
        json!({"order_id": "1001", "customer_email": "ada@example.com",
               "items": [{"sku": "KEYBOARD", "quantity": 2}, {"sku": "MOUSE", "quantity": 1}]}),
        json!({"order_id": "1002", "customer_email": "grace@example.com",
               "items": [{"sku": "KEYBOARD", "quantity": 95}]}),
        json!({"order_id": "1003", "customer_email": "linus@example.com",
               "items": [{"sku": "MONITOR", "quantity": 1}]}),
    ];
    let messages: Vec<NewMessage> = orders
        .iter()
        .map(|o| NewMessage::new("orders", "order.created", o.to_string().into_bytes()))
        .collect();
    store.enqueue(&messages).await?;
    tracing::info!(
        "published {} order.created messages to queue orders",
        messages.len()
    );
    server::run(
        config,
        StopWhen {
            until_idle: true,
            ..StopWhen::default()
        },
        None,
    )
    .await?;
    println!("\nDone. Try: wharf queues, wharf failed list, wharf plugins list");
    Ok(())
}
