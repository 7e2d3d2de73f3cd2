//! The `wharf` binary: parse the command line and hand over to `wharf_host::cli`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match wharf_host::cli::main().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
