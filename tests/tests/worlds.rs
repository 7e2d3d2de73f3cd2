//! The `wharf:plugin` world versions a host serves: a component built against the released
//! 0.2.0 world (with wit-bindgen alone, as a team's `.wasm` file from before 0.3.0 is)
//! loads and runs unchanged beside 0.3.0 ones; a 0.3.0 manifest asks for the hosts it
//! calls, and the host says which of them its grants do not cover.

use serde_json::json;
use sqlx::Row;
use wharf_host::runtime::Runtime;
use wharf_tests::{Backend, Host, plugin_wasm, test_config};

fn runtime(dir: &std::path::Path, grants: &[&str]) -> Runtime {
    let mut config = test_config(dir);
    let plugin = config.plugin.entry("send-email".into()).or_default();
    plugin.allowed_hosts = grants.iter().map(|g| g.to_string()).collect();
    config.sandbox().unwrap()
}

#[tokio::test]
async fn each_component_is_served_as_the_world_it_was_built_against() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), &[]);
    let legacy = rt.load(&plugin_wasm("fixture-world-0-2")).await.unwrap();
    assert_eq!((legacy.name(), legacy.world()), ("world-0-2", "0.2.0"));
    assert!(legacy.manifest.allowed_hosts.is_empty());
    assert!(legacy.not_granted.is_empty());
    let current = rt.load(&plugin_wasm("fixture-noop")).await.unwrap();
    assert_eq!(current.world(), "0.3.0");
}

async fn a_0_2_0_component_handles_messages_with_every_effect(backend: Backend) {
    let host = Host::start_with(backend, &["fixture-world-0-2"], |c| {
        c.inbox.queues = vec!["legacy".into()];
    })
    .await;
    for _ in 0..2 {
        host.publish("legacy", "legacy.count", json!({})).await;
    }
    host.publish("legacy", "legacy.refuse", json!("no such order"))
        .await;
    let report = host.drain().await;
    assert_eq!(
        (report.settled.handled, report.settled.dead),
        (2, 1),
        "{report:?}"
    );
    let counted = host
        .rows("SELECT payload FROM inbox WHERE queue = 'counted' ")
        .await;
    let mut counts: Vec<u64> = counted
        .iter()
        .map(|r| {
            let published: serde_json::Value =
                serde_json::from_slice(&r.get::<Vec<u8>, _>(0)).unwrap();
            assert_eq!(published["kind"], "legacy.count");
            published["count"].as_u64().unwrap()
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [1, 2]);
    let state = host
        .rows(r#"SELECT value FROM plugin_state WHERE plugin = 'world-0-2' AND "key" = 'count'"#)
        .await;
    assert_eq!(state[0].get::<Vec<u8>, _>(0), b"2");
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.contains("\"no such order\""),
        "{}",
        failed[0].error
    );
}

#[tokio::test]
async fn a_0_2_0_component_handles_messages_with_every_effect_sqlite() {
    a_0_2_0_component_handles_messages_with_every_effect(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_0_2_0_component_handles_messages_with_every_effect_postgres() {
    a_0_2_0_component_handles_messages_with_every_effect(Backend::Postgres).await;
}

#[tokio::test]
async fn the_hosts_a_manifest_asks_for_and_is_not_granted_are_named() {
    // send-email's manifest asks for https://api.mail.example.
    let dir = tempfile::tempdir().unwrap();
    let email = plugin_wasm("send-email");
    for (grants, not_granted) in [
        (&[][..], &["https://api.mail.example"][..]),
        (
            &["http://127.0.0.1:8025"][..],
            &["https://api.mail.example"][..],
        ),
        (&["https://api.mail.example:443"][..], &[][..]),
        (
            &["https://*.mail.example", "http://127.0.0.1:8025"][..],
            &[][..],
        ),
        (&["*://*:*"][..], &[][..]),
        (
            &["https://*.api.mail.example"][..],
            &["https://api.mail.example"][..],
        ),
    ] {
        let plugin = runtime(dir.path(), grants).load(&email).await.unwrap();
        assert_eq!(plugin.world(), "0.3.0");
        assert_eq!(plugin.manifest.allowed_hosts, ["https://api.mail.example"]);
        assert_eq!(plugin.not_granted, not_granted, "granted {grants:?}");
    }
}
