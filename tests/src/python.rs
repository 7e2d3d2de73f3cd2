//! Python plugins for the tests: `plugins/python/<name>` built into a component with
//! componentize-py (the pinned version `.ci/run` installs), once per test process, and
//! a host serving one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use wharf_host::config::Config;

use crate::{Backend, Host};

/// The componentize-py release the SDK is built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The `componentize-py` to run: on `PATH`, else beside the `python3` that has the
/// package (pip's scripts directory, which a pyenv shim may not cover yet).
fn componentize_py() -> PathBuf {
    let on_path = Command::new("componentize-py").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("componentize-py");
    }
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    let beside =
        PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim()).join("componentize-py");
    assert!(
        beside.is_file(),
        "componentize-py is not installed; run `python3 -m pip install componentize-py=={COMPONENTIZE_PY}` (`.ci/run` does)"
    );
    beside
}

/// The component built from `plugins/python/<name>/app.py` with the SDK in `sdk/python`
/// against the `plugin-http` world, as the README builds them, on first use in this
/// process; and how long the build took.
pub fn component(name: &str) -> (PathBuf, Duration) {
    component_of_world(name, "plugin-http")
}

/// [`component`] built against `world` of `wit/plugin.wit`.
pub fn component_of_world(name: &str, world: &str) -> (PathBuf, Duration) {
    static BUILT: OnceLock<Mutex<HashMap<String, (PathBuf, Duration)>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(format!("{name} {world}"))
        .or_insert_with(|| build(name, world))
        .clone()
}

fn build(name: &str, world: &str) -> (PathBuf, Duration) {
    let root = root();
    let out_dir = root.join("target").join("python-plugins");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}.{world}.wasm"));
    let started = Instant::now();
    let built = Command::new(componentize_py())
        .current_dir(&root)
        .args(["-d", "wit", "-w", world, "componentize", "app", "-p"])
        .arg(root.join("plugins").join("python").join(name))
        .arg("-p")
        .arg(root.join("sdk").join("python"))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("componentize-py runs");
    assert!(
        built.status.success(),
        "componentize-py could not build plugins/python/{name}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    (out, started.elapsed())
}

/// Where hosts of these tests keep compiled Python components: one cache for the
/// process, so each component is compiled once.
pub fn cache_dir() -> PathBuf {
    root().join("target").join("python-plugins").join("cache")
}

/// A host on `backend` serving the Python plugin `name` (with the tests' 32 MiB memory
/// limit: a componentize-py interpreter starts at ~12.5 MiB).
pub async fn host(backend: Backend, name: &str, adjust: impl FnOnce(&mut Config)) -> Host {
    Host::start_with(backend, &[], |c| {
        serve(c, name);
        adjust(c);
    })
    .await
}

/// Put the Python plugin `name` into `config`'s plugin directory, compiled through the
/// shared cache.
pub fn serve(config: &mut Config, name: &str) {
    serve_of_world(config, name, "plugin-http");
}

/// [`serve`] the plugin built against `world`.
pub fn serve_of_world(config: &mut Config, name: &str, world: &str) {
    let (wasm, _) = component_of_world(name, world);
    config.plugins.cache_dir = cache_dir();
    std::fs::create_dir_all(&config.plugins.dir).unwrap();
    std::fs::copy(&wasm, config.plugins.dir.join(format!("{name}.wasm"))).unwrap();
}
