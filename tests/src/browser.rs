//! The browser the dashboard's test drives: Debian's `chromium` and `chromedriver`,
//! installed with apt-get the first time a test needs them on a machine that has neither
//! (the README's test command works on a fresh machine), once per test process.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Its WebDriver server.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Make sure both are installed: install Debian's `chromium` and `chromium-driver` when one
/// is missing, printing apt-get's progress; panic saying what to run when that fails.
pub fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(problem) = INSTALLED.get_or_init(install_if_missing) {
        panic!("{problem}");
    }
}

fn missing() -> Vec<&'static str> {
    [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|tool| !Path::new(tool).exists())
        .collect()
}

fn install_if_missing() -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let advice = "install Debian's chromium and chromium-driver as root: apt-get update && apt-get install -y chromium chromium-driver";
    eprintln!(
        "{} missing: installing chromium and chromium-driver with apt-get (once per machine, a few minutes)",
        missing.join(" and ")
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("could not run apt-get ({e}); {advice}"))
            .and_then(|status| {
                status.success().then_some(()).ok_or_else(|| {
                    format!("apt-get {} failed ({status}); {advice}", args.join(" "))
                })
            })
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "chromium", "chromium-driver"])?;
    let still = self::missing();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} still missing after apt-get install; {advice}",
            still.join(" and ")
        ))
    }
}
