//! Running the `wharf` binary of an integration test against a test host's database.

use crate::Host;

/// `wharf <args>` of the binary `bin` (an integration test's
/// `env!("CARGO_BIN_EXE_wharf-under-test")`) against the database of `host`, logging
/// warnings only; run off the async threads.
pub async fn wharf_on(bin: &'static str, host: &Host, args: &[&str]) -> std::process::Output {
    let url = host.config.database.url.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(&args)
            .env("WHARF_DATABASE_URL", url)
            .env("WHARF_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
