//! The `wharf` command, built in the test crate so fleet tests can run real host processes
//! (`CARGO_BIN_EXE_wharf-under-test`) and kill them.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    wharf_host::cli::exit_code(wharf_host::cli::main().await)
}
