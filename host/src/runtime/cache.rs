//! On-disk cache of compiled components, keyed by the wasm's sha256 and the engine's
//! precompile-compatibility hash, so a restart loads a plugin in well under a millisecond
//! instead of recompiling it (~50 ms).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Compile `wasm` (whose sha256 is `sha256`) or load its compiled form from `dir`.
pub(super) fn compile(
    engine: &Engine,
    dir: &Path,
    wasm: &[u8],
    sha256: &str,
) -> wasmtime::Result<Component> {
    if let Some(component) = cached(engine, dir, sha256) {
        return Ok(component);
    }
    let compiled = engine.precompile_component(wasm)?;
    let path = artifact_path(engine, dir, sha256);
    if let Err(e) = write_atomically(dir, &path, &compiled) {
        tracing::warn!(dir = %dir.display(), "cannot cache compiled plugin, it will be recompiled on restart: {e}");
    }
    from_precompiled(engine, &compiled)
}

/// The compiled form of the wasm whose sha256 is `sha256`, if `dir` has a usable one.
pub(super) fn cached(engine: &Engine, dir: &Path, sha256: &str) -> Option<Component> {
    let path = artifact_path(engine, dir, sha256);
    if !path.exists() {
        return None;
    }
    load_cached(engine, &path)
        .inspect_err(|e| {
            tracing::warn!(path = %path.display(), "recompiling: cached artifact is unusable: {e}")
        })
        .ok()
}

fn artifact_path(engine: &Engine, dir: &Path, sha256: &str) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()))
}

#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: files in the cache directory are written only by `compile` above, from
    // `Engine::precompile_component` of an engine with the same compatibility hash (it is
    // part of the file name). The cache directory must be writable only by the host's user.
    unsafe { Component::deserialize_file(engine, path) }
}

#[allow(unsafe_code)]
fn from_precompiled(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `compiled` was produced by `engine.precompile_component` just now.
    unsafe { Component::deserialize(engine, compiled) }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
