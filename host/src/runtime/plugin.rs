//! Loading one plugin: read the `.wasm`, compile (or load from the cache), check it
//! implements the `wharf:plugin` world, read and validate its manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::outbound::MAX_GRANTS;
use super::outbound::grants::Grant;
use super::world::Pre;
use super::{CallContext, Limits, Outbound, Requested, Runtime, cache};
use crate::retry::RetryPolicy;
use crate::trace::TraceContext;
use crate::{names, router};

/// Magic and version of a WebAssembly component binary.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";
/// Magic and version of a core WebAssembly module binary.
const CORE_MODULE_HEADER: &[u8] = b"\0asm\x01\0\0\0";
/// The longest plugin name or version a manifest may give.
const MAX_MANIFEST_NAME_BYTES: usize = 64;

/// A loaded plugin, ready to be instantiated per message.
pub struct Plugin {
    /// The manifest the component reported.
    pub manifest: Manifest,
    /// Hex sha256 of the `.wasm` file: with the manifest version, the exact version.
    pub sha256: String,
    /// Where it was loaded from: its file, or `registry:<name>@<sha256>` for a fleet
    /// deployment.
    pub path: PathBuf,
    /// The limits its calls run under: its manifest's, within the host's, with its
    /// `[plugin.<name>]` settings applied over them.
    pub limits: Limits,
    /// The hosts its manifest asks to call that its grants do not cover, as it wrote them.
    pub not_granted: Vec<String>,
    /// The hosts it may call, and its requests in flight.
    pub(super) outbound: Arc<Outbound>,
    /// Pre-linked component: instantiating it per message is cheap.
    pre: Pre,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Identity.
    pub name: String,
    /// Version.
    pub version: String,
    /// Kind patterns it handles.
    pub subscriptions: Vec<String>,
    /// Its default retry policy, if it sets one.
    pub retry: Option<RetryPolicy>,
    /// The limits it asks for.
    pub limits: Requested,
    /// The hosts it asks to call (world 0.3.0 on), checked to read as grants.
    pub allowed_hosts: Vec<String>,
    /// Whether it asks for the messages of a key in order (world 0.4.0 on).
    pub ordered: bool,
}

/// Why a `.wasm` file was refused. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a valid WebAssembly component.
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the compiler said.
        reason: String,
    },
    /// A component whose linear memory starts larger than an instance may grow.
    #[error(
        "{path}: its memory starts at {:.1} MiB, more than runtime.memory_limit_mib = {} allows; raise runtime.memory_limit_mib (a Python plugin built with componentize-py starts at ~12.5 MiB)",
        *needs as f64 / 1048576.0,
        limit >> 20
    )]
    MemoryTooSmall {
        /// The file.
        path: PathBuf,
        /// Bytes its memory starts with.
        needs: usize,
        /// Bytes an instance may have.
        limit: usize,
    },
    /// A component, but not of the `wharf:plugin/plugin` world.
    #[error(
        "{path}: does not implement the wharf:plugin/plugin world, 0.5.0, 0.4.0, 0.3.0 or 0.2.0 ({reason}); build it with wharf-sdk's export! macro"
    )]
    WrongWorld {
        /// The file.
        path: PathBuf,
        /// What is missing or mismatched.
        reason: String,
    },
    /// Another file already provides a plugin of this name.
    #[error(
        "{path}: plugin name {name:?} is already provided by {first}; plugin names must be unique"
    )]
    Duplicate {
        /// The refused file.
        path: PathBuf,
        /// The name both claim.
        name: String,
        /// The file loaded first.
        first: PathBuf,
    },
    /// `manifest()` trapped or returned something unusable.
    #[error("{path}: invalid manifest: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Plugin {
    pub(super) fn pre(&self) -> &Pre {
        &self.pre
    }

    /// The version of the `wharf:plugin` world it was built against.
    pub fn world(&self) -> &'static str {
        self.pre.version()
    }

    /// Manifest name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Does this plugin subscribe to `kind`?
    pub fn subscribes_to(&self, kind: &str) -> bool {
        self.manifest
            .subscriptions
            .iter()
            .any(|p| router::matches(p, kind))
    }
}

