//! What every command that touches the database or plugins starts with: the store (its
//! migrations applied), the sandbox with the plugin directory loaded, and the periodic
//! cleanup of `wharf run --cleanup-older-than`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::plugins::{Catalog, directory};
use crate::runtime::Runtime;
use crate::store::{self, Store};

/// Open the configured database, applying its migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    store::open(&config.database.url)
        .await
        .with_context(|| format!("cannot open database {}", config.database.url))
}

/// Build the runtime and load the plugin directory, logging each refused file.
pub async fn load_plugins(config: &Config) -> anyhow::Result<(Arc<Runtime>, Arc<Catalog>)> {
    let runtime = config
        .sandbox()
        .context("cannot start the WebAssembly runtime")?;
    let catalog = Arc::new(Catalog::new());
    let dir = &config.plugins.dir;
    let errors = directory::load(&catalog, &runtime, dir)
        .await
        .with_context(|| {
            format!(
                "cannot read plugin directory {}; set plugins.dir or WHARF_PLUGINS_DIR",
                dir.display()
            )
        })?;
    for error in &errors {
        tracing::error!("plugin refused: {error}");
    }
    Ok((Arc::new(runtime), catalog))
}

/// How often rows older than what are deleted while the host runs.
#[derive(Debug, Clone, Copy)]
pub struct Cleanup {
    /// Delete finished rows older than this.
    pub older_than: Duration,
    /// At start, then this often.
    pub every: Duration,
}

impl Cleanup {
    /// Clean up now and then every `every`, for as long as the returned task runs. A
    /// failed round is logged and tried again at the next one.
    pub fn spawn(self, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        let Cleanup { older_than, every } = self;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.cleanup(older_than).await {
                    Ok(c) => tracing::info!(
                        older_than = %humantime::format_duration(older_than),
                        "cleanup: {c}"
                    ),
                    Err(e) => tracing::warn!("cleanup failed (will try again in {every:?}): {e}"),
                }
            }
        })
    }
}
