//! Hostile plugins (its own test binary, as it measures the process's memory): each abuse
//! of the `hostile` fixture, and the loop, memory and panic fixtures, is stopped with the
//! limit it went over named in the failed message; nothing of such a call is committed;
//! the host's resident memory stays bounded while they run; and a neighbour plugin on
//! another queue has all its messages handled meanwhile.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use wharf_host::envelope::NewMessage;
use wharf_tests::{Backend, Host, conformance};

conformance!(each_abuse_is_stopped_by_its_limit_and_the_neighbour_is_served);

/// Messages of the neighbour plugin, published between the abuses.
const NEIGHBOUR: usize = 300;
/// Most the process's resident memory may grow while the abuses run (the three
/// backends' tests run at once, each with up to 4 hostile calls of a 16 MiB guest).
const RSS_GROWTH_BOUND_MIB: u64 = 128;

/// Each abuse (kind, payload) and the words its failed message must hold; `None` for
/// the ones that succeed with their excess dropped.
fn abuses() -> Vec<(&'static str, serde_json::Value, Option<&'static str>)> {
    vec![
        (
            "hostile.fanout",
            json!({}),
            Some(
                "published more than 100 messages in one call; raise [plugin.hostile] max_publishes (at most [runtime] max_publishes)",
            ),
        ),
        (
            "hostile.big-publishes",
            json!({ "n": 100, "bytes": 100_000 }),
            Some(
                "buffered more than 4194304 bytes of publishes and state writes in one call; raise [plugin.hostile] max_effect_bytes",
            ),
        ),
        (
            "hostile.big-publishes",
            json!({ "n": 1, "bytes": 2_000_000 }),
            Some(
                "bytes, over the limit of 1048576 bytes; raise [plugin.hostile] max_payload_bytes (at most [inbox] max_payload_bytes)",
            ),
        ),
        (
            "hostile.huge-value",
            json!({ "bytes": 8 << 20 }),
            Some(
                "set a state value of 8388608 bytes, over the limit of 262144 bytes; raise [plugin.hostile] max_state_value_bytes",
            ),
        ),
        (
            "hostile.huge-kind",
            json!({}),
            Some("is 1048576 bytes long, over the limit of 255 bytes"),
        ),
        ("hostile.huge-key", json!({}), Some("ordering key \"kkkk")),
        (
            "hostile.huge-answer",
            json!({ "bytes": 2_000_000 }),
            Some(
                "bytes, over the limit of 1048576 bytes; raise [plugin.hostile] max_payload_bytes",
            ),
        ),
        (
            "hostile.forged-answer",
            json!({}),
            Some("contains '\\u{1b}'; allowed:"),
        ),
        (
            "hostile.forged-key",
            json!({}),
            Some("contains '\\u{1b}'; allowed: text without control characters"),
        ),
        (
            "hostile.key-flood",
            json!({}),
            Some(
                "wrote more than 1000 state keys in one call; raise [plugin.hostile] max_state_writes",
            ),
        ),
        (
            "hostile.read-flood",
            json!({}),
            Some(
                "read more than 20 state keys in one call; raise [plugin.hostile] max_state_reads (at most [runtime] max_state_reads)",
            ),
        ),
        ("hostile.log-flood", json!({ "n": 200 }), None),
        ("hostile.stdout-flood", json!({ "bytes": 16 << 20 }), None),
        (
            "hostile.http-fields",
            json!({ "bytes": 30_000 }),
            Some("held more than 512 resources at once"),
        ),
        (
            "hostile.http-fields",
            json!({ "n": 1, "bytes": 1 << 20 }),
            Some("made a header map of more than 32 KiB"),
        ),
        ("test.loop", json!({}), Some("deadline of 5000 ms exceeded")),
        (
            "test.alloc",
            json!({}),
            Some("memory limit of 16 MiB exceeded"),
        ),
        ("test.panic", json!({}), Some("panicked")),
    ]
}

