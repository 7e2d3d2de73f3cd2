//! A held ordering key to look at: a host whose `sequence-a` keeps key order and holds a
//! key on a dead letter, and three messages of one key, the second of which it rejects.

use serde_json::json;
use wharf_host::envelope::{DeadLetterKey, NewMessage};
use wharf_host::plugins::PluginConfig;

use crate::{Backend, Host};

/// The host (not running) and the three messages of `key` it has in its inbox (`test`):
/// once run, the second is a dead letter holding `key`, and the third waits behind it.
pub async fn holding(backend: Backend, key: &str) -> (Host, Vec<NewMessage>) {
    let host = Host::start_with(backend, &["fixture-sequence-a"], |c| {
        let ordered = PluginConfig {
            ordered: Some(true),
            dead_letter_key: DeadLetterKey::Hold,
            ..PluginConfig::default()
        };
        c.plugin.insert("sequence-a".into(), ordered);
    })
    .await;
    let steps = [
        json!({"key": key, "n": 1}),
        json!({"key": key, "n": 2, "reject": ["sequence-a"]}),
        json!({"key": key, "n": 3, "after": 1}),
    ];
    let messages: Vec<NewMessage> = steps
        .iter()
        .map(|s| NewMessage::new("test", "test.seq", s.to_string().into_bytes()).with_key(key))
        .collect();
    host.store.enqueue(&messages).await.unwrap();
    (host, messages)
}
