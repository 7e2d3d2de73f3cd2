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

    ensure_wasm_target(&plugins);
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
        "cargo:rustc-env=FIXTURE_PLUGINS_DIR={}",
        target_dir.join("wasm32-wasip2").join("release").display()
    );
}

/// rustup installs the targets of `rust-toolchain.toml` only together with a toolchain it
/// installs; on a machine that already has stable, add the missing target here so a fresh
/// clone's `cargo test` works.
fn ensure_wasm_target(plugins: &std::path::Path) {
    let libdir = Command::new("rustc")
        .current_dir(plugins)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output();
    let installed = match libdir {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).is_dir()
        }
        _ => false,
    };
    if installed {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    let added = Command::new("rustup")
        .current_dir(plugins)
        .args(["target", "add", "wasm32-wasip2"])
        .status();
    if !matches!(added, Ok(s) if s.success()) {
        println!(
            "cargo:warning=could not run `rustup target add wasm32-wasip2`; install the target by hand"
        );
    }
}
