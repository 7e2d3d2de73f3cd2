//! `wharf failed list|show|retry|delete`: the dead letters, selected by id or by filter.

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::store::{FailedFilter, FailedMessage, FailedStatus, PageRequest, Retried, parse_time};
use crate::text::escape_controls;

/// Subcommands of `wharf failed`.
#[derive(Debug, Subcommand)]
pub enum FailedCommand {
    /// List failed messages, newest first, a page at a time.
    List {
        #[command(flatten)]
        select: Select,
        /// Messages per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Start after this id (the "next page" of the previous list).
        #[arg(long)]
        before: Option<i64>,
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
    /// Send failed messages back to where they came from: by id, every one a filter
    /// selects, or --all.
    Retry {
        /// Failed message ids.
        ids: Vec<i64>,
        #[command(flatten)]
        select: Select,
        /// Every failed message (the filters still apply).
        #[arg(long)]
        all: bool,
    },
    /// Delete failed messages and their history: by id, every one a filter selects, or
    /// --all.
    Delete {
        /// Failed message ids.
        ids: Vec<i64>,
        #[command(flatten)]
        select: Select,
        /// Every failed message (the filters still apply).
        #[arg(long)]
        all: bool,
    },
}

/// Which failed messages a command applies to.
#[derive(Debug, Args)]
pub struct Select {
    /// Failed by this plugin ("" for messages no plugin handles).
    #[arg(long)]
    plugin: Option<String>,
    /// Failed by this version of the plugin.
    #[arg(long)]
    plugin_version: Option<String>,
    /// Of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// From this inbox queue.
    #[arg(long)]
    queue: Option<String>,
    /// From this source (inbox, or amqp:<queue>).
    #[arg(long)]
    source: Option<String>,
    /// Whose error contains this text (ignoring ASCII case).
    #[arg(long)]
    error: Option<String>,
    /// In this status: pending, failed, retrying or resolved.
    #[arg(long, value_parser = status)]
    status: Option<FailedStatus>,
    /// Failed at or after this time: Unix ms, RFC 3339 or a date (UTC).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Failed before this time: Unix ms, RFC 3339 or a date (UTC).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
}

impl Select {
    fn filter(self, ids: Vec<i64>) -> FailedFilter {
        FailedFilter {
            ids,
            plugin: self.plugin,
            plugin_version: self.plugin_version,
            kind: self.kind,
            queue: self.queue,
            source: self.source,
            error: self.error,
            status: self.status,
            since: self.since,
            until: self.until,
        }
    }
}

fn status(text: &str) -> Result<FailedStatus, String> {
    FailedStatus::parse(text)
        .ok_or_else(|| format!("status {text:?} is not one of pending, failed, retrying, resolved"))
}

/// The filter of a retry or a delete, refusing one that selects everything without
/// `--all`, or too many ids.
fn bulk(ids: Vec<i64>, select: Select, all: bool, verb: &str) -> anyhow::Result<FailedFilter> {
    let filter = select.filter(ids);
    if filter.is_everything() && !all {
        bail!(
            "name the failed messages to {verb}: ids, a filter (--plugin, --kind, --error, ... see --help), or --all for every one"
        );
    }
    if let Err(e) = filter.check() {
        bail!("{e}");
    }
    Ok(filter)
}

/// Failed messages a retry or a delete handles per transaction.
const BULK_CHUNK: u64 = 1000;

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
    let store = crate::server::open_store(&config).await?;
    match command {
        FailedCommand::List {
            select,
            limit,
            before,
            json,
        } => {
            let filter = select.filter(Vec::new());
            if let Err(e) = filter.check() {
                bail!("{e}");
            }
            let page = store
                .failed_list(&filter, PageRequest { before, limit })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(());
            }
            if page.items.is_empty() {
                println!("no failed messages");
            }
            for f in &page.items {
                println!(
                    "{:>5}  {:<8}  {}  {:<20} {:<24} attempts={} {}",
                    f.id,
                    f.status.as_str(),
                    time(f.failed_at),
                    f.kind,
                    plugin_label(f),
                    f.attempts,
                    escape_controls(&f.error)
                );
            }
            if let Some(next) = page.next {
                println!(
                    "{} of {} shown; the next page: --before {next}",
                    page.items.len(),
                    page.total
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
            println!("error:       {}", escape_controls(&f.error));
            println!("headers:     {}", serde_json::to_string(&f.headers)?);
            println!(
                "payload:     {}",
                escape_controls(&String::from_utf8_lossy(
                    f.payload.as_deref().unwrap_or_default()
                ))
            );
            println!("history:");
            for a in &history {
                let next = a
                    .delay_ms
                    .map(|d| format!(", retry in {d} ms"))
                    .unwrap_or_default();
                let ran = match (&a.plugin_version, &a.plugin_sha256) {
                    (Some(version), Some(sha256)) => {
                        format!(" by {version} ({})", sha256.get(..12).unwrap_or(sha256))
                    }
                    _ => String::new(),
                };
                println!(
                    "  attempt {} at {}{ran}{next}: {}",
                    a.attempt,
                    time(a.at),
                    escape_controls(&a.error)
                );
            }
        }
        FailedCommand::Retry { ids, select, all } => {
            let filter = bulk(ids, select, all, "retry")?;
            let mut retried = Retried::default();
            loop {
                let chunk = store.failed_retry(&filter, BULK_CHUNK).await?;
                retried.inbox += chunk.inbox;
                retried.broker += chunk.broker;
                if chunk.total() < BULK_CHUNK {
                    break;
                }
                eprintln!("{} retried so far", retried.total());
            }
            if retried.total() == 0 {
                bail!(
                    "no failed message to retry there (unknown, or already retrying or resolved); see `wharf failed list`"
                );
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
        FailedCommand::Delete { ids, select, all } => {
            let filter = bulk(ids, select, all, "delete")?;
            let mut deleted = 0;
            loop {
                let chunk = store.failed_delete(&filter, BULK_CHUNK).await?;
                deleted += chunk;
                if chunk < BULK_CHUNK {
                    break;
                }
                eprintln!("{deleted} deleted so far");
            }
            if deleted == 0 {
                bail!("no failed message to delete there; see `wharf failed list`");
            }
            println!("deleted {deleted} failed messages and their history");
        }
    }
    Ok(())
}