impl Runtime {
    /// Load the plugin in `path`.
    pub async fn load(&self, path: &Path) -> Result<Plugin, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, wasm).await
    }

    /// Load a plugin from its bytes; `path` names it in errors. Compiling runs on a
    /// blocking thread, off the threads that handle messages.
    pub async fn load_bytes(&self, path: &Path, wasm: Vec<u8>) -> Result<Plugin, LoadError> {
        let sha256 = hex::encode(Sha256::digest(&wasm));
        let invalid = |reason: String| LoadError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if !wasm.starts_with(COMPONENT_HEADER) {
            return Err(invalid(if wasm.starts_with(CORE_MODULE_HEADER) {
                "it is a core module; build it for the wasm32-wasip2 target".into()
            } else {
                "no WebAssembly component header".into()
            }));
        }
        let (engine, dir, sha) = (self.engine.clone(), self.cache_dir.clone(), sha256.clone());
        let component =
            tokio::task::spawn_blocking(move || cache::compile(&engine, &dir, &wasm, &sha))
                .await
                .map_err(|e| invalid(format!("the compiler panicked: {e}")))?
                .map_err(|e| {
                    let reason = format!("{e:#}");
                    match initial_memory(&reason) {
                        Some(needs) if needs > self.limits.memory_bytes => {
                            LoadError::MemoryTooSmall {
                                path: path.to_owned(),
                                needs,
                                limit: self.limits.memory_bytes,
                            }
                        }
                        _ => invalid(reason),
                    }
                })?;
        self.link(path, sha256, component).await
    }

    /// Load the plugin whose wasm has hash `sha256` from the compiled-component cache,
    /// without its bytes; `None` when it is not cached.
    pub async fn load_cached(
        &self,
        path: &Path,
        sha256: &str,
    ) -> Option<Result<Plugin, LoadError>> {
        let component = cache::cached(&self.engine, &self.cache_dir, sha256)?;
        Some(self.link(path, sha256.to_owned(), component).await)
    }

    /// Check `component` implements the world and read its manifest.
    async fn link(
        &self,
        path: &Path,
        sha256: String,
        component: wasmtime::component::Component,
    ) -> Result<Plugin, LoadError> {
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        let pre = Pre::new(instance_pre).map_err(wrong_world)?;
        let manifest = self
            .read_manifest(&pre)
            .await
            .map_err(|reason| LoadError::Manifest {
                path: path.to_owned(),
                reason,
            })?;
        let (limits, notes) = self.limits.within(&manifest.limits);
        for note in notes {
            tracing::warn!(plugin = manifest.name, file = %path.display(), "manifest limits: {note}");
        }
        let limits = match self.overrides.get(&manifest.name) {
            Some(config) => limits.overridden_by(config),
            None => limits,
        };
        let grants = (self.grants.get(&manifest.name).cloned()).unwrap_or_else(|| Arc::from([]));
        let not_granted: Vec<String> = (manifest.allowed_hosts.iter())
            .filter(|ask| {
                let ask = Grant::parse(ask).expect("checked with the manifest");
                !grants.iter().any(|g| g.covers(&ask))
            })
            .cloned()
            .collect();
        if !not_granted.is_empty() {
            tracing::warn!(
                plugin = manifest.name,
                file = %path.display(),
                "its manifest asks to call {} and is not granted it; its requests there will be refused until [plugin.{}] allowed_hosts grants them",
                not_granted.join(", "),
                manifest.name
            );
        }
        let outbound = Outbound::new(&manifest.name, grants, limits.effects);
        Ok(Plugin {
            not_granted,
            outbound: Arc::new(outbound),
            manifest,
            sha256,
            path: path.to_owned(),
            limits,
            pre,
        })
    }

    async fn read_manifest(&self, pre: &Pre) -> Result<Manifest, String> {
        let mut store = self.new_store(
            CallContext {
                plugin: Arc::from("(loading)"),
                message_id: Uuid::nil(),
                config: Arc::new(BTreeMap::new()),
                state: Arc::new(super::NoState),
                trace: TraceContext::for_call(&BTreeMap::new()),
                request: false,
            },
            &self.limits,
            Arc::new(Outbound::none(self.limits.effects)),
            Arc::default(),
        );
        let manifest = pre.manifest(&mut store).await?;
        if let Err(e) = names::plugin(&manifest.name) {
            return Err(format!("name: {e}"));
        }
        let valid_version = (1..=MAX_MANIFEST_NAME_BYTES).contains(&manifest.version.len())
            && manifest.version.chars().all(|c| c.is_ascii_graphic());
        if !valid_version {
            return Err(format!(
                "version {:?} must be 1-{MAX_MANIFEST_NAME_BYTES} printable ASCII characters without spaces, e.g. 1.2.0",
                names::storable(&manifest.version)
            ));
        }
        if manifest.subscriptions.is_empty() {
            return Err(format!("{} subscribes to no message kinds", manifest.name));
        }
        if let Some(bad) = manifest
            .subscriptions
            .iter()
            .find(|p| !router::is_valid_pattern(p))
        {
            return Err(format!(
                "subscription {bad:?} is not a kind or pattern (words separated by '.', '*' and '#' as whole words)"
            ));
        }
        if let Some(policy) = &manifest.retry {
            policy
                .validate("manifest retry")
                .map_err(|e| e.to_string())?;
        }
        check_asks(&manifest.allowed_hosts)?;
        Ok(manifest)
    }
}

/// The hosts a manifest asks for must read as grants, and be no more than a plugin may be
/// granted.
fn check_asks(asks: &[String]) -> Result<(), String> {
    if asks.len() > MAX_GRANTS {
        return Err(format!(
            "allowed_hosts has {} entries, more than {MAX_GRANTS}; ask with patterns (https://*.example.com)",
            asks.len()
        ));
    }
    match asks.iter().find_map(|ask| Grant::parse(ask).err()) {
        Some(invalid) => Err(invalid.to_string()),
        None => Ok(()),
    }
}

/// The initial memory size, in bytes, the instance allocator refused a component for,
/// read from wasmtime's message ("memory has a minimum byte size of N which exceeds the
/// limit of ...").
fn initial_memory(reason: &str) -> Option<usize> {
    let (_, rest) = reason.split_once("minimum byte size of ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_asks_for_hosts_as_grants_are_written() {
        let asks =
            |hosts: &[&str]| check_asks(&hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        assert_eq!(asks(&[]), Ok(()));
        assert_eq!(
            asks(&["https://api.example.com", "http://*.example.org:*"]),
            Ok(())
        );
        let e = asks(&["https://api.example.com", "api.example.org"]).unwrap_err();
        assert!(e.contains("\"api.example.org\": needs a scheme"), "{e}");
        let e = asks(&["https://api\u{1b}[2J.example.com"]).unwrap_err();
        assert!(
            e.contains("control character") && !e.contains('\u{1b}'),
            "{e}"
        );
        let long = format!("https://{}.com", "a".repeat(10_000));
        let e = asks(&[long.as_str()]).unwrap_err();
        assert!(e.contains("longer than") && e.len() < 300, "{e}");
        let many = vec!["https://api.example.com"; MAX_GRANTS + 1];
        let e = asks(&many).unwrap_err();
        assert!(e.contains("65 entries, more than 64"), "{e}");
    }
}
