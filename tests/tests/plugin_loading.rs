//! Loading plugins: bad files are refused with an error naming the file and the problem,
//! and the other plugins still load; compiled components are cached on disk.

use wharf_host::plugins::{Catalog, directory};
use wharf_host::runtime::{LoadError, Runtime};
use wharf_tests::{plugin_wasm, test_config};

fn runtime(dir: &std::path::Path) -> Runtime {
    let config = test_config(dir);
    config.sandbox().unwrap()
}

#[tokio::test]
async fn garbage_a_core_module_and_the_wrong_world_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let err = rt.load(&garbage).await.err().expect("garbage refused");
    assert!(matches!(err, LoadError::Invalid { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a valid WebAssembly component: no WebAssembly component header",
            garbage.display()
        )
    );

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = rt.load(&core).await.err().expect("core module refused");
    assert!(
        err.to_string()
            .contains("it is a core module; build it for the wasm32-wasip2 target"),
        "{err}"
    );

    let wrong = plugin_wasm("fixture-wrong-world");
    let err = rt.load(&wrong).await.err().expect("wrong world refused");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(&wrong.display().to_string()), "{text}");
    assert!(
        text.contains(
            "does not implement the wharf:plugin/plugin world, 0.5.0, 0.4.0, 0.3.0 or 0.2.0"
        ),
        "{text}"
    );

    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(plugin_wasm("fixture-noop")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = rt.load(&truncated).await.err().expect("truncated refused");
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
}

#[tokio::test]
async fn a_bad_file_does_not_stop_the_others_from_loading() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"nope").unwrap();
    std::fs::copy(plugin_wasm("fixture-noop"), plugins.join("noop.wasm")).unwrap();
    std::fs::copy(plugin_wasm("fixture-noop"), plugins.join("noop-again.wasm")).unwrap();
    std::fs::write(plugins.join("README.txt"), b"ignored").unwrap();
    let rt = runtime(dir.path());
    let catalog = Catalog::new();
    let errors = directory::load(&catalog, &rt, &plugins).await.unwrap();
    let set = catalog.current();
    assert_eq!(set.iter().map(|p| p.name()).collect::<Vec<_>>(), ["noop"]);
    let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("broken.wasm: not a valid WebAssembly component"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("plugin name \"noop\" is already provided by"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn compiled_components_are_cached_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let plugin = rt.load(&plugin_wasm("fixture-noop")).await.unwrap();
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1);
    assert!(
        cached[0].starts_with(&plugin.sha256) && cached[0].ends_with(".cwasm"),
        "{cached:?}"
    );
    // A second runtime loads from the cache and reports the same identity.
    let again = runtime(dir.path())
        .load(&plugin_wasm("fixture-noop"))
        .await
        .unwrap();
    assert_eq!(
        (again.name(), again.sha256.as_str()),
        ("noop", plugin.sha256.as_str())
    );
}
