//! The set of plugins a host serves, loaded from the plugin directory, and routing: which
//! plugins receive a message of a given kind.

use std::path::Path;
use std::sync::Arc;

use crate::runtime::{LoadError, Plugin, Runtime};

/// Loaded plugins, in file-name order.
#[derive(Default)]
pub struct PluginSet {
    plugins: Vec<Arc<Plugin>>,
}

impl PluginSet {
    /// Load every `*.wasm` in `dir`. A file that cannot be loaded is reported and skipped;
    /// the others still load.
    pub async fn load_dir(
        runtime: &Runtime,
        dir: &Path,
    ) -> std::io::Result<(Self, Vec<LoadError>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        let mut set = Self::default();
        let mut errors = Vec::new();
        for path in files {
            match runtime.load(&path).await {
                Ok(plugin) => {
                    if let Err(e) = set.add(plugin) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Ok((set, errors))
    }

    /// Add a plugin; refused when its name is taken.
    pub fn add(&mut self, plugin: Plugin) -> Result<(), LoadError> {
        if let Some(first) = self.plugins.iter().find(|p| p.name() == plugin.name()) {
            return Err(LoadError::Duplicate {
                path: plugin.path.clone(),
                name: plugin.manifest.name.clone(),
                first: first.path.clone(),
            });
        }
        self.plugins.push(Arc::new(plugin));
        Ok(())
    }

    /// The plugins subscribed to `kind`.
    pub fn route(&self, kind: &str) -> Vec<Arc<Plugin>> {
        self.plugins
            .iter()
            .filter(|p| p.subscribes_to(kind))
            .cloned()
            .collect()
    }

    /// Every loaded plugin.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.iter()
    }

    /// How many plugins are loaded.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Whether no plugin is loaded.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}
