//! The state a handler sees when it runs inside the settle: each locked key's committed
//! value, overlaid with the writes of the batch's messages before it (read-your-writes).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::usage::StateUsage;
use crate::effects::Effects;

/// The version a key has after a write: one more, or 0 when deleted (absent).
pub(crate) fn next_version(version: i64, value: Option<&[u8]>) -> i64 {
    if value.is_some() { version + 1 } else { 0 }
}

/// A [`StateView`] shared with the sandbox while a handler runs over it.
pub type SharedView = Arc<Mutex<StateView>>;

/// One key of a [`StateView`].
#[derive(Debug, Clone)]
struct Entry {
    /// The version committed when the key was loaded (absent = 0).
    committed: i64,
    /// What it held then.
    committed_usage: StateUsage,
    /// The value with the batch's writes so far applied (`None` = absent).
    value: Option<Vec<u8>>,
    /// Its version.
    version: i64,
}

/// Committed state keys of some plugins, with a batch's writes applied in order.
#[derive(Debug, Default)]
pub struct StateView {
    /// Entries by plugin, then key.
    plugins: HashMap<String, HashMap<String, Entry>>,
}

impl StateView {
    /// What a handler of `plugin` reads at `key`: the value (`None` when absent) and its
    /// version; `None` when the key was never loaded.
    pub fn get(&self, plugin: &str, key: &str) -> Option<(Option<Vec<u8>>, i64)> {
        let entry = self.plugins.get(plugin)?.get(key)?;
        Some((entry.value.clone(), entry.version))
    }

    /// Add a key with its committed value and version (`None` when absent); a key
    /// already in the view keeps what it has.
    pub fn load(&mut self, plugin: &str, key: &str, committed: Option<(Vec<u8>, i64)>) {
        let keys = self.plugins.entry(plugin.to_owned()).or_default();
        if keys.contains_key(key) {
            return;
        }
        let (value, version) = match committed {
            Some((value, version)) => (Some(value), version),
            None => (None, 0),
        };
        keys.insert(
            key.to_owned(),
            Entry {
                committed: version,
                committed_usage: StateUsage::of(key, value.as_ref().map(Vec::len)),
                value,
                version,
            },
        );
    }

    /// Whether `key` of `plugin` was loaded.
    pub fn contains(&self, plugin: &str, key: &str) -> bool {
        self.plugins
            .get(plugin)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// The committed version `key` was loaded with.
    pub(crate) fn committed(&self, plugin: &str, key: &str) -> Option<i64> {
        Some(self.plugins.get(plugin)?.get(key)?.committed)
    }

    /// What `key` of `plugin` held when it was loaded (nothing when absent or not loaded).
    pub(crate) fn committed_usage(&self, plugin: &str, key: &str) -> StateUsage {
        self.plugins
            .get(plugin)
            .and_then(|keys| keys.get(key))
            .map_or_else(StateUsage::default, |e| e.committed_usage)
    }

    /// Apply the writes of a handled result of `plugin`; each written key must have been
    /// loaded (a key that was not is left out).
    pub fn apply(&mut self, plugin: &str, writes: &BTreeMap<String, Option<Vec<u8>>>) {
        let Some(keys) = self.plugins.get_mut(plugin) else {
            return;
        };
        for (key, value) in writes {
            if let Some(entry) = keys.get_mut(key) {
                entry.version = next_version(entry.version, value.as_deref());
                entry.value.clone_from(value);
            }
        }
    }

    /// The first key `effects` read at another version than the view's: the handler ran
    /// on state that changed. Keys not loaded are not compared.
    pub(crate) fn stale<'e>(&self, plugin: &str, effects: &'e Effects) -> Option<&'e str> {
        let keys = self.plugins.get(plugin);
        effects
            .reads
            .iter()
            .find(|(key, seen)| {
                keys.and_then(|k| k.get(key.as_str()))
                    .is_some_and(|e| e.version != **seen)
            })
            .map(|(key, _)| key.as_str())
    }
}
