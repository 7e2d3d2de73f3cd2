//! `wharf cleanup`: delete finished rows older than a duration, once.

use std::time::Duration;

use clap::Args;

use crate::config::Config;

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
    let store = crate::server::open_store(&config).await?;
    let cleaned = store.cleanup(args.older_than).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&cleaned)?);
    } else {
        println!(
            "deleted rows older than {}: {}",
            humantime::format_duration(args.older_than),
            cleaned
        );
    }
    Ok(())
}
