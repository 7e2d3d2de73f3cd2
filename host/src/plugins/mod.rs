//! The plugins a host serves. A [`Catalog`] holds what each source provides (files of the
//! plugin directory, the fleet registry's active deployments) and publishes the
//! composition as an immutable [`PluginSet`], swapped atomically: a message is routed
//! against the set current when it arrives, and a call keeps its plugin alive until it
//! returns, so a swap never cuts a running call short.
//!
//! When both sources provide a plugin of the same name, the registry wins: it is what
//! the whole fleet runs. Among directory files of the same name, the first in file-name
//! order wins.

mod config;
pub mod directory;
pub mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::runtime::{LoadError, Plugin};

pub use config::{DEFAULT_CACHE_DIR, DEFAULT_PLUGINS_DIR, PluginConfig, PluginsConfig};

/// One composition of the sources: the plugins messages are routed to.
#[derive(Default)]
pub struct PluginSet {
    plugins: Vec<Arc<Plugin>>,
    /// Names served from the registry; the others come from the directory.
    deployed: BTreeSet<String>,
}

/// Where a served plugin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A file of the plugin directory.
    Directory,
    /// The fleet registry's active deployment.
    Registry,
}

impl Source {
    /// `directory` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::Registry => "registry",
        }
    }
}

impl PluginSet {
    /// The plugins subscribed to `kind`.
    pub fn route(&self, kind: &str) -> Vec<Arc<Plugin>> {
        self.plugins
            .iter()
            .filter(|p| p.subscribes_to(kind))
            .cloned()
            .collect()
    }

    /// The plugin named `name`, if served.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// Where the served plugin `name` comes from.
    pub fn source(&self, name: &str) -> Source {
        if self.deployed.contains(name) {
            Source::Registry
        } else {
            Source::Directory
        }
    }

    /// Every plugin, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.iter()
    }

    /// How many plugins are served.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Whether no plugin is served.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

/// What each source provides.
#[derive(Default)]
struct Sources {
    /// Plugins of the plugin directory, by file.
    directory: BTreeMap<PathBuf, Arc<Plugin>>,
    /// The registry's active deployments, by plugin name.
    registry: BTreeMap<String, Arc<Plugin>>,
}

impl Sources {
    /// The set to serve, and the directory files it leaves out because another file
    /// provides the same name.
    fn compose(&self) -> (PluginSet, Vec<LoadError>) {
        let mut chosen: BTreeMap<&str, &Arc<Plugin>> = self
            .registry
            .iter()
            .map(|(name, p)| (name.as_str(), p))
            .collect();
        let mut duplicates = Vec::new();
        for (path, plugin) in &self.directory {
            if self.registry.contains_key(plugin.name()) {
                continue;
            }
            match chosen.get(plugin.name()) {
                Some(first) => duplicates.push(LoadError::Duplicate {
                    path: path.clone(),
                    name: plugin.name().to_owned(),
                    first: first.path.clone(),
                }),
                None => {
                    chosen.insert(plugin.name(), plugin);
                }
            }
        }
        let plugins = chosen.into_values().cloned().collect();
        let deployed = self.registry.keys().cloned().collect();
        (PluginSet { plugins, deployed }, duplicates)
    }
}

/// The live plugin set of a host and the sources it is composed from.
#[derive(Default)]
pub struct Catalog {
    live: ArcSwap<PluginSet>,
    sources: Mutex<Sources>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set serving now. Holding it keeps its plugins loaded, not current.
    pub fn current(&self) -> Arc<PluginSet> {
        self.live.load_full()
    }

    /// The plugins now subscribed to `kind`.
    pub fn route(&self, kind: &str) -> Vec<Arc<Plugin>> {
        self.live.load().route(kind)
    }

    /// The plugin loaded from `path` (the directory source), if any.
    pub fn file(&self, path: &Path) -> Option<Arc<Plugin>> {
        self.sources().directory.get(path).cloned()
    }

    /// Serve `plugin` for the directory file it was loaded from, replacing that file's
    /// earlier version. Returns the names it cannot serve because of duplicates.
    pub fn put_file(&self, plugin: Plugin) -> Vec<LoadError> {
        self.update(|s| {
            s.directory.insert(plugin.path.clone(), Arc::new(plugin));
        })
    }

    /// Stop serving what the directory file `path` provided.
    pub fn remove_file(&self, path: &Path) -> Vec<LoadError> {
        self.update(|s| {
            s.directory.remove(path);
        })
    }

    /// The registry's active deployments, by name.
    pub fn registry(&self) -> BTreeMap<String, Arc<Plugin>> {
        self.sources().registry.clone()
    }

    /// Serve `plugin` as the registry's active deployment of its name.
    pub fn put_deployed(&self, plugin: Plugin) -> Vec<LoadError> {
        self.update(|s| {
            s.registry
                .insert(plugin.name().to_owned(), Arc::new(plugin));
        })
    }

    /// The registry no longer has an active deployment of `name`.
    pub fn remove_deployed(&self, name: &str) -> Vec<LoadError> {
        self.update(|s| {
            s.registry.remove(name);
        })
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().expect("catalog updates do not panic")
    }

    /// Change the sources, publish the new composition and log what changed.
    fn update(&self, change: impl FnOnce(&mut Sources)) -> Vec<LoadError> {
        let mut sources = self.sources();
        change(&mut sources);
        let (set, duplicates) = sources.compose();
        let old = self.live.swap(Arc::new(set));
        log_changes(&old, &self.live.load());
        duplicates
    }
}

fn log_changes(old: &PluginSet, new: &PluginSet) {
    for plugin in new.iter() {
        match old.get(plugin.name()) {
            None => tracing::info!(
                plugin = plugin.name(),
                version = plugin.manifest.version,
                sha256 = &plugin.sha256[..12],
                from = %plugin.path.display(),
                subscriptions = ?plugin.manifest.subscriptions,
                "plugin loaded"
            ),
            Some(before) if before.sha256 != plugin.sha256 => tracing::info!(
                plugin = plugin.name(),
                version = plugin.manifest.version,
                sha256 = &plugin.sha256[..12],
                from = %plugin.path.display(),
                previous_version = before.manifest.version,
                previous_sha256 = &before.sha256[..12],
                "plugin swapped: the next messages run the new version, calls in flight finish on the old one"
            ),
            Some(_) => {}
        }
    }
    for plugin in old.iter().filter(|p| new.get(p.name()).is_none()) {
        tracing::info!(
            plugin = plugin.name(),
            version = plugin.manifest.version,
            "plugin unloaded: its calls in flight finish; messages no other plugin handles now fail with \"no handler\" (wharf failed retry sends them back)"
        );
    }
}
