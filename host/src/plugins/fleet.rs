//! The fleet registry as a source: the host serves every plugin's active deployment and
//! follows deploys and rollbacks (woken by `NOTIFY` on PostgreSQL, polling on SQLite).
//! A component already compiled into this host's cache is served without fetching its
//! bytes, so a restarted host serves at once. A deployment this host cannot load is
//! refused once, with its reason, and the version it was serving keeps serving.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Catalog;
use crate::runtime::{LoadError, Plugin, Runtime};
use crate::store::StoreError;
use crate::store::registry::Deployment;
use crate::store::registry::Registry;

/// Longest wait between two reads of the active deployments on PostgreSQL, in case a
/// notification was missed (a dropped listener connection). SQLite polls more often.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Keeps a catalog's registry source in line with the registry.
pub struct Follower {
    catalog: Arc<Catalog>,
    runtime: Arc<Runtime>,
    store: Arc<dyn Registry>,
    /// Deployments this host could not load, so each is refused (and logged) once.
    refused: BTreeSet<i64>,
}

impl Follower {
    /// A follower feeding `catalog`.
    pub fn new(catalog: Arc<Catalog>, runtime: Arc<Runtime>, store: Arc<dyn Registry>) -> Self {
        Self {
            catalog,
            runtime,
            store,
            refused: BTreeSet::new(),
        }
    }

    /// Serve the active deployments now; returns how many plugins changed.
    pub async fn sync(&mut self) -> Result<usize, StoreError> {
        let active = self.store.active_deployments().await?;
        let serving = self.catalog.registry();
        let mut changed = 0;
        for deployment in &active {
            let current = serving.get(&deployment.plugin);
            if current.is_some_and(|p| p.sha256 == deployment.sha256)
                || self.refused.contains(&deployment.id)
            {
                continue;
            }
            match self.load(deployment).await? {
                Ok(plugin) => {
                    crate::metrics::plugin_reload("served");
                    for e in self.catalog.put_deployed(plugin) {
                        tracing::warn!("plugin file not served: {e}");
                    }
                    changed += 1;
                }
                Err(e) => {
                    crate::metrics::plugin_reload("refused");
                    self.refused.insert(deployment.id);
                    match current {
                        Some(old) => tracing::error!(
                            deployment = deployment.id,
                            serving = old.manifest.version,
                            "deployment refused on this host, the loaded version keeps serving: {e}"
                        ),
                        None => tracing::error!(
                            deployment = deployment.id,
                            "deployment refused on this host: {e}"
                        ),
                    }
                }
            }
        }
        for name in serving.keys() {
            if !active.iter().any(|d| &d.plugin == name) {
                for e in self.catalog.remove_deployed(name) {
                    tracing::warn!("plugin file not served: {e}");
                }
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Load `deployment`'s component: from the compiled cache when it is there, else
    /// fetched from the registry and compiled.
    async fn load(&self, deployment: &Deployment) -> Result<Result<Plugin, LoadError>, StoreError> {
        let origin = PathBuf::from(format!(
            "registry:{}@{}",
            deployment.plugin, deployment.sha256
        ));
        let loaded = match self.runtime.load_cached(&origin, &deployment.sha256).await {
            Some(loaded) => loaded,
            None => {
                let Some(wasm) = self.store.artifact(&deployment.sha256).await? else {
                    return Err(StoreError::Corrupt(format!(
                        "deployment {} of {} names component {}, which the registry does not hold",
                        deployment.id, deployment.plugin, deployment.sha256
                    )));
                };
                self.runtime.load_bytes(&origin, wasm).await
            }
        };
        Ok(loaded.and_then(|plugin| {
            if plugin.name() == deployment.plugin {
                Ok(plugin)
            } else {
                Err(LoadError::Manifest {
                    path: origin,
                    reason: format!(
                        "deployed as {} but its manifest names {}",
                        deployment.plugin,
                        plugin.name()
                    ),
                })
            }
        }))
    }

    /// Follow the registry until `shutdown`: sync whenever it may have changed.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // The first wait only starts listening, so nothing deployed from here on is
        // missed; the sync after it catches what came before.
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                woke = self.store.wait_for_deployments(wait) => {
                    if let Err(e) = woke {
                        tracing::warn!("cannot listen for plugin deployments ({e}); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                _ = shutdown.changed() => return,
            }
            wait = RESYNC_EVERY;
            if let Err(e) = self.sync().await {
                tracing::warn!(
                    "cannot read the plugin registry ({e}); the loaded plugins keep serving"
                );
            }
        }
    }
}
