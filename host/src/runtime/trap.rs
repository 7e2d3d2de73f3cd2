//! Why a call trapped, in one actionable line: the limit it went over (memory, deadline,
//! fuel, resources held, a header map's size), an exit, an uncaught Python exception or a Rust panic read from the guest's
//! stderr (where componentize-py and Rust's panic hook write them), else wasmtime's own
//! text.

use wasmtime::Trap;
use wasmtime::component::ResourceTableError;
use wasmtime_wasi_http::FieldMapError;

use super::MAX_RESOURCES;
use super::host_state::HostState;
use super::limits::Limits;
use super::outbound::MAX_FIELDS_BYTES;

/// `bytes` in MiB, with a decimal unless whole: a limit and what went over it never read
/// the same.
fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}", bytes >> 20)
    } else {
        format!("{:.2}", bytes as f64 / f64::from(1 << 20))
    }
}

/// A one-line, actionable description of why a call trapped.
pub(super) fn describe(error: &wasmtime::Error, state: &HostState, limits: &Limits) -> String {
    if let Some(wanted) = state.limiter.exceeded {
        return format!(
            "memory limit of {} MiB exceeded (the guest tried to grow to {} MiB); raise the plugin's memory limit (its manifest or [plugin.<name>] memory_limit_mib, within runtime.memory_limit_mib) if this is legitimate",
            mib(limits.memory_bytes),
            mib(wanted)
        );
    }
    if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        return format!(
            "held more than {MAX_RESOURCES} resources at once (WASI streams and pollables, HTTP requests, header maps, bodies); drop what the handler no longer uses"
        );
    }
    if let Some(FieldMapError::TotalSizeTooBig) = error.downcast_ref::<FieldMapError>() {
        return format!(
            "made a header map of more than {} KiB, the most one may hold",
            MAX_FIELDS_BYTES >> 10
        );
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!(
            "exited with status {} (the handler called exit instead of returning; return a retry or a reject instead)",
            exit.0
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "deadline of {} ms exceeded; raise the plugin's deadline (its manifest or [plugin.<name>] deadline_ms, within runtime.deadline_ms) if the handler needs longer",
            limits.deadline.as_millis()
        ),
        Some(Trap::OutOfFuel) => format!(
            "fuel budget of {} exhausted",
            limits.fuel.unwrap_or_default()
        ),
        _ => {
            let stderr = String::from_utf8_lossy(&state.stderr.contents().0).into_owned();
            if let Some(exception) = python_exception(&stderr) {
                return exception;
            }
            match panic_message(&stderr) {
                Some(panic) => format!("panicked: {panic}"),
                None => format!("{error:#}"),
            }
        }
    }
}

/// The message of a Rust panic as printed to stderr (`thread '<unnamed>' (1) panicked at
/// src/lib.rs:10:5:` and the message's lines): "message (at src/lib.rs:10:5)".
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines().skip_while(|l| !l.contains("panicked at "));
    let header = lines.next()?;
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note:")).collect();
    let location = header
        .split_once("panicked at ")
        .map_or("", |(_, at)| at)
        .trim_end_matches(':');
    Some(format!("{} (at {location})", message.join(" ").trim()))
}

/// The last uncaught Python exception of a componentize-py guest's stderr, its type and
/// message with where it was raised: "uncaught Python exception TypeError: ... (at
/// "app.py", line 12, in handle)". The traceback itself stays in the log.
fn python_exception(stderr: &str) -> Option<String> {
    let (_, traceback) = stderr.rsplit_once("Traceback (most recent call last):\n")?;
    let mut location = None;
    for line in traceback.lines() {
        if let Some(frame) = line.strip_prefix("  File ") {
            location = Some(frame.trim());
        } else if !line.starts_with(' ') && !line.is_empty() {
            let at = location.map(|l| format!(" (at {l})")).unwrap_or_default();
            return Some(format!("uncaught Python exception {}{at}", line.trim()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_reads_as_its_message_and_where() {
        let stderr = "\nthread '<unnamed>' (1) panicked at src/lib.rs:10:5:\nfixture panics\non purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "fixture panics on purpose (at src/lib.rs:10:5)"
        );
        assert_eq!(panic_message("nothing of the kind"), None);
    }

    #[test]
    fn an_uncaught_python_exception_reads_as_its_type_message_and_line() {
        let stderr = "Traceback (most recent call last):\n  File \"/0/app.py\", line 16, in handle\n    raise KeyError(\"missing\")\nKeyError: 'missing'\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:600:5:\nPython function threw an unexpected exception\n";
        assert_eq!(
            python_exception(stderr).unwrap(),
            "uncaught Python exception KeyError: 'missing' (at \"/0/app.py\", line 16, in handle)"
        );
        assert_eq!(python_exception("panicked at src/lib.rs:1:1:\nboom"), None);
    }

    #[test]
    fn memory_sizes_keep_their_fraction() {
        assert_eq!(mib(32 << 20), "32");
        assert_eq!(mib((32 << 20) + (64 << 10)), "32.06");
    }
}
