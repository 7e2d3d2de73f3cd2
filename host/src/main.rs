//! The `wharf` binary: parse the command line and hand over to `wharf_host::cli`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    wharf_host::cli::exit_code(wharf_host::cli::main().await)
}
