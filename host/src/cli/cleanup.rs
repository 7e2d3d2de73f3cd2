//! `wharf cleanup` and the periodic cleanup of `wharf run --cleanup-older-than`.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::config::Config;
use crate::store::{Cleaned, Store};

/// Options of `wharf cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Delete finished rows older than this (`7d`, `36h`, `90m`): dedup and ledger rows of
    /// messages that left the inbox, sent outbox rows, resolved failures. A duplicate of a
    /// message arriving after its dedup row was deleted is handled again.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    older_than: Duration,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn cleanup(config: Config, args: CleanupArgs) -> anyhow::Result<()> {
    let store = super::open_store(&config).await?;
    let cleaned = store.cleanup(args.older_than).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cleaned)?);
    } else {
        println!(
            "deleted rows older than {}: {}",
            humantime::format_duration(args.older_than),
            summary(&cleaned)
        );
    }
    Ok(())
}

fn summary(c: &Cleaned) -> String {
    format!(
        "{} dedup, {} ledger, {} sent outbox, {} resolved failures, {} attempt errors",
        c.received, c.processed, c.outbox, c.failed, c.attempt_errors
    )
}

/// Clean up now and then every `every`, for as long as the returned task runs. A failed
/// round is logged and tried again at the next one.
pub fn periodic(
    store: Arc<dyn Store>,
    older_than: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.cleanup(older_than).await {
                Ok(c) => tracing::info!(
                    older_than = %humantime::format_duration(older_than),
                    "cleanup: {}",
                    summary(&c)
                ),
                Err(e) => tracing::warn!("cleanup failed (will try again in {every:?}): {e}"),
            }
        }
    })
}
