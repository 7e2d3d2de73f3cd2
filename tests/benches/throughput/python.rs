//! What a Python plugin costs against a Rust one: the component's size and build time,
//! its compile (cold) and cached load, the memory it starts with, and a fresh instance +
//! call per message (the interpreter comes initialised in the component's image, mapped
//! copy-on-write, not started per message).

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use wharf_host::runtime::{LoadError, StateError, StateReader};
use wharf_tests::{python, test_config};

use super::sandbox::{call_cost, payload_1k};

const CALLS: u32 = 2_000;

/// State with no keys: every read finds nothing.
struct Empty;

#[async_trait::async_trait]
impl StateReader for Empty {
    async fn read(&self, _: &str, _: &str) -> Result<Option<(Vec<u8>, i64)>, StateError> {
        Ok(None)
    }
}

/// Print the Python costs beside `rust_per_call`, the Rust noop's us per message.
pub async fn costs(rust_per_call: f64) {
    for name in ["noop", "audit-log"] {
        let (wasm, built) = python::component(name);
        let size = std::fs::metadata(&wasm).unwrap().len();
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let started = Instant::now();
        let runtime = config.sandbox().unwrap();
        let plugin = runtime.load(&wasm).await.unwrap();
        let compiled = started.elapsed();
        let started = Instant::now();
        let again = config.sandbox().unwrap();
        again.load(&wasm).await.unwrap();
        let cached = started.elapsed();
        let (kind, payload) = match name {
            "noop" => (("bench.noop", None), payload_1k()),
            _ => (
                ("audit.record", Some("o1")),
                json!({"actor": "ana", "action": "refund"})
                    .to_string()
                    .into_bytes(),
            ),
        };
        let per_call = call_cost(&runtime, &plugin, kind, payload, Arc::new(Empty), CALLS).await;
        println!(
            "python {name}: component {:.1} MB (componentize-py {:.1} s), compiled in {:.1} s, loaded from the compile cache in {:.0} ms; fresh instance + handle + drop {per_call:.0} us/message = {:.0}x the Rust noop's {rust_per_call:.1} us",
            size as f64 / 1e6,
            built.as_secs_f64(),
            compiled.as_secs_f64(),
            cached.as_secs_f64() * 1e3,
            per_call / rust_per_call,
        );
    }
    let (wasm, _) = python::component("noop");
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.runtime.memory_limit_mib = 1;
    match config.sandbox().unwrap().load(&wasm).await {
        Err(LoadError::MemoryTooSmall { needs, .. }) => println!(
            "python: linear memory at start {:.1} MiB: runtime.memory_limit_mib must be >= {}",
            needs as f64 / 1048576.0,
            needs.div_ceil(1 << 20)
        ),
        Err(e) => panic!("expected a refusal for memory, got {e}"),
        Ok(_) => panic!("a Python plugin loaded under 1 MiB of memory"),
    }
}
