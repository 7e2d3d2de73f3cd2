//! `wharf keys`: the ordering keys a dead letter of an ordered plugin holds, and skipping
//! one (its later messages go on without the failed one; `wharf failed retry` releases it
//! instead, once the message is handled). A skip is recorded in the audit trail.

use clap::Subcommand;

use crate::config::Config;
use crate::names;
use crate::store::AuditEntry;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The held keys, oldest first: the message holding each and how many wait behind it.
    Held {
        /// How many keys.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Let a held key go on without the message that holds it.
    Skip {
        /// The inbox queue.
        #[arg(long)]
        queue: String,
        /// The ordering key.
        #[arg(long)]
        key: String,
        /// The ordered plugin it is held for.
        #[arg(long)]
        plugin: String,
    },
}

pub async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = crate::server::open_store(&config).await?;
    match command {
        KeysCommand::Held { limit, json } => {
            let held = store.held_keys(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&held)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<24} {:<20} {:<36} {:>8} {:<24}",
                "QUEUE", "KEY", "PLUGIN", "MESSAGE", "WAITING", "HELD SINCE"
            );
            for h in &held {
                println!(
                    "{:<20} {:<24} {:<20} {:<36} {:>8} {:<24}",
                    h.queue,
                    names::storable(&h.key),
                    h.plugin,
                    h.message_id,
                    h.waiting,
                    super::failed::time(h.held_at)
                );
            }
            if held.is_empty() {
                println!("(no key is held: ordered plugins' dead letters hold their key here)");
            }
            Ok(())
        }
        KeysCommand::Skip { queue, key, plugin } => {
            names::queue(&queue)?;
            names::ordering_key(&key)?;
            names::plugin(&plugin)?;
            let skipped = store.skip_held_key(&queue, &key, &plugin).await?;
            let target = format!("key {key} of queue {queue} for plugin {plugin}");
            let result = if skipped {
                "ok: skipped".to_owned()
            } else {
                "404: not held".to_owned()
            };
            let entry = AuditEntry {
                id: 0,
                at: 0,
                who: "cli".to_owned(),
                action: "skip key".to_owned(),
                target,
                result,
            };
            store.audit(&entry).await?;
            if !skipped {
                anyhow::bail!(
                    "key {:?} of queue {queue:?} is not held for plugin {plugin:?}; `wharf keys held` lists the held keys",
                    names::storable(&key)
                );
            }
            println!(
                "key {} of queue {queue} goes on for plugin {plugin}",
                names::storable(&key)
            );
            Ok(())
        }
    }
}
