//! Hot reload from the plugin directory: a new version dropped in while a steady stream
//! is handled is swapped in without losing or doubling a message, each message recorded
//! with the version that ran it; broken files are refused while the running version
//! keeps serving; a removed file unloads the plugin.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use wharf_host::envelope::NewMessage;
use wharf_host::plugins::{Catalog, directory};
use wharf_host::transport::pump::StopWhen;
use wharf_tests::{
    Backend, Host, conformance, handled_once_by_their_version, plugin_wasm, wait_for,
};

conformance!(a_new_version_dropped_in_under_load_is_swapped_in_exactly_once);

/// Put `bytes` into the plugin directory as `name`, the way an operator should: written
/// under another name, then renamed over the old file.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Wait until the catalog serves `versioned` with hash `sha256` (or none, for `None`).
async fn serving(catalog: &Catalog, sha256: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = catalog.current().get("versioned").map(|p| p.sha256.clone());
        if now.as_deref() == sha256 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the watch did not pick up the change within 10 s (serving {now:?}, want {sha256:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_new_version_dropped_in_under_load_is_swapped_in_exactly_once(backend: Backend) {
    let host = Host::start(backend, &[]).await;
    let dir = host.config.plugins.dir.clone();
    let v1 = std::fs::read(plugin_wasm("fixture-versioned-v1")).unwrap();
    let v2 = std::fs::read(plugin_wasm("fixture-versioned-v2")).unwrap();
    let v1_sha = host
        .runtime
        .load_bytes(Path::new("v1"), v1.clone())
        .await
        .unwrap()
        .sha256;
    let v2_sha = host
        .runtime
        .load_bytes(Path::new("v2"), v2.clone())
        .await
        .unwrap()
        .sha256;
    let _watch = directory::watch(host.catalog.clone(), host.runtime.clone(), &dir).unwrap();
    install(&dir, "versioned.wasm", &v1);
    serving(&host.catalog, Some(&v1_sha)).await;

    const TOTAL: usize = 1_200;
    let (stop, stopped) = watch::channel(false);
    let work = host.worker.run(StopWhen::default(), stopped);
    let script = async {
        let mut published_after_swap = Vec::new();
        for i in 0..TOTAL / 10 {
            let batch: Vec<NewMessage> = (0..10)
                .map(|_| NewMessage::new("test", "test.versioned", br#"{"spin_ms":1}"#.to_vec()))
                .collect();
            if i * 10 >= 800 {
                published_after_swap.extend(batch.iter().map(|m| m.id));
            }
            host.store.enqueue(&batch).await.unwrap();
            match i * 10 {
                400 => install(&dir, "versioned.wasm", &v2),
                // v2 must be serving before the stream goes on to the broken files.
                700 => serving(&host.catalog, Some(&v2_sha)).await,
                800 => install(&dir, "versioned.wasm", b"\0asm\x0d\0\x01\0 truncated"),
                1_000 => install(
                    &dir,
                    "versioned.wasm",
                    &std::fs::read(plugin_wasm("fixture-wrong-world")).unwrap(),
                ),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_for(
            "the stream to be handled",
            Duration::from_secs(30),
            async || host.count("SELECT COUNT(*) FROM processed").await >= TOTAL as i64,
        )
        .await;
        stop.send(true).unwrap();
        published_after_swap
    };
    let (report, after_swap) = tokio::join!(work, script);
    report.unwrap();

    // The refused files changed nothing: v2 still serves.
    assert_eq!(
        host.catalog.current().get("versioned").unwrap().sha256,
        v2_sha
    );
    assert_eq!(host.count("SELECT COUNT(*) FROM inbox").await, 0);
    let (counts, version_of) =
        handled_once_by_their_version(&host, TOTAL, &[("1.0.0", &v1_sha), ("2.0.0", &v2_sha)])
            .await;
    assert!(counts[0] >= 200 && counts[1] >= 200, "{counts:?}");
    for id in &after_swap {
        assert_eq!(
            version_of[&id.to_string()],
            "2.0.0",
            "{id} ran on v1 after the swap"
        );
    }

    // Removing the file unloads the plugin.
    std::fs::remove_file(dir.join("versioned.wasm")).unwrap();
    serving(&host.catalog, None).await;
}
