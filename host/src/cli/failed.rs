//! `wharf failed list|show|retry|delete`: the dead letters.

use anyhow::bail;
use clap::Subcommand;

use crate::config::Config;
use crate::store::{FailedMessage, RetrySelection};

/// Subcommands of `wharf failed`.
#[derive(Debug, Subcommand)]
pub enum FailedCommand {
    /// List failed messages, newest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one failed message with every attempt's error.
    Show {
        /// Failed message id (from `failed list`).
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a failed message (or all of them) back to its queue.
    Retry {
        /// Failed message id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every failed message.
        #[arg(long)]
        all: bool,
    },
    /// Delete a failed message and its history.
    Delete {
        /// Failed message id.
        id: i64,
    },
}

/// A Unix-ms time as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub(super) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn plugin_label(f: &FailedMessage) -> String {
    if f.plugin.is_empty() {
        "(no handler)".to_owned()
    } else {
        format!("{}@{}", f.plugin, f.plugin_version)
    }
}

pub async fn failed(config: Config, command: FailedCommand) -> anyhow::Result<()> {
    let store = super::open_store(&config).await?;
    match command {
        FailedCommand::List { json } => {
            let failed = store.failed_list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&failed)?);
                return Ok(());
            }
            if failed.is_empty() {
                println!("no failed messages");
            }
            for f in &failed {
                println!(
                    "{:>5}  {:<8}  {}  {:<20} {:<24} attempts={} {}",
                    f.id,
                    f.status.as_str(),
                    time(f.failed_at),
                    f.kind,
                    plugin_label(f),
                    f.attempts,
                    f.error
                );
            }
        }
        FailedCommand::Show { id, json } => {
            let Some((f, history)) = store.failed_get(id).await? else {
                bail!("no failed message with id {id}; see `wharf failed list`");
            };
            if json {
                let out = serde_json::json!({"message": f, "attempts": history});
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            println!("id:          {}", f.id);
            println!("message id:  {}", f.message_id);
            println!("status:      {}", f.status.as_str());
            println!("source:      {} (queue {})", f.source, f.queue);
            println!("kind:        {}", f.kind);
            println!("plugin:      {}", plugin_label(&f));
            println!("attempts:    {}", f.attempts);
            println!("failed at:   {}", time(f.failed_at));
            println!("error:       {}", f.error);
            println!("headers:     {}", serde_json::to_string(&f.headers)?);
            println!("payload:     {}", String::from_utf8_lossy(&f.payload));
            println!("history:");
            for a in &history {
                let next = a
                    .delay_ms
                    .map(|d| format!(", retry in {d} ms"))
                    .unwrap_or_default();
                println!(
                    "  attempt {} at {}{next}: {}",
                    a.attempt,
                    time(a.at),
                    a.error
                );
            }
        }
        FailedCommand::Retry { id, all } => {
            let which = match (id, all) {
                (_, true) => RetrySelection::All,
                (Some(id), false) => RetrySelection::One(id),
                (None, false) => unreachable!("clap requires an id or --all"),
            };
            let retried = store.failed_retry(which).await?;
            if retried.total() == 0 {
                match id {
                    Some(id) => bail!(
                        "no failed message {id} to retry (unknown, or already retrying/resolved); see `wharf failed list`"
                    ),
                    None => println!("no failed messages to retry"),
                }
            }
            if retried.inbox > 0 {
                println!(
                    "{} sent back to their inbox queue; `wharf run` will handle them",
                    retried.inbox
                );
            }
            if retried.broker > 0 {
                println!(
                    "{} queued in the outbox for republishing to the AMQP exchange they came from; a `wharf run` with amqp.relay on sends them",
                    retried.broker
                );
            }
        }
        FailedCommand::Delete { id } => {
            if !store.failed_delete(id).await? {
                bail!("no failed message with id {id}; see `wharf failed list`");
            }
            println!("deleted failed message {id}");
        }
    }
    Ok(())
}