async fn each_abuse_is_stopped_by_its_limit_and_the_neighbour_is_served(backend: Backend) {
    let plugins = [
        "fixture-hostile",
        "fixture-noop",
        "fixture-infinite-loop",
        "fixture-memory-bomb",
        "fixture-panic",
    ];
    let host = Host::start_with(backend, &plugins, |c| {
        c.inbox.queues = vec!["hostile".into(), "neighbour".into()];
        // Long enough for an unlimited fan-out to buffer hundreds of thousands of
        // messages, and for the neighbour's messages to be handled while the loop spins
        // even on a loaded 2-core machine (the three stores' tests at once); traps fail
        // at once.
        c.runtime.deadline_ms = 5_000;
        c.runtime.memory_limit_mib = 16;
        c.retry.max_retries = 0;
        // A plugin's own limit, within the host's (1,000).
        let hostile = c.plugin.entry("hostile".into()).or_default();
        hostile.max_state_reads = Some(20);
    })
    .await;
    let abuses = abuses();
    let mut messages = Vec::new();
    let mut ids = Vec::new();
    for (i, (kind, payload, _)) in abuses.iter().enumerate() {
        let abuse = NewMessage::new("hostile", kind, payload.to_string().into_bytes());
        ids.push(abuse.id);
        messages.push(abuse);
        for _ in 0..NEIGHBOUR / abuses.len() + usize::from(i < NEIGHBOUR % abuses.len()) {
            messages.push(NewMessage::new("neighbour", "test.noop", b"{}".to_vec()));
        }
    }
    host.store.enqueue(&messages).await.unwrap();

    let baseline = rss_kib();
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // How many abuses had settled when the neighbour's messages were all handled.
    let abuses_settled_by_then = async {
        let sql = "SELECT COUNT(*) FROM processed WHERE plugin = 'noop'";
        while host.count(sql).await < NEIGHBOUR as i64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        host.count("SELECT COUNT(*) FROM processed WHERE plugin <> 'noop'")
            .await
            + host.count("SELECT COUNT(*) FROM failed_messages").await
    };
    let (_, abuses_settled_by_then) = tokio::join!(host.drain(), abuses_settled_by_then);
    sampler.abort();
    assert!(
        abuses_settled_by_then < abuses.len() as i64,
        "the neighbour's messages waited for the abuses: all {abuses_settled_by_then} had settled before the neighbour's {NEIGHBOUR} were handled"
    );
    let growth_mib = peak.load(Ordering::Relaxed).saturating_sub(baseline) >> 10;
    eprintln!(
        "{backend:?}: resident memory {} MiB at the start, at most {growth_mib} MiB more during the abuses",
        baseline >> 10
    );
    assert!(
        growth_mib < RSS_GROWTH_BOUND_MIB,
        "resident memory grew by {growth_mib} MiB"
    );

    let failed = host.failed().await;
    for ((kind, payload, expected), id) in abuses.iter().zip(&ids) {
        let Some(expected) = expected else { continue };
        let error = failed
            .iter()
            .find(|f| f.message_id == *id)
            .map(|f| f.error.clone())
            .unwrap_or_else(|| {
                panic!("{kind} {payload} is not among the failed messages: {failed:#?}")
            });
        assert!(error.contains(expected), "{kind} {payload}: {error}");
    }
    let succeeded = abuses.iter().filter(|(_, _, e)| e.is_none()).count();
    assert_eq!(failed.len(), abuses.len() - succeeded, "{failed:#?}");
    assert_eq!(
        host.count("SELECT COUNT(*) FROM processed WHERE plugin = 'hostile'")
            .await,
        succeeded as i64,
        "the log and stdout floods succeed, their excess dropped"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM plugin_state").await,
        0,
        "no state write of a stopped call is committed"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM inbox WHERE queue = 'sink'")
            .await,
        0,
        "no publish of a stopped call is committed"
    );
    assert_eq!(
        host.count("SELECT COUNT(*) FROM processed WHERE plugin = 'noop'")
            .await,
        NEIGHBOUR as i64,
        "the neighbour's messages are all handled"
    );
}

/// The process's resident memory in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// `wharf publish` refuses a malformed message with the rule it breaks, before touching the
/// database; a plugin section above the host's limits is refused naming the setting.
#[test]
fn the_cli_refuses_malformed_input_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let wharf = |args: &[&str], config: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf-under-test"));
        if let Some(config) = config {
            let file = dir.path().join("wharf.toml");
            std::fs::write(&file, config).unwrap();
            command.arg("--config").arg(file);
        }
        let out = command
            .args(args)
            .env(
                "WHARF_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("w.db").display()),
            )
            .env("WHARF_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let publish = |extra: &[&str]| {
        let mut args = vec!["publish", "--json", "{}"];
        args.extend_from_slice(extra);
        wharf(&args, None)
    };
    let error = publish(&["--queue", "orders", "--kind", "order created"]);
    assert!(
        error.contains("message kind \"order created\" contains ' '; allowed: ASCII letters"),
        "{error}"
    );
    let error = publish(&["--queue", "", "--kind", "order.created"]);
    assert!(error.contains("queue name is empty"), "{error}");
    let long = "q".repeat(300);
    let error = publish(&["--queue", &long, "--kind", "order.created"]);
    assert!(
        error.contains("is 300 bytes long, over the limit of 255 bytes"),
        "{error}"
    );
    let error = publish(&[
        "--queue",
        "orders",
        "--kind",
        "order.created",
        "--header",
        "bad key=1",
    ]);
    assert!(
        error.contains("header key \"bad key\" contains ' '"),
        "{error}"
    );
    let error = publish(&[
        "--amqp",
        "--exchange",
        "orders exchange",
        "--routing-key",
        "k",
        "--kind",
        "order.created",
    ]);
    assert!(
        error.contains("exchange name \"orders exchange\""),
        "{error}"
    );
    assert!(
        !dir.path().join("w.db").exists(),
        "refused before opening the database"
    );

    let error = wharf(
        &["migrate"],
        Some("[plugin.fanout]\nmax_publishes = 1000\n"),
    );
    assert!(
        error.contains("max_publishes 1000 is above runtime.max_publishes (100)"),
        "{error}"
    );
    let error = wharf(
        &["migrate"],
        Some("[plugin.fanout]\nmax_payload_bytes = 2000000\n"),
    );
    assert!(
        error.contains("max_payload_bytes 2000000 is above inbox.max_payload_bytes (1048576)"),
        "{error}"
    );
}
