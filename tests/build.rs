//! Builds every plugin in `plugins/` (examples and test fixtures) for wasm32-wasip2, so
//! `cargo test` needs no manual step, and tells the tests where the `.wasm` files are.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_owned();
    let plugins = root.join("plugins");
    let target_dir = root.join("target").join("plugins");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", root.join("sdk").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Do not leak this build's settings (host rustflags, jobserver) into the guest build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .status()
        .expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins failed; run `cargo build --release --workspace --target wasm32-wasip2` in plugins/ to see why (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    println!(
        "cargo:rustc-env=WHARF_PLUGINS_OUT={}",
        target_dir.join("wasm32-wasip2").join("release").display()
    );
}
