//! Hosts serving the example `send-email` against a stand-in mail API
//! ([`crate::mail_api`]): what the outbound tests share.

use serde_json::json;
use wharf_host::plugins::PluginConfig;
use wharf_host::retry::RetryPolicy;

use crate::{Backend, Host};

/// A host serving `send-email` with `mail_api` and `[plugin.send-email]` as `adjust`
/// leaves it, each failure dead-lettered after `retries` retries.
pub async fn host(
    backend: Backend,
    mail_api: &str,
    retries: u32,
    adjust: impl FnOnce(&mut PluginConfig),
) -> Host {
    let mut plugin = PluginConfig::default();
    plugin.config.insert("mail_api".into(), mail_api.into());
    plugin.retry = Some(RetryPolicy {
        max_retries: retries,
        base_delay_ms: 1,
        multiplier: 1.0,
        max_delay_ms: 1,
        jitter: 0.0,
    });
    adjust(&mut plugin);
    Host::start_with(backend, &["send-email"], |c| {
        c.plugin.insert("send-email".into(), plugin);
    })
    .await
}

/// Publish `n` mails and drain the inbox.
pub async fn send(host: &Host, n: usize) {
    for i in 0..n {
        let mail = json!({"to": format!("user{i}@example.com"), "subject": "Hi"});
        host.publish("test", "email.requested", mail).await;
    }
    host.drain().await;
}

/// The one failed message's error.
pub async fn refusal(host: &Host) -> String {
    let failed = host.failed().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    failed[0].error.clone()
}

/// A host whose `send-email` may call the hosts `grants` names (no retries).
pub async fn host_granting(mail_api: &str, grants: &[&str]) -> Host {
    let grants = grants.iter().map(|g| g.to_string()).collect();
    host(Backend::Sqlite, mail_api, 0, |p| p.allowed_hosts = grants).await
}

/// How many messages `send-email` handled.
pub async fn handled(host: &Host) -> i64 {
    host.count("SELECT COUNT(*) FROM processed WHERE plugin = 'send-email'")
        .await
}
