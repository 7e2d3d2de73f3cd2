//! The `wharf:plugin` world versions a host serves: components built against the released
//! 0.2.0, 0.3.0, 0.4.0 and 0.5.0 worlds (with wit-bindgen alone, as a team's `.wasm` files
//! from before 0.6.0 are) load and run unchanged beside 0.6.0 ones (a component is 0.6.0's
//! when it publishes through 0.6.0's outbox, else 0.5.0's when it answers requests: their
//! exports are 0.4.0's); a manifest (0.3.0 on) asks for the hosts it calls, and the host
//! says which of them its grants do not cover.

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
    let v0_2 = rt.load(&plugin_wasm("fixture-world-0-2")).await.unwrap();
    assert_eq!((v0_2.name(), v0_2.world()), ("world-0-2", "0.2.0"));
    assert!(v0_2.manifest.allowed_hosts.is_empty());
    assert!(v0_2.not_granted.is_empty());
    let v0_3 = rt.load(&plugin_wasm("fixture-world-0-3")).await.unwrap();
    assert_eq!((v0_3.name(), v0_3.world()), ("world-0-3", "0.3.0"));
    assert_eq!(v0_3.not_granted, ["https://api.legacy.example"]);
    assert!(!v0_2.manifest.ordered && !v0_3.manifest.ordered);
    let v0_4 = rt.load(&plugin_wasm("fixture-world-0-4")).await.unwrap();
    assert_eq!((v0_4.name(), v0_4.world()), ("world-0-4", "0.4.0"));
    assert!(v0_4.manifest.ordered, "its manifest asks for order");
    let v0_5 = rt.load(&plugin_wasm("fixture-world-0-5")).await.unwrap();
    assert_eq!((v0_5.name(), v0_5.world()), ("world-0-5", "0.5.0"));
    let current = rt.load(&plugin_wasm("fixture-producer")).await.unwrap();
    assert_eq!(current.world(), "0.6.0", "it publishes");
    // Built with the SDK on 0.6.0, a plugin imports only what it uses, and is served as
    // the version that has it.
    let answers = rt.load(&plugin_wasm("fixture-answer")).await.unwrap();
    assert_eq!(answers.world(), "0.5.0", "it answers requests");
    let ordered = rt.load(&plugin_wasm("fixture-sequence-a")).await.unwrap();
    assert_eq!(ordered.world(), "0.6.0", "it publishes");
    assert!(ordered.manifest.ordered, "its manifest asks for order");
    let noop = rt.load(&plugin_wasm("fixture-noop")).await.unwrap();
    assert_eq!((noop.world(), noop.manifest.ordered), ("0.4.0", false));
}

/// The component of `fixture` (built against a released world, named `name`) handles
/// messages with every effect of that world.
async fn a_released_component_handles_messages_with_every_effect(
    backend: Backend,
    fixture: &str,
    name: &str,
) {
    let host = Host::start_with(backend, &[fixture], |c| {
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
        .query_rows(format!(
            r#"SELECT value FROM plugin_state WHERE plugin = '{name}' AND "key" = 'count'"#
        ))
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
    let (fixture, name) = ("fixture-world-0-2", "world-0-2");
    a_released_component_handles_messages_with_every_effect(Backend::Sqlite, fixture, name).await;
}

#[tokio::test]
async fn a_0_2_0_component_handles_messages_with_every_effect_postgres() {
    let (fixture, name) = ("fixture-world-0-2", "world-0-2");
    a_released_component_handles_messages_with_every_effect(Backend::Postgres, fixture, name).await;
}

#[tokio::test]
async fn a_0_3_0_component_handles_messages_with_every_effect_sqlite() {
    let (fixture, name) = ("fixture-world-0-3", "world-0-3");
    a_released_component_handles_messages_with_every_effect(Backend::Sqlite, fixture, name).await;
}

#[tokio::test]
async fn a_0_3_0_component_handles_messages_with_every_effect_postgres() {
    let (fixture, name) = ("fixture-world-0-3", "world-0-3");
    a_released_component_handles_messages_with_every_effect(Backend::Postgres, fixture, name).await;
}

#[tokio::test]
async fn a_0_4_0_component_handles_messages_with_every_effect_sqlite() {
    let (fixture, name) = ("fixture-world-0-4", "world-0-4");
    a_released_component_handles_messages_with_every_effect(Backend::Sqlite, fixture, name).await;
}

#[tokio::test]
async fn a_0_4_0_component_handles_messages_with_every_effect_postgres() {
    let (fixture, name) = ("fixture-world-0-4", "world-0-4");
    a_released_component_handles_messages_with_every_effect(Backend::Postgres, fixture, name).await;
}

#[tokio::test]
async fn a_0_5_0_component_handles_messages_with_every_effect_sqlite() {
    let (fixture, name) = ("fixture-world-0-5", "world-0-5");
    a_released_component_handles_messages_with_every_effect(Backend::Sqlite, fixture, name).await;
}

#[tokio::test]
async fn a_0_5_0_component_handles_messages_with_every_effect_postgres() {
    let (fixture, name) = ("fixture-world-0-5", "world-0-5");
    a_released_component_handles_messages_with_every_effect(Backend::Postgres, fixture, name).await;
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
        assert_eq!(plugin.world(), "0.4.0");
        assert_eq!(plugin.manifest.allowed_hosts, ["https://api.mail.example"]);
        assert_eq!(plugin.not_granted, not_granted, "granted {grants:?}");
    }
}
