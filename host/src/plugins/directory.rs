//! The plugin directory as a source: every `*.wasm` in it is loaded at start, and while
//! the host runs a watch (inotify, debounced) loads new and changed files and unloads
//! removed ones. A file that fails to load is refused with its reason and whatever was
//! serving keeps serving.
//!
//! Replace a plugin by writing the new file under another name and renaming it over the
//! old one (or into the directory): the watch then never sees a half-written file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

use super::Catalog;
use crate::runtime::{LoadError, Runtime};

/// How long a file must be quiet before it is (re)loaded: lets a copy finish.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// When and how big a file was when it was last looked at. Loading opens the file, which
/// the watch reports too; an unchanged stamp means there is nothing to reload.
type Stamp = (SystemTime, u64);

/// Load every `*.wasm` in `dir` into `catalog`. Returns the files refused, including
/// those whose plugin name another file (earlier in name order) already provides.
pub async fn load(
    catalog: &Catalog,
    runtime: &Runtime,
    dir: &Path,
) -> std::io::Result<Vec<LoadError>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_plugin_file(p))
        .collect();
    files.sort();
    let mut errors = Vec::new();
    let mut duplicates = Vec::new();
    for path in files {
        match runtime.load(&path).await {
            Ok(plugin) => duplicates = catalog.put_file(plugin),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(duplicates);
    Ok(errors)
}

/// Watches the plugin directory while it lives; dropping it stops the watch.
pub struct Watch {
    _debouncer: Debouncer<RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keep `catalog` in step with the `*.wasm` files of `dir`.
pub fn watch(
    catalog: Arc<Catalog>,
    runtime: Arc<Runtime>,
    dir: &Path,
) -> notify_debouncer_mini::notify::Result<Watch> {
    let (tx, mut rx) = mpsc::unbounded_channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |events| {
        let _ = tx.send(events);
    })?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    // Empty at first: a file's first event reloads it, which costs one read when it
    // has not changed (same hash, nothing swapped) and misses nothing that changed
    // between the initial load and this watch.
    let mut stamps: BTreeMap<PathBuf, Stamp> = BTreeMap::new();
    let dir = dir.to_owned();
    let task = tokio::spawn(async move {
        while let Some(events) = rx.recv().await {
            let mut paths: Vec<PathBuf> = match events {
                Ok(events) => events.into_iter().map(|e| e.path).collect(),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "plugin directory watch: {e}");
                    continue;
                }
            };
            paths.sort();
            paths.dedup();
            for path in paths.into_iter().filter(|p| is_plugin_file(p)) {
                let now = stamp(&path);
                if now == stamps.get(&path).copied() {
                    continue;
                }
                match now {
                    Some(s) => {
                        stamps.insert(path.clone(), s);
                        reload(&catalog, &runtime, &path).await;
                    }
                    None => {
                        stamps.remove(&path);
                        if catalog.file(&path).is_some() {
                            tracing::info!(file = %path.display(), "plugin file removed");
                            log_duplicates(catalog.remove_file(&path));
                        }
                    }
                }
            }
        }
    });
    Ok(Watch {
        _debouncer: debouncer,
        task,
    })
}

/// Load a new or changed file and serve it, or log why it was refused.
async fn reload(catalog: &Catalog, runtime: &Runtime, path: &Path) {
    let serving = catalog.file(path);
    match runtime.load(path).await {
        Ok(plugin) if serving.as_ref().is_some_and(|s| s.sha256 == plugin.sha256) => {}
        Ok(plugin) => {
            crate::metrics::plugin_reload("served");
            log_duplicates(catalog.put_file(plugin));
        }
        Err(e) => {
            crate::metrics::plugin_reload("refused");
            match serving {
                Some(old) => tracing::error!(
                    plugin = old.name(),
                    version = old.manifest.version,
                    "plugin file refused, the loaded version keeps serving: {e}"
                ),
                None => tracing::error!("plugin file refused: {e}"),
            }
        }
    }
}

fn log_duplicates(duplicates: Vec<LoadError>) {
    for e in duplicates {
        tracing::warn!("plugin file not served: {e}");
    }
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| {
        (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        )
    })
}
