//! What a plugin writes, as an operator reads it: in a `wharf run` logging text and in
//! `wharf failed list`, a plugin's log lines, prints and reasons are one escaped line each
//! (no forged host line at the start of a line, no terminal escape; colours only on a
//! terminal), a 4 MiB reason is cut
//! to `runtime.max_reason_bytes` with a marker, an exit is named with its status; and a
//! retry hint of ten years waits the policy's `max_delay_ms`.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use sqlx::Row;
use wharf_tests::{Backend, Host, plugin_wasm};

/// The forged line the `hostile.forge` fixture writes, as it would start a line.
const FORGED_LINE_START: &str = "2026-12-02T10:00:00.000000Z ERROR";

/// `wharf <args>` on the database and plugins of `dir`, logging text; its stdout and stderr.
fn wharf(dir: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf-under-test"))
        .args(args)
        .env(
            "WHARF_DATABASE_URL",
            format!("sqlite://{}", dir.join("w.db").display()),
        )
        .env("WHARF_PLUGINS_DIR", dir.join("plugins"))
        .env("WHARF_PLUGINS_CACHE_DIR", dir.join("cache"))
        .env("WHARF_RETRY_MAX_RETRIES", "0")
        .env("WHARF_LOG", "info")
        .env_remove("WHARF_LOG_FORMAT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "wharf {args:?}: {stderr}");
    (stdout, stderr)
}

#[test]
fn a_plugins_text_reaches_the_log_and_the_terminal_as_one_escaped_bounded_line() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugin_wasm("fixture-hostile"), plugins.join("hostile.wasm")).unwrap();
    for (kind, payload) in [
        ("hostile.forge", json!({})),
        ("hostile.huge-reason", json!({ "bytes": 4 << 20 })),
        ("hostile.exit", json!({})),
    ] {
        let payload = payload.to_string();
        wharf(
            dir.path(),
            &[
                "publish", "--queue", "q", "--kind", kind, "--json", &payload,
            ],
        );
    }
    let (_, log) = wharf(dir.path(), &["run", "--until-idle"]);
    let (list, _) = wharf(dir.path(), &["failed", "list"]);

    for (what, text) in [("the run's log", &log), ("wharf failed list", &list)] {
        assert!(
            !text.lines().any(|l| l.starts_with(FORGED_LINE_START)),
            "{what} has a forged line:\n{text}"
        );
        assert!(
            !text.contains('\u{1b}'),
            "{what} has a terminal escape:\n{text}"
        );
        let longest = text.lines().map(str::len).max().unwrap_or(0);
        assert!(
            longest < 8 << 10,
            "{what} has a line of {longest} bytes (the 4 MiB reason is cut)"
        );
    }
    let escaped =
        r"ok\n2026-12-02T10:00:00.000000Z ERROR wharf_host::dispatch: FORGED\r\u{1b}[31mred";
    let log_lines = log.lines().filter(|l| l.contains(escaped)).count();
    assert_eq!(
        log_lines, 2,
        "the log line and the reject's reason are each one escaped line:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains(r"INFO wharf_host::runtime: 2026-12-02T10:00:00.000000Z ERROR wharf_host::dispatch: FORGED\r\u{1b}[31mred")),
        "a printed line is a line of the log of its own, behind the host's prefix:\n{log}"
    );
    assert!(list.contains(escaped), "{list}");
    assert!(
        log.contains(r#"plugin="hostile" runs=3 settled=3 handled=0 runs_per_settled="1.00""#),
        "three messages run once each and dead-lettered read as no repeated run:\n{log}"
    );
    assert!(
        list.contains("[cut: ") && list.contains(&format!(" of {} bytes]", 4 << 20)),
        "the cut reason says how much was cut:\n{list}"
    );
    assert!(
        list.contains("trapped: exited with status 1 (the handler called exit"),
        "{list}"
    );
}

async fn error_of(host: &Host, kind: &str) -> String {
    let failed = host.failed().await;
    failed
        .iter()
        .find(|f| f.kind == kind)
        .unwrap_or_else(|| panic!("no failed {kind}: {failed:#?}"))
        .error
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_is_kept_within_max_reason_bytes_in_every_attempt() {
    let host = Host::start_with(Backend::Sqlite, &["fixture-hostile"], |c| {
        c.runtime.max_reason_bytes = 1024;
        c.retry.max_retries = 1;
        c.retry.base_delay_ms = 1;
    })
    .await;
    host.publish("test", "hostile.huge-reason", json!({ "bytes": 4 << 20 }))
        .await;
    host.drain().await;
    let error = error_of(&host, "hostile.huge-reason").await;
    assert!(
        error.len() <= 1024 + "rejected: ".len()
            && error.ends_with(&format!(" of {} bytes]", 4 << 20)),
        "{} bytes: {}",
        error.len(),
        &error[error.len().saturating_sub(80)..]
    );
    for row in host.rows("SELECT error FROM attempt_errors").await {
        let attempt: String = row.get(0);
        assert!(
            attempt.len() <= 1024 + "rejected: ".len(),
            "{}",
            attempt.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_hint_of_ten_years_waits_the_policys_max_delay() {
    let host = Host::start_with(Backend::Sqlite, &["fixture-hostile"], |c| {
        c.retry.max_delay_ms = 60_000;
    })
    .await;
    let ten_years = 10 * 365 * 86_400;
    host.publish("test", "hostile.far-retry", json!({ "n": ten_years }))
        .await;
    let (_, settled) = host
        .worker
        .run_batch(&["test".to_owned()], 10)
        .await
        .unwrap();
    assert_eq!(settled.retried, 1, "{settled:?}");
    let delays = host.rows("SELECT delay_ms FROM attempt_errors").await;
    let delay: i64 = delays[0].get(0);
    assert_eq!(delay, 60_000, "the hint is capped at retry.max_delay_ms");
}
